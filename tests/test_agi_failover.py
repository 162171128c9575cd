"""Several FastAGI servers ([pr-agi] in the dialplan): a server that refuses the connection
is skipped for the next one; a server that took the call is never second-guessed (whether it
gave up on purpose or died halfway, the caller goes to the fallback group and no IVR runs
twice for one caller). The same first-server-down case runs on the real Asterisk in
tests/test_scenarios.py (first_fastagi_server_down)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from standin.caller import CallerScript
from tests.intake_helpers import Redis, call, pbx_for, running_agi, until

DOWN = "agi://127.0.0.1:1"  # nobody listens on port 1: refused


@asynccontextmanager
async def knocking_server() -> AsyncIterator[tuple[str, list[str]]]:
    """A FastAGI server that only notes which script it was asked for, and hangs up."""
    knocks: list[str] = []

    async def knock(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := (await reader.readline()).decode().strip():
            if line.startswith("agi_network_script:"):
                knocks.append(line.split(":", 1)[1].strip().split("?")[0])
        writer.close()

    server = await asyncio.start_server(knock, "127.0.0.1", 0)
    try:
        yield f"agi://127.0.0.1:{server.sockets[0].getsockname()[1]}", knocks
    finally:
        server.close()


async def test_a_refused_server_is_skipped_for_the_next(live_settings, redis_url) -> None:
    async with running_agi(live_settings) as agi:
        pbx = pbx_for(live_settings, agi.port)
        ours = pbx.interp.globals["PR_AGI"]
        pbx.interp.globals["PR_AGI"] = f"{DOWN}|{DOWN}|{ours}"
        trace = await call(pbx, "direct", CallerScript(keys="2 02121 2", stay_s=0))
    assert trace.agi_status[:3] == ["FAILURE", "FAILURE", "SUCCESS"]
    assert trace.room is not None and not trace.fallback_dialed
    record = Redis(redis_url).call(trace.variables["PR_CALL_ID"])
    assert (record["language"], record["neighborhood"]) == ("es", "Dorchester")
    # The hang-up report went through the same list, and reached our server too.
    assert record["state"] == "abandoned" and record["end_step"] == "waiting_room"


async def test_every_server_down_rings_the_fallback_group(live_settings) -> None:
    pbx = pbx_for(live_settings, 1)
    pbx.interp.globals["PR_AGI"] = f"{DOWN}|{DOWN}"
    trace = await call(pbx, "direct", CallerScript(keys="2 02121 2", stay_s=0))
    assert trace.fallback_dialed
    assert trace.agi_status[:2] == ["FAILURE", "FAILURE"]


async def test_a_server_that_gave_up_is_not_asked_again(live_settings) -> None:
    """Our server fails toward a human when it can't work (here: its Redis is gone): FAILURE
    with PR_AGI_GAVE_UP. The next server must not run a second IVR for the same caller."""
    broken = dataclasses.replace(live_settings, redis_url="redis://127.0.0.1:1/0")
    async with running_agi(broken) as agi, knocking_server() as (spare, knocks):
        pbx = pbx_for(live_settings, agi.port)
        pbx.interp.globals["PR_AGI"] += f"|{spare}"
        trace = await call(pbx, "direct", CallerScript(keys="2 02121 2", stay_s=0))
    assert trace.fallback_dialed
    assert trace.variables.get("PR_AGI_GAVE_UP") == "1"
    assert knocks == []


async def test_a_server_killed_mid_call_is_not_replaced_by_a_second_ivr(live_settings) -> None:
    async with running_agi(live_settings) as agi, knocking_server() as (spare, knocks):
        pbx = pbx_for(live_settings, agi.port)
        pbx.interp.globals["PR_AGI"] += f"|{spare}"
        pbx.time_scale = 0.1  # prompts take a tenth of their time: killed while at the menu
        placed = asyncio.ensure_future(call(pbx, "direct",
                                            CallerScript(keys="- 02121 2", stay_s=0)))
        assert await until(lambda: agi.sessions > 0, 20)  # at the language menu
        agi.abort()
        trace = await asyncio.wait_for(placed, 60)
    assert trace.fallback_dialed  # no PR_QUEUED: the dialplan's own rule
    # The spare was asked only for what came after (the hang-up report), never the IVR.
    assert "intake" not in knocks
