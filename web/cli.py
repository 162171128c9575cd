"""What ``peoples-response web`` and ``peoples-response user ...`` do, as plain functions.

Passwords come from standard input only (getpass on a terminal, one line otherwise), never
from the command line (it would sit in shell history and in ``ps``), and there is no
default password anywhere: the first admin is made with ``user add NAME --role admin``.
"""

from __future__ import annotations

import getpass
import logging
import re
import sys
from datetime import UTC, datetime
from typing import TextIO

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from crisisline import db
from crisisline.config import Settings
from crisisline.users import passwords
from crisisline.users.schema import ROLES, User

log = logging.getLogger(__name__)
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


def serve(settings: Settings, host: str | None = None, port: int | None = None) -> int:
    """Run the panel until interrupted.

    Werkzeug's threaded server: one thread per connection, so each open live-queue page
    holds one thread for its event stream (fine for a few dozen supervisors; put a
    reverse proxy with TLS in front, see docs/panel.md).
    """
    from werkzeug.serving import make_server

    from web import create_app

    db.upgrade(settings)
    app = create_app(settings)
    host = host or settings.web_host
    port = port or settings.web_port
    server = make_server(host, port, app, threaded=True)
    print(f"panel: serving on http://{host}:{port}/ (Ctrl-C to stop)", file=sys.stderr)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        app.extensions["peoples_response"].hub.stop()
    return 0


def read_password(stream: TextIO, err: TextIO) -> str | None:
    if stream.isatty():
        first = getpass.getpass("Password: ", stream=err)
        second = getpass.getpass("Password again: ", stream=err)
        if first != second:
            print("the two passwords differ; nothing was changed", file=err)
            return None
        return first
    line = stream.readline()
    return line[:-1] if line.endswith("\n") else line  # keep inner and leading spaces as typed


def parse_languages(role: str, languages: str | None) -> tuple[str | None, str | None]:
    """(stored value, problem) for ``--languages``: required for reviewers, who see only
    these languages; refused for other roles (an admin sees every language anyway)."""
    from crisisline.prompts.catalog import CatalogError, load_catalog

    if role != "reviewer":
        return None, ("--languages is only for reviewers" if languages else None)
    codes = [c.strip() for c in (languages or "").split(",") if c.strip()]
    if not codes:
        return None, "a reviewer needs --languages, e.g. --languages ht,kea"
    try:
        known = load_catalog().languages
    except CatalogError as exc:
        return None, str(exc)
    unknown = [c for c in codes if c not in known]
    if unknown:
        return None, (f"no language {unknown[0]!r} in the prompt catalog (known: "
                      f"{', '.join(known)})")
    return ",".join(dict.fromkeys(codes)), None


def user_add(settings: Settings, name: str, role: str, password_stream: TextIO,
             err: TextIO | None = None, languages: str | None = None) -> int:
    """Create a panel account; 0 on success, 1 (with the reason on ``err``) otherwise.
    ``languages``: for a reviewer, the comma-separated codes they review."""
    err = err or sys.stderr
    if role not in ROLES:
        print(f"user add: role must be one of {', '.join(ROLES)}, got {role!r}", file=err)
        return 1
    stored_languages, problem = parse_languages(role, languages)
    if problem:
        print(f"user add: {problem}; nothing was changed", file=err)
        return 1
    if not NAME.match(name):
        print("user add: names are letters, digits, . _ @ - (up to 64), starting with a letter "
              "or digit", file=err)
        return 1
    password = read_password(password_stream, err)
    if password is None:
        return 1
    reason = passwords.problem(password)
    if reason:
        print(f"user add: {reason}; nothing was changed", file=err)
        return 1
    engine = db.engine_for(settings)
    try:
        db.upgrade(settings, engine)
        with Session(engine) as session, session.begin():
            if session.scalar(select(User).where(User.name == name)) is not None:
                print(f"user add: {name!r} already exists", file=err)
                return 1
            session.add(User(name=name, role=role, password_hash=passwords.hash_password(password),
                             created_at=datetime.now(UTC), disabled=False,
                             languages=stored_languages))
    except IntegrityError:
        print(f"user add: {name!r} already exists", file=err)
        return 1
    finally:
        engine.dispose()
    extra = f" for {stored_languages}" if stored_languages else ""
    print(f"user add: created {role} {name!r}{extra}", file=err)
    return 0


def user_set_password(settings: Settings, name: str, password_stream: TextIO,
                      err: TextIO | None = None) -> int:
    """Change a password (which also logs out that user's open sessions)."""
    err = err or sys.stderr
    password = read_password(password_stream, err)
    if password is None:
        return 1
    reason = passwords.problem(password)
    if reason:
        print(f"user password: {reason}; nothing was changed", file=err)
        return 1
    return _update(settings, name, err, password_hash=passwords.hash_password(password))


def user_disable(settings: Settings, name: str, disabled: bool = True,
                 err: TextIO | None = None) -> int:
    """Disable (or re-enable) an account; a disabled account's sessions end at once."""
    return _update(settings, name, err or sys.stderr, disabled=disabled)


def _update(settings: Settings, name: str, err: TextIO, **values: object) -> int:
    engine = db.engine_for(settings)
    try:
        db.upgrade(settings, engine)
        with Session(engine) as session, session.begin():
            user = session.scalar(select(User).where(User.name == name))
            if user is None:
                print(f"user: no account named {name!r}", file=err)
                return 1
            for key, value in values.items():
                setattr(user, key, value)
    finally:
        engine.dispose()
    return 0
