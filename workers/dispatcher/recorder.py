"""Copies the Redis event stream into SQL: a call record per call, its timeline, callbacks,
and a text conversation's messages when it ends.

A callback request's row is kept true on every event of its call (attempts, last result,
status, time to a human; crisisline/records/callbacks.py). Once the request is over and its
call has ended, its number goes at once, from SQL and from the call's hash in Redis.

Reads ``pr:events`` through a consumer group, so a restart resumes where it stopped and
nothing is lost; writes are idempotent (upserts by call id, events and messages by stream
id), so a replayed event changes nothing. No audio, ever. A conversation the texter erased
(DELETE) is never written back: its messages are checked against the erasure marker after
they are written, and removed again if it came meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from pathlib import Path

from redis.asyncio import Redis
from redis.exceptions import ResponseError
from sqlalchemy import insert, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from crisisline.records import callbacks as sql_callbacks
from crisisline.records import texts as sql_texts
from crisisline.records.schema import CallEvent, CallRecord
from crisisline.stores.calls import EVENTS, call_key
from crisisline.stores.offers import OfferStore
from crisisline.stores.texts import TextStore

log = logging.getLogger(__name__)
GROUP = "recorder"
BATCH = 500  # events written per transaction, at most
EVERY_S = 0.5  # how often a trickle of events is written
# Events a recorder took and never acknowledged (it was killed: each process is its own
# consumer) are taken over by a live one once idle this long, looked for this often.
ORPHAN_IDLE_S = 60.0
ORPHAN_EVERY_S = 15.0
# Events after which the call's record is final.
TERMINAL = {"call_ended": "bridged", "caller_hung_up": "abandoned", "fallback": "fallback",
            "max_wait_reached": None, "callback_failed": "callback"}
# What the record says for the state a call ended in.
OUTCOME_OF_STATE = {"ended": "bridged", "abandoned": "abandoned", "fallback": "fallback",
                    "callback": "callback", "callback_failed": "callback", "cancelled": "callback"}


def terminal(body: dict[str, str]) -> bool:
    """The event ends the call: a callback request that was cancelled after its caller left
    ends it too (``ends_call``)."""
    kind = body.get("type", "")
    return kind in TERMINAL or (kind == "callback_cancelled" and body.get("ends_call") == "1")


def _ts(value: str | None) -> datetime | None:
    try:
        return datetime.fromtimestamp(float(value), UTC) if value else None
    except ValueError:
        return None


FINAL_TRANSCRIPT = {"done", "empty", "failed", "no_model", "skipped_ended"}


def delete_message_audio(data: dict[str, str]) -> None:
    """The call is over: its message audio goes once its transcript is stored (or can't be).
    A transcript still pending is left to the worker, which deletes it for an ended call."""
    message = data.get("x_message_file")
    status = data.get("transcript_status", "")
    if message and (status in FINAL_TRANSCRIPT or not status):
        Path(message + ".wav").unlink(missing_ok=True)


class Recorder:
    def __init__(self, redis: Redis, engine: Engine, consumer: str, wrapup_s: float = 60.0) -> None:
        self.wrapup_s = wrapup_s
        self.redis = redis
        self.engine = engine
        self.consumer = consumer
        self.offers = OfferStore(redis)
        self.texts = TextStore(redis)

    async def ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(EVENTS, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def orphans(self) -> list:
        """Events another recorder took and never acknowledged (it died), now ours."""
        got = await self.redis.xautoclaim(EVENTS, GROUP, self.consumer,
                                          min_idle_time=int(ORPHAN_IDLE_S * 1000),
                                          start_id="0-0", count=BATCH)
        return [e for e in got[1] if e and e[1]]  # (deleted entries come back empty)

    async def run(self, stop: asyncio.Event) -> None:
        pending_first = True
        grouped = False
        orphans_at = time.monotonic() + ORPHAN_EVERY_S
        while not stop.is_set():
            try:
                if not grouped:
                    await self.ensure_group()
                    grouped = True
                got = None
                if not pending_first and time.monotonic() >= orphans_at:
                    orphans_at = time.monotonic() + ORPHAN_EVERY_S
                    adopted = await self.orphans()
                    if adopted:
                        log.warning("recorder: taking over %d events a stopped recorder left",
                                    len(adopted))
                        got = [(EVENTS, adopted)]
                if got is None:
                    # Our own unacknowledged events first (a crash mid-write), then new ones.
                    start = "0" if pending_first else ">"
                    got = await self.redis.xreadgroup(GROUP, self.consumer, {EVENTS: start},
                                                      count=BATCH, block=500)
            except ResponseError as exc:
                if "NOGROUP" in str(exc):
                    # Redis came back without its data: the stream and our group are new.
                    log.warning("recorder: consumer group gone (Redis restarted empty); "
                                "creating it again")
                    grouped, pending_first = False, True
                    continue
                log.warning("recorder: %s", exc)
                await asyncio.sleep(1)
                continue
            except Exception as exc:
                log.warning("recorder: %s", exc)
                grouped = False
                await asyncio.sleep(1)
                continue
            entries = got[0][1] if got else []
            if pending_first and not entries:
                pending_first = False
                continue
            if entries:
                began = time.monotonic()
                try:
                    await self.handle(entries)
                except Exception:
                    log.exception("recorder: writing %d events failed; will retry", len(entries))
                    pending_first = True
                    await asyncio.sleep(1)
                    continue
                if len(entries) < BATCH:
                    # A trickle of events is written a few times a second, not one SQL
                    # transaction per event (the records are history; the live view reads
                    # Redis): at 500 callers that was a quarter of the dispatcher's CPU.
                    await asyncio.sleep(max(0.0, EVERY_S - (time.monotonic() - began)))

    async def handle(self, entries: list) -> None:
        events = [(eid.decode(), {k.decode(): v.decode() for k, v in body.items()})
                  for eid, body in entries]
        ids = list(dict.fromkeys(cid for _, body in events if (cid := body.get("call_id"))))
        async with self.redis.pipeline(transaction=False) as pipe:  # one round trip a batch
            for cid in ids:
                pipe.hgetall(call_key(cid))
            raws = await pipe.execute() if ids else []
        calls = {cid: {k.decode(): v.decode() for k, v in raw.items()}
                 for cid, raw in zip(ids, raws, strict=True)}
        # A text conversation that ended: its messages go to SQL with its record.
        messages = {}
        for _, body in events:
            cid = body.get("call_id", "")
            if terminal(body) and calls.get(cid, {}).get("source") == "text":
                messages[cid] = await self.texts.messages(cid, count=10_000)
        await asyncio.to_thread(self.write_retrying, events, calls, messages)
        for cid in (c for c, data in calls.items() if data.get("source") == "text"):
            if await self.texts.erased(cid):
                # Erased meanwhile: what this batch wrote of it goes too (its timeline as well).
                await asyncio.to_thread(sql_texts.erase, self.engine, cid)
            elif cid in messages:
                await self.texts.archived(cid)
        for _, body in events:
            if terminal(body):
                data = calls.get(body.get("call_id", ""), {})
                if data.get("accepted_by"):
                    # Normally freed when their leg hangs up (CallWatch); this covers a leg
                    # whose Hangup this process never saw.
                    await self.offers.end_call(data["accepted_by"], body["call_id"], self.wrapup_s)
                delete_message_audio(data)
        for cid, data in calls.items():
            if data.get("callback_number") and data.get("cb_requested_at") and \
                    sql_callbacks.finished(data):
                # Written to SQL (and cleared there) above: the request is over, the call
                # has ended, nobody will dial it again.
                await self.redis.hdel(call_key(cid), "callback_number")
        await self.redis.xack(EVENTS, GROUP, *[eid for eid, _ in events])

    def write_retrying(self, events: list[tuple[str, dict[str, str]]],
                       calls: dict[str, dict[str, str]],
                       messages: dict[str, list[tuple[str, dict[str, str]]]] | None = None
                       ) -> None:
        """:meth:`write`, again when another recorder (another dispatcher's) created one of
        these calls' records meanwhile: the second time it is there to update."""
        for attempt in range(3):
            try:
                self.write(events, calls, messages)
                return
            except IntegrityError:
                if attempt == 2:
                    raise

    def write(self, events: list[tuple[str, dict[str, str]]], calls: dict[str, dict[str, str]],
              messages: dict[str, list[tuple[str, dict[str, str]]]] | None = None) -> None:
        with Session(self.engine) as session, session.begin():
            # One indexed query for the whole batch: which of these were written before a crash.
            seen = set(session.scalars(select(CallEvent.stream_id).where(
                CallEvent.stream_id.in_([eid for eid, _ in events]))))
            # And one for the batch's records: a get() per call (each flushing the events
            # added before it) was most of the dispatcher's CPU at 500 callers.
            wanted = {cid for _, body in events if (cid := body.get("call_id")) and calls.get(cid)}
            records: dict[str, CallRecord] = {r.id: r for r in session.scalars(
                select(CallRecord).where(CallRecord.id.in_(wanted)))} if wanted else {}
            # Each record once per batch, as the events one by one would leave it: the hash
            # is the same for all of a call's events, and the last terminal one (else the
            # last one) decides the rest.
            final: dict[str, dict[str, str]] = {}
            for _, body in events:
                cid = body.get("call_id") or ""
                if terminal(body) or not terminal(final.get(cid, {})):
                    final[cid] = body
            new = []
            for cid in sorted(wanted - records.keys()):
                data = calls[cid]
                records[cid] = CallRecord(
                    id=cid, source=data.get("source", "direct"), language=data.get("language", "en"),
                    started_at=_ts(data.get("created_at")) or datetime.now(UTC), outcome="in_progress",
                    waves_used=0, consented_to_message=False)
                new.append(records[cid])
            for cid, record in records.items():
                self._update(record, calls[cid], final[cid])
            if new:
                session.add_all(new)
                session.flush()  # the records before their events (no ORM relationship orders them)
            rows = []
            for eid, body in events:
                cid = body.get("call_id")
                data = calls.get(cid or "")
                if not cid or not data:
                    continue
                if eid not in seen:
                    rows.append({"call_id": cid, "at": _ts(body.get("at")) or datetime.now(UTC),
                                 "type": body.get("type", "?")[:32], "stream_id": eid,
                                 "detail": {k: v for k, v in body.items()
                                            if k not in {"type", "call_id", "at"}}})
                sql_callbacks.sync(session, records[cid], data, body, fresh=eid not in seen)
            if rows:  # one INSERT for the batch's events (not ORM objects: none is read back)
                session.connection().execute(insert(CallEvent.__table__), rows)
            for cid, rows in (messages or {}).items():
                if cid in records:
                    session.flush()
                    sql_texts.archive(session, cid, rows)

    @staticmethod
    def _update(record: CallRecord, data: dict[str, str], body: dict[str, str]) -> None:
        record.language = data.get("language") or record.language
        record.neighborhood = data.get("neighborhood") or None
        record.zip_code = data.get("zip_code") or None
        record.queued_at = _ts(data.get("queued_at"))
        record.answered_at = _ts(data.get("accepted_at"))
        record.answered_by = data.get("accepted_by") or None
        record.waves_used = int(data.get("waves_used") or 0)
        record.consented_to_message = data.get("consented_to_message") == "1"
        record.caller_number = data.get("caller_number") or None
        record.note = data.get("note") or None
        record.interpreter = data.get("interpreter") or None  # only once it joined the room
        record.connected_at = _ts(data.get("connected_at"))
        if data.get("fallback_answered"):
            record.fallback_answered = data["fallback_answered"] == "1"
        record.pbx_node = data.get("pbx_node") or record.pbx_node
        record.channel = data.get("x_channel") or record.channel
        if data.get("transcript_status"):
            record.transcript_status = data["transcript_status"]
            record.transcript = data.get("transcript") or None
        if data.get("time_to_human_s"):
            record.time_to_human_s = float(data["time_to_human_s"])
        if terminal(body):
            state = data.get("state", "")
            outcome = OUTCOME_OF_STATE.get(state) or TERMINAL.get(body.get("type", "")) or "fallback"
            if data.get("accepted_by") and state in ("ended", "bridged"):
                outcome = "bridged"
            record.outcome = outcome
            record.end_step = data.get("end_step") or None
            record.end_reason = data.get("end_reason") or None
            record.ended_at = _ts(data.get("ended_at")) or _ts(body.get("at"))
