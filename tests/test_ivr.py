"""The IVR's decisions, without sockets: what a caller hears and what we record."""

from __future__ import annotations

import pytest

from crisisline import ivr
from crisisline.call import Source

BOSTON = {"02121": "Dorchester", "02128": "East Boston"}


def ctx(source: Source = Source.DIRECT, **kw: object) -> ivr.IntakeContext:
    return ivr.IntakeContext(source=source, languages=("en", "es"), default_language="en",
                             max_retries=2, neighborhood_for_zip=BOSTON.get, **kw)  # type: ignore[arg-type]


def run(context: ivr.IntakeContext, answers: list[str | None],
        press_during_promise: str | None = None) -> tuple[ivr.IntakeResult, list]:
    """Answer each Ask in turn ("-" or None = silence); return the result and the steps."""
    steps: list = []
    flow = ivr.intake(context)
    pending = list(answers)
    reply = None
    try:
        step = next(flow)
        while True:
            steps.append(step)
            if isinstance(step, ivr.Ask):
                answer = pending.pop(0) if pending else None
                reply = ivr.Reply.silence() if answer in (None, "-") else ivr.Reply(
                    answer.rstrip("#"), len(answer.rstrip("#")) < step.max_digits and
                    not answer.endswith("#"))
            elif isinstance(step, ivr.Play) and step.interrupt and press_during_promise:
                reply = ivr.Reply(press_during_promise, False)
            else:
                reply = None
            step = flow.send(reply)
    except StopIteration as done:
        return done.value, steps


def heard(steps: list) -> list[str]:
    return [f"{p.language}/{p.name}" for s in steps if isinstance(s, ivr.Play | ivr.Ask)
            for p in s.prompts]


def kinds(steps: list) -> list[str]:
    """The path in words: questions by name, plays by prompt, queue/record/chosen."""
    out = []
    for s in steps:
        if isinstance(s, ivr.Ask):
            out.append(s.question)
        elif isinstance(s, ivr.Play):
            out.append(s.prompts[0].name)
        else:
            out.append(type(s).__name__.lower())
    return out


@pytest.mark.parametrize(
    ("keys", "language", "zip_code", "neighborhood", "consent"),
    [
        (["2", "02121", "1"], "es", "02121", "Dorchester", True),
        (["1", "02128#", "2"], "en", "02128", "East Boston", False),
        (["-", "-", "-"], "en", None, None, False),           # silence everywhere: defaults
        (["2", "*", "1"], "es", None, None, True),             # star skips the ZIP
        (["1", "0", "2"], "en", None, None, False),            # 0 skips the ZIP, and the rest
        (["1", "90210", "1"], "en", "90210", None, True),      # out of city: kept, citywide
        (["7", "8", "5", "-", "-"], "en", None, None, False),  # wrong keys x3 -> default
    ],
)
def test_direct_line_answers(keys, language, zip_code, neighborhood, consent):
    result, _ = run(ctx(), keys)
    assert (result.language, result.zip_code, result.neighborhood,
            result.consented_to_message) == (language, zip_code, neighborhood, consent)


def test_language_menu_speaks_each_option_in_its_own_language():
    _, steps = run(ctx(), ["2", "02121", "1"])
    assert heard(steps)[:2] == ["en/language_option", "es/language_option"]
    assert all(p.language == "es" for s in steps[1:] if isinstance(s, ivr.Play | ivr.Ask)
               for p in s.prompts)


def test_the_call_is_queued_right_after_the_zip_and_phones_ring_during_the_rest():
    _result, steps = run(ctx(), ["2", "02121", "1"])
    assert kinds(steps) == ["language", "chosen", "zip", "queue", "promise", "consent",
                            "record", "waiting"]
    queue = next(s for s in steps if isinstance(s, ivr.Queue))
    assert (queue.language, queue.zip_code, queue.neighborhood) == ("es", "02121", "Dorchester")


def test_asking_everything_first_queues_last():
    _, steps = run(ctx(ring_during_intake=False), ["2", "02121", "1"])
    assert kinds(steps) == ["language", "chosen", "zip", "promise", "consent", "record",
                            "queue", "waiting"]


