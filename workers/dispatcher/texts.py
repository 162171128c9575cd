"""Text conversations at the dispatcher's seams: an offer is a one-time link, not a phone leg.

The dispatcher treats a conversation (a call hash with ``source = text``) as it treats a
call, with four differences, each behind a check on the source in dispatcher.py:

- ``ring``: instead of originating a leg, :meth:`TextOffers.offer` makes the responder a
  one-time link (crisisline.stores.texts, lifetime ``text_link_lifetime_s``) and sends it by
  SMS with no content ("Someone is waiting by text, Spanish, Dorchester. Open: <link>"), or,
  for a desk phone (``PJSIP/...``), puts it on the panel. An SMS that can't be sent is a pass
  (``sms_failed``), so the wave goes on;
- ``hangup_leg``: closes that responder's link (it then says the offer ended, or was taken);
- ``connect``: no interpreter line (there is none for texts); the other links are closed
  (cancel_legs), and a responder who doesn't list the texter's language gets a note;
- ``offer_callback`` / ``give_up``: instead of moving a caller's channel, the texter is told
  honestly how long it has been, that the search goes on, and the phone number
  (Conversations.still_looking), and the search goes on.

A supervisor's or responder's "call them" (command ``text_call``) rings the responder into
the conversation's room, then the texter from the line's own number (never the
responder's).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from crisisline import destinations
from crisisline.prompts.catalog import load_catalog
from crisisline.roster.model import Responder
from crisisline.stores.texts import TextStore
from textline.conversation import Conversations
from textline.sms import SmsClient, SmsError

if TYPE_CHECKING:
    from workers.dispatcher.dispatcher import Dispatcher

log = logging.getLogger(__name__)
CALL_PREFIX = "prt-"  # our ChannelId for the legs of a text handed to a phone call
CALL_RING_S = 45.0


def offer_text(language: str, neighborhood: str | None, link: str) -> str:
    """The offer a responder's phone gets: no word of what the texter wrote."""
    where = neighborhood or "neighborhood not known"
    return f"Someone is waiting by text, {language}, {where}. Open: {link}"


def call_leg_id(call_id: str, who: str, n: int) -> str:
    return f"{CALL_PREFIX}{call_id}-{who}-{n}"


def parse_call_leg_id(channel_id: str) -> tuple[str, str, int] | None:
    if not channel_id.startswith(CALL_PREFIX):
        return None
    parts = channel_id[len(CALL_PREFIX):].rsplit("-", 2)
    if len(parts) != 3 or parts[1] not in ("r", "t") or not parts[2].isdigit():
        return None
    return parts[0], parts[1], int(parts[2])


