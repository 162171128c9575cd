"""The text line's front door: a public Flask app of its own (``peoples-response chat``,
127.0.0.1:8090 by default; meant to be published, unlike the staff panel).

    /              the chat page (language, the promise, the conversation; "leave quickly")
    /chat/...      the chat page's requests (JSON): start, send, poll, call, delete, leave
    /today         the neutral page "leave quickly" goes to (unless chat_leave_url says)
    /sms/inbound   the SMS provider's webhook (signed: X-Twilio-Signature)
    /r/<token>     a responder's one-time link, and /r/c their page for that conversation

No staff page is here, and nothing here links to one: the panel is another app on another
port. Every response carries the panel's security headers (web.security: CSP without inline
script, no framing, nosniff, no referrer, no-store).
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

from flask import Flask, jsonify, request

from crisisline import config
from crisisline.config import Settings
from textline.runtime import Runtime

log = logging.getLogger(__name__)
MAX_BODY = 64 * 1024  # a chat message is at most text_max_chat_chars; forms are small


def create_app(settings: Settings | None = None, runtime: Runtime | None = None,
               testing: bool = False) -> Flask:
    from web.security import add_headers

    settings = settings or config.load()
    https = settings.chat_url.startswith("https://")
    app = Flask(__name__)
    app.testing = testing
    app.config.update(MAX_CONTENT_LENGTH=MAX_BODY)
    runtime = runtime or Runtime(settings)
    runtime.secret = settings.chat_secret_key or secrets.token_urlsafe(48)
    if not settings.chat_secret_key:
        log.warning("PR_CHAT_SECRET_KEY is not set: a random key for this process (chat pages "
                    "open across a restart must be reloaded)")
    app.extensions["textline"] = runtime
    app.extensions["textline_settings"] = settings

    from textline import chat, responder, webhook

    for blueprint in (chat.bp, webhook.bp, responder.bp):
        app.register_blueprint(blueprint)

    @app.after_request
    def headers(response: Any) -> Any:
        response = add_headers(response, https)
        response.headers["X-Robots-Tag"] = "noindex, nofollow"
        return response

    @app.get("/health")
    def health() -> tuple[dict[str, str], int]:
        try:
            runtime.run(runtime.redis.ping(), timeout=3)
        except Exception:
            return {"status": "redis unavailable"}, 503
        return {"status": "ok"}, 200

    def error(code: int, text: str) -> Any:
        def handler(_exc: Exception) -> Any:
            if request.path.startswith(("/chat/", "/sms/")) or \
                    request.accept_mimetypes.best == "application/json":
                return jsonify(error=text), code
            return f"{code} {text}", code, {"Content-Type": "text/plain; charset=utf-8"}
        return handler

    for code, text in ((400, "Bad request"), (403, "Forbidden"), (404, "Not found"),
                       (405, "Method not allowed"), (413, "Too large"), (429, "Too many requests")):
        app.register_error_handler(code, error(code, text))
    return app


def runtime_of(app: Flask) -> Runtime:
    return app.extensions["textline"]
