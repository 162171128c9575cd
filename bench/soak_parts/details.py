"""The details of what went wrong: a lost call explained, a call described, which process a
recorder consumer was, and each process's ERROR lines by exception."""

from __future__ import annotations

from collections import Counter

from bench.soak_parts.state import SoakState


class Details(SoakState):
    """Explains lost calls and the processes' errors."""

    def consumer_of(self, consumer: str) -> str:
        """``recorder-<pid>`` -> which of our processes that was, and whether it still runs."""
        pid = consumer.rpartition("-")[2]
        for name, p in self.procs.items():
            if pid.isdigit() and int(pid) in p.pids:
                alive = p.proc is not None and p.proc.pid == int(pid) and p.proc.poll() is None
                return f"{consumer} = {name} pid {pid}, {'running' if alive else 'killed'}"
        return consumer

    def describe(self, cid: str, records: dict, stream: dict) -> str:
        """A call in a few words: node, who took it, and how (a callback or not)."""
        rec = records.get(cid) or {}
        kinds = stream.get(cid, [])
        via = "callback" if "callback_answered" in kinds else "on the line"
        return (f"{cid} (node {rec.get('pbx_node')}, accepted by {rec.get('answered_by')}, "
                f"{via}, outcome {rec.get('outcome')})")

    def explain(self, cid: str, why: list[str], records: dict, redis_calls: dict,
                stream: dict, t: float, callers: dict) -> None:
        c = callers.get(cid)
        data = redis_calls.get(cid, {})
        rec = records.get(cid) or {}
        node = data.get("pbx_node") or rec.get("pbx_node") or (c.node if c else "?")
        stuck = self.pending.get(cid, [])
        held = (f"; {len(stuck)} events never acknowledged ("
                f"{' '.join(k for k, _ in stuck[:6])}) by " + ", ".join(
                    sorted({self.consumer_of(con) for _, con in stuck}))) if stuck else ""
        print(f"  LOST {cid} (started t={t:.1f}s on node {node}; {'; '.join(why)}; "
              f"caller: {c.how if c else 'not ours'}; end_step "
              f"{data.get('end_step') or rec.get('end_step')}){held}; events: "
              f"{' '.join(stream.get(cid, [])[-14:]) or 'none in the stream'}; "
              f"on the PBX now: {self.whereabouts(data.get('x_uniqueid', ''))}")

    def caller_how(self, cid: str, callers: dict) -> str:
        c = callers.get(cid)
        if c is None:
            return "not ours"
        left = f"{c.ended - self.t0:.1f}s" if c.ended else "?"
        return f"{c.how}, on the line t={c.started - self.t0:.1f}s..{left}"

    def whereabouts(self, uniqueid: str) -> str:
        """Whether a call's channel is still up (a call that is still going is not lost: the
        drain missed it) and with whom."""
        if not uniqueid:
            return "no channel recorded"
        for node in self.nodes.values():
            if not node.up:
                continue
            for ch in list(node.pbx.channels.values()):
                if ch.uniqueid != uniqueid:
                    continue
                rooms = [f"{room} with {', '.join(m.name for m in members if m is not ch)}"
                         for room, members in node.pbx.rooms.items() if ch in members]
                return (f"{ch.name} on node {node.name} at {ch.context},{ch.exten},"
                        f"{ch.priority}" + (f" in {'; '.join(rooms)}" if rooms else ""))
        return "gone"

    def print_logs(self) -> None:
        """Per process: its ERROR lines, by the exception that ended each traceback."""
        print(f"process logs ({self.tmp / 'logs'}; ERROR lines, by exception):")
        for name, p in sorted(self.procs.items()):
            lines = p.log.read_text(errors="replace").splitlines() if p.log.exists() else []
            errors = sum(1 for line in lines if " ERROR " in line)
            ends: Counter = Counter()
            for i, line in enumerate(lines):
                # A traceback's last line: "module.Error: text", unindented, before the next
                # log line or the chained traceback's blank line.
                if line.startswith("Traceback"):
                    j = i + 1
                    while j < len(lines) and (lines[j].startswith(" ") or not lines[j]):
                        j += 1
                    if j < len(lines):
                        nxt = lines[j + 1] if j + 1 < len(lines) else ""
                        if not nxt.startswith(("The above", "During handling")):
                            ends[lines[j].split(":", 1)[0].rsplit(".", 1)[-1]] += 1
            detail = ", ".join(f"{k} {v}" for k, v in ends.most_common(6))
            print(f"  {name}: {errors}{' (' + detail + ')' if detail else ''}")
