"""Kamailio in front of two Asterisk nodes, all real (docs/kamailio.md).

Both nodes are rendered from our own configuration (localpbx.render.render_pbx, the
entrypoint with PR_SIP_PROXY set to Kamailio's address); the world Asterisk's trunks
(localpbx.world: direct 127.0.0.2, 911 .3, 988 .4) send their calls to Kamailio instead of
a PBX. Kamailio .10, the nodes .11 and .12, on free loopback ports. The nodes' IVR is
down on purpose (agi://127.0.0.1:1): what is watched is the routing, on each node's AMI
(the channel's endpoint and context, the X-PR-Trunk the node was given) and on the world's
(every call answered, none refused). The tests share one cluster and run in file order;
the node failure is last, and the longest (Kamailio's in-dialog keepalive, which hangs up the
dead node's callers, runs every 30 s at the least).
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from localpbx import kamailio
from localpbx.ami import AmiConnection, Message
from localpbx.harness import EXTENSIONS
from localpbx.install import installed
from localpbx.process import AsteriskProcess
from localpbx.render import PbxLayout, free_port, render_pbx
from localpbx.world import TRUNK_ADDRESSES, WorldLayout, render_world, trunk_env

INSTALL = installed()
pytestmark = pytest.mark.skipif(INSTALL is None or kamailio.binary() is None,
                                reason="needs the real Asterisk and Debian's kamailio")

PROXY_HOST = "127.0.0.10"
NODE_HOSTS = ("127.0.0.11", "127.0.0.12")
AGI_DOWN = "agi://127.0.0.1:1"


@dataclass
class Node:
    name: str
    layout: PbxLayout
    proc: AsteriskProcess

    @property
    def uri(self) -> str:
        return f"sip:{self.layout.sip}"


@dataclass
class Cluster:
    world: WorldLayout
    world_proc: AsteriskProcess
    proxy: kamailio.KamailioProcess
    nodes: list[Node]

    def states(self) -> dict[str, str]:
        return self.proxy.node_states()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    assert INSTALL is not None
    state = tmp_path_factory.mktemp("kamailio")
    prompts = state / "prompts"
    prompts.mkdir()
    proxy_port = free_port(PROXY_HOST, udp_too=True)
    ports = [free_port(host, udp_too=True) for host in NODE_HOSTS]
    world = render_world(install=INSTALL, state=state / "world", pbx_host=NODE_HOSTS[0],
                         pbx_sip_port=ports[0], secret=secrets.token_hex(16), desk_secret=None,
                         sounds=prompts, trunk_target=f"{PROXY_HOST}:{proxy_port}",
                         pbx_match=",".join(NODE_HOSTS))
    # The same settings on every node but where it listens: the trunks (for calls out, straight
    # to the carrier) and the one new one, the proxy's address.
    env = {**trunk_env(world), "PR_SIP_PROXY": PROXY_HOST}
    nodes = []
    for n, (host, port) in enumerate(zip(NODE_HOSTS, ports, strict=True)):
        layout = render_pbx(install=INSTALL, state=state / f"node{n + 1}", prompts=prompts,
                            prompts_name="peoples-response", agi_url=AGI_DOWN,
                            ami_secret=secrets.token_hex(16),
                            observer_secret=secrets.token_hex(16), host=host, sip_port=port,
                            ami_port=free_port(host), extra_env=env)
        nodes.append(Node(f"node{n + 1}", layout,
                          AsteriskProcess(INSTALL, layout.conf, layout.log)))
    proxy_layout = kamailio.render_kamailio(
        state=state / "proxy", host=PROXY_HOST, port=proxy_port,
        nodes=[node.layout.sip for node in nodes], trunks=TRUNK_ADDRESSES, ping_interval_s=1)
    kamailio.check_config(proxy_layout)
    world_proc = AsteriskProcess(INSTALL, world.conf, world.log)
    procs = [world_proc, *(node.proc for node in nodes)]
    errors: list[BaseException] = []

    def start(proc: AsteriskProcess) -> None:
        try:
            proc.start()
        except BaseException as exc:  # raised below, once every start is over
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(p,)) for p in procs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    proxy = kamailio.KamailioProcess(proxy_layout)
    try:
        if errors:
            raise errors[0]
        proxy.start()
        yield Cluster(world, world_proc, proxy, nodes)
    finally:
        proxy.stop()
        for proc in procs:
            proc.stop()


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll (bounded) until ``condition()`` is true; nothing here is timed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout:g} s")


# ---- watching the calls -----------------------------------------------------------------


@dataclass
class Arrival:
    node: str
    channel: str
    context: str
    trunk_headers: list[str]


@dataclass
class Watch:
    """Calls the world places (tagged X-PR-Sim) and where they arrive."""

    world: AmiConnection
    nodes: dict[str, AmiConnection] = field(default_factory=dict)
    arrived: dict[str, Arrival] = field(default_factory=dict)
    answered: dict[str, str] = field(default_factory=dict)  # tag -> Success / Failure
    ended: set[str] = field(default_factory=set)  # the caller's (world's) leg hung up
    tasks: set[asyncio.Task] = field(default_factory=set)

    async def attach(self, node: Node) -> None:
        """Watch a node's AMI (again, after a restart)."""
        conn = await AmiConnection.connect(node.layout.host, node.layout.ami_port, "pr-observer",
                                           node.layout.observer_secret)
        conn.subscribers.append(lambda e: self._on_node(node.name, conn, e))
        self.nodes[node.name] = conn

    def on_world(self, e: Message) -> None:
        tag = e.get("Uniqueid", "")[:-2] if e.get("Uniqueid", "").endswith("-w") else ""
        if e.get("Event") == "OriginateResponse" and tag:
            self.answered[tag] = e.get("Response", "")
        elif e.get("Event") == "Hangup" and tag:
            self.ended.add(tag)

    def _on_node(self, node: str, conn: AmiConnection, e: Message) -> None:
        if e.get("Event") == "Newchannel" and e.get("Channel", "").startswith("PJSIP/") \
                and e.get("Context", "").startswith("from-"):
            task = asyncio.ensure_future(self._identify(node, conn, e))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _identify(self, node: str, conn: AmiConnection, e: Message) -> None:
        channel = e["Channel"]

        async def header(name: str, n: int = 1) -> str:
            reply = await conn.action({"Action": "Getvar", "Channel": channel,
                                       "Variable": f"PJSIP_HEADER(read,{name},{n})"})
            return reply.get("Value", "")

        tag = await header("X-PR-Sim")
        trunks = [value for value in [await header("X-PR-Trunk", n) for n in (1, 2, 3)] if value]
        self.arrived[tag] = Arrival(node, channel, e.get("Context", ""), trunks)

    async def place(self, source: str, headers: dict[str, str] | None = None,
                    dial: str | None = None) -> str:
        """A call from a trunk of the world (through Kamailio), or ``dial`` as given."""
        tag = f"k{secrets.token_hex(5)}"
        variables = [f"PJSIP_HEADER(add,{name})={value}"
                     for name, value in {"X-PR-Sim": tag, **(headers or {})}.items()]
        reply = await self.world.action([
            ("Action", "Originate"),
            ("Channel", dial or f"PJSIP/{EXTENSIONS[source]}@to-{source}"),
            ("Context", "world-caller"), ("Exten", "s"), ("Priority", "1"),
            ("ChannelId", f"{tag}-w"), ("Async", "true"), ("Timeout", "30000"),
            ("Variable", variables)])  # type: ignore[list-item]
        assert reply.get("Response") == "Success", reply
        return tag

    async def settle(self, tags: list[str], timeout: float = 30) -> None:
        """Until every call was answered or refused (and an answered one was seen)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if all(t in self.answered and (self.answered[t] != "Success" or t in self.arrived)
                   for t in tags):
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"calls not settled: answered {self.answered}, "
                             f"arrived {self.arrived}")

    async def hangup_all(self) -> None:
        await self.world.action({"Action": "Hangup", "Channel": "/^PJSIP\\//"})


@asynccontextmanager
async def watching(cluster: Cluster) -> AsyncIterator[Watch]:
    world = await AmiConnection.connect("127.0.0.1", cluster.world.ami_port, "world",
                                        cluster.world.secret)
    watch = Watch(world)
    world.subscribers.append(watch.on_world)
    try:
        for node in cluster.nodes:
            await watch.attach(node)
        yield watch
    finally:
        await watch.hangup_all()
        for conn in (world, *watch.nodes.values()):
            await conn.close()


def sip_request(source: str, node: PbxLayout, method: str, headers: tuple[str, ...] = ()
                ) -> list[str]:
    """One request by hand from ``source`` (any port): the status lines it got back."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((source, 0))
        s.settimeout(3)
        port = s.getsockname()[1]
        uri = f"sip:{EXTENSIONS['911'] + '@' if method == 'INVITE' else ''}{node.sip}"
        lines = [f"{method} {uri} SIP/2.0",
                 f"Via: SIP/2.0/UDP {source}:{port};branch=z9hG4bK{uuid.uuid4().hex[:12]};rport",
                 f"From: <sip:+16175551234@{source}>;tag={uuid.uuid4().hex[:8]}", f"To: <{uri}>",
                 f"Call-ID: {uuid.uuid4().hex}", f"CSeq: 1 {method}",
                 f"Contact: <sip:caller@{source}:{port}>", "Max-Forwards: 70", *headers,
                 "Content-Length: 0", "", ""]
        s.sendto("\r\n".join(lines).encode(), (node.host, node.sip_port))
        status: list[str] = []
        while not status or status[-1].startswith("1"):
            try:
                status.append(s.recv(65535).decode(errors="replace").split("\r\n")[0][8:])
            except TimeoutError:
                status.append("(no answer)")
        return status


