"""The text line's decisions (crisisline.textflow), its texts in the catalog, its settings,
and routing a text conversation: plain values, no sockets."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from crisisline import config
from crisisline.neighborhoods import neighborhood_for_zip
from crisisline.prompts.catalog import CatalogError, load_catalog
from crisisline.prompts.render import plan as render_plan
from crisisline.routing import CallToRoute, plan
from crisisline.textflow import (
    CHAT_LABELS,
    ENDED,
    MENU,
    OPEN,
    TEXTER_PROMPTS,
    Reply,
    TextContext,
    TextState,
    complete_languages,
    on_chat,
    on_menu_timeout,
    on_sms,
    sms_segments,
    texts_language,
    write,
)
from tests.text_helpers import text_roster

CATALOG = load_catalog()
LANGS = ("en", "es", "ht", "vi")


def ctx(text_languages=frozenset(LANGS)) -> TextContext:
    return TextContext(LANGS, "en", frozenset(text_languages), neighborhood_for_zip)


def prompts(decision) -> list[str]:
    return [r.prompt for r in decision.replies]


# ---- SMS ----------------------------------------------------------------------------------

def test_a_first_text_that_is_a_menu_number_chooses_the_language_and_queues() -> None:
    d = on_sms(TextState(), " 2 ", ctx(), 30)
    assert d.state == TextState(stage=OPEN, language="es")
    assert d.queue and not d.keep
    assert prompts(d) == ["text_promise", "sms_options", "text_waiting"]
    assert d.replies[0].values() == {"days": "30"}


def test_any_other_first_text_is_kept_and_answered_with_the_menu() -> None:
    d = on_sms(TextState(), "I need to talk to someone", ctx(), 30)
    assert (d.state.stage, d.keep, d.queue, prompts(d)) == (MENU, True, False, ["text_menu"])
    chosen = on_sms(d.state, "4", ctx(), 30)
    assert (chosen.state.language, chosen.queue, chosen.keep) == ("vi", True, False)
    # Not a number at the menu: the default language (never a dead end), and kept.
    other = on_sms(d.state, "hola", ctx(), 30)
    assert (other.state.language, other.queue, other.keep) == ("en", True, True)
    assert other.state.defaulted == ("language",)


def test_no_answer_to_the_menu_means_the_default_language() -> None:
    menu = on_sms(TextState(), "hello", ctx(), 30).state
    d = on_menu_timeout(menu, ctx(), 30)
    assert (d.state.stage, d.state.language, d.queue) == (OPEN, "en", True)
    assert not on_menu_timeout(TextState(stage=OPEN, language="es"), ctx(), 30).queue


@pytest.mark.parametrize("word", ["STOP", "stop", "Stop.", " StopAll ", "UNSUBSCRIBE", "cancel",
                                  "END", "quit"])
def test_stop_words_stop_at_once(word: str) -> None:
    d = on_sms(TextState(stage=OPEN, language="es"), word, ctx(), 30)
    assert d.stop and d.state.stage == ENDED and prompts(d) == ["text_stopped"] and not d.keep


def test_a_sentence_with_stop_in_it_is_words_not_a_keyword() -> None:
    d = on_sms(TextState(stage=OPEN, language="en"), "please don't stop talking to me", ctx(), 30)
    assert not d.stop and d.keep


def test_help_is_answered_and_kept_as_the_persons_words() -> None:
    first = on_sms(TextState(), "HELP", ctx(), 30)
    assert prompts(first) == ["text_help", "text_menu"] and first.keep
    later = on_sms(TextState(stage=OPEN, language="es"), "help", ctx(), 30, waiting=False)
    assert prompts(later) == ["text_help"] and later.keep and not later.stop


def test_delete_erases_and_start_comes_back() -> None:
    d = on_sms(TextState(stage=OPEN, language="vi"), "Delete", ctx(), 30)
    assert d.erase and prompts(d) == ["text_deleted"]
    back = on_sms(TextState(), "START", ctx(), 30)
    assert back.start and prompts(back) == ["text_menu"] and not back.keep


def test_a_zip_code_sets_the_neighborhood_only_while_nobody_has_it() -> None:
    waiting = TextState(stage=OPEN, language="es")
    d = on_sms(waiting, "02121", ctx(), 30)
    assert (d.state.zip_code, d.state.neighborhood, d.rezoned, d.keep) == \
        ("02121", "Dorchester", True, True)
    assert prompts(d) == ["text_zip_saved"]
    with_someone = on_sms(waiting, "02121", ctx(), 30, waiting=False)
    assert not with_someone.rezoned and with_someone.keep and not with_someone.replies
    # A ZIP code is taken once; later digits are just words.
    again = on_sms(d.state, "02128", ctx(), 30)
    assert again.state.zip_code == "02121" and not again.rezoned


# ---- chat ----------------------------------------------------------------------------------

def test_the_chat_pages_first_message_queues_in_the_chosen_language() -> None:
    d = on_chat(TextState(), "necesito ayuda", ctx(), language="es", zip_code="02128")
    assert (d.state.stage, d.state.language, d.state.neighborhood) == (OPEN, "es", "East Boston")
    assert d.queue and d.keep and prompts(d) == ["text_waiting"]
    unknown = on_chat(TextState(), "hi", ctx(), language="xx")
    assert unknown.state.language == "en" and unknown.state.defaulted == ("language",)
    # Keywords are SMS only: on the page, STOP is the person's words.
    words = on_chat(d.state, "STOP", ctx(), waiting=False)
    assert words.keep and not words.stop


# ---- one language per reply -------------------------------------------------------------------

def test_a_language_missing_a_text_is_written_to_in_the_default_language_throughout() -> None:
    texts = {name: dict(CATALOG.prompts[name].texts) for name in TEXTER_PROMPTS}
    del texts["text_ended"]["vi"]  # one text missing in Vietnamese
    complete = complete_languages(texts)
    assert "vi" not in complete and {"en", "es"} <= complete
    c = ctx(complete)
    assert texts_language("vi", c) == "en" and texts_language("es", c) == "es"
    written = write([Reply("text_promise", (("days", "30"),)), Reply("text_waiting")], "vi", c,
                    CATALOG.text, phone="+16175550150")
    assert written.language == "en"
    assert written.texts == (CATALOG.text("text_promise", "en", days="30"),
                             CATALOG.text("text_waiting", "en"))
    # The menu is in the default language; each option line in its own language, and a
    # language without its texts is still offered, by its own name.
    menu = write([Reply("text_menu")], None, c, CATALOG.text, native=lambda lang:
                 CATALOG.languages[lang].native_name).texts[0].splitlines()
    assert menu[0] == CATALOG.text("text_menu", "en")
    assert menu[1:] == ["For English, reply 1.", "Para español, responda 2.",
                        "Pou kreyòl ayisyen, reponn 3.", "tiếng Việt: 4"]


def test_every_texter_text_exists_in_english_and_spanish_with_the_promise() -> None:
    assert set(CATALOG.prompt_names("texter")) == set(TEXTER_PROMPTS)
    for lang in ("en", "es", "vi"):
        for name in TEXTER_PROMPTS:
            assert CATALOG.text(name, lang, key="1", phone="+16175550150", minutes="3",
                                days="30").strip(), (name, lang)
    promise = CATALOG.text("text_promise", "en", days="30")
    assert "never call the police" in promise and "30 days" in promise
    assert "{phone}" in CATALOG.prompts["text_still_looking"].texts["en"].text
    assert "{minutes}" in CATALOG.prompts["text_still_looking"].texts["en"].text
    assert set(CHAT_LABELS) < set(TEXTER_PROMPTS)


def test_texter_texts_are_never_rendered_to_audio(tmp_path: Path) -> None:
    s = config.load(env={}, var_dir=str(tmp_path), languages=("en", "es"))
    planned = {job.prompt for job in render_plan(s, CATALOG)}
    assert planned and not planned & set(CATALOG.prompt_names("texter"))


def test_the_catalog_accepts_the_texter_audience_and_needs_english_only(tmp_path: Path) -> None:
    text = """
