"""Which Asterisk node a channel is on, when the line runs on more than one.

Channel names are only unique within one Asterisk (both nodes number their channels from
00000000), so with several nodes every channel we keep or hear about is written
``<node>|<channel>``; with one node (no name) it is the channel name as Asterisk gives it,
exactly as before. The node names are the ``PR_NODE_NAME`` each Asterisk was rendered with
(its dialplan passes it to every AGI script) and the keys of ``PR_PBX_NODES`` (the
dispatcher's AMI sessions)."""

from __future__ import annotations

import re

SEPARATOR = "|"
NODE_NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")


def valid_node(name: str) -> bool:
    return bool(NODE_NAME.fullmatch(name))


def qualify(node: str, channel: str) -> str:
    """The channel as we keep it: prefixed by its node when there is one."""
    return f"{node}{SEPARATOR}{channel}" if node and channel else channel


def split(ref: str) -> tuple[str, str]:
    """(node, channel name) of a kept channel; node "" for a single-node line."""
    node, sep, channel = ref.partition(SEPARATOR)
    if sep and valid_node(node):
        return node, channel
    return "", ref
