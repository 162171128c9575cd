"""``peoples-response sms-standin``: the SMS provider stand-in as a process.

It listens where ``PR_SMS_API_URL`` points (``up`` sets http://127.0.0.1:8091 when no
provider is configured), checks the line's sends against ``PR_SMS_ACCOUNT`` /
``PR_SMS_TOKEN``, and posts texters' texts to the chat app's webhook
(``Settings.chat_url`` + /sms/inbound), signed with the same token.
"""

from __future__ import annotations

import os
import secrets
import signal
import sys
import threading
from urllib.parse import urlsplit

from crisisline.config import Settings
from smsstandin.server import SmsStandin

PORT = int(os.environ.get("PR_UP_SMS_PORT", "8091"))
TIME_SCALE_ENV = "PR_STANDIN_TIME_SCALE"


def standin_env(settings: Settings) -> dict[str, str]:
    """For ``up`` when no provider is configured: where the stand-in listens, and an
    account and token made for this run only."""
    if settings.sms_api_url:
        return {}
    return {"PR_SMS_API_URL": f"http://127.0.0.1:{PORT}",
            "PR_SMS_ACCOUNT": settings.sms_account or "AC" + secrets.token_hex(16),
            "PR_SMS_TOKEN": settings.sms_token or secrets.token_hex(16)}


def serve(settings: Settings) -> int:
    if not settings.sms_api_url or not settings.sms_token:
        print("sms-standin: set PR_SMS_API_URL (where to listen), PR_SMS_ACCOUNT and "
              "PR_SMS_TOKEN (`up` does)", file=sys.stderr)
        return 2
    where = urlsplit(settings.sms_api_url)
    standin = SmsStandin(settings.sms_account, settings.sms_token,
                         settings.chat_url + "/sms/inbound", host=where.hostname or "127.0.0.1",
                         port=where.port or 80, line_number=settings.sms_number,
                         time_scale=float(os.environ.get(TIME_SCALE_ENV) or "1.0"))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    standin.start()
    print(f"sms-standin: provider API on {standin.url}, texts to {standin.webhook_url}",
          file=sys.stderr, flush=True)
    stop.wait()
    standin.stop()
    return 0