languages:
  en: {name: English, native_name: English, voice: en-us, menu_word: English}
  es: {name: Spanish, native_name: español, voice: es-419, menu_word: español}
prompts:
  text_waiting:
    audience: texter
    description: queued
    texts:
      es: {text: "Buscando.", status: draft, reviewer: null}
"""
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    assert load_catalog(path).missing() == [("text_waiting", "en")]
    path.write_text(text.replace("audience: texter", "audience: everyone"), encoding="utf-8")
    with pytest.raises(CatalogError, match="texter"):
        load_catalog(path)


def test_sms_segments() -> None:
    assert sms_segments("a" * 160) == 1 and sms_segments("a" * 161) == 2
    assert sms_segments("a" * 306) == 2 and sms_segments("a" * 307) == 3
    assert sms_segments("[" * 80) == 1 and sms_segments("[" * 81) == 2  # escaped characters
    assert sms_segments("中" * 70) == 1 and sms_segments("中" * 71) == 2
    assert sms_segments("😀" * 35) == 1 and sms_segments("😀" * 36) == 2  # surrogate pairs


# ---- settings -----------------------------------------------------------------------------------

def test_text_settings_defaults_and_validation(tmp_path: Path) -> None:
    s = config.load(env={})
    assert (s.chat_host, s.chat_port, s.chat_url) == ("127.0.0.1", 8090, "http://127.0.0.1:8090")
    assert s.priority_for("text") == 2
    old = config.load(env={"PR_PRIORITIES": "911=0,988=1,direct=3"})
    assert old.priority_for("text") == 3  # an older setting without "text": as direct
    assert config.load(env={"PR_PRIORITIES": "911=0,988=1,direct=2,text=1"}).priority_for("text") == 1
    with pytest.raises(config.ConfigError, match="emergency"):
        config.load(env={"PR_SMS_NUMBER": "911"})
    with pytest.raises(config.ConfigError, match="police"):
        config.load(env={"PR_LINE_NUMBER": "+16173434500"})
    with pytest.raises(config.ConfigError, match="chat_public_url"):
        config.load(env={"PR_CHAT_PUBLIC_URL": "ftp://x"})
    with pytest.raises(config.ConfigError, match="sms_account"):
        config.load(env={"PR_SMS_API_URL": "https://api.example.org"})
    with pytest.raises(config.ConfigError, match="chat_port"):
        config.load(env={"PR_CHAT_PORT": "0"})
    toml = tmp_path / "c.toml"
    toml.write_text('sms_token = "abc"\n')
    with pytest.raises(config.ConfigError, match="secret"):
        config.load(path=toml, env={})
    https = config.load(env={"PR_CHAT_PUBLIC_URL": "https://help.example.org/"})
    assert https.chat_url == "https://help.example.org"


# ---- routing: the same pure function, language first -----------------------------------------------

def test_a_vietnamese_texter_is_offered_to_vietnamese_speakers_first() -> None:
    roster = text_roster(("ana", "dot", "en,es", "+16175550101"), ("vu", "rox", "en,vi", "+16175550102"),
                         ("dee", "dot", "en", "+16175550103"), ("lan", None, "vi", "+16175550104"))
    now = datetime(2026, 12, 2, 19, 0, tzinfo=UTC)
    waves = plan(CallToRoute("t1", "vi", "Dorchester"), roster, {}, now)
    assert [(w.number, [r.id for r in w.responders]) for w in waves] == [
        (2, ["vu"]), (3, ["lan"]), (5, ["ana", "dee"])]
    assert all(w.speakers_only for w in waves[:2])


def test_prompts_status_and_check_tell_which_languages_texters_read_in_english(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from peoples_response.check import check_prompts
    from peoples_response.prompts_cmd import texter_status

    s = config.load(env={}, var_dir=str(tmp_path), languages=("en", "es", "so"))
    texter_status(s, CATALOG)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("text line (chat and SMS replies; read, never heard)")
    rows = {line.split()[0]: line.split() for line in out[2:]}
    assert rows["es"][1:] == ["0", str(len(TEXTER_PROMPTS)), "0", "es"]
    assert rows["so"][3:5] == [str(len(TEXTER_PROMPTS)), "en"]
    problems = [p for p in check_prompts(s) if p.startswith("text line")]
    assert len(problems) == 1 and "'so'" in problems[0]
