"""A call to the line, as the rest of the system sees it."""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class Source(StrEnum):
    DIRECT = "direct"
    NINE_ONE_ONE = "911"
    NINE_EIGHT_EIGHT = "988"
    TEXT = "text"  # SMS or the chat page: a conversation, with no Asterisk channel


class State(StrEnum):
    IVR = "ivr"                # talking to the IVR
    WAITING = "waiting"        # in its waiting room, in the queue
    DISPATCHING = "dispatching"  # taken from the queue by a dispatcher, responders ringing
    BRIDGED = "bridged"        # a responder is with the caller
    CALLBACK = "callback"      # (records before callbacks were worked by the line itself)
    CALLBACK_FAILED = "callback_failed"  # a callback request's every attempt went unanswered
    CANCELLED = "cancelled"    # a supervisor cancelled a callback request whose caller had left
    FALLBACK = "fallback"      # the dialplan's static ring group has the caller
    ENDED = "ended"            # finished after reaching a person
    ABANDONED = "abandoned"    # the caller hung up before reaching a person


def new_call_id() -> str:
    """Short, unguessable, safe in a ConfBridge room name and a channel variable."""
    return secrets.token_hex(6)


@dataclass
class Call:
    id: str
    source: Source
    language: str
    priority: int
    state: State = State.IVR
    neighborhood: str | None = None
    zip_code: str | None = None
    caller_number: str | None = None  # E.164, or None when withheld/unknown
    consented_to_message: bool = False
    note: str | None = None            # from a transferring 911/988 center
    channel: str = ""
    pbx_node: str = ""                 # the Asterisk node it is on, on a line of several
    created_at: float = 0.0
    queued_at: float | None = None
    ended_at: float | None = None
    end_step: str | None = None        # where the caller hung up, if they did
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def room(self) -> str:
        return f"call-{self.id}"

    def to_hash(self) -> dict[str, str]:
        """Flat strings for a Redis hash; None becomes the empty string."""
        out: dict[str, str] = {}
        for key, value in asdict(self).items():
            if key == "extra":
                out.update({f"x_{k}": v for k, v in value.items()})
            elif value is None:
                out[key] = ""
            elif isinstance(value, bool):
                out[key] = "1" if value else "0"
            else:
                out[key] = str(value)
        return out

    @classmethod
    def from_hash(cls, data: dict[str, str]) -> Call:
        def opt(key: str) -> str | None:
            return data.get(key) or None

        def optf(key: str) -> float | None:
            return float(data[key]) if data.get(key) else None

        return cls(
            id=data["id"],
            source=Source(data["source"]),
            language=data["language"],
            priority=int(data["priority"]),
            state=State(data.get("state", "ivr")),
            neighborhood=opt("neighborhood"),
            zip_code=opt("zip_code"),
            caller_number=opt("caller_number"),
            consented_to_message=data.get("consented_to_message") == "1",
            note=opt("note"),
            channel=data.get("channel", ""),
            pbx_node=data.get("pbx_node", ""),
            created_at=float(data.get("created_at") or 0),
            queued_at=optf("queued_at"),
            ended_at=optf("ended_at"),
            end_step=opt("end_step"),
            extra={k[2:]: v for k, v in data.items() if k.startswith("x_")},
        )

    def public(self) -> dict[str, Any]:
        """The call without the caller's number or the note (for logs and events)."""
        d = asdict(self)
        d.pop("caller_number")
        d.pop("note")
        return d
