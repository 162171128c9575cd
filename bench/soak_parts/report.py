"""The report of the calls: the header, the windows (from one fault to the next), and per
window and overall the calls started and how they ended, lost and double-booked calls, and
time to first ring; the verdict and the exit status."""

from __future__ import annotations

import itertools
import time
from collections import Counter

from bench.measure import pct
from bench.soak_parts.constants import DETAILS, DRAIN_S, FINAL, TIME_SCALE
from bench.soak_parts.faults import BACK_TEXT, FAULT_TEXT, WINDOW_TEXT
from bench.soak_parts.model import Window
from bench.soak_parts.state import SoakState


class Report(SoakState):
    """Prints the figures of the run."""

    def print_header(self) -> None:
        a = self.args
        faults = self.schedule()
        print(f"soak: --minutes {a.minutes:g} --callers {a.callers} --seed {a.seed}"
              f"{' --no-faults' if a.no_faults else ''}; {a.responders} responders; stand-in "
              f"time scale {TIME_SCALE:g} (real time)", flush=True)
        print(f"line: nodes a (AMI :{self.nodes['a'].port}) + b (:{self.nodes['b'].port}), "
              f"FastAGI :{self.agi_ports[0]} + :{self.agi_ports[1]}, 2 dispatchers, "
              + (f"one Redis :{self.sentinels.servers[0]} (--redis plain: no Sentinel)"
                 if a.redis == "plain" else
                 f"Redis {self.sentinels.servers} + 3 sentinels") +
              f", SQLite in {self.tmp}", flush=True)
        if faults:
            print("faults (s into the run): " + "; ".join(
                f"{at:.0f} {FAULT_TEXT[w] if s == 'down' else BACK_TEXT[w]}"
                for at, w, s in faults), flush=True)
        else:
            print("faults: none (--no-faults)", flush=True)

    def windows(self) -> list[Window]:
        downs = [(at, w) for at, w, s in self.schedule() if s == "down"]
        marks = [(0.0, "no fault yet" if downs else "no faults")] + \
                [(at, WINDOW_TEXT[w]) for at, w in downs]
        return [Window(label, start, marks[i + 1][0] if i + 1 < len(marks) else self.run_s)
                for i, (start, label) in enumerate(marks)]

    def report(self, drained_in: float | None) -> int:
        records, redis_calls, stream = self.collect()
        callers_by_id = {c.call_id: c for c in self.callers if c.call_id}
        ids = set(records) | set(redis_calls) | set(callers_by_id)

        def started(cid: str) -> float:
            if cid in callers_by_id:
                return callers_by_id[cid].started - self.t0
            rec = records.get(cid)
            if rec and rec["started_at"] is not None:
                return rec["started_at"] - self.t0
            return float(redis_calls.get(cid, {}).get("created_at") or self.t0) - self.t0

        lost: dict[str, list[str]] = {}
        for cid in ids:
            why = []
            data, rec = redis_calls.get(cid), records.get(cid)
            if data is not None and data.get("state") not in FINAL:
                why.append(f"Redis state {data.get('state')!r}")
            if rec is None:
                why.append("no SQL record" + ("" if data is not None else
                                              " and no Redis hash"))
            elif rec["outcome"] == "in_progress":
                why.append("SQL outcome in_progress")
            if why:
                lost[cid] = why
        overlaps = self.record_overlaps(records, callers_by_id)
        windows = self.windows()

        def window_of(t: float) -> int:
            for i, w in enumerate(windows):
                if t < w.end or i == len(windows) - 1:
                    return i
            return len(windows) - 1

        rows = [Counter() for _ in windows]
        rings: list[list[float]] = [[] for _ in windows]
        for cid in ids:
            i = window_of(started(cid))
            rows[i]["calls"] += 1
            rec = records.get(cid)
            outcome = rec["outcome"] if rec else "none"
            rows[i]["callback" if cid in self.callbacks else outcome] += 1
            if rec and rec["end_reason"] == "pbx_gone":
                rows[i]["pbx_gone"] += 1
            if cid in lost:
                rows[i]["lost"] += 1
            if cid in callers_by_id and cid in self.first_ring:
                rings[i].append(self.first_ring[cid] - callers_by_id[cid].started)
        for c in self.callers:
            if not c.call_id:
                i = window_of(c.started - self.t0)
                rows[i]["calls"] += 1
                rows[i]["no record"] += 1
        # One incident = two calls with one responder at once, however many ways it was seen.
        pbx_pairs = {pair for _, _, rooms in self.pbx_double
                     for pair in itertools.combinations(sorted(rooms), 2)}
        rec_pairs = {tuple(sorted((a, b))) for a, b, _, _ in overlaps}
        doubles = pbx_pairs | rec_pairs
        for pair in doubles:
            rows[window_of(max(started(cid) for cid in pair))]["double"] += 1

        print()
        head = (f"{'window':<24}{'from-to s':>11}{'calls':>7}{'bridged':>8}{'callbk':>7}"
                f"{'fallbk':>7}{'abandon':>8}{'no rec':>7}{'pbxgone':>8}{'LOST':>6}"
                f"{'DBL':>5}  first ring p50/p99 s")
        print(head)
        total, all_rings = Counter(), []
        for w, row, ring in zip(windows, rows, rings, strict=True):
            self.print_row(w.label, f"{w.start:.0f}-{w.end:.0f}", row, ring)
            total.update(row)
            all_rings += ring
        self.print_row("overall", f"0-{self.run_s:.0f}", total, all_rings)
        if self.callbacks:
            status = Counter(self.callbacks.values())
            print(f"callback requests: {len(self.callbacks)} (" + ", ".join(
                f"{k} {v}" for k, v in status.most_common()) + "); the 'callbk' column: calls "
                "with a request, whatever became of it (not in the other columns)")
        how = Counter(c.how for c in self.callers)
        print("callers (as the bench saw them): " +
              ", ".join(f"{k} {v}" for k, v in how.most_common()))
        drained = f"drained in {drained_in:.0f} s" if drained_in is not None else \
            f"NOT drained after {DRAIN_S:.0f} s"
        cpu = ", ".join(f"{n} {p.cpu_now():.0f}" for n, p in sorted(self.procs.items()))
        print(f"{drained}; CPU s: bench+stand-ins {time.process_time():.0f}, {cpu}")
        self.print_logs()
        n_lost = len(lost)
        n_double = len(doubles)

        def more(n: int, what: str) -> None:
            if n > DETAILS:
                print(f"  ... {n - DETAILS} more {what}")

        for cid, why in sorted(lost.items(), key=lambda kv: started(kv[0]))[:DETAILS]:
            self.explain(cid, why, records, redis_calls, stream, started(cid), callers_by_id)
        more(len(lost), "lost calls")
        for t, rid, calls in self.pbx_double[:DETAILS]:
            how = "; ".join(self.describe(cid, records, stream) for cid in calls)
            print(f"  double-booked (PBX) at t={t - self.t0:.1f}s: {rid} in {how}")
        more(len(self.pbx_double), "double-bookings seen on the PBXs")
        if self.pbx_double:
            via = Counter("a callback among them" if any(
                "callback_answered" in stream.get(c, []) for c in calls) else "no callback"
                for _, _, calls in self.pbx_double)
            print("  of the double-bookings seen on the PBXs: " +
                  ", ".join(f"{k}: {v}" for k, v in via.most_common()))
        if self.late_ends:
            late = sorted(self.late_ends)
            print(f"  records whose ended_at is > 2 s after their caller's channel was gone: "
                  f"{len(late)} (median {pct(late, 50):.0f} s, max {late[-1]:.0f} s late); "
                  "double-booking is judged by when the caller left")
        if self.dead_sends:
            print(f"  ({self.dead_sends} asyncio 'socket.send() raised exception' silenced: the "
                  "stand-ins writing to a killed process's socket)")
        if self.destroyed_tasks:
            print(f"  ({self.destroyed_tasks} 'Task was destroyed but it is pending' from the "
                  "stand-in's crash() silenced: waits of the channels it cancelled)")
        for first, second, end, start in overlaps[:DETAILS]:
            a, b = records[first], records[second]
            print(f"  double-booked (records): {a['answered_by']} took {first} (node "
                  f"{a['pbx_node']}, {a['end_reason'] or a['end_step']}) until "
                  f"t={end - self.t0:.1f}s (ended_at {a['ended_at'] - self.t0:.1f}) and "
                  f"{second} (node {b['pbx_node']}) at t={start - self.t0:.1f}s; the first's "
                  f"events: {' '.join(stream.get(first, [])[-12:]) or 'none in the stream'}; "
                  f"its caller: {self.caller_how(first, callers_by_id)}")
        more(len(overlaps), "overlaps in the records")
        pending = Counter(con for rows in self.pending.values() for _, con in rows)
        if pending:
            print("  recorder group, events read and never acknowledged: " + ", ".join(
                f"{self.consumer_of(con)}: {n}" for con, n in pending.most_common()))
        faults = "; ".join(f"{w} at {t:.0f} s" for t, w in self.faults_done) or "none"
        ok = n_lost == 0 and n_double == 0 and drained_in is not None
        print(f"verdict: {'PASS' if ok else 'FAIL'}: {total['calls']} calls over "
              f"{self.args.minutes:g} min with {self.args.callers} callers, faults: {faults}; "
              f"lost {n_lost}, double-booked {n_double} (pairs of calls: on the PBXs "
              f"{len(pbx_pairs)}, in the records {len(rec_pairs)}, both "
              f"{len(pbx_pairs & rec_pairs)})"
              f"{'' if drained_in is not None else ', line not drained'}")
        return 0 if ok else 1

    @staticmethod
    def print_row(label: str, span: str, row: Counter, ring: list[float]) -> None:
        print(f"{label:<24}{span:>11}{row['calls']:>7}{row['bridged']:>8}{row['callback']:>7}"
              f"{row['fallback']:>7}{row['abandoned']:>8}{row['no record']:>7}"
              f"{row['pbx_gone']:>8}{row['lost']:>6}{row['double']:>5}  "
              f"{pct(ring, 50):.1f} / {pct(ring, 99):.1f}")
