"""``intake?source=direct|911|988``: the caller's first minute.

Runs the pure flow in :mod:`crisisline.ivr` over the FastAGI session. The call is written
to Redis at once; it is queued (phones ring) right after the ZIP, and only then is
``PR_QUEUED=1`` set: the dialplan sends anyone without it to the fallback ring group, so
a failure anywhere here still ends with a person.

A responder who takes the call while the caller still answers questions has Asterisk move
the caller's channel to [pr-connect]; on the wire that looks like a hang-up (see
:meth:`AgiSession.moved`), so every hang-up is checked before it is called one.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

from agi.app import AgiApp
from agi.handlers import handler
from agi.handlers.callback import returning_caller
from agi.session import ESCAPE_ALL, AgiSession, CallerHungUp, PlaybackFailed
from crisisline import ivr
from crisisline.call import Call, Source, new_call_id
from crisisline.callers import normalize_number
from crisisline.neighborhoods import neighborhood_for_zip

log = logging.getLogger(__name__)
MAX_NOTE = 500
NOTE_SPOKEN_CHARS = 300  # what the whisper reads of a transferring center's note
TRANSFER_VARIABLES = ("TRANSFER_LANGUAGE", "TRANSFER_ZIP", "TRANSFER_NOTE")


def parse_source(value: str | None) -> Source:
    try:
        return Source((value or "direct").strip().lower())
    except ValueError:
        # A typo in the dialplan must not cost the caller anything: treat as the direct line.
        log.error("unknown source %r in AGI URL; treating the call as direct", value)
        return Source.DIRECT


async def _transfer_context(session: AgiSession, source: Source) -> dict[str, str | None]:
    if source is Source.DIRECT:
        return dict.fromkeys(TRANSFER_VARIABLES)
    values: dict[str, str | None] = {}
    for name in TRANSFER_VARIABLES:
        value = await session.get_variable(name)
        values[name] = value.strip()[:MAX_NOTE] if value and value.strip() else None
    return values


def _step_name(step: ivr.Step) -> str:
    if isinstance(step, ivr.Ask):
        return step.question
    if isinstance(step, ivr.Play):
        return step.prompts[0].name
    if isinstance(step, ivr.Record):
        return "message"
    return ""


class Unattended(Exception):
    """Queued, and no dispatcher has taken the call in PR_UNATTENDED_S: stop asking, so the
    waiting room hands the caller to the fallback group at once (a person, not questions)."""


class Intake:
    """One caller's way through the IVR: runs the flow's steps on the session."""

    def __init__(self, session: AgiSession, app: AgiApp, call: Call) -> None:
        self.session = session
        self.app = app
        self.call = call
        self.where = "answer"
        self.queued = False
        self.queued_at = 0.0
        self.claimed = False  # a dispatcher has taken the call (it keeps Asterisk told)
        self.message: str | None = None

    async def _check_attended(self) -> None:
        if not self.queued or self.claimed:
            return
        if await self.app.store.field(self.call.id, "owner"):
            self.claimed = True
        elif time.time() - self.queued_at > self.app.settings.unattended_s:
            raise Unattended(self.call.id)

    async def step(self, step: ivr.Step) -> ivr.Reply | None:
        await self._check_attended()
        name = _step_name(step)
        if name and name != self.where:
            self.where = name
            if self.queued:  # the record keeps where the caller really was
                await self.app.store.update(self.call.id, step=name)
        if isinstance(step, ivr.Chosen):
            self.call.language = step.language
            await self.app.store.update(self.call.id, language=step.language, step="language")
            await self.session.set_variable("PR_LANGUAGE", step.language)
            return None
        if isinstance(step, ivr.Queue):
            await self.queue(step)
            return None
        if isinstance(step, ivr.Record):
            await self.record_message()
            return None
        if isinstance(step, ivr.Play):
            return await self.play(step)
        return await self.ask(step)

    async def play(self, step: ivr.Play) -> ivr.Reply | None:
        for prompt in step.prompts:
            key = await self.session.stream_file(self.app.prompt(prompt.language, prompt.name),
                                                 step.interrupt)
            if key:
                return ivr.Reply(key, False)
        return None

    async def ask(self, step: ivr.Ask) -> ivr.Reply:
        session, app = self.session, self.app
        if step.listen and step.max_digits == 1:
            return await self._ask_by_key_or_voice(step)
        *leading, last = step.prompts
        for prompt in leading:
            # A menu: any key during an option ends it at once.
            key = await session.stream_file(app.prompt(prompt.language, prompt.name),
                                            ESCAPE_ALL if step.max_digits == 1 else "")
            if key:
                return ivr.Reply(key, False)
        # GET DATA returns at the fifth ZIP digit; a "#" typed after it lands in the promise,
        # which plays next and takes only 0: it is dropped there, never read as an answer.
        digits, timed_out = await session.get_data(app.prompt(last.language, last.name),
                                                   step.timeout_ms, step.max_digits)
        return ivr.Reply(digits, timed_out)

    async def _ask_by_key_or_voice(self, step: ivr.Ask) -> ivr.Reply:
        """The language menu when some of its languages can be named aloud.

        The wait after the options (GET DATA's silence otherwise) is a RECORD FILE that any
        key ends at once, so a caller who presses a key is never slowed down. What was said
        is kept only until it is recognised: it is not a message, and it is deleted at once.
        """
        session, app = self.session, self.app
        for prompt in step.prompts:
            key = await session.stream_file(app.prompt(prompt.language, prompt.name), ESCAPE_ALL)
            if key:
                return ivr.Reply(key, False)
        folder = app.settings.recordings_path
        folder.mkdir(parents=True, exist_ok=True)
        stem = folder / f"choice-{self.call.id}-{uuid.uuid4().hex[:8]}"
        wav = stem.with_suffix(".wav")
        try:
            reply = await session.record_file(str(stem), "wav", ESCAPE_ALL, step.timeout_ms, 0,
                                              beep=False)
            if reply.data == "dtmf" and reply.number > 0:
                return ivr.Reply(chr(reply.number), False)
            if reply.result == "-1" or not wav.exists():
                return ivr.Reply.silence()  # could not record: keys only, the default follows
            spoken = await app.menu.recognize(wav, step.listen)
        finally:
            wav.unlink(missing_ok=True)
        await app.store.event(self.call.id, "language_spoken", recognised=spoken or "")
        return ivr.Reply("", True, spoken=spoken)

    async def queue(self, step: ivr.Queue) -> None:
        """Into the queue: phones start ringing. PR_QUEUED goes last, once Redis has it."""
        call, session, s = self.call, self.session, self.app.settings
        call.language, call.zip_code, call.neighborhood = step.language, step.zip_code, \
            step.neighborhood
        await self.app.store.enqueue(call)
        self.queued, self.queued_at = True, time.time()
        await self.app.store.update(call.id, step=self.where)
        if call.note:
            self._speak_note()
        attended_until = int(time.time() + s.unattended_s)
        for name, value in (("PR_NEIGHBORHOOD", call.neighborhood or ""),
                            ("PR_ATTENDED_UNTIL", str(attended_until)), ("PR_QUEUED", "1")):
            await session.set_variable(name, value)

    def _speak_note(self) -> None:
        """The transferring center's note as audio for the whisper, off the call's path."""
        call, app = self.call, self.app
        voice = app.voice_for(call.language)
        dest = app.settings.recordings_path / f"note-{call.id}.wav"

        async def render() -> None:
            from crisisline.prompts.render import speak_text

            text = (call.note or "")[:NOTE_SPOKEN_CHARS]
            try:
                await asyncio.to_thread(speak_text, text, voice, dest)
            except Exception as exc:  # the responder still sees it in the panel
                log.warning("call %s: the transfer note could not be spoken: %s", call.id, exc)
                return
            await app.store.update(call.id, x_note_file=str(dest.with_suffix("")))

        app.spawn(render())

    async def record_message(self) -> None:
        """Only after the caller's explicit yes: a short message for the responder.

        Bounded (max_message_s), ends on # or 3 s of silence. A responder who takes the call
        meanwhile moves the caller on: what was said so far is kept (they said yes)."""
        call, session, app = self.call, self.session, self.app
        folder = app.settings.recordings_path
        folder.mkdir(parents=True, exist_ok=True)
        path = str(folder / f"message-{call.id}")
        wav = folder / f"message-{call.id}.wav"
        try:
            await session.stream_file(app.prompt(call.language, "record_message"))
        except PlaybackFailed as exc:
            log.warning("call %s: record_message prompt missing (%s); not recording", call.id, exc)
            return
        await app.store.update(call.id, message_state="recording")
        try:
            reply = await session.record_file(path, "wav", "#", app.settings.max_message_s * 1000, 3)
            samples = reply.endpos or 0
        except CallerHungUp:
            if await session.moved() and wav.exists() and wav.stat().st_size > 44:
                await self._keep_message(path, samples=-1)
            else:
                wav.unlink(missing_ok=True)  # the caller left mid-message: nothing is kept
                await app.store.update(call.id, message_state="")
            raise
        if samples <= 0:
            wav.unlink(missing_ok=True)
            await app.store.update(call.id, message_state="")
            await app.store.event(call.id, "message_empty")
            return
        await self._keep_message(path, samples)

    async def _keep_message(self, path: str, samples: int) -> None:
        call, app = self.call, self.app
        self.message = path
        call.extra["message_file"] = path
        await app.store.update(call.id, x_message_file=path, message_state="done")
        await app.store.event(call.id, "message_recorded", samples=max(samples, 0),
                              cut_short=int(samples < 0))
        await app.enqueue_transcription(call.id, path + ".wav", call.language)


@handler("intake")
async def intake(session: AgiSession, app: AgiApp) -> None:
    s = app.settings
    h = session.headers
    source = parse_source(h.query.get("source"))
    number = normalize_number(h.get("agi_callerid"), s.region, h.get("agi_callingpres"))
    if source is Source.DIRECT and await returning_caller(session, app, number):
        return  # back for their callback: they wait on the line in its place, or keep it
    call = Call(
        id=new_call_id(),
        source=source,
        language=s.default_language,
        priority=s.priority_for(source.value),
        caller_number=number,
        channel=h.channel,
        pbx_node=h.node,  # on a line of several Asterisk nodes, the caller's
        # Channel names start again at 00000000 when Asterisk restarts; uniqueids don't.
        extra={"uniqueid": h.get("agi_uniqueid")[:150]},
    )
    session.call_id = call.id
    await app.store.create(call)
    run = Intake(session, app, call)
    try:
        # First, so that the dialplan's h extension can report a hang-up at any point.
        await session.set_variable("PR_CALL_ID", call.id)
        await session.answer()
        transfer = await _transfer_context(session, source)
        call.note = transfer["TRANSFER_NOTE"]
        if call.note:
            await app.store.update(call.id, note=call.note)
        ctx = ivr.IntakeContext(
            source=source, languages=s.languages, default_language=s.default_language,
            page_size=s.menu_page_size, offered=app.menu.offered(),
            spoken_languages=app.menu.spoken(),
            menu_timeout_ms=s.menu_timeout_ms, zip_timeout_ms=s.zip_timeout_ms,
            consent_timeout_ms=s.consent_timeout_ms, max_retries=s.max_retries,
            transfer_language=transfer["TRANSFER_LANGUAGE"], transfer_zip=transfer["TRANSFER_ZIP"],
            transfer_note=call.note, neighborhood_for_zip=neighborhood_for_zip,
            ring_during_intake=s.ring_during_intake,
        )
        flow = ivr.intake(ctx)
        step = next(flow)
        while True:
            reply = await run.step(step)
            step = flow.send(reply)
    except StopIteration as done:
        result: ivr.IntakeResult = done.value
    except Unattended:
        log.warning("call %s: no dispatcher took it in %d s; no more questions, the waiting "
                    "room hands the caller to the fallback group", call.id, s.unattended_s)
        await app.store.update(call.id, ivr_done="1", step="waiting_room")
        await app.store.event(call.id, "intake_done", language=call.language, unattended=1)
        return
    except CallerHungUp:
        moved = await session.moved()
        if moved:
            # A responder took the call (or the dispatcher moved the caller): not a hang-up.
            await app.store.update(call.id, ivr_done="1")
            await app.store.event(call.id, "moved_from_intake", to=moved, step=run.where)
        elif run.queued or run.where != "answer":
            await app.store.abandon(call.id, run.where)
        else:
            await app.store.abandon(call.id, "answer")
        return
    except PlaybackFailed as exc:
        # A missing prompt makes Asterisk report AGISTATUS=FAILURE whatever we do next, and
        # the dialplan will ring the fallback group: make Redis agree before it does.
        log.error("call %s: prompt %s could not be played; caller goes to the fallback group",
                  call.id, exc)
        await app.store.event(call.id, "prompt_failed", prompt=str(exc), step=run.where)
        await app.store.to_fallback(call.id, "prompt_failed")
        await session.set_variable("PR_QUEUED", "")
        await session.fail()
        return

    await app.store.update(call.id, ivr_done="1", step="waiting_room",
                           consented_to_message=result.consented_to_message)
    await app.store.event(call.id, "intake_done", language=result.language,
                          neighborhood=result.neighborhood or "",
                          consented=result.consented_to_message,
                          defaulted=",".join(result.defaulted),
                          person_now=result.person_now_at or "")
