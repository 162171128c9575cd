"""``intake?source=direct|911|988``: the caller's first minute.

Runs the pure flow in :mod:`crisisline.ivr` over the FastAGI session, writes the call to
Redis, and only then sets ``PR_QUEUED=1``: the dialplan sends anyone without it to the
fallback ring group, so a failure anywhere here still ends with a person.
"""

from __future__ import annotations

import logging
import uuid

from agi.app import AgiApp
from agi.handlers import handler
from agi.session import ESCAPE_ALL, AgiSession, CallerHungUp, PlaybackFailed
from crisisline import ivr
from crisisline.call import Call, Source, new_call_id
from crisisline.callers import normalize_number
from crisisline.neighborhoods import neighborhood_for_zip

log = logging.getLogger(__name__)
MAX_NOTE = 500
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


async def _run_step(session: AgiSession, app: AgiApp, step: ivr.Step,
                    call_id: str = "") -> ivr.Reply | None:
    if isinstance(step, ivr.Play):
        for prompt in step.prompts:
            await session.stream_file(app.prompt(prompt.language, prompt.name))
        return None
    if step.listen and step.max_digits == 1:
        return await _ask_by_key_or_voice(session, app, step, call_id)
    *leading, last = step.prompts
    if step.max_digits == 1:
        # A menu: any key during an option ends it at once.
        for prompt in leading:
            key = await session.stream_file(app.prompt(prompt.language, prompt.name), ESCAPE_ALL)
            if key:
                return ivr.Reply(key, False)
    else:
        for prompt in leading:
            await session.stream_file(app.prompt(prompt.language, prompt.name))
    digits, timed_out = await session.get_data(app.prompt(last.language, last.name),
                                               step.timeout_ms, step.max_digits)
    return ivr.Reply(digits, timed_out)


async def _ask_by_key_or_voice(session: AgiSession, app: AgiApp, step: ivr.Ask,
                               call_id: str) -> ivr.Reply:
    """The language menu when some of its languages can be named aloud.

    The wait after the options (GET DATA's silence otherwise) is a RECORD FILE that any key
    ends at once, so a caller who presses a key is never slowed down. What was said is kept
    only until it is recognised: it is not a message, and it is deleted right away.
    """
    for prompt in step.prompts:
        key = await session.stream_file(app.prompt(prompt.language, prompt.name), ESCAPE_ALL)
        if key:
            return ivr.Reply(key, False)
    folder = app.settings.recordings_path
    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / f"choice-{call_id or 'call'}-{uuid.uuid4().hex[:8]}"
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
    if call_id:
        await app.store.event(call_id, "language_spoken", recognised=spoken or "")
    return ivr.Reply("", True, spoken=spoken)


def _step_name(step: ivr.Step) -> str:
    return step.question if isinstance(step, ivr.Ask) else step.prompts[0].name


async def record_message(session: AgiSession, app: AgiApp, call: Call) -> str | None:
    """Only after the caller's explicit yes: a short message for the responder.

    Bounded (max_message_s), ends on # or 3 s of silence. Returns the path without its
    extension (as STREAM FILE wants it), or None when nothing usable was recorded.
    """
    folder = app.settings.recordings_path
    folder.mkdir(parents=True, exist_ok=True)
    path = str(folder / f"message-{call.id}")
    try:
        await session.stream_file(app.prompt(call.language, "record_message"))
        reply = await session.record_file(path, "wav", "#", app.settings.max_message_s * 1000, 3)
    except CallerHungUp:
        # The caller left mid-message: nothing of it is kept.
        (folder / f"message-{call.id}.wav").unlink(missing_ok=True)
        raise
    except PlaybackFailed as exc:
        log.warning("call %s: record_message prompt missing (%s); not recording", call.id, exc)
        return None
    if reply.endpos is not None and reply.endpos <= 0:
        (folder / f"message-{call.id}.wav").unlink(missing_ok=True)
        await app.store.event(call.id, "message_empty")
        return None
    await app.store.event(call.id, "message_recorded", samples=reply.endpos or 0)
    return path


