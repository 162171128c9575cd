"""AGI scripts by name: ``AGI(agi://host/<name>?...)`` runs ``HANDLERS[<name>]``.

Each handler is a plain coroutine ``(session, app) -> None`` in a module of its own,
registered with :func:`handler` (the shape of wazo-agid's handlers).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agi.app import AgiApp
    from agi.session import AgiSession

Handler = Callable[["AgiSession", "AgiApp"], Awaitable[None]]
HANDLERS: dict[str, Handler] = {}


def handler(name: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        if name in HANDLERS:
            raise ValueError(f"AGI handler {name!r} registered twice")
        HANDLERS[name] = fn
        return fn
    return register


def load_all() -> dict[str, Handler]:
    """Import the handler modules (they register themselves)."""
    from agi.handlers import callback, callback_call, hangup, intake, whisper  # noqa: F401

    return HANDLERS
