"""Soak and faults: N callers (500) kept on the line for --minutes (30) through the line of
several machines, on one machine, with parts of it killed on a schedule.

    .venv/bin/python bench/soak.py [--minutes 30] [--callers 500] [--seed 1] [--no-faults]

The topology is docs/scaling.md's, all on loopback:
- two Asterisk nodes "a" and "b": the stand-in PBX (standin/), in this process, each with its
  own AMI server. The real Asterisk can't carry 500 concurrent calls on this 2-core machine
  next to everything else (bench_dispatch --pbx real stops at about 50 here), so the nodes
  are stand-ins at time scale 1.0 (real time: prompts, rings and timeouts last what they
  say). New callers alternate between the nodes, as Kamailio's round robin would, and go to
  the other node while one is down (Kamailio's OPTIONS pings);
- two FastAGI servers (`peoples-response agi`, two processes): node a's dialplan global
  PR_AGI lists them as agi://P1|agi://P2, node b's as P2|P1 (each node's first choice is its
  own; the other is its fallback, the dialplan's [pr-agi]);
- two dispatchers (`peoples-response dispatcher`, two processes), each with an AMI session to
  both nodes (PR_PBX_NODES=a=...,b=...) and its own recorder into SQL;
- Redis behind Sentinel: a primary, a replica and three sentinels of our own (bench/
  sentinels.py, new processes on free ports; the machine's Redis is not touched);
- SQLite for the records and the roster, under a temporary var dir.

Responders (1.2 x callers, `PJSIP/rNNNN`, two teams, everyone on call) answer with a mix of
the stand-in phones' behaviours (answer after 1-6 s, answer late, decline, never, voicemail,
hang up in the whisper, busy), drawn again for everyone every minute from the seeded random.
Callers press one of a few IVR paths ("2 02121 2", "1 02124 2", ...), talk 20-120 s once a
responder (or the fallback desk, which answers here) is with them, give up after 60-300 s
of waiting otherwise, and 30% of them say yes to a callback and hang up once it is confirmed
(their phone answers when the line calls back). A new caller replaces each one who leaves.

Faults, at fractions of the run (--no-faults: none): kill -9 a FastAGI server, a dispatcher
and the Redis primary (the sentinels promote the replica; the killed server comes back as a
replica, and the second Redis fault kills the promoted one), crash a PBX node (its AMI
server closed and every channel gone at once, as kill -9 of Asterisk; a new node on the same
AMI port later). Each comes back after a while.

Printed: per window (from one fault to the next) and overall, the calls started and how they
ended by their SQL records (bridged, callback, fallback, abandoned), the callers who never
got a record, time to first ring (caller dials in -> first responder phone rings) p50/p99,
and two numbers that must be zero: **lost** (a call without an end state once the line has
drained: its Redis hash not final, no SQL record or one still "in_progress") and
**double-booked** (a responder in two calls at once: their phone in two rooms at the same
moment on the PBXs, checked on every room join and sampled every 0.25 s over both nodes'
rooms; or two records accepted by the same responder with overlapping [answered_at,
ended_at]). Drained: after the run every caller still on the line is hung up, then at most
DRAIN_S for the line to end every call. Exit status 1 when lost or double-booked is not zero.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# The soak itself is in bench/soak_parts/ (one job a module); this is its command line.
from bench.realpbx import run_interruptible  # noqa: E402
from bench.soak_parts.run import Soak, main_async  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--callers", type=int, default=500)
    parser.add_argument("--responders", type=int, default=None,
                        help="default: 1.2 x callers")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-faults", action="store_true")
    parser.add_argument("--redis", choices=("sentinel", "plain"), default="sentinel",
                        help="plain: one Redis server without Sentinel (no Redis faults), "
                             "to compare with")
    parser.add_argument("--keep", action="store_true", help="keep the temporary var dir")
    args = parser.parse_args()
    args.responders = args.responders or round(args.callers * 1.2)
    tmp = Path(tempfile.mkdtemp(prefix="soak-"))
    soak = Soak(args, tmp)
    code = 1
    try:
        code = run_interruptible(main_async(soak))
    finally:
        soak.kill_all()
        if code == 0 and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"(kept {tmp})", file=sys.stderr)
    raise SystemExit(code)


if __name__ == "__main__":
    main()
