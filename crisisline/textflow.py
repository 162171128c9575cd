"""The text line's decisions (SMS and the chat page), as plain data and functions: no
sockets, no Redis, no clock.

A conversation's progress is a small value (:class:`TextState`). :func:`on_sms` and
:func:`on_chat` decide what one message from the texter does: the line's replies (catalog
prompts of audience ``texter``, all in one language), the new state, and whether the
message is kept as part of the conversation, queues it, stops it, or erases it. The chat
app and the SMS webhook run the decisions; the tests run them with plain values.

The path, as for a call (crisisline.ivr): the language first, then the queue, then a person.

- **SMS.** A first text that is a menu number ("2", as a poster may say) chooses that
  language at once. Any other first text is kept (it is the person's own words) and answered
  with the language menu in the default language, each option in its own language
  ("Para español, responda 2"). The next text chooses by number; anything else means the
  default language (never a dead end), and is kept. No answer to the menu for
  ``MENU_TIMEOUT_S`` also means the default language (:func:`on_menu_timeout`). Once the
  language is known the conversation is queued and the texter gets the promise (community
  responders, never police, what is kept and for how long) in it. A ZIP code sent while no
  neighborhood is known sets it (routing reads it on the next wave).
- **Chat.** The page asks the language (buttons, each in its own language) and shows the
  promise before anything is typed; the first message queues the conversation.
- **Keywords (SMS only, a text that is just the word):** STOP (and the carriers' STOPALL,
  UNSUBSCRIBE, CANCEL, END, QUIT) stops every text at once, with one confirmation that says
  how to come back and gives the phone number; DELETE erases the conversation; HELP (INFO)
  answers who we are and the phone number, **and is kept as the person's words** (someone
  who writes "help" may be asking for it). START (UNSTOP, YES) after a STOP texts again.
- **One language per reply.** A language missing any texter text is written to in the
  default language, the whole conversation long (:func:`texts_language`), never a mix.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

# Stages of a conversation.
NEW = "new"        # nothing received yet
MENU = "menu"      # the language menu was sent; waiting for a number
OPEN = "open"      # queued: waiting for a responder, or with one
ENDED = "ended"

SMS = "sms"
CHAT = "chat"
CHANNELS = (SMS, CHAT)

STOP_WORDS = frozenset({"stop", "stopall", "unsubscribe", "cancel", "end", "quit"})
START_WORDS = frozenset({"start", "unstop", "yes"})
HELP_WORDS = frozenset({"help", "info"})
DELETE_WORDS = frozenset({"delete"})

MENU_TIMEOUT_S = 120.0  # no answer to the SMS language menu: the default language

# Every texter text a conversation may need: a language lacking any of them is written to
# in the default language (texts_language). The chat page's own labels are in CHAT_LABELS.
SMS_PROMPTS = ("text_menu", "text_language_option", "text_promise", "sms_options", "text_waiting",
               "text_zip_saved", "text_connected", "text_still_looking", "text_unattended",
               "text_help", "text_stopped", "text_deleted", "text_ended", "text_calling",
               "text_too_long", "text_slow_down")
CHAT_LABELS = ("chat_title", "chat_intro", "chat_leave", "chat_delete", "chat_delete_confirm",
               "chat_send", "chat_message_label", "chat_zip_label", "chat_call_me",
               "chat_phone_label", "chat_call_asked", "chat_you", "chat_responder", "chat_line",
               "chat_language")
TEXTER_PROMPTS = SMS_PROMPTS + CHAT_LABELS

GSM7 = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    "ÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà")
GSM7_EXTENDED = frozenset("^{}\\[~]|€\f")
_ZIP = re.compile(r"^\s*(\d{5})(?:-\d{4})?\s*$")
_KEYWORD = re.compile(r"^\s*([A-Za-z]+)[\s.!]*$")


@dataclass(frozen=True)
class Reply:
    """One text of the line to the texter: a catalog prompt and its placeholders."""

    prompt: str
    fields: tuple[tuple[str, str], ...] = ()

    def values(self) -> dict[str, str]:
        return dict(self.fields)


@dataclass(frozen=True)
class TextState:
    stage: str = NEW
    language: str | None = None
    zip_code: str | None = None
    neighborhood: str | None = None
    # Answers taken as defaults rather than chosen (for the record), like the IVR's.
    defaulted: tuple[str, ...] = ()


@dataclass(frozen=True)
class Decision:
    state: TextState
    replies: tuple[Reply, ...] = ()
    keep: bool = False      # the message is the person's words: kept, shown to the responder
    queue: bool = False     # into the queue now (responders are offered it)
    stop: bool = False      # carriers' STOP: end it, and send nothing more to this number
    start: bool = False     # START after a STOP: this number may be texted again
    erase: bool = False     # DELETE: erase the conversation everywhere, at once
    rezoned: bool = False   # a ZIP code set the neighborhood


@dataclass(frozen=True)
class TextContext:
    languages: Sequence[str]          # configured, in menu order (a language's key is its place)
    default_language: str
    text_languages: frozenset[str]    # languages with every texter text (texts_language)
    neighborhood_for_zip: Callable[[str], str | None] = lambda _zip: None
    known: frozenset[str] | None = None  # languages the catalog knows (None: all configured)

    def menu(self) -> list[tuple[str, str]]:
        """(key, language): every configured language the catalog knows, keyed by its place."""
        return [(str(n + 1), lang) for n, lang in enumerate(self.languages)
                if self.known is None or lang in self.known]


def keyword(body: str) -> str | None:
    """The carrier keyword a text is, if it is one word alone ("Stop." counts)."""
    found = _KEYWORD.match(body or "")
    return found.group(1).lower() if found else None


def zip_in(body: str) -> str | None:
    found = _ZIP.match(body or "")
    return found.group(1) if found else None


def texts_language(language: str | None, ctx: TextContext) -> str:
    """The language the line writes in: the texter's when every texter text exists in it,
    else the default language for all of it."""
    return language if language in ctx.text_languages else ctx.default_language


def complete_languages(catalog_texts: dict[str, Iterable[str]]) -> frozenset[str]:
    """Languages with a text for every name in TEXTER_PROMPTS, from {prompt: languages}."""
    langs: set[str] | None = None
    for name in TEXTER_PROMPTS:
        have = set(catalog_texts.get(name, ()))
        langs = have if langs is None else langs & have
    return frozenset(langs or ())


def sms_segments(body: str) -> int:
    """How many SMS segments a text takes (GSM 03.38 when it fits, else UCS-2)."""
    if not body:
        return 1
    if all(c in GSM7 or c in GSM7_EXTENDED for c in body):
        units = sum(2 if c in GSM7_EXTENDED else 1 for c in body)
        return 1 if units <= 160 else -(-units // 153)
    units = sum(2 if ord(c) > 0xFFFF else 1 for c in body)  # UTF-16 code units
    return 1 if units <= 70 else -(-units // 67)


# ---- decisions ---------------------------------------------------------------------------

def _promise(channel: str, days: int) -> tuple[Reply, ...]:
    out = [Reply("text_promise", (("days", str(days)),))]
    if channel == SMS:
        out.append(Reply("sms_options"))
    out.append(Reply("text_waiting"))
    return tuple(out)


def _choose(state: TextState, language: str, defaulted: bool = False) -> TextState:
    return replace(state, stage=OPEN, language=language,
                   defaulted=state.defaulted + (("language",) if defaulted else ()))


def on_sms(state: TextState, body: str, ctx: TextContext, retention_days: int,
           waiting: bool = True) -> Decision:
    """One text from the texter's phone. ``waiting``: nobody has taken the conversation yet
    (a ZIP code then sets the neighborhood; with a person it is just words)."""
    word = keyword(body)
    if word in STOP_WORDS:
        return Decision(replace(state, stage=ENDED), (Reply("text_stopped"),), stop=True)
    if word in DELETE_WORDS:
        return Decision(replace(state, stage=ENDED), (Reply("text_deleted"),), erase=True)
    if word in START_WORDS and state.stage in (NEW, ENDED):
        first = _on_sms(TextState(), body, ctx, retention_days, True)
        return replace(first, start=True, keep=False)
    decision = _on_sms(state, body, ctx, retention_days, waiting)
    if word in HELP_WORDS:
        # Carriers require the answer; the person may also be asking for help: kept, queued.
        return replace(decision, replies=(Reply("text_help"), *decision.replies), keep=True)
    return decision


def _on_sms(state: TextState, body: str, ctx: TextContext, days: int, waiting: bool) -> Decision:
    keys = dict(ctx.menu())
    choice = keys.get((body or "").strip())
    if state.stage in (NEW, ENDED):
        if choice:
            return Decision(_choose(TextState(), choice), _promise(SMS, days), queue=True)
        menu = TextState(stage=MENU)
        return Decision(menu, (Reply("text_menu"),), keep=bool((body or "").strip()))
    if state.stage == MENU:
        if choice:
            return Decision(_choose(state, choice), _promise(SMS, days), queue=True)
        return Decision(_choose(state, ctx.default_language, defaulted=True),
                        _promise(SMS, days), keep=True, queue=True)
    return _in_conversation(state, body, ctx, waiting)


def _in_conversation(state: TextState, body: str, ctx: TextContext, waiting: bool) -> Decision:
    """Words for the responder. While nobody has it yet, a ZIP code alone also sets the
    neighborhood (routing reads it on the next wave); it is kept either way."""
    zip_code = zip_in(body) if waiting and state.zip_code is None else None
    if zip_code:
        hood = ctx.neighborhood_for_zip(zip_code)
        return Decision(replace(state, zip_code=zip_code, neighborhood=hood),
                        (Reply("text_zip_saved"),), keep=True, rezoned=True)
    return Decision(state, keep=True)


def on_menu_timeout(state: TextState, ctx: TextContext, retention_days: int) -> Decision:
    """Nobody answered the SMS language menu: the default language, and the queue."""
    if state.stage != MENU:
        return Decision(state)
    return Decision(_choose(state, ctx.default_language, defaulted=True),
                    _promise(SMS, retention_days), queue=True)


def on_chat(state: TextState, body: str, ctx: TextContext, language: str | None = None,
            zip_code: str | None = None, waiting: bool = True) -> Decision:
    """One message from the chat page. The first one carries the language chosen on the page
    (and the ZIP code if given): it queues the conversation. The page itself showed the
    promise before anything was typed; no keywords here (the page has buttons)."""
    if state.stage in (NEW, MENU, ENDED):
        lang = language if language in dict((v, k) for k, v in ctx.menu()) else None
        chosen = _choose(TextState(), lang or ctx.default_language, defaulted=lang is None)
        code = zip_in(zip_code or "") if zip_code else None
        if code:
            chosen = replace(chosen, zip_code=code, neighborhood=ctx.neighborhood_for_zip(code))
        return Decision(chosen, (Reply("text_waiting"),), keep=True, queue=True, rezoned=bool(code))
    return _in_conversation(state, body, ctx, waiting)


# ---- what the line writes -------------------------------------------------------------------

@dataclass(frozen=True)
class Written:
    language: str  # the language every text is in
    texts: tuple[str, ...] = field(default_factory=tuple)


def write(replies: Iterable[Reply], language: str | None, ctx: TextContext,
          text: Callable[..., str], phone: str = "", native: Callable[[str], str] = str) -> Written:
    """The replies as texts, all in one language. ``text(name, lang, **fields)`` is the
    catalog's; ``native(lang)`` a language's own name (for a menu line it has no text for)."""
    lang = texts_language(language, ctx)
    out = []
    for reply in replies:
        fields = {"phone": phone, **reply.values()}
        if reply.prompt == "text_menu":
            lines = [text("text_menu", lang, **fields)]
            for key, option in ctx.menu():
                if option in ctx.text_languages:
                    lines.append(text("text_language_option", option, key=key))
                else:
                    lines.append(f"{native(option)}: {key}")
            out.append("\n".join(lines))
        else:
            out.append(text(reply.prompt, lang, **fields))
    return Written(lang, tuple(out))
