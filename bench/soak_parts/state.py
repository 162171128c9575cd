"""The state of one soak run, shared by its parts: the mixins of topology, watch, callers,
faults, records, report and details all derive from SoakState, and run.Soak puts them
together. Also: the run's background tasks (spawn)."""

from __future__ import annotations

import argparse
import asyncio
import random
from collections import defaultdict
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.sentinels import Sentinels
from bench.soak_parts.model import Caller, Node, Proc
from crisisline import config


@dataclass
class SoakState:
    args: argparse.Namespace
    tmp: Path
    settings: config.Settings = None  # type: ignore[assignment]
    env: dict[str, str] = field(default_factory=dict)
    rng: random.Random = None  # type: ignore[assignment]
    sentinels: Sentinels | None = None
    nodes: dict[str, Node] = field(default_factory=dict)
    procs: dict[str, Proc] = field(default_factory=dict)
    callers: list[Caller] = field(default_factory=list)
    live: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))  # node -> names
    first_ring: dict[str, float] = field(default_factory=dict)  # call id -> epoch
    in_rooms: dict[str, set[tuple[str, str, str]]] = field(
        default_factory=lambda: defaultdict(set))  # responder -> {(node, room, channel)}
    # (t, responder, the call ids of the rooms they were in at once)
    pbx_double: list[tuple[float, str, tuple[str, ...]]] = field(default_factory=list)
    _double_seen: set = field(default_factory=set)
    # (node, uniqueid) -> when the called-back person hangs up
    callee_due: dict[tuple[str, str], float] = field(default_factory=dict)
    behaviours: dict[str, str] = field(default_factory=dict)
    t0: float = 0.0
    run_s: float = 0.0
    running: bool = False
    draining: bool = False
    tasks: set[asyncio.Task] = field(default_factory=set)
    next_node: int = 0
    faults_done: list[tuple[float, str]] = field(default_factory=list)
    agi_ports: list[int] = field(default_factory=list)
    crashes: list[tuple[str, float]] = field(default_factory=list)  # (node, epoch)
    destroyed_tasks: int = 0
    dead_sends: int = 0
    late_ends: list[float] = field(default_factory=list)
    pending: dict = field(default_factory=dict)  # call id -> [(event type, consumer)]
    callbacks: dict[str, str] = field(default_factory=dict)  # call id -> request's status
    engine: object = None

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task
