"""Argument splitting, conditions and ``$[ ]`` expressions of the stand-in dialplan
(main/app.c __ast_app_separate_args, pbx_checkcondition, main/ast_expr2.y).

Apart from dialplan.py so the interpreter stays short; channel.py uses ``evaluate``
for ``$[ ]`` during substitution.
"""

from __future__ import annotations

import logging
import re

log = logging.getLogger(__name__)


def separate_args(data: str, delim: str = ",", remove_chars: bool = True) -> list[str]:
    """main/app.c __ast_app_separate_args: split on ``delim`` outside ( ) and quotes."""
    args, cur, paren, quote, i = [], [], 0, False, 0
    while i < len(data):
        c = data[i]
        if c == "(":
            paren += 1
        elif c == ")" and paren:
            paren -= 1
        elif c == '"' and delim != '"':
            quote = not quote
            if remove_chars:
                i += 1
                continue
        elif c == "\\":
            if remove_chars:
                i += 1
                if i < len(data):
                    cur.append(data[i])
                i += 1
                continue
            cur.append(c)
            i += 1
            if i < len(data):
                cur.append(data[i])
            i += 1
            continue
        elif c == delim and not paren and not quote:
            args.append("".join(cur))
            cur = []
            i += 1
            continue
        cur.append(c)
        i += 1
    args.append("".join(cur))
    return args


def is_true(value: str) -> bool:
    """pbx_checkcondition: empty is false, a number is its value, other text is true."""
    value = value.strip()
    if not value:
        return False
    try:
        return float(value) != 0
    except ValueError:
        return True


# ---- $[ ] expressions ------------------------------------------------------------
_TOKEN = re.compile(
    r'\s*(?:("(?:[^"\\]|\\.)*")|(!=|<=|>=|==|[=<>&|!+\-*/%()])|([^\s=<>&|!+\-*/%()"]+))')


def _num(v: str) -> float | None:
    try:
        return float(v)
    except ValueError:
        return None


def _apply(op: str, v: str, r: str) -> str:
    """One binary operator of ast_expr2.y: numbers compare as numbers, else as strings."""
    if op == "|":
        return v if is_true(v) else (r if is_true(r) else "0")
    if op == "&":
        return v if is_true(v) and is_true(r) else "0"
    a, b = _num(v), _num(r)
    if op in ("+", "-", "*", "/", "%"):
        if a is None or b is None or (op in "/%" and b == 0):
            return ""
        x = {"+": a + b, "-": a - b, "*": a * b, "/": float(int(a / b)), "%": a % b}[op]
        return str(int(x)) if x == int(x) else str(x)
    x, y = (a, b) if a is not None and b is not None else (v, r)
    return "1" if {"=": x == y, "==": x == y, "!=": x != y, "<": x < y, ">": x > y,
                   "<=": x <= y, ">=": x >= y}[op] else "0"


# Lowest precedence first, as in ast_expr2.y (the ternary and regex operators left out).
_LEVELS = [("|",), ("&",), ("=", "==", "!=", "<", ">", "<=", ">="), ("+", "-"), ("*", "/", "%")]


def evaluate(expr: str) -> str:
    """Evaluate the inside of ``$[ ]``; quoted strings lose their quotes."""
    tokens: list[str] = []
    pos = 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if not m or m.end() == pos:
            if expr[pos:].strip():
                log.warning("bad expression %r", expr)
            break
        pos = m.end()
        if m.group(1) is not None:
            tokens.append("\x00" + m.group(1)[1:-1].replace('\\"', '"'))
        elif m.group(2) or m.group(3):
            tokens.append(m.group(2) or m.group(3))
    if not tokens:
        return ""
    tokens.append("\x01")  # end marker
    at = [0]

    def take() -> str:
        at[0] += 1
        return tokens[at[0] - 1]

    def primary() -> str:
        t = take()
        if t == "(":
            v = level(0)
            if tokens[at[0]] == ")":
                take()
            return v
        if t == "!":
            return "0" if is_true(primary()) else "1"
        if t == "-":
            return _apply("-", "0", primary())
        return t[1:] if t.startswith("\x00") else ("" if t == "\x01" else t)

    def level(n: int) -> str:
        if n == len(_LEVELS):
            return primary()
        v = level(n + 1)
        while tokens[at[0]] in _LEVELS[n]:
            op = take()
            v = _apply(op, v, level(n + 1))
        return v

    return level(0)