# ---- the tests ----------------------------------------------------------------------------


async def test_every_node_answers_the_proxys_probes(cluster: Cluster) -> None:
    """Both nodes answer Kamailio's OPTIONS (as the sip-proxy endpoint): active."""
    await asyncio.to_thread(wait_for, lambda: all(flags.startswith("A") for flags in
                                                  cluster.states().values()), 15,
                            f"both nodes active ({cluster.states()})")
    assert set(cluster.states()) == {node.uri for node in cluster.nodes}


async def test_a_node_takes_calls_only_named_by_the_proxy(cluster: Cluster) -> None:
    """The node's side of the contract, by hand: from the proxy's own address its OPTIONS
    are answered; an INVITE without X-PR-Trunk reaches no trunk context (404, no channel);
    X-PR-Trunk from any other address is challenged like an unknown caller (401)."""
    node = cluster.nodes[0].layout
    async with watching(cluster) as watch:
        assert sip_request(PROXY_HOST, node, "OPTIONS") == ["200 OK"]
        assert sip_request(PROXY_HOST, node, "INVITE")[-1] == "404 Not Found"
        trunk_911 = TRUNK_ADDRESSES["911"]
        assert sip_request(trunk_911, node, "INVITE", ("X-PR-Trunk: 911",))[-1] == \
            "401 Unauthorized"
        assert not watch.arrived


