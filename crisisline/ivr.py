"""The IVR's decisions, as plain data and a generator: no sockets, no Redis.

``intake(ctx)`` yields steps and receives a :class:`Reply` for each :class:`Ask` (and for
an interruptible :class:`Play`); it returns an :class:`IntakeResult`. The FastAGI handler
runs the steps; the tests run them with plain values.

The path (issue 10, time to a human): the language menu, then the ZIP; then **the call is
queued** (:class:`Queue`) and phones ring while the caller hears the promise, answers the
consent question and, only with an explicit yes, leaves a message (:class:`Record`). A
responder who takes the call gets the caller at once, wherever they are in these steps
(Asterisk moves the channel; the handler notices). ``ring_during_intake=False`` asks
everything first and queues last.

Rules a caller can rely on:
- language menu: 1 English, 2 Spanish, later languages 3-8, 9 opens the next page;
  silence means the default language, never a hang-up. Page 1 holds the first
  ``page_size`` configured languages, later pages 8 each. A language's key is its place in
  the configured order and never shifts: a language left out (no audio for one of its
  prompts) leaves its key unused, so the rendered "press N" stays true;
- a caller may instead say their language's name (in it) when a speech model exists for
  it: the Ask lists those languages in ``listen``, and the reply carries ``spoken``;
- **0 at any question means "a person now"**: no more questions, straight to waiting. At
  the menu it also means the default language; at the ZIP question ``0`` (alone) skips the
  ZIP and everything after, while ``*`` skips only the ZIP; 0 during the promise too;
- ZIP: five digits, ``#`` optional; silence skips;
- consent: 1 yes, 2 no; silence is "no" (a recording needs an explicit yes);
- a wrong key is asked again at most ``max_retries`` times, then the default is taken.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field

from crisisline.call import Source

MORE_KEY = "9"
PERSON_NOW = "0"  # at any question: no more questions, a person now
PAGE_SIZE = 8  # keys 1-8 choose a language; 9 is "more languages"


@dataclass(frozen=True)
class Prompt:
    name: str
    language: str


@dataclass(frozen=True)
class Play:
    prompts: tuple[Prompt, ...]
    # Keys that stop it; the handler replies with the key (or None when none was pressed).
    interrupt: str = ""


@dataclass(frozen=True)
class Ask:
    question: str  # "language" | "zip" | "consent"
    prompts: tuple[Prompt, ...]  # played in order; digits may interrupt (max_digits == 1)
    max_digits: int
    timeout_ms: int
    # Languages the caller may name aloud instead of pressing a key (language menu only).
    listen: tuple[str, ...] = ()


@dataclass(frozen=True)
class Reply:
    digits: str = ""
    timed_out: bool = True
    spoken: str | None = None  # a language recognised from the caller's voice

    @classmethod
    def silence(cls) -> Reply:
        return cls("", True)


@dataclass(frozen=True)
class Chosen:
    """The caller's language is known: the handler records it at once (a caller sent to the
    fallback group a moment later is still recorded in their language)."""

    language: str


@dataclass(frozen=True)
class Queue:
    """Into the queue now: responders' phones start ringing."""

    language: str
    zip_code: str | None
    neighborhood: str | None


@dataclass(frozen=True)
class Record:
    """The caller's short message; only ever yielded after an explicit yes."""

    language: str


Step = Play | Ask | Chosen | Queue | Record


@dataclass
class IntakeContext:
    source: Source
    languages: Sequence[str]
    default_language: str
    menu_timeout_ms: int = 5000
    zip_timeout_ms: int = 6000
    consent_timeout_ms: int = 5000
    max_retries: int = 2
    page_size: int = PAGE_SIZE
    # Languages with audio for every caller prompt (None: all configured ones). Others are
    # left out of the menu: a caller never hears silence or another language's voice.
    offered: Sequence[str] | None = None
    # Offered languages a caller can choose by saying their name (a speech model exists).
    spoken_languages: Sequence[str] = ()
    transfer_language: str | None = None
    transfer_zip: str | None = None
    transfer_note: str | None = None
    # Queue right after the ZIP (phones ring during the rest); False: queue at the end.
    ring_during_intake: bool = True
    neighborhood_for_zip: Callable[[str], str | None] = lambda _zip: None


