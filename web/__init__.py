"""The supervisor and oversight panel: a Flask app, one blueprint per area.

    queue      supervisor   live queue, active calls, responders, callbacks, actions, /queue/events
    roster     admin        teams, responders, shifts, overrides, week view, audit log
    history    supervisor, admin   call search, timeline, audited reveal of number/transcript
    oversight  oversight    de-identified report, CSV, SVG chart; state of prompt review
    review     reviewer, admin   a page per language: correct, review, record, upload prompts
"""

from __future__ import annotations

import logging
import secrets
from datetime import datetime
from typing import Any

import redis
from flask import Flask, jsonify, render_template, request

from crisisline import config, db
from crisisline.config import Settings
from crisisline.prompts.recording import too_big_message
from crisisline.roster.csv_format import KNOWN_LANGUAGES
from crisisline.stores import sync_redis
from web import auth, security, state
from web.live import EventHub, Live

log = logging.getLogger(__name__)
SOURCES = {"direct": "Direct line", "911": "911 transfer", "988": "988 transfer",
           "text": "Text (SMS or chat)"}


def create_app(settings: Settings | None = None, testing: bool = False,
               https: bool | None = None) -> Flask:
    """The panel for ``settings``. ``https`` marks the session cookie Secure (and sends
    HSTS); by default it follows ``settings.web_https`` when that setting exists."""
    settings = settings or config.load()
    if https is None:
        https = bool(getattr(settings, "web_https", False))
    app = Flask(__name__)
    app.testing = testing
    secret = settings.web_secret_key
    if not secret:
        secret = secrets.token_urlsafe(48)
        log.warning("PR_WEB_SECRET_KEY is not set: using a random key for this process; "
                    "everyone is logged out when the panel restarts")
    app.secret_key = secret
    # The log-in and role check runs first, so anonymous requests are sent to log in
    # (rather than told their form expired); then the CSRF check of security.configure.
    app.before_request(auth.guard)
    security.configure(app, settings, https)

    client = sync_redis(settings.effective_redis_url, socket_timeout=5,
                                  health_check_interval=30)
    app.extensions["peoples_response"] = state.PanelState(
        settings=settings, engine=db.engine_for(settings), live=Live(client),
        hub=EventHub(settings.effective_redis_url))
    app.teardown_appcontext(state.close_db)

    from web import callbacks, history, oversight, queue, review, roster

    for blueprint in (auth.bp, queue.bp, callbacks.bp, roster.bp, history.bp, oversight.bp,
                      review.bp):
        app.register_blueprint(blueprint)

    @app.get("/health")
    def health() -> tuple[dict[str, str], int]:
        # Public and content-free: says only whether the panel's own dependencies answer.
        try:
            client.ping()
        except redis.RedisError:
            return {"status": "redis unavailable"}, 503
        return {"status": "ok"}, 200

    zone = settings.zone

    def local(value: datetime | float | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
        """A time in the program's zone (Settings.zone), never the server's."""
        if value is None or value == 0:
            return ""
        if isinstance(value, int | float):
            from datetime import UTC
            value = datetime.fromtimestamp(value, UTC)
        return value.astimezone(zone).strftime(fmt)

    def duration(seconds: float | None) -> str:
        if seconds is None:
            return ""
        seconds = max(0, int(seconds))
        minutes, secs = divmod(seconds, 60)
        hours, minutes = divmod(minutes, 60)
        return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"

    app.jinja_env.filters["local"] = local
    app.jinja_env.filters["duration"] = duration
    app.jinja_env.globals["zone_name"] = settings.timezone
    app.jinja_env.globals["current_user"] = auth.current_user
    app.jinja_env.globals["LANGUAGES"] = KNOWN_LANGUAGES
    app.jinja_env.globals["SOURCES"] = SOURCES

    def error_page(code: int, title: str, message: str = "") -> Any:
        def handler(exc: Exception) -> Any:
            text = message or getattr(exc, "description", "") or ""
            if request.accept_mimetypes.best == "application/json":  # the recorder's fetch
                return jsonify(error=text or title), code
            return render_template("error.html", code=code, title=title, message=text), code
        return handler

    app.register_error_handler(400, error_page(400, "Bad request"))
    app.register_error_handler(401, error_page(401, "Log in first"))
    app.register_error_handler(403, error_page(403, "Not for your role"))
    app.register_error_handler(404, error_page(404, "Not found"))
    app.register_error_handler(413, error_page(413, "Too large", too_big_message()))
    app.register_error_handler(415, error_page(415, "Not a format we can use"))
    app.register_error_handler(429, error_page(429, "Too many attempts"))
    return app
