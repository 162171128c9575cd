"""The IVR's decisions, as plain data and a generator: no sockets, no Redis.

``intake(ctx)`` yields steps (:class:`Play`, :class:`Ask`) and receives a :class:`Reply`
for each :class:`Ask`; it returns an :class:`IntakeResult`. The FastAGI handler runs the
steps; the tests run them with plain values.

Rules a caller can rely on (issue #2):
- language menu: 1 English, 2 Spanish, later languages 3-8, 9 opens the next page;
  silence means the default language, never a hang-up;
- ZIP: five digits, ``#`` optional, ``*`` or ``0`` skips; silence skips;
- consent: 1 yes, 2 no; silence is "no" (a recording needs an explicit yes);
- a wrong key is asked again at most ``max_retries`` times, then the default is taken.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field

from crisisline.call import Source

MORE_KEY = "9"
PAGE_SIZE = 8  # keys 1-8 choose a language; 9 is "more languages"


@dataclass(frozen=True)
class Prompt:
    name: str
    language: str


@dataclass(frozen=True)
class Play:
    prompts: tuple[Prompt, ...]


@dataclass(frozen=True)
class Ask:
    question: str  # "language" | "zip" | "consent"
    prompts: tuple[Prompt, ...]  # played in order; digits may interrupt (max_digits == 1)
    max_digits: int
    timeout_ms: int


@dataclass(frozen=True)
class Reply:
    digits: str = ""
    timed_out: bool = True

    @classmethod
    def silence(cls) -> Reply:
        return cls("", True)


Step = Play | Ask


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
    transfer_language: str | None = None
    transfer_zip: str | None = None
    transfer_note: str | None = None
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


def menu_pages(languages: Sequence[str], page_size: int = PAGE_SIZE) -> list[list[tuple[str, str]]]:
    """[(key, language)] per page; every page but the last also offers 9 for more."""
    size = max(1, min(page_size, 8))
    pages = [list(languages[i:i + size]) for i in range(0, len(languages), size)] or [[]]
    return [[(str(n + 1), lang) for n, lang in enumerate(page)] for page in pages]


def normalize_language(value: str | None, languages: Sequence[str]) -> str | None:
    """A transferring center's language field ("es", "es-US", "spa", "Spanish") to ours."""
    if not value:
        return None
    text = value.strip().lower().replace("_", "-")[:40]
    aliases = {"english": "en", "eng": "en", "spanish": "es", "spa": "es", "español": "es",
               "espanol": "es"}
    code = aliases.get(text, text.split("-")[0])
    return code if code in languages else None


def normalize_zip(value: str | None) -> str | None:
    digits = (value or "").strip()[:10]
    return digits if len(digits) == 5 and digits.isdigit() else None


def intake(ctx: IntakeContext) -> Generator[Step, Reply | None, IntakeResult]:
    result = IntakeResult(language=ctx.default_language)

    language = normalize_language(ctx.transfer_language, ctx.languages)
    if language is None:
        language = yield from _choose_language(ctx, result)
    result.language = language

    promise = "promise" if ctx.source is Source.DIRECT else "transfer_promise"
    yield Play((Prompt(promise, language),))

    transfer_zip = normalize_zip(ctx.transfer_zip)
    if transfer_zip:
        result.zip_code = transfer_zip
    else:
        result.zip_code = yield from _ask_zip(ctx, language, result)
    if result.zip_code:
        result.neighborhood = ctx.neighborhood_for_zip(result.zip_code)

    if ctx.transfer_note:
        # The call-taker already told us what is happening; don't ask the caller again.
        result.consented_to_message = False
    else:
        result.consented_to_message = yield from _ask_consent(ctx, language, result)
    return result


def _choose_language(ctx: IntakeContext, result: IntakeResult) -> Generator[Step, Reply | None, str]:
    pages = menu_pages(ctx.languages, ctx.page_size)
    page = 0
    wrong = 0
    while True:
        options = pages[page]
        prompts = [Prompt("language_option", lang) for _, lang in options]
        if page + 1 < len(pages):
            prompts.append(Prompt("language_more", ctx.default_language))
        reply = yield Ask("language", tuple(prompts), 1, ctx.menu_timeout_ms)
        key = (reply or Reply.silence()).digits[:1]
        chosen = dict(options).get(key)
        if chosen:
            return chosen
        if key == MORE_KEY and page + 1 < len(pages):
            page += 1
            continue
        if not key:
            result.defaulted.append("language")
            return ctx.default_language
        wrong += 1
        result.retries["language"] = wrong
        if wrong > ctx.max_retries:
            result.defaulted.append("language")
            return ctx.default_language
        yield Play((Prompt("invalid_key", ctx.default_language),))


def _ask_zip(ctx: IntakeContext, language: str,
             result: IntakeResult) -> Generator[Step, Reply | None, str | None]:
    wrong = 0
    while True:
        reply = yield Ask("zip", (Prompt("ask_zip", language),), 5, ctx.zip_timeout_ms)
        digits = (reply or Reply.silence()).digits
        if not digits or digits == "0" or digits.startswith("*"):
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
        if not key:
            result.defaulted.append("consent")
            return False
        wrong += 1
        result.retries["consent"] = wrong
        if wrong > ctx.max_retries:
            result.defaulted.append("consent")
            return False
        yield Play((Prompt("invalid_key", language),))