@dataclass
class IntakeResult:
    language: str
    zip_code: str | None = None
    neighborhood: str | None = None
    consented_to_message: bool = False
    # Which answers were defaults rather than the caller's choice, for the record.
    defaulted: list[str] = field(default_factory=list)
    retries: dict[str, int] = field(default_factory=dict)
    # Where the caller pressed 0 for a person (no questions after it), if they did.
    person_now_at: str | None = None


def menu_pages(languages: Sequence[str], page_size: int = PAGE_SIZE,
               offered: Sequence[str] | None = None) -> list[list[tuple[str, str]]]:
    """[(key, language)] per page; every page but the last also offers 9 for more.

    Page 1 holds the first ``page_size`` languages, later pages 8 each. Keys come from the
    configured order; languages not in ``offered`` drop out without shifting the others'
    keys, and pages left empty drop out altogether.
    """
    first = max(1, min(page_size, 8))
    chunks = [list(languages[:first])]
    chunks += [list(languages[i:i + 8]) for i in range(first, len(languages), 8)]
    keep = set(languages if offered is None else offered)
    pages = [[(str(n + 1), lang) for n, lang in enumerate(chunk) if lang in keep]
             for chunk in chunks]
    return [p for p in pages if p] or [[]]


def language_keys(languages: Sequence[str], page_size: int = PAGE_SIZE) -> dict[str, str]:
    """Each configured language's key (what its rendered menu line says)."""
    return {lang: key for page in menu_pages(languages, page_size) for key, lang in page}


# What a transferring center may send for our language codes (ISO 639-2/3, names, BCP 47).
ALIASES = {
    "english": "en", "eng": "en", "spanish": "es", "spa": "es", "español": "es", "espanol": "es",
    "haitian": "ht", "haitian creole": "ht", "hat": "ht", "kreyol": "ht", "kreyòl": "ht",
    "kabuverdianu": "kea", "cape verdean creole": "kea", "kriolu": "kea",
    "portuguese": "pt", "por": "pt", "zh-yue": "yue", "zh-hk": "yue", "cantonese": "yue",
    "zh": "cmn", "zh-cn": "cmn", "zh-tw": "cmn", "zho": "cmn", "chi": "cmn", "mandarin": "cmn",
    "vietnamese": "vi", "vie": "vi", "arabic": "ar", "ara": "ar", "somali": "so", "som": "so",
    "russian": "ru", "rus": "ru", "french": "fr", "fra": "fr", "fre": "fr", "amharic": "am",
    "amh": "am", "korean": "ko", "kor": "ko",
}


def normalize_language(value: str | None, languages: Sequence[str]) -> str | None:
    """A transferring center's language field ("es", "es-US", "spa", "Spanish") to ours."""
    if not value:
        return None
    text = value.strip().lower().replace("_", "-")[:40]
    code = ALIASES.get(text) or ALIASES.get(text.split("-")[0]) or text.split("-")[0]
    return code if code in languages else None


def normalize_zip(value: str | None) -> str | None:
    digits = (value or "").strip()[:10]
    return digits if len(digits) == 5 and digits.isdigit() else None


