"""Request hardening: security headers, session cookie settings, CSRF tokens.

CSRF: a random token per session, put in every form by ``csrf_field()`` and checked on
every POST/PUT/PATCH/DELETE before any view runs (so no form can forget it). The session
cookie is also SameSite=Lax, which alone stops most cross-site posts; the token covers
the rest (old browsers, same-site subdomains).
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from flask import Flask, Response, abort, current_app, request, session
from markupsafe import Markup

from crisisline.config import Settings

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MAX_BODY = 1024 * 1024  # every request body, except views that declare their own limit
F = TypeVar("F", bound=Callable[..., Any])

# No inline script or style anywhere (the live parts are files in web/static), no framing,
# no plugins; forms post only to this origin.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
       "form-action 'self'; frame-ancestors 'none'")


def configure(app: Flask, settings: Settings, https: bool) -> None:
    app.config.update(
        SESSION_COOKIE_NAME="__Host-pr_session" if https else "pr_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=https,
        # A shift is at most a day; log in again after 12 hours.
        PERMANENT_SESSION_LIFETIME=timedelta(hours=12),
        MAX_CONTENT_LENGTH=MAX_BODY,
    )
    app.before_request(check_csrf)
    app.after_request(lambda response: add_headers(response, https))
    app.jinja_env.globals["csrf_field"] = csrf_field
    app.jinja_env.globals["csrf_token"] = csrf_token


def csrf_token() -> str:
    token = session.get(CSRF_FIELD)
    if not token:
        token = session[CSRF_FIELD] = secrets.token_urlsafe(32)
    return token


def csrf_field() -> Markup:
    return Markup('<input type="hidden" name="{}" value="{}">').format(CSRF_FIELD, csrf_token())


def upload_limit(max_bytes: int) -> Callable[[F], F]:
    """A view that takes files declares its own body limit (the rest keep 1 MB). Applied
    after the log-in and role check, so nobody unauthorised gets a bigger body read."""
    def mark(view: F) -> F:
        view.max_upload = max_bytes  # type: ignore[attr-defined]
        return view
    return mark


def check_csrf() -> None:
    if request.method not in UNSAFE_METHODS:
        return
    view = current_app.view_functions.get(request.endpoint or "")
    limit = getattr(view, "max_upload", None)
    if limit:
        request.max_content_length = limit
    expected = session.get(CSRF_FIELD, "")
    sent = request.form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER, "")
    if not expected or not hmac.compare_digest(str(expected), str(sent)):
        abort(400, description="The form had expired or came from another site. "
                               "Go back, reload the page and try again.")


def add_headers(response: Response, https: bool) -> Response:
    headers = response.headers
    headers.setdefault("Content-Security-Policy", CSP)
    headers["X-Content-Type-Options"] = "nosniff"
    headers["X-Frame-Options"] = "DENY"  # for browsers without frame-ancestors
    headers["Referrer-Policy"] = "no-referrer"
    headers["Cross-Origin-Opener-Policy"] = "same-origin"
    # The review pages record from the microphone and set their own (microphone=(self)).
    headers.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=(), payment=()")
    if https:
        headers["Strict-Transport-Security"] = "max-age=31536000"
    if not request.path.startswith("/static/"):
        # Pages hold call data: never keep them in a shared or back-button cache.
        headers["Cache-Control"] = "no-store"
    return response
