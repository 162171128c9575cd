"""What the panel holds per process (settings, SQL engine, Redis, event hub), and the
per-request SQL session."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from flask import current_app, g
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from crisisline.config import Settings

if TYPE_CHECKING:
    from web.live import EventHub, Live


@dataclass
class PanelState:
    settings: Settings
    engine: Engine
    live: Live
    hub: EventHub


def panel() -> PanelState:
    return current_app.extensions["peoples_response"]


def settings() -> Settings:
    return panel().settings


def db() -> Session:
    """One session per request, closed at teardown (see create_app)."""
    if "db" not in g:
        g.db = Session(panel().engine, expire_on_commit=False)
    return g.db


def close_db(_exc: BaseException | None = None) -> None:
    session = g.pop("db", None)
    if session is not None:
        session.close()
