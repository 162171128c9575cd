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
from datetime import UTC, datetime
from pathlib import Path

from redis.asyncio import Redis
from redis.exceptions import ResponseError
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from crisisline.records import callbacks as sql_callbacks
from crisisline.records import texts as sql_texts
from crisisline.records.schema import CallEvent, CallRecord
from crisisline.stores.calls import EVENTS, call_key
from crisisline.stores.offers import OfferStore
from crisisline.stores.texts import TextStore

log = logging.getLogger(__name__)
GROUP = "recorder"
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

    async def run(self, stop: asyncio.Event) -> None:
        pending_first = True
        grouped = False
        while not stop.is_set():
            try:
                if not grouped:
                    await self.ensure_group()
                    grouped = True
                # Our own unacknowledged events first (a crash mid-write), then new ones.
                start = "0" if pending_first else ">"
                got = await self.redis.xreadgroup(GROUP, self.consumer, {EVENTS: start},
                                                  count=200, block=500)
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
                try:
                    await self.handle(entries)
                except Exception:
                    log.exception("recorder: writing %d events failed; will retry", len(entries))
                    pending_first = True
                    await asyncio.sleep(1)

    async def handle(self, entries: list) -> None:
        events = [(eid.decode(), {k.decode(): v.decode() for k, v in body.items()})
                  for eid, body in entries]
        calls = {}
        for _, body in events:
            cid = body.get("call_id")
            if cid and cid not in calls:
                raw = await self.redis.hgetall(call_key(cid))
                calls[cid] = {k.decode(): v.decode() for k, v in raw.items()}
        # A text conversation that ended: its messages go to SQL with its record.
        messages = {}
        for _, body in events:
            cid = body.get("call_id", "")
            if terminal(body) and calls.get(cid, {}).get("source") == "text":
                messages[cid] = await self.texts.messages(cid, count=10_000)
        await asyncio.to_thread(self.write, events, calls, messages)
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

    def write(self, events: list[tuple[str, dict[str, str]]], calls: dict[str, dict[str, str]],
              messages: dict[str, list[tuple[str, dict[str, str]]]] | None = None) -> None:
        with Session(self.engine) as session, session.begin():
            # One indexed query for the whole batch: which of these were written before a crash.
            seen = set(session.scalars(select(CallEvent.stream_id).where(
                CallEvent.stream_id.in_([eid for eid, _ in events]))))
            records: dict[str, CallRecord] = {}
            for eid, body in events:
                cid = body.get("call_id")
                data = calls.get(cid or "")
                if not cid or not data:
                    continue
                record = records.get(cid) or session.get(CallRecord, cid)
                new = record is None
                record = record or CallRecord(
                    id=cid, source=data.get("source", "direct"), language=data.get("language", "en"),
                    started_at=_ts(data.get("created_at")) or datetime.now(UTC), outcome="in_progress",
                    waves_used=0, consented_to_message=False)
                session.add(record)
                records[cid] = record
                self._update(record, data, body)
                if new:
                    session.flush()  # the record before its events (no ORM relationship orders them)
                if eid not in seen:
                    detail = {k: v for k, v in body.items() if k not in {"type", "call_id", "at"}}
                    session.add(CallEvent(call_id=cid, at=_ts(body.get("at")) or datetime.now(UTC),
                                          type=body.get("type", "?")[:32], detail=detail,
                                          stream_id=eid))
                sql_callbacks.sync(session, record, data, body, fresh=eid not in seen)
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