@pytest.mark.parametrize(("answers", "during_promise", "path", "at", "language"), [
    (["0"], None, ["language", "chosen", "queue", "waiting"], "language", "en"),
    (["2", "0"], None, ["language", "chosen", "zip", "queue", "waiting"], "zip", "es"),
    (["2", "02121", "0"], None,
     ["language", "chosen", "zip", "queue", "promise", "consent", "waiting"], "consent", "es"),
    (["2", "02121"], "0", ["language", "chosen", "zip", "queue", "promise", "waiting"],
     "promise", "es"),
])
def test_zero_means_a_person_now_at_any_question(answers, during_promise, path, at, language):
    result, steps = run(ctx(), answers, press_during_promise=during_promise)
    assert kinds(steps) == path
    assert result.person_now_at == at and result.language == language
    assert not result.consented_to_message  # nothing recorded without an explicit 1


def test_star_skips_only_the_zip():
    result, steps = run(ctx(), ["2", "*", "1"])
    assert kinds(steps) == ["language", "chosen", "zip", "queue", "promise", "consent",
                            "record", "waiting"]
    assert result.zip_code is None and result.person_now_at is None


def test_a_message_is_asked_for_only_after_an_explicit_yes():
    for consent, recorded in (("1", True), ("2", False), ("-", False), ("5", False)):
        _, steps = run(ctx(), ["1", "02121", consent, consent, consent])
        assert ("record" in kinds(steps)) is recorded, consent


def test_wrong_keys_are_retried_a_bounded_number_of_times_then_defaulted():
    result, steps = run(ctx(), ["5", "6", "7", "12", "12", "12", "9", "9", "9"])
    asks = [s.question for s in steps if isinstance(s, ivr.Ask)]
    assert asks == ["language"] * 3 + ["zip"] * 3 + ["consent"] * 3
    assert result.language == "en" and result.zip_code is None and not result.consented_to_message
    assert set(result.defaulted) == {"language", "zip", "consent"}
    assert "en/invalid_key" in heard(steps) and "en/zip_not_recognized" in heard(steps)


def test_a_partial_zip_is_asked_again_not_skipped():
    result, steps = run(ctx(), ["1", "021", "02121", "1"])
    assert result.zip_code == "02121"
    assert heard(steps).count("en/ask_zip") == 2


def test_silence_is_never_a_retry_and_never_consent():
    result, steps = run(ctx(), [])
    assert [s.question for s in steps if isinstance(s, ivr.Ask)] == ["language", "zip", "consent"]
    assert result.consented_to_message is False


@pytest.mark.parametrize("source", [Source.NINE_ONE_ONE, Source.NINE_EIGHT_EIGHT])
def test_transfer_skips_what_the_center_told_us(source):
    context = ctx(source, transfer_language="Spanish", transfer_zip="02128",
                  transfer_note="caller is safe, wants to talk")
    result, steps = run(context, [])
    assert [s for s in steps if isinstance(s, ivr.Ask)] == []
    assert heard(steps) == ["es/transfer_promise", "es/waiting"]
    # Queued as soon as Asterisk hands us the call: phones ring during the promise.
    assert kinds(steps) == ["chosen", "queue", "transfer_promise", "waiting"]
    assert (result.language, result.neighborhood) == ("es", "East Boston")


def test_transfer_with_unusable_fields_asks_the_caller():
    context = ctx(Source.NINE_ONE_ONE, transfer_language="klingon", transfer_zip="0212x")
    result, steps = run(context, ["2", "02121", "2"])
    assert [s.question for s in steps if isinstance(s, ivr.Ask)] == ["language", "zip", "consent"]
    assert heard(steps)[3] == "es/transfer_promise"  # after the ZIP: phones already ring
    assert result.language == "es"


def test_menu_pages_offer_nine_for_more():
    langs = [f"l{i}" for i in range(11)]
    pages = ivr.menu_pages(langs, 8)
    assert [k for k, _ in pages[0]] == list("12345678")
    assert pages[1] == [("1", "l8"), ("2", "l9"), ("3", "l10")]
    context = ivr.IntakeContext(source=Source.DIRECT, languages=langs, default_language="l0")
    result, steps = run(context, ["9", "2"])
    assert result.language == "l9"
    assert heard(steps)[8] == "l0/language_more"