@handler("intake")
async def intake(session: AgiSession, app: AgiApp) -> None:
    s = app.settings
    h = session.headers
    source = parse_source(h.query.get("source"))
    call = Call(
        id=new_call_id(),
        source=source,
        language=s.default_language,
        priority=s.priority_for(source.value),
        caller_number=normalize_number(h.get("agi_callerid"), s.region, h.get("agi_callingpres")),
        channel=h.get("agi_channel")[:200],
    )
    session.call_id = call.id
    await app.store.create(call)

    where = "answer"
    try:
        # First, so that the dialplan's h extension can report a hang-up at any point.
        await session.set_variable("PR_CALL_ID", call.id)
        await session.answer()
        transfer = await _transfer_context(session, source)
        call.note = transfer["TRANSFER_NOTE"]
        ctx = ivr.IntakeContext(
            source=source, languages=s.languages, default_language=s.default_language,
            page_size=s.menu_page_size, offered=app.menu.offered(),
            spoken_languages=app.menu.spoken(),
            menu_timeout_ms=s.menu_timeout_ms, zip_timeout_ms=s.zip_timeout_ms,
            consent_timeout_ms=s.consent_timeout_ms, max_retries=s.max_retries,
            transfer_language=transfer["TRANSFER_LANGUAGE"], transfer_zip=transfer["TRANSFER_ZIP"],
            transfer_note=call.note, neighborhood_for_zip=neighborhood_for_zip,
        )
        flow = ivr.intake(ctx)
        step = next(flow)
        while True:
            where = _step_name(step)
            reply = await _run_step(session, app, step, call.id)
            step = flow.send(reply)
    except StopIteration as done:
        result: ivr.IntakeResult = done.value
    except CallerHungUp:
        await app.store.abandon(call.id, where)
        return
    except PlaybackFailed as exc:
        # A missing prompt makes Asterisk report AGISTATUS=FAILURE whatever we do next, and
        # the dialplan will ring the fallback group: make Redis agree before it does.
        log.error("call %s: prompt %s could not be played; caller goes to the fallback group",
                  call.id, exc)
        await app.store.event(call.id, "prompt_failed", prompt=str(exc), step=where)
        await app.store.to_fallback(call.id, "prompt_failed")
        await session.fail()
        return

    call.language = result.language
    call.zip_code = result.zip_code
    call.neighborhood = result.neighborhood
    call.consented_to_message = result.consented_to_message
    await app.store.update(call.id, language=call.language,
                           consented_to_message=call.consented_to_message)
    message = None
    if call.consented_to_message:
        try:
            message = await record_message(session, app, call)
        except CallerHungUp:
            await app.store.abandon(call.id, "message")
            return
        if message:
            call.extra["message_file"] = message
    await app.store.enqueue(call)
    if message:
        await app.enqueue_transcription(call.id, message + ".wav", call.language)
    await app.store.event(call.id, "intake_done", language=call.language,
                          neighborhood=call.neighborhood or "", consented=call.consented_to_message,
                          defaulted=",".join(result.defaulted))
    # These work on a dead channel too; a hang-up from here on is seen by the next prompt or,
    # after we close, by the dialplan's h extension (hangup handler).
    await session.set_variable("PR_LANGUAGE", call.language)
    await session.set_variable("PR_QUEUED", "1")
    try:
        await session.stream_file(app.prompt(call.language, "waiting"))
    except CallerHungUp:
        await app.store.abandon(call.id, "waiting")
    except PlaybackFailed as exc:
        # The call is queued and the dialplan would send the caller to the fallback group
        # (AGISTATUS=FAILURE); better a person there than two paths racing for one caller.
        log.error("call %s: prompt %s missing after queueing; caller goes to fallback", call.id, exc)
        await app.store.to_fallback(call.id, "prompt_failed")
        await session.set_variable("PR_QUEUED", "")
        await session.fail()
