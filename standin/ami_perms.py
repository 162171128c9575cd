"""Event classes, as main/manager.c filters what a session receives.

A session's event mask is set by Login's ``Events`` header and by the ``Events`` action's
``EventMask`` (set_eventmask -> strings_to_mask): empty leaves it unchanged, digits are
the mask itself, a false word (off, no...) is nothing, a true word (on, yes...) is every
class, otherwise the comma-separated class names. An event is delivered only when the
session's mask holds every class of the event (``Privilege: call,all`` is class "call").
A client that asks for ``Events: call,user,system`` is spared the dialplan (Newexten,
VarSet) and AGI (AGIExecStart/End) events that make up most of Asterisk's traffic.
"""

from __future__ import annotations

from collections.abc import Iterable

# include/asterisk/manager.h EVENT_FLAG_*, in the order of manager.c perms[].
CLASSES = ("system", "call", "log", "verbose", "command", "agent", "user", "config", "dtmf",
           "reporting", "cdr", "dialplan", "originate", "agi", "cc", "aoc", "test",
           "security", "message")
FLAG = {name: 1 << i for i, name in enumerate(CLASSES)}
ALL = (1 << len(CLASSES)) - 1
SYSTEM = FLAG["system"]
# main/utils.c ast_true / ast_false, less "1" and "0": digits are a mask first (so "1" is
# the system class alone, as in Asterisk).
_TRUE = {"yes", "true", "y", "t", "on"}
_FALSE = {"no", "false", "n", "f", "off"}


def strings_to_mask(text: str) -> int:
    """-1 for "leave it as it is", else the mask."""
    text = text.strip()
    if not text:
        return -1
    if text.isdigit():
        return int(text)
    if text.lower() in _FALSE:
        return 0
    if text.lower() in _TRUE:
        return ALL
    tokens = {t.strip() for t in text.split(",")}
    mask = 0
    for name, flag in FLAG.items():
        if name in tokens:
            mask |= flag
    return mask


def event_category(pairs: Iterable[tuple[str, object]]) -> int:
    """The classes an event belongs to, from its Privilege header (0: none given)."""
    for key, value in pairs:
        if key.lower() == "privilege":
            return sum(FLAG.get(name.strip(), 0) for name in set(str(value).split(",")))
    return 0


def wants(mask: int, category: int) -> bool:
    return (mask & category) == category
