"""Several Asterisk nodes behind the face of one AMI gateway (``PR_PBX_NODES``).

The dispatcher keeps one AMI session to every node and speaks to them as if they were one
PBX: every channel it hears of is named ``<node>|<channel>`` (crisisline.nodes), and an
action on such a channel goes to that node with the bare name. A responder's leg (any
Originate) goes to the node where its call's caller is (the call record's ``pbx_node``,
written by the IVR): the leg's whisper moves the caller into a room on its own node. A call with no
caller channel (a callback request, a text conversation) is placed on the first node that
is up, and the record says which, so every later leg of it lands in the same room.

Uniqueids need no prefix: each node is rendered with its own ``systemname`` (entrypoint:
``PR_NODE_NAME``), which Asterisk puts in front of every uniqueid; ours (ChannelId) carry
the call id.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from crisisline.config import Settings
from crisisline.nodes import qualify, split
from crisisline.stores.calls import call_key
from workers.dispatcher.ami import AmiGateway, EventHandler

log = logging.getLogger(__name__)
CHANNEL_FIELDS = ("Channel", "DestChannel")
RETRY_S = 1.0
# A node that could not be asked for this long counts as having no channels: its calls end
# in the record (as what they were) instead of holding responders for a node gone for good.
NODE_GONE_S = 60.0


class PbxNodes:
    def __init__(self, settings: Settings, redis: Any) -> None:
        self.settings = settings
        self.redis = redis
        self.gateways: dict[str, AmiGateway] = {}
        for name, address in settings.pbx_nodes.items():
            host, _, port = str(address).rpartition(":")
            gateway = AmiGateway(dataclasses.replace(settings, ami_host=host, ami_port=int(port)))
            gateway.sift = self._sifter(name)
            gateway.handlers.append(self._relay)
            gateway.originate_results.append(self._result)
            self.gateways[name] = gateway
        self.handlers: list[EventHandler] = []
        self.sift: Callable[[dict[str, str]], bool] | None = None  # (AmiGateway.sift)
        self.originate_results: list[Callable[[str, dict[str, str]], Awaitable[None]]] = []
        self._tasks: set[asyncio.Task] = set()
        self.unseen_since: dict[str, float] = {}  # node -> since when it could not be asked

    # ---- sessions ---------------------------------------------------------------------------
    async def connect(self) -> None:
        """Every node once; one that can't be reached now is tried again in the background
        (a node down must not keep the dispatcher from the others' callers)."""
        results = await asyncio.gather(*(g.connect() for g in self.gateways.values()),
                                       return_exceptions=True)
        failed = [(n, r) for n, r in zip(self.gateways, results, strict=True)
                  if isinstance(r, BaseException)]
        if len(failed) == len(self.gateways):
            raise ConnectionError("no Asterisk node answered: " +
                                  "; ".join(f"{n}: {r}" for n, r in failed))
        for name, exc in failed:
            log.warning("Asterisk node %s not reachable (%s); retrying", name, exc)
            self._spawn(self._keep_trying(name))

    async def _keep_trying(self, name: str) -> None:
        while True:
            await asyncio.sleep(RETRY_S)
            try:
                await self.gateways[name].connect()
                log.info("Asterisk node %s connected", name)
                return
            except Exception:
                continue

    @property
    def listening_since(self) -> float | None:
        """The latest login among the nodes that are up (what happened before it on any
        of them may have gone unheard); None when none is."""
        since = [g.listening_since for g in self.gateways.values() if g.listening_since]
        return max(since) if since else None

    def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for gateway in self.gateways.values():
            gateway.close()

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- events -----------------------------------------------------------------------------
    def _sifter(self, node: str) -> Callable[[dict[str, str]], bool]:
        """A node's events as every handler reads them (channel names qualified with the
        node, PRNode), then sifted (AmiGateway.sift)."""
        def sift(event: dict[str, str]) -> bool:
            for key in CHANNEL_FIELDS:
                if event.get(key):
                    event[key] = qualify(node, event[key])
            event["PRNode"] = node
            return self.sift is None or self.sift(event)
        return sift

    async def _relay(self, event: dict[str, str]) -> None:
        for handler in self.handlers:
            try:
                await handler(event)
            except Exception:
                log.exception("AMI event handler failed on %s", event.get("Event"))

    async def _result(self, channel_id: str, result: dict[str, str]) -> None:
        for callback in self.originate_results:
            await callback(channel_id, result)

    # ---- actions ----------------------------------------------------------------------------
    def _on(self, ref: str) -> tuple[AmiGateway | None, str]:
        node, channel = split(ref)
        return self.gateways.get(node), channel

    async def action(self, action: dict[str, Any]) -> dict[str, str]:
        gateway, channel = self._on(str(action.get("Channel", "")))
        if gateway is None:
            return {"Response": "Error", "Message": "No such channel"}
        return await gateway.action({**action, "Channel": channel})

    async def setvar(self, channel: str, variable: str, value: str) -> bool:
        gateway, bare = self._on(channel)
        return gateway is not None and await gateway.setvar(bare, variable, value)

    async def hangup(self, channel: str, cause: int = 16) -> None:
        gateway, bare = self._on(channel)
        if gateway is not None:
            await gateway.hangup(bare, cause)

    async def redirect(self, channel: str, context: str, exten: str = "s") -> bool:
        gateway, bare = self._on(channel)
        return gateway is not None and await gateway.redirect(bare, context, exten)

    async def _listings(self, action: dict[str, Any], item: str
                        ) -> list[tuple[str, list[dict[str, str]] | None]]:
        """Each node's items, channels named by node; None for a node not asked."""
        answers = await asyncio.gather(*(g.listing(action, item) if g.listening_since else
                                         _none() for g in self.gateways.values()))
        for node, items in zip(self.gateways, answers, strict=True):
            for entry in items or ():
                for key in CHANNEL_FIELDS:
                    if entry.get(key):
                        entry[key] = qualify(node, entry[key])
                entry["PRNode"] = node
        return list(zip(self.gateways, answers, strict=True))

    async def listing(self, action: dict[str, Any], item: str) -> list[dict[str, str]] | None:
        """Every node's items, channels named by node; None when any node could not be
        asked (a pass must not take a node it can't see for a node with no calls)."""
        listings = await self._listings(action, item)
        if any(items is None for _, items in listings):
            return None
        return [entry for _, items in listings for entry in items or ()]

    async def listing_nodes(self, action: dict[str, Any], item: str
                            ) -> tuple[list[dict[str, str]], set[str]]:
        """Every node's items as :meth:`listing` gives them, and the nodes that could not be
        asked (a reconciler leaves their calls alone), except a node unseen for NODE_GONE_S,
        which counts as listing nothing."""
        merged: list[dict[str, str]] = []
        unseen: set[str] = set()
        now = time.monotonic()
        for node, items in await self._listings(action, item):
            if items is None:
                if now - self.unseen_since.setdefault(node, now) < NODE_GONE_S:
                    unseen.add(node)
                continue
            self.unseen_since.pop(node, None)
            merged += items
        return merged, unseen

    def originate(self, channel_id: str, destination: str, context: str,
                  variables: dict[str, str], timeout_s: float, **kw: Any) -> None:
        """On the node of the call in PR_CALL_ID (looked up in the background, as the
        gateway's own originate sends in the background)."""
        self._spawn(self._originate(channel_id, destination, context, variables, timeout_s, kw))

    async def _originate(self, channel_id: str, destination: str, context: str,
                         variables: dict[str, str], timeout_s: float, kw: dict[str, Any]) -> None:
        node = await self.node_for(variables.get("PR_CALL_ID", ""))
        if node is None:
            await self._result(channel_id, {"Response": "Failure", "Reason": "0",
                                            "Error": "no Asterisk node is up"})
            return
        self.gateways[node].originate(channel_id, destination, context, variables, timeout_s,
                                      **kw)

    async def node_for(self, call_id: str) -> str | None:
        """The node a call's legs go to: its caller's. None when that node is down: a leg
        on another node could never reach the caller (and a channel of the same name there
        is somebody else). A call with no caller channel (a callback request, a text) goes
        to the first node up, kept in the record so that its next legs join the same room."""
        node = channel = ""
        if call_id:
            try:
                raw = await self.redis.hmget(call_key(call_id), ["pbx_node", "channel"])
                node, channel = (v.decode() if isinstance(v, bytes) else (v or "") for v in raw)
            except Exception as exc:
                log.warning("node of %s unknown (%s)", call_id, exc)
        if node in self.gateways and self.gateways[node].listening_since:
            return node
        if node and channel:
            return None
        up = [n for n, g in self.gateways.items() if g.listening_since]
        if not up:
            return None
        if call_id:
            try:
                await self.redis.hset(call_key(call_id), "pbx_node", up[0])
            except Exception as exc:
                log.warning("could not note the node of %s (%s)", call_id, exc)
        return up[0]


async def _none() -> None:
    return None


def gateway_for(settings: Settings, redis: Any) -> AmiGateway | PbxNodes:
    """One AMI session (a line with one Asterisk) or one per node (``PR_PBX_NODES``)."""
    return PbxNodes(settings, redis) if settings.pbx_nodes else AmiGateway(settings)
