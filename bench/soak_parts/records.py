"""Reading back the calls: the SQL records, the Redis call hashes and the event stream; the
calls still open (for the drain); and the calls one responder took at overlapping times."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime

from sqlalchemy import func, select

from bench.soak_parts.model import Caller
from bench.soak_parts.state import SoakState
from crisisline.records.schema import CallbackRequest, CallRecord
from crisisline.stores import sync_redis
from crisisline.stores.calls import EVENTS


def _epoch(value: datetime | None) -> float | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


class Records(SoakState):
    """Reads back what the line stored about the calls."""

    def collect(self) -> tuple[dict, dict, dict]:
        """SQL records, Redis call hashes, and each call's event types from the stream."""
        records = {}
        with self.engine.connect() as conn:
            rows = conn.execute(select(
                CallRecord.id, CallRecord.outcome, CallRecord.answered_by,
                CallRecord.answered_at, CallRecord.ended_at, CallRecord.started_at,
                CallRecord.end_reason, CallRecord.end_step, CallRecord.pbx_node)).all()
            self.callbacks = dict(conn.execute(select(CallbackRequest.call_id,
                                                      CallbackRequest.status)).all())
        for row in rows:
            rid, outcome, by, answered, ended, started, reason, step, node = row
            records[rid] = {"outcome": outcome, "answered_by": by,
                            "answered_at": _epoch(answered), "ended_at": _epoch(ended),
                            "started_at": _epoch(started), "end_reason": reason,
                            "end_step": step, "pbx_node": node}
        r = sync_redis(self.settings.effective_redis_url)
        redis_calls = {}
        keys = list(r.scan_iter("pr:call:*", count=1000))
        pipe = r.pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(key)
        for key, data in zip(keys, pipe.execute(), strict=True):
            cid = key.decode().split(":", 2)[2]
            redis_calls[cid] = {k.decode(): v.decode() for k, v in data.items()}
        stream: dict[str, list[str]] = defaultdict(list)
        kinds: dict[str, tuple[str, str]] = {}
        for eid, body in r.xrange(EVENTS):
            cid = body.get(b"call_id", b"").decode()
            stream[cid].append(body.get(b"type", b"?").decode())
            kinds[eid.decode()] = (cid, body.get(b"type", b"?").decode())
        # Events the recorders read and never acknowledged, by consumer (recorder-<pid>).
        self.pending = defaultdict(list)
        try:
            for entry in r.xpending_range(EVENTS, "recorder", min="-", max="+", count=100_000):
                eid = entry["message_id"].decode()
                cid, kind = kinds.get(eid, ("?", "?"))
                self.pending[cid].append((kind, entry["consumer"].decode()))
        except Exception as exc:  # no group: nothing was ever recorded
            print(f"  (recorder group unreadable: {exc})")
        return records, redis_calls, stream

    def unfinished(self) -> dict[str, int]:
        r = sync_redis(self.settings.effective_redis_url)
        live = r.scard("pr:live")
        with self.engine.connect() as conn:
            open_sql = conn.execute(select(func.count()).select_from(CallRecord).where(
                CallRecord.outcome == "in_progress")).scalar()
        return {"redis live": int(live), "sql in_progress": int(open_sql or 0)}

    def record_overlaps(self, records: dict, callers: dict[str, Caller]
                        ) -> list[tuple[str, str, float, float]]:
        """Pairs of calls one responder took whose [answered_at, end] overlap: (first, second,
        first's end, second's answered_at). ``end``: the record's ended_at, or when the
        caller's channel was gone on the PBX if that was earlier (ended_at is when the line
        found out: after a lost hang-up report, the reconciler's next pass; after a node
        crash, the node back and then that pass; the responder's leg ended with the caller,
        and they were free from then on). Those late ended_at are counted apart."""
        by: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
        for cid, rec in records.items():
            if not (rec["answered_by"] and rec["answered_at"] and rec["ended_at"]):
                continue
            end = rec["ended_at"]
            c = callers.get(cid)
            if c is not None and c.how in ("talked", "dropped (node crash)") and \
                    c.ended is not None and c.ended < end:
                # Our own caller, with the responder on their own channel (not a callback:
                # then the line's second channel to them was the one bridged): gone then,
                # and the responder's leg with them (the room, or the crashed node, ended it).
                end = c.ended
            elif rec["end_reason"] == "pbx_gone":
                # A caller called back, on a node that crashed: gone with the node.
                end = min((t for n, t in self.crashes if n == rec["pbx_node"] and
                           rec["answered_at"] <= t <= end), default=end)
            if rec["ended_at"] - end > 2.0:
                self.late_ends.append(rec["ended_at"] - end)
            by[rec["answered_by"]].append((rec["answered_at"], end, cid))
        out = []
        for spans in by.values():
            spans.sort()
            last_end, last = spans[0][1], spans[0][2]
            for start, end, cid in spans[1:]:
                if start < last_end:
                    out.append((last, cid, last_end, start))
                if end > last_end:
                    last_end, last = end, cid
        return out