def intake(ctx: IntakeContext) -> Generator[Step, Reply | None, IntakeResult]:
    result = IntakeResult(language=ctx.default_language)

    offered = ctx.languages if ctx.offered is None else \
        [lang for lang in ctx.languages if lang in set(ctx.offered)]
    language = normalize_language(ctx.transfer_language, offered)
    if language is None:
        language = yield from _choose_language(ctx, result)
    result.language = language
    yield Chosen(language)

    transfer_zip = normalize_zip(ctx.transfer_zip)
    if transfer_zip:
        result.zip_code = transfer_zip
    elif not result.person_now_at:
        result.zip_code = yield from _ask_zip(ctx, language, result)
    if result.zip_code:
        result.neighborhood = ctx.neighborhood_for_zip(result.zip_code)

    queued = ctx.ring_during_intake
    if queued:
        yield Queue(language, result.zip_code, result.neighborhood)

    if not result.person_now_at:
        promise = "promise" if ctx.source is Source.DIRECT else "transfer_promise"
        reply = yield Play((Prompt(promise, language),), interrupt=PERSON_NOW)
        if reply is not None and reply.digits[:1] == PERSON_NOW:
            result.person_now_at = "promise"

    if ctx.transfer_note or result.person_now_at:
        # The call-taker already told us what is happening (don't ask the caller again), or
        # the caller asked for a person now.
        result.consented_to_message = False
    else:
        result.consented_to_message = yield from _ask_consent(ctx, language, result)
    if result.consented_to_message:
        yield Record(language)
    if not queued:
        yield Queue(language, result.zip_code, result.neighborhood)
    yield Play((Prompt("waiting", language),))
    return result


def _choose_language(ctx: IntakeContext, result: IntakeResult) -> Generator[Step, Reply | None, str]:
    pages = menu_pages(ctx.languages, ctx.page_size, ctx.offered)
    on_menu = {lang for page in pages for _, lang in page}
    if not on_menu:
        # No language has all its audio (a broken install): no menu rather than a silent one.
        result.defaulted.append("language")
        return ctx.default_language
    listen = tuple(lang for lang in ctx.languages
                   if lang in on_menu and lang in set(ctx.spoken_languages))
    default = ctx.default_language if ctx.default_language in on_menu or not on_menu \
        else pages[0][0][1]
    page = 0
    wrong = 0
    while True:
        options = pages[page]
        prompts = [Prompt("language_option", lang) for _, lang in options]
        if page + 1 < len(pages):
            prompts.append(Prompt("language_more", default))
        reply = yield Ask("language", tuple(prompts), 1, ctx.menu_timeout_ms, listen)
        reply = reply or Reply.silence()
        if reply.spoken in listen:
            # Said on any page: a caller who names their language needn't find its page.
            return reply.spoken  # type: ignore[return-value]
        key = reply.digits[:1]
        chosen = dict(options).get(key)
        if chosen:
            return chosen
        if key == PERSON_NOW:
            result.person_now_at = "language"
            result.defaulted.append("language")
            return default
        if key == MORE_KEY and page + 1 < len(pages):
            page += 1
            continue
        if not key:
            result.defaulted.append("language")
            return default
        wrong += 1
        result.retries["language"] = wrong
        if wrong > ctx.max_retries:
            result.defaulted.append("language")
            return default
        yield Play((Prompt("invalid_key", default),))


def _ask_zip(ctx: IntakeContext, language: str,
             result: IntakeResult) -> Generator[Step, Reply | None, str | None]:
    wrong = 0
    while True:
        reply = yield Ask("zip", (Prompt("ask_zip", language),), 5, ctx.zip_timeout_ms)
        digits = (reply or Reply.silence()).digits
        if digits == PERSON_NOW:
            result.person_now_at = "zip"
            result.defaulted.append("zip")
            return None
        if not digits or digits.startswith("*"):
            result.defaulted.append("zip")
            return None
        zip_code = normalize_zip(digits)
        if zip_code:
            return zip_code
        wrong += 1
        result.retries["zip"] = wrong
        if wrong > ctx.max_retries:
            result.defaulted.append("zip")
            return None
        yield Play((Prompt("zip_not_recognized", language),))


def _ask_consent(ctx: IntakeContext, language: str,
                 result: IntakeResult) -> Generator[Step, Reply | None, bool]:
    wrong = 0
    while True:
        reply = yield Ask("consent", (Prompt("ask_consent", language),), 1, ctx.consent_timeout_ms)
        key = (reply or Reply.silence()).digits[:1]
        if key == "1":
            return True
        if key == "2":
            return False
        if key == PERSON_NOW:
            result.person_now_at = "consent"
            return False
        if not key:
            result.defaulted.append("consent")
            return False
        wrong += 1
        result.retries["consent"] = wrong
        if wrong > ctx.max_retries:
            result.defaulted.append("consent")
            return False
        yield Play((Prompt("invalid_key", language),))
