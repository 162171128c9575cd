"""An interpreter in the room when the responder who took the call doesn't speak the
caller's language.

The caller is never kept waiting for one: the responder is with them either way. The
interpreter line for the caller's language (``Settings.interpreters``, an interpretation
service, never police or emergency: refused when configured and again here) is rung into
the caller's own room as a third party, and the caller hears, in their language, that an
interpreter is joining. With no line configured for the language the call goes on without
one, and an ``interpreter_missing`` event says so for the supervisors. A line that is busy
or doesn't answer is rung again (ATTEMPTS in all, RETRY_S apart) while the call lasts; when
none of them got through, both sides are told so in the room (dialplan [pr-announce]: in
the caller's language, then in English) and the record names no interpreter: the call
record's ``interpreter`` is set only when the line actually joined the room.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from crisisline import destinations
from crisisline.stores.calls import call_key

if TYPE_CHECKING:
    from workers.dispatcher.dispatcher import Dispatcher

log = logging.getLogger(__name__)
RING_S = 60.0  # an interpretation service's queue can take a while to answer
ATTEMPTS = 3
RETRY_S = 2.0
PREFIX = "pri-"  # our ChannelId for interpreter legs; responders' legs start "pr-"
CONNECT = "pr-connect"
CONNECT_WITH_INTERPRETER = "pr-connect-interpreter"


def interpreter_leg_id(call_id: str, lang: str, attempt: int = 1) -> str:
    return f"{PREFIX}{call_id}-{lang}-{attempt}"


def parse_interpreter_leg_id(channel_id: str) -> tuple[str, str, int] | None:
    """(call_id, language, attempt) of one of our interpreter legs, else None."""
    if not channel_id.startswith(PREFIX):
        return None
    parts = channel_id[len(PREFIX):].rsplit("-", 2)
    if len(parts) != 3 or not parts[2].isdigit():
        return None
    return parts[0], parts[1], int(parts[2])


class Interpreters:
    def __init__(self, dispatcher: Dispatcher) -> None:
        self.d = dispatcher
        self.retry_s = RETRY_S
        self._retries: set[asyncio.Task] = set()
        dispatcher.ami.originate_results.append(self.on_originate_result)

    def responder_speaks(self, responder_id: str, lang: str) -> bool:
        responder = self.d.roster().responder(responder_id)
        # Someone off the roster (a supervisor's pick from another list): ask for no one.
        return responder is None or lang in responder.languages

    async def on_bridged(self, call_id: str, data: dict[str, str]) -> str:
        """Add an interpreter if needed; returns the context the caller goes to next."""
        lang = data.get("language") or "en"
        winner = data.get("accepted_by", "")
        if not winner or self.responder_speaks(winner, lang) or data.get("interpreter_line"):
            return CONNECT
        settings = self.d.settings
        destination = str(settings.interpreters.get(lang) or "").strip()
        if not destination:
            await self.d.calls.event(call_id, "interpreter_missing", language=lang,
                                     responder=winner)
            return CONNECT
        reason = destinations.refusal(destination, settings)
        if reason:
            # Configuration is checked at load; this is the belt to those braces.
            log.error("call %s: interpreter line for %s refused: %s", call_id, lang, reason)
            await self.d.calls.event(call_id, "interpreter_refused", language=lang,
                                     reason=reason)
            return CONNECT
        await self.d.redis.hset(call_key(call_id), "interpreter_line", destination)
        self._ring(call_id, lang, destination, 1)
        await self.d.calls.event(call_id, "interpreter_added", language=lang,
                                 destination=destination, responder=winner)
        return CONNECT_WITH_INTERPRETER

    def _ring(self, call_id: str, lang: str, destination: str, attempt: int) -> None:
        self.d.ami.originate(interpreter_leg_id(call_id, lang, attempt),
                             self.d.dial_string(destination), "",
                             {"PR_CALL_ID": call_id, "PR_INTERPRETER": lang}, RING_S,
                             application="ConfBridge", data=f"call-{call_id},pr_room,pr_interpreter")

    async def on_originate_result(self, channel_id: str, result: dict[str, str]) -> None:
        leg = parse_interpreter_leg_id(channel_id)
        if leg is None or result.get("Response") == "Success":
            return
        call_id, lang, attempt = leg
        data = await self.d.calls.redis.hgetall(call_key(call_id))
        still_on = data.get(b"state") == b"bridged"
        retry = still_on and attempt < ATTEMPTS
        await self.d.calls.event(call_id, "interpreter_failed", language=lang,
                                 reason=result.get("Reason", ""), attempt=attempt,
                                 retrying=int(retry))
        if not retry and still_on:
            await self.unavailable(call_id, lang)
        if retry:
            destination = (data.get(b"interpreter_line") or b"").decode()
            task = asyncio.create_task(self._retry(call_id, lang, destination, attempt + 1))
            self._retries.add(task)
            task.add_done_callback(self._retries.discard)

    async def joined(self, call_id: str) -> None:
        """The interpreter line is in the room: only now does the record name it."""
        line = await self.d.calls.field(call_id, "interpreter_line")
        if line and not await self.d.calls.field(call_id, "interpreter"):
            await self.d.redis.hset(call_key(call_id), "interpreter", line)
            await self.d.calls.event(call_id, "interpreter_joined")

    async def unavailable(self, call_id: str, lang: str) -> None:
        """No attempt got through: say so to the caller and the responder, in the room."""
        await self.d.calls.event(call_id, "interpreter_unavailable", language=lang)
        self.d.ami.originate(f"pra-{call_id}-{lang}", f"Local/{lang}@pr-announce/n", "",
                             {"PR_CALL_ID": call_id}, 30, application="ConfBridge",
                             data=f"call-{call_id},pr_room,pr_announcer")

    async def _retry(self, call_id: str, lang: str, destination: str, attempt: int) -> None:
        await asyncio.sleep(self.retry_s)
        if await self.d.calls.field(call_id, "state") == "bridged" and destination:
            self._ring(call_id, lang, destination, attempt)
