"""The SMS provider's webhook: ``POST /sms/inbound`` (form-encoded ``From``, ``To``, ``Body``,
``MessageSid``; signed in ``X-Twilio-Signature`` with the account's auth token).

Refused (403) without a signature, with a wrong one, or with no token configured; a
``MessageSid`` seen before is the same message again (providers retry) and changes nothing.
The answer is empty TwiML: every reply goes out through the provider's REST API, in order.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, abort, current_app, request

from crisisline.callers import normalize_number
from crisisline.config import Settings
from textline.runtime import Runtime
from textline.sms import SIGNATURE_HEADER, valid_signature

log = logging.getLogger(__name__)
bp = Blueprint("sms", __name__, url_prefix="/sms")
PATH = "/sms/inbound"
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'
MAX_FIELD = 20000


def webhook_url(settings: Settings) -> str:
    """The URL the provider posts to (and signs): the chat app's public address."""
    return settings.chat_url + PATH


@bp.post("/inbound")
def inbound() -> Any:
    runtime: Runtime = current_app.extensions["textline"]
    settings: Settings = current_app.extensions["textline_settings"]
    params = request.form.to_dict(flat=False)
    if not valid_signature(webhook_url(settings), params, settings.sms_token,
                           request.headers.get(SIGNATURE_HEADER)):
        log.warning("SMS webhook: refused a request without a valid signature from %s",
                    request.remote_addr)
        abort(403)
    form = request.form
    sid = form.get("MessageSid", "") or form.get("SmsSid", "")
    number = normalize_number(form.get("From", ""), settings.region)
    body = form.get("Body", "")
    if not sid or len(sid) > 64 or number is None or len(body) > MAX_FIELD:
        abort(400)
    outcome = runtime.run(runtime.conversations.from_sms(number, body, sid), timeout=60)
    log.info("SMS %s: %s", sid, outcome.status)  # never the number, never the words
    return Response(EMPTY_TWIML, mimetype="text/xml")