class TextOffers:
    def __init__(self, dispatcher: Dispatcher) -> None:
        self.d = dispatcher
        self.settings = dispatcher.settings
        self.store = TextStore(dispatcher.redis)
        self.catalog = load_catalog()
        self.sms = SmsClient.from_settings(self.settings)
        self.conversations = Conversations(self.settings, self.store, self.catalog, self.sms)
        self._tasks: set[asyncio.Task] = set()
        self._calls = 0
        # Texter's number per pending call back (the responder's leg rings first).
        self._pending_calls: dict[str, str] = {}
        dispatcher.ami.originate_results.append(self.on_originate_result)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- ring --------------------------------------------------------------------------------
    def offer(self, call_id: str, responder: Responder, cycle: int, wave: int, speaks: bool,
              timeout_s: float) -> None:
        """Ring, for a text: in the background, as an Originate is."""
        self._spawn(self._offer(call_id, responder, wave))

    async def _offer(self, call_id: str, responder: Responder, wave: int) -> None:
        s, store = self.settings, self.store
        desk = bool(destinations.SIP_ENDPOINT.match(responder.phone))
        try:
            data = await store.hash(call_id)
            token = await store.new_link(call_id, responder.id, s.text_link_lifetime_s, desk=desk)
            if desk:
                await store.calls.event(call_id, "text_offer_desk", responder=responder.id,
                                        wave=wave)
                return
            number = destinations.to_e164(responder.phone, s.region)
            if self.sms is None or number is None:
                raise SmsError("no SMS provider" if self.sms is None else "no number")
            info = self.catalog.languages.get(data.get("language", ""))
            body = offer_text(info.name if info else data.get("language", ""),
                              data.get("neighborhood") or None, f"{s.chat_url}/r/{token}")
            await asyncio.to_thread(self.sms.send, number, body)
            await store.calls.event(call_id, "text_offer_sent", responder=responder.id, wave=wave)
        except SmsError as exc:
            log.warning("text %s: offer to %s not sent (%s)", call_id, responder.id, exc)
            await store.offers.passed(call_id, responder.id, "sms_failed")
            await store.close_link(call_id, responder.id)
        except Exception:
            log.exception("text %s: offer to %s failed", call_id, responder.id)
            await store.offers.passed(call_id, responder.id, "failed")
            await store.close_link(call_id, responder.id)

    async def expire(self, call_id: str, rid: str) -> None:
        """Hang up, for a text: the responder's link no longer opens the offer."""
        await self.store.close_link(call_id, rid)

    # ---- connected, or nobody yet ----------------------------------------------------------------
    async def connected(self, call_id: str, data: dict[str, str]) -> None:
        lang = data.get("language") or ""
        winner = data.get("accepted_by", "")
        if winner and not self.d.interpreters.responder_speaks(winner, lang):
            # No interpreter line for texts: the responder's page says so; supervisors see it.
            await self.store.calls.event(call_id, "text_language_note", language=lang,
                                         responder=winner)

    async def still_looking(self, call_id: str, data: dict[str, str], force: bool = False) -> None:
        await self.conversations.still_looking(call_id, data, force=force)

    # ---- a text handed to a phone call --------------------------------------------------------------
    async def call_texter(self, command: dict[str, str]) -> None:
        call_id, rid = command.get("call_id", ""), command.get("responder_id", "")
        data = await self.store.hash(call_id)
        responder = self.d.roster().responder(rid)
        number = data.get("callback_number") or data.get("caller_number") or ""
        s = self.settings
        problem = ("not with this responder" if data.get("accepted_by") != rid or
                   data.get("state") != "bridged" else
                   "responder not on the roster" if responder is None else
                   "no number" if not number else
                   destinations.refusal(number, s) or destinations.refusal(responder.phone, s))
        if problem:
            await self.store.calls.event(call_id, "text_call_failed", reason=problem[:60])
            return
        assert responder is not None
        self._calls += 1
        self._pending_calls[call_leg_id(call_id, "r", self._calls)] = number
        # The responder first (they wait in the room), then the texter, from the line's number.
        self.d.ami.originate(call_leg_id(call_id, "r", self._calls),
                             self.d.dial_string(responder.phone), "", {"PR_CALL_ID": call_id},
                             CALL_RING_S, caller_id=f"People's Response <{s.line_number}>",
                             application="ConfBridge", data=f"call-{call_id},pr_room,pr_responder")
        await self.store.calls.event(call_id, "text_call_ringing", responder=rid)

    async def on_originate_result(self, channel_id: str, result: dict[str, str]) -> None:
        leg = parse_call_leg_id(channel_id)
        if leg is None:
            return
        call_id, who, n = leg
        number = self._pending_calls.pop(channel_id, None) if who == "r" else None
        if result.get("Response") != "Success":
            await self.store.calls.event(call_id, "text_call_failed",
                                         reason=f"{'responder' if who == 'r' else 'texter'} "
                                                f"{result.get('Reason', '')}")
            return
        if who == "r" and number:
            await self.conversations.say(call_id, "text_calling")  # their phone rings now
            self.d.ami.originate(call_leg_id(call_id, "t", n), self.d.dial_string(number), "",
                                 {"PR_CALL_ID": call_id}, CALL_RING_S,
                                 caller_id=f"People's Response <{self.settings.line_number}>",
                                 application="ConfBridge", data=f"call-{call_id},pr_room,pr_caller")
        elif who == "t":
            await self.store.calls.event(call_id, "text_call_connected")
