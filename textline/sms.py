"""The SMS provider: our client for its REST API, and its webhook signature.

The convention most providers copy (Twilio's):

- **Inbound** texts come as a form-encoded POST to our webhook (``From``, ``To``, ``Body``,
  ``MessageSid``, ...), signed in ``X-Twilio-Signature``: base64 of HMAC-SHA1, keyed with
  the account's auth token, over the full URL the provider posted to followed by every
  POST parameter's name and value, sorted by name. A request without it, or with a wrong
  one, is refused; the URL is the one the provider knows (``Settings.chat_url``), not the
  one a proxy hands us.
- **Outbound** texts are ``POST {api}/2010-04-01/Accounts/{account}/Messages.json`` with
  form fields ``To``, ``From``, ``Body`` and HTTP basic auth (account, token); the answer is
  JSON with the message's ``sid``.

Standard library only (urllib): one small request per text, from threads.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence

from crisisline.config import Settings

log = logging.getLogger(__name__)
SIGNATURE_HEADER = "X-Twilio-Signature"
TIMEOUT_S = 5.0
ATTEMPTS = 3


class SmsError(RuntimeError):
    """The provider refused or could not be reached; the message says which."""


def signature(url: str, params: Mapping[str, str | Sequence[str]], token: str) -> str:
    """X-Twilio-Signature for a POST of ``params`` to ``url``."""
    data = url
    for name in sorted(params):
        values = params[name]
        for value in ([values] if isinstance(values, str) else sorted(set(values))):
            data += name + value
    mac = hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(mac).decode()


def valid_signature(url: str, params: Mapping[str, str | Sequence[str]], token: str,
                    sent: str | None) -> bool:
    if not sent or not token:
        return False
    return hmac.compare_digest(signature(url, params, token), sent)


class SmsClient:
    """Sends texts through the provider's REST API."""

    def __init__(self, api_url: str, account: str, token: str, sender: str,
                 timeout_s: float = TIMEOUT_S, attempts: int = ATTEMPTS) -> None:
        self.api_url = api_url.rstrip("/")
        self.account = account
        self.token = token
        self.sender = sender
        self.timeout_s = timeout_s
        self.attempts = attempts

    @classmethod
    def from_settings(cls, settings: Settings) -> SmsClient | None:
        """None when no provider is configured (texts are then only on the chat page)."""
        if not settings.sms_api_url or not settings.sms_account:
            return None
        return cls(settings.sms_api_url, settings.sms_account, settings.sms_token,
                   settings.sms_number)

    @property
    def messages_url(self) -> str:
        account = urllib.parse.quote(self.account, safe="")
        return f"{self.api_url}/2010-04-01/Accounts/{account}/Messages.json"

    def send(self, to: str, body: str) -> str:
        """Send one text; its provider sid. Retries a refused connection or a 5xx a few
        times; raises SmsError when it could not be sent (never logs the body)."""
        data = urllib.parse.urlencode({"To": to, "From": self.sender, "Body": body}).encode()
        auth = base64.b64encode(f"{self.account}:{self.token}".encode()).decode()
        request = urllib.request.Request(
            self.messages_url, data=data, method="POST",
            headers={"Authorization": f"Basic {auth}", "Accept": "application/json",
                     "Content-Type": "application/x-www-form-urlencoded"})
        last = ""
        for attempt in range(1, self.attempts + 1):
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    reply = json.loads(response.read().decode() or "{}")
                sid = str(reply.get("sid") or "")
                if not sid:
                    raise SmsError("the provider's answer had no sid")
                return sid
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code}"
                try:
                    detail = json.loads(exc.read().decode() or "{}")
                    last += f" ({detail.get('code', '')}: {detail.get('message', '')})"
                except ValueError:
                    pass
                if exc.code < 500:
                    break  # refused (bad number, opted out, auth): trying again won't help
            except (OSError, ValueError) as exc:
                last = str(exc) or type(exc).__name__
            if attempt < self.attempts:
                time.sleep(0.2 * attempt)
        log.warning("SMS to a number ending %s not sent: %s", to[-2:], last)
        raise SmsError(last)
