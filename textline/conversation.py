"""What happens to a text conversation, whoever asks: the SMS webhook, the chat page, a
responder's page, the panel, the dispatcher. Async, over crisisline's stores.

The decisions are crisisline.textflow's (pure); this runs them: Redis (TextStore,
CallStore, OfferStore), the line's texts written in the texter's language (or the default
language for all of them, never a mix), and SMS through the provider for SMS texters. A
text to a number that sent STOP is never sent. Nothing here logs or emits a message's
words; events say who wrote.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy.engine import Engine

from crisisline.call import Call, Source, new_call_id
from crisisline.config import Settings
from crisisline.neighborhoods import neighborhood_for_zip
from crisisline.prompts.catalog import Catalog
from crisisline.records import texts as sql_texts
from crisisline.stores.texts import TextStore, text_state
from crisisline.textflow import (
    CHAT,
    ENDED,
    SMS,
    TEXTER_PROMPTS,
    Decision,
    Reply,
    TextContext,
    TextState,
    complete_languages,
    on_chat,
    on_menu_timeout,
    on_sms,
    sms_segments,
    texts_language,
    write,
)
from textline.sms import SmsClient, SmsError

log = logging.getLogger(__name__)
WAITING = frozenset({"ivr", "waiting", "dispatching"})
LIVE = WAITING | {"bridged"}


@dataclass(frozen=True)
class Outcome:
    """What became of one message from the texter."""

    call_id: str | None
    status: str  # kept, replied, duplicate, too_long, slow_down, stopped, erased, ignored
    replies: tuple[str, ...] = ()


def text_context(settings: Settings, catalog: Catalog) -> TextContext:
    texts = {name: catalog.prompts[name].texts for name in TEXTER_PROMPTS if name in catalog.prompts}
    return TextContext(languages=tuple(settings.languages),
                       default_language=settings.default_language,
                       text_languages=complete_languages(texts),
                       neighborhood_for_zip=neighborhood_for_zip,
                       known=frozenset(catalog.languages))


class Conversations:
    def __init__(self, settings: Settings, store: TextStore, catalog: Catalog,
                 sms: SmsClient | None = None, engine: Engine | None = None) -> None:
        self.settings = settings
        self.store = store
        self.catalog = catalog
        self.sms = sms
        self.engine = engine
        self.ctx = text_context(settings, catalog)

    # ---- the line's words ------------------------------------------------------------------
    def language_of(self, data: dict[str, str]) -> str:
        """The language the line writes to this texter in (texts_language)."""
        return texts_language(data.get("language") or None, self.ctx)

    def render(self, replies: Iterable[Reply], language: str | None) -> tuple[str, ...]:
        def native(lang: str) -> str:
            info = self.catalog.languages.get(lang)
            return info.native_name if info else lang

        return write(replies, language, self.ctx, self.catalog.text,
                     phone=self.settings.line_number, native=native).texts

    def text(self, prompt: str, language: str | None, **fields: str) -> str:
        return self.render([Reply(prompt, tuple(fields.items()))], language)[0]

    async def tell(self, call_id: str | None, data: dict[str, str], replies: Iterable[Reply],
                   number: str | None = None) -> tuple[str, ...]:
        """Write the line's replies into the conversation (if there is one) and, for an SMS
        texter, send them. Returns the texts."""
        texts = self.render(replies, data.get("language") or None)
        number = number or data.get("caller_number") or None
        for body in texts:
            if call_id and not await self.store.add(call_id, "line", body):
                continue  # gone, or erased meanwhile: nothing more goes to the texter
            if number and data.get("x_channel", SMS) == SMS:
                await self.send_sms(call_id, number, body)
        return texts

    async def say(self, call_id: str, prompt: str, **fields: str) -> tuple[str, ...]:
        data = await self.store.hash(call_id)
        if not data:
            return ()
        return await self.tell(call_id, data, [Reply(prompt, tuple(fields.items()))])

    async def send_sms(self, call_id: str | None, number: str, body: str) -> bool:
        if self.sms is None:
            if call_id:
                await self.store.calls.event(call_id, "sms_failed", reason="no_provider")
            return False
        if await self.store.opted_out(number):
            return False
        try:
            await asyncio.to_thread(self.sms.send, number, body)
        except SmsError as exc:
            if call_id:
                await self.store.calls.event(call_id, "sms_failed", reason=str(exc)[:60])
            return False
        return True

    # ---- a message from the texter ------------------------------------------------------------
    async def _new(self, channel: str, state: TextState, *, number: str | None = None,
                   key: str | None = None) -> str:
        call = Call(id=new_call_id(), source=Source.TEXT,
                    language=state.language or self.settings.default_language,
                    priority=self.settings.priority_for(Source.TEXT.value),
                    caller_number=number, extra={"channel": channel, "stage": state.stage})
        await self.store.create(call, number=number, key=key, ttl_s=self.settings.text_idle_end_s,
                                remember_s=self.settings.retention_days * 86400)
        await self.store.calls.event(call.id, "text_started", channel=channel)
        return call.id

    async def _apply(self, call_id: str, data: dict[str, str], body: str, decision: Decision,
                     number: str | None = None) -> Outcome:
        if decision.keep:
            await self.store.add(call_id, "texter", body)
        if decision.state != text_state(data) or decision.rezoned:
            await self.store.save_state(call_id, decision.state)
            data = {**data, "language": decision.state.language or data.get("language", "")}
            if decision.rezoned:
                await self.store.calls.event(call_id, "neighborhood_given",
                                             neighborhood=decision.state.neighborhood or "")
        if decision.queue:
            await self.store.queue(call_id)
        texts = await self.tell(call_id, data, decision.replies, number)
        return Outcome(call_id, "kept" if decision.keep else "replied", texts)

    async def from_sms(self, number: str, body: str, sid: str) -> Outcome:
        """A text from a phone (the webhook, signature already checked)."""
        if not await self.store.first_time(sid):
            return Outcome(None, "duplicate")
        s = self.settings
        call_id = await self.store.by_number(number)
        data = await self.store.hash(call_id) if call_id else {}
        if data.get("state") not in LIVE:
            call_id, data = None, {}
        hits = await self.store.hits("sms", number)
        if hits > s.text_rate_per_address:
            # Said once per minute; the rest of a flood is dropped (and never kept).
            texts = await self.tell(None, data, [Reply("text_slow_down")], number) \
                if hits == s.text_rate_per_address + 1 else ()
            return Outcome(call_id, "slow_down", texts)
        waiting = not data or data.get("state") in WAITING
        decision = on_sms(text_state(data) if data else TextState(), body, self.ctx,
                          s.retention_days, waiting=waiting)
        if await self.store.opted_out(number):
            if not decision.start:
                # Carriers block texts to a number that sent STOP until START; nothing to do.
                return Outcome(None, "ignored")
            await self.store.opt_in(number)
        if decision.stop:
            texts = await self.tell(call_id, data, decision.replies, number)
            await self.store.opt_out(number)
            if call_id:
                await self.end(call_id, "stop", tell=False)
            return Outcome(call_id, "stopped", texts)
        if decision.erase:
            texts = await self.tell(None, data, decision.replies, number)
            # Their conversation now, or the last one (ended, maybe already in SQL).
            target = call_id or await self.store.last_of(number)
            if target:
                await self.erase(target)
            return Outcome(target, "erased", texts)
        if sms_segments(body) > s.text_max_sms_segments:
            texts = await self.tell(call_id, data, [Reply("text_too_long")], number)
            return Outcome(call_id, "too_long", texts)
        if call_id is None:
            call_id = await self._new(SMS, TextState(), number=number)
            data = await self.store.hash(call_id)
        else:
            await self.store.touch(number=number, ttl_s=s.text_idle_end_s)
        return await self._apply(call_id, data, body, decision, number)

    async def chat_start(self, key: str, body: str, language: str | None,
                         zip_code: str | None) -> Outcome:
        """The chat page's first message, with the language chosen on the page."""
        decision = on_chat(TextState(), body, self.ctx, language=language, zip_code=zip_code)
        call_id = await self._new(CHAT, TextState(stage="new", language=decision.state.language),
                                  key=key)
        data = await self.store.hash(call_id)
        return await self._apply(call_id, data, body, decision)

    async def chat_message(self, call_id: str, body: str,
                           data: dict[str, str] | None = None) -> Outcome:
        data = data if data is not None else await self.store.hash(call_id)
        if data.get("state") not in LIVE:
            return Outcome(call_id, "ended")
        decision = on_chat(text_state(data), body, self.ctx,
                           waiting=data.get("state") in WAITING)
        return await self._apply(call_id, data, body, decision)

    # ---- people on the other side ---------------------------------------------------------------
    async def connected(self, call_id: str, who: str) -> None:
        """``who`` just took it (OfferStore.accept said yes): that is the moment a person is
        with the texter (time to a human), and the texter is told."""
        data = await self.store.hash(call_id)
        now = time.time()
        waited = now - float(data.get("created_at") or now)
        await self.store.calls.update(call_id, connected_at=f"{now:.3f}",
                                      time_to_human_s=f"{waited:.3f}")
        await self.store.calls.event(call_id, "bridged", responder=who,
                                     time_to_human_s=f"{waited:.3f}")
        await self.tell(call_id, data, [Reply("text_connected")])

    async def from_staff(self, call_id: str, sender: str, author: str, body: str,
                         data: dict[str, str] | None = None) -> bool:
        """A responder's (or a supervisor's) message to the texter: into the conversation,
        and to the texter's phone for SMS; False when the conversation is no longer live."""
        data = data if data is not None else await self.store.hash(call_id)
        if data.get("state") not in LIVE or not await self.store.add(call_id, sender, body, author):
            return False
        if data.get("x_channel") == SMS and data.get("caller_number"):
            await self.send_sms(call_id, data["caller_number"], body)
        return True

    async def step_in(self, call_id: str, supervisor: str) -> bool:
        """A supervisor writes to a texter nobody has taken yet: they take it (as a call's
        supervisor who joins to speak does). True when it is theirs now or already someone's."""
        data = await self.store.hash(call_id)
        if data.get("state") not in WAITING:
            return data.get("state") == "bridged"
        who = f"supervisor:{supervisor}"
        if await self.store.offers.accept(call_id, who):
            await self.connected(call_id, who)
            return True
        return (await self.store.hash(call_id)).get("state") == "bridged"

    # ---- endings ------------------------------------------------------------------------------------
    async def end(self, call_id: str, reason: str, tell: bool = True) -> bool:
        data = await self.store.hash(call_id)
        if data.get("state") not in LIVE:
            return False
        if tell:
            await self.tell(call_id, data, [Reply("text_ended")])
        done = await self.store.end(call_id, reason)
        if data.get("accepted_by") and not data["accepted_by"].startswith("supervisor:"):
            await self.store.offers.end_call(data["accepted_by"], call_id, self.settings.wrapup_s)
        return done

    async def erase(self, call_id: str) -> None:
        """DELETE: ended, then gone from Redis and SQL at once (the record keeps only
        de-identified figures)."""
        await self.end(call_id, "texter_deleted", tell=False)
        await self.store.erase(call_id, self.settings.retention_days)
        if self.engine is not None:
            await asyncio.to_thread(sql_texts.erase, self.engine, call_id)

    async def still_looking(self, call_id: str, data: dict[str, str], force: bool = False) -> bool:
        """Nobody has taken it: how long it has been, what happens next, the phone number. At
        most every ``text_update_s`` (``force``: every minute), so a long wait isn't a flood."""
        now = time.time()
        last = float(data.get("x_last_update_at") or 0)
        gap = 60.0 if force else float(self.settings.text_update_s)
        created = float(data.get("created_at") or now)
        if now - max(last, created) < gap or data.get("state") not in WAITING:
            return False
        await self.store.calls.update(call_id, x_last_update_at=f"{now:.3f}")
        minutes = str(max(1, int((now - created) // 60)))
        await self.tell(call_id, data, [Reply("text_still_looking", (("minutes", minutes),))])
        await self.store.calls.event(call_id, "texter_told_still_looking", minutes=minutes)
        return True

    async def menu_timeout(self, call_id: str, data: dict[str, str]) -> bool:
        decision = on_menu_timeout(text_state(data), self.ctx, self.settings.retention_days)
        if not decision.queue:
            return False
        await self._apply(call_id, data, "", decision)
        return True


__all__ = ["ENDED", "Conversations", "Outcome", "text_context"]