async def test_calls_arrive_as_the_trunk_they_came_in_on(cluster: Cluster) -> None:
    """(a) Kamailio knows the trunk by source address and tells the node; the node lands
    the call in that trunk's context, exactly as a single box does by address."""
    async with watching(cluster) as watch:
        tags = {source: await watch.place(source) for source in ("911", "direct", "988")}
        await watch.settle(list(tags.values()))
        for source, tag in tags.items():
            assert watch.answered[tag] == "Success", (source, watch.answered)
            arrival = watch.arrived[tag]
            assert arrival.context == f"from-{source}", arrival
            assert arrival.channel.startswith(f"PJSIP/proxied-{source}-"), arrival
            assert arrival.trunk_headers == [source], arrival


async def test_calls_are_spread_over_both_nodes(cluster: Cluster) -> None:
    """(b) Round robin: six calls, and each node takes some."""
    async with watching(cluster) as watch:
        tags = [await watch.place("direct") for _ in range(6)]
        await watch.settle(tags)
        assert all(watch.answered[t] == "Success" for t in tags), watch.answered
        per_node = {node.name: sum(watch.arrived[t].node == node.name for t in tags)
                    for node in cluster.nodes}
        assert all(count > 0 for count in per_node.values()), per_node
        assert sum(per_node.values()) == len(tags)


