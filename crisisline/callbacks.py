"""Callbacks, as plain data and decisions: no sockets, no Redis.

A caller whom no wave reached may ask to be called back. The request lives on the call
(fields ``cb_*`` of its Redis hash) and keeps the call's place in the queue: same priority,
same arrival. Its life:

  requested  the caller answered the safety questions and is still on the line (the search
             goes on as for any waiting caller; a responder who takes it gets them at once)
  pending    the caller hung up: the dispatcher works the request exactly like a waiting
             call, from its place; between attempts it waits ``retry_s`` (not in the queue)
  calling    a responder took it: **the responder first**, then the line dials the caller
             from its own number, with the responder hearing it ring
  done       a person answered and is with the responder (outcome ``bridged``), or the
             request ended: ``failed`` after the last attempt (``machine_hung_up`` /
             ``message_left`` when a machine answered that one), ``cancelled`` (a
             supervisor), ``fallback_answered`` (the caller, still on the line, reached
             the fallback desk), ``merged`` is never an outcome: a caller who calls in
             again and waits on the line keeps the same request and call

Safety comes first and is obeyed: the number called is one the caller said is safe (the one
they called from, or another they gave), and a voicemail gets a message only if they said
yes, and then only ``callback_voicemail``'s words.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

REQUESTED, PENDING, CALLING, DONE = "requested", "pending", "calling", "done"
# One attempt's result, as the dialplan reports it (DIALSTATUS, and what the answering
# machine detection decided on an answered call).
BRIDGED = "bridged"
NO_ANSWER = "no_answer"
BUSY = "busy"
UNREACHABLE = "unreachable"
MACHINE_HUNG_UP = "machine_hung_up"
MESSAGE_LEFT = "message_left"
RESPONDER_GAVE_UP = "responder_gave_up"
LOST = "lost"  # the attempt's result never came (the PBX or the FastAGI server went away)
# Final outcomes of a request (the JSON and the records say these).
FAILED, CANCELLED, FALLBACK_ANSWERED = "failed", "cancelled", "fallback_answered"


@dataclass(frozen=True)
class SafetyAnswers:
    """What the caller said before we promised anything."""

    number: str           # E.164, the number to call: one the caller said is safe
    safe_here: bool | None  # the number they called from is safe (None: it was withheld)
    message_ok: bool      # a voicemail may get callback_voicemail's words (silence: no)


def attempt_result(dial_status: str, machine: str, responder_left: bool = False) -> str:
    """One attempt, from Dial's DIALSTATUS and what [pr-callback-answered] did on a
    machine (``hung_up`` / ``message_left`` in SHARED(PR_CB_MACHINE), else empty).
    ``responder_left``: reported by the responder's leg ending (they hung up, before or
    while the caller's phone rang)."""
    status = dial_status.strip().upper()
    if responder_left and status in ("", "CANCEL") and not machine:
        return RESPONDER_GAVE_UP
    if machine == "message_left":
        return MESSAGE_LEFT
    if machine == "hung_up":
        return MACHINE_HUNG_UP
    if status == "ANSWER":
        return BRIDGED
    if status == "BUSY":
        return BUSY
    if status == "NOANSWER":
        return NO_ANSWER
    if status == "CANCEL":
        return RESPONDER_GAVE_UP
    if status in ("CONGESTION", "CHANUNAVAIL", "INVALIDARGS"):
        return UNREACHABLE
    return LOST


@dataclass(frozen=True)
class Next:
    """What follows an attempt."""

    state: str             # PENDING (try again at ``retry_at``) or DONE
    outcome: str = ""      # set when DONE
    retry_at: float = 0.0


def after_attempt(result: str, attempts: int, max_attempts: int, retry_s: float,
                  now: float) -> Next:
    """Every unanswered attempt counts (a machine too: the person didn't pick up); the
    last one ends the request, named after what happened to it when a machine answered."""
    if result == BRIDGED:
        return Next(DONE, BRIDGED)
    if attempts >= max_attempts:
        return Next(DONE, result if result in (MACHINE_HUNG_UP, MESSAGE_LEFT) else FAILED)
    return Next(PENDING, retry_at=now + retry_s)


def may_leave_message(message_ok: bool, already_left: bool) -> bool:
    """At most one message, and only with the caller's yes."""
    return message_ok and not already_left


def number_key(number: str) -> str:
    """The index key part for a callback number: one person never holds two requests. A
    digest, so Redis key names (visible to monitoring) never show a caller's number."""
    return hashlib.sha256(number.encode()).hexdigest()[:32]
