"""``peoples-response chat``: the public chat app (and the SMS webhook, and responders'
pages) on Werkzeug's threaded server: one thread per request, and per waiting page."""

from __future__ import annotations

import re
import sys
from typing import Any

from werkzeug.serving import WSGIRequestHandler

from crisisline import db
from crisisline.config import Settings

ONE_TIME_LINK = re.compile(r"/r/(?!c(?:[/?\s]|$))[A-Za-z0-9_\-]+")


class RedactingHandler(WSGIRequestHandler):
    """The access log without responders' one-time links (a log reader must not be able to
    open one before its responder does)."""

    def log(self, type: str, message: str, *args: Any) -> None:
        super().log(type, message, *(ONE_TIME_LINK.sub("/r/…", a) if isinstance(a, str) else a
                                     for a in args))


def serve(settings: Settings, host: str | None = None, port: int | None = None) -> int:
    from werkzeug.serving import make_server

    from textline import create_app, runtime_of

    db.upgrade(settings)
    app = create_app(settings)
    host = host or settings.chat_host
    port = port or settings.chat_port
    server = make_server(host, port, app, threaded=True, request_handler=RedactingHandler)
    print(f"chat: serving on http://{host}:{port}/ (public address {settings.chat_url}; "
          "Ctrl-C to stop)", file=sys.stderr)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        runtime_of(app).close()
    return 0