async def test_a_caller_cannot_name_the_trunk(cluster: Cluster) -> None:
    """(d) An X-PR-Trunk the caller sent (in any letter case) is dropped by Kamailio: a call
    from the direct line stays a direct one. Sent straight to a node, bypassing Kamailio, the
    header is refused by the node (its ACL: only the proxy may name a trunk)."""
    async with watching(cluster) as watch:
        spoofed = await watch.place("direct", {"X-PR-Trunk": "911", "x-pr-trunk": "988"})
        node = cluster.nodes[0].layout
        # From the 911 center's own address, even: only Kamailio's address is trusted.
        around = await watch.place("911", {"X-PR-Trunk": "911"},
                                   dial=f"PJSIP/to-911/sip:{EXTENSIONS['911']}@{node.sip}")
        await watch.settle([spoofed, around])
        assert watch.answered[spoofed] == "Success"
        arrival = watch.arrived[spoofed]
        assert arrival.context == "from-direct", arrival
        assert arrival.trunk_headers == ["direct"], arrival
        assert watch.answered[around] == "Failure", watch.answered
        assert around not in watch.arrived


async def test_a_node_that_stops_answering_gets_no_new_calls(cluster: Cluster) -> None:
    """(c) A node killed: a call sent to it before Kamailio knows (its INVITE unanswered)
    goes on to the other node; once its OPTIONS fail, every new call goes to the other node;
    no call is refused. Started again, it gets calls again. Its callers of before can't be
    moved: Kamailio's in-dialog keepalive hangs them up (rather than leave them in silence),
    and leaves the other node's callers alone."""
    down, up = cluster.nodes
    await asyncio.to_thread(wait_for, lambda: all(f.startswith("A") for f in
                                                  cluster.states().values()), 15, "all active")
    async with watching(cluster) as watch:
        live = [await watch.place("direct") for _ in range(2)]  # round robin: one on each
        await watch.settle(live)
        on_down = [t for t in live if watch.arrived[t].node == down.name]
        on_up = [t for t in live if watch.arrived[t].node == up.name]
        assert len(on_down) == len(on_up) == 1, watch.arrived

        down.proc.kill()
        # At once, before any probe failed: whichever node round robin picks, it gets through.
        first = [await watch.place("direct") for _ in range(2)]
        await watch.settle(first, timeout=40)
        assert all(watch.answered[t] == "Success" for t in first), watch.answered
        assert all(watch.arrived[t].node == up.name for t in first)
        await asyncio.to_thread(wait_for, lambda: cluster.states()[down.uri].startswith("I"),
                                15, f"{down.name} inactive")
        later = [await watch.place(source) for source in ("direct", "911", "988", "direct")]
        await watch.settle(later)
        assert all(watch.answered[t] == "Success" for t in later), watch.answered
        assert [watch.arrived[t].node for t in later] == [up.name] * len(later)
        assert [watch.arrived[t].context for t in later] == \
            ["from-direct", "from-911", "from-988", "from-direct"]

        await asyncio.to_thread(down.proc.start)
        await asyncio.to_thread(wait_for, lambda: cluster.states()[down.uri].startswith("A"), 15,
                                f"{down.name} active again")
        await watch.attach(down)
        again = [await watch.place("direct") for _ in range(4)]
        await watch.settle(again)
        assert all(watch.answered[t] == "Success" for t in again), watch.answered
        assert {watch.arrived[t].node for t in again} == {down.name, up.name}

        # The dialog module's least keepalive interval is 30 s, then 10 s of grace: bounded.
        await asyncio.to_thread(wait_for, lambda: on_down[0] in watch.ended, 75,
                                "the killed node's caller hung up by Kamailio")
        assert on_up[0] not in watch.ended


def test_the_rendered_proxy_config_is_one_kamailio_accepts(tmp_path: Path) -> None:
    """kamailio -c on a render with every trunk unset (placeholders) and with host names."""
    layout = kamailio.render_kamailio(state=tmp_path, host="127.0.0.1", port=5060,
                                      nodes=["127.0.0.1:5070", "localhost:5080"], trunks={})
    kamailio.check_config(layout)
    assert '"192.0.2.1/32"' in layout.site.read_text()
