"""Logging in and out, who may open what, and the login rate limit.

Default deny: a guard before every request lets through only the public endpoints
(``/health``, the login page, static files); every other view must declare its roles
with :func:`roles`, and a view that forgot to is refused to everyone.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

import redis
from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from sqlalchemy import select

from crisisline.stores.calls import PREFIX
from crisisline.users import passwords
from crisisline.users.schema import User
from web import state
from web.security import CSRF_FIELD

log = logging.getLogger(__name__)
bp = Blueprint("auth", __name__)

PUBLIC_ENDPOINTS = frozenset({"auth.login", "health", "static"})
HOME = {"supervisor": "queue.index", "admin": "roster.index", "oversight": "oversight.report",
        "reviewer": "review.index"}
STAFF = ("supervisor", "admin", "oversight", "reviewer")
# Failed logins allowed per window: per account (guessing one password) and per address
# (trying many accounts). Counted in Redis so every panel process shares them.
USER_LIMIT = 5
IP_LIMIT = 20
WINDOW_S = 15 * 60
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class CurrentUser:
    id: int
    name: str
    role: str
    languages: tuple[str, ...] = ()  # reviewers: the languages they review

    def may_review(self, lang: str) -> bool:
        """Admins review every language; reviewers only their own; nobody else any."""
        return self.role == "admin" or (self.role == "reviewer" and lang in self.languages)


def roles(*allowed: str) -> Callable[[F], F]:
    """Declare who may open a view; checked by :func:`guard` before the view runs."""
    def mark(view: F) -> F:
        view.allowed_roles = frozenset(allowed)  # type: ignore[attr-defined]
        return view
    return mark


def current_user() -> CurrentUser | None:
    return g.get("user")


def _fingerprint(password_hash: str) -> str:
    # In the session: a changed password (or a re-hash) logs out every other session.
    return hashlib.sha256(password_hash.encode()).hexdigest()[:16]


def _load_user() -> CurrentUser | None:
    user_id = session.get("user_id")
    if user_id is None:
        return None
    user = state.db().get(User, user_id)
    if user is None or user.disabled or session.get("fp") != _fingerprint(user.password_hash):
        session.clear()
        return None
    return CurrentUser(user.id, user.name, user.role, user.language_list)


def guard() -> Response | None:
    """Before every request: log-in and role check for the endpoint about to run."""
    if request.endpoint is None:
        return None  # no such route: Flask answers 404/405, and there is nothing to guard
    endpoint = request.endpoint
    if endpoint in PUBLIC_ENDPOINTS:
        g.user = _load_user() if endpoint == "auth.login" else None
        return None
    user = g.user = _load_user()
    if user is None:
        if request.path.startswith("/queue/events"):
            abort(401)  # an event stream can't follow a redirect to a form
        return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
    view = current_app.view_functions.get(endpoint)
    allowed = getattr(view, "allowed_roles", frozenset())
    if user.role not in allowed:
        abort(403)
    # A route about one language (its <lang> part) is only for those who review it: checked
    # here, before a form or an upload is even read.
    lang = (request.view_args or {}).get("lang")
    if lang is not None and user.role in ("reviewer", "admin") and not user.may_review(lang):
        abort(403)
    return None


# ---- rate limit -------------------------------------------------------------------------

def _keys(name: str) -> tuple[str, str]:
    address = request.remote_addr or "unknown"
    return (f"{PREFIX}web:login:user:{name.casefold()}", f"{PREFIX}web:login:ip:{address}")


def _limited(name: str) -> bool:
    user_key, ip_key = _keys(name)
    try:
        user_n, ip_n = state.panel().live.redis.mget(user_key, ip_key)
    except redis.RedisError as exc:
        # Fail open: a Redis outage must not lock supervisors out of the roster and
        # history; the hash cost still slows guessing. Logged, so it is seen.
        log.warning("login rate limit unavailable (%s)", exc)
        return False
    return int(user_n or 0) >= USER_LIMIT or int(ip_n or 0) >= IP_LIMIT


def _count_failure(name: str) -> None:
    try:
        with state.panel().live.redis.pipeline(transaction=True) as pipe:
            for key in _keys(name):
                pipe.incr(key)
                pipe.expire(key, WINDOW_S, nx=True)
            pipe.execute()
    except redis.RedisError as exc:
        log.warning("login rate limit unavailable (%s)", exc)


def _clear_user_failures(name: str) -> None:
    try:
        state.panel().live.redis.delete(_keys(name)[0])
    except redis.RedisError:
        pass


def _safe_next(target: str | None) -> str | None:
    """Only a path on this site (no open redirect to another host)."""
    if not target:
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return None
    return target


# ---- views ------------------------------------------------------------------------------

@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    if request.method == "GET":
        if current_user() is not None:
            return redirect(url_for(HOME[current_user().role]))
        return render_template("login.html", next=request.args.get("next", ""))
    name = request.form.get("name", "").strip()[:64]
    password = request.form.get("password", "")
    if _limited(name):
        log.warning("login refused for %r from %s: too many failures", name, request.remote_addr)
        return render_template(
            "login.html", next=request.form.get("next", ""), name=name,
            error="Too many failed attempts. Wait 15 minutes, or ask an admin."), 429
    user = state.db().scalar(select(User).where(User.name == name)) if name else None
    ok = passwords.verify(user.password_hash if user else None, password)
    if not ok or user is None or user.disabled:
        _count_failure(name)
        log.info("failed login for %r from %s", name, request.remote_addr)
        return render_template("login.html", next=request.form.get("next", ""), name=name,
                               error="That name and password don't match an account."), 401
    _clear_user_failures(name)
    # A new session on log-in: nothing from before (a planted session) carries over.
    session.clear()
    session.permanent = True
    session["user_id"] = user.id
    session["fp"] = _fingerprint(user.password_hash)
    session["at"] = datetime.now(UTC).isoformat()
    session[CSRF_FIELD] = secrets.token_urlsafe(32)  # a fresh token with the new session
    log.info("%s logged in from %s", user.name, request.remote_addr)
    target = _safe_next(request.form.get("next"))
    return redirect(target or url_for(HOME[user.role]))


@bp.route("/logout", methods=["POST"])
@roles(*STAFF)
def logout() -> Any:
    session.clear()
    flash("You are logged out.")
    return redirect(url_for("auth.login"))


@bp.route("/")
@roles(*STAFF)
def home() -> Any:
    user = current_user()
    assert user is not None  # the guard let us in
    return redirect(url_for(HOME[user.role]))
