"""The prompt catalog (data) and its rendering with the real espeak-ng and sox."""

from __future__ import annotations

import string
import wave
from pathlib import Path

import pytest

from crisisline import config
from crisisline.prompts import CatalogError, load_catalog, prompt_file
from crisisline.prompts.catalog import FIELDS
from crisisline.prompts.render import ToolMissing, audio_status, plan, render_all

CALLER = ["language_option", "language_more", "promise", "transfer_promise", "ask_zip",
          "zip_not_recognized", "invalid_key", "ask_consent", "record_message", "waiting",
          "still_looking", "connecting", "callback_offer",
          "callback_enter_number", "callback_confirmed", "goodbye_callback", "interpreter_joining",
          "interpreter_unavailable", "responder_left", "callback_safe", "callback_message",
          "callback_hello", "callback_voicemail", "callback_still_coming"]
RESPONDER = ["whisper_intro", "whisper_source_direct", "whisper_source_911",
             "whisper_source_988", "whisper_language", "whisper_neighborhood_unknown",
             "whisper_press_1", "whisper_taken", "whisper_message", "neighborhood", "whisper_note",
             "whisper_still_recording", "whisper_interpreter_unavailable", "whisper_callback",
             "whisper_callback_safe_here", "whisper_callback_other_number",
             "whisper_callback_message_ok", "whisper_callback_no_message",
             "whisper_press_1_callback", "callback_calling", "callback_not_reached",
             "callback_machine_hung_up", "callback_message_left"]
BOSTON = ["en", "es", "ht", "kea", "pt", "yue", "cmn", "vi", "ar", "so", "ru", "fr", "am"]

TINY = """
languages:
  en: {name: English, native_name: English, voice: en-us, menu_word: English,
       names: {es: inglés}}
  es: {name: Spanish, native_name: español, voice: es-419, menu_word: español,
       names: {en: Spanish}}
prompts:
  language_option:
    audience: caller
    description: menu line
    texts:
      en: {text: "For English, press {key}.", status: draft, reviewer: null}
      es: {text: "Para español, oprima {key}.", status: draft, reviewer: null}
  connecting:
    audience: caller
    description: bridge
    texts:
      en: {text: "Connecting you now.", status: reviewed, reviewer: "A. Tester"}
      es: {text: "Le estamos comunicando ahora.", status: draft, reviewer: null}
  whisper_language:
    audience: responder
    description: caller language
    texts:
      en: {text: "They speak {language}.", status: draft, reviewer: null}
"""


def write(tmp_path: Path, text: str, name: str = "catalog.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def cfg(tmp_path: Path) -> config.Settings:
    return config.load(env={}, var_dir=str(tmp_path / "var"))


# ---- the real catalog -------------------------------------------------------------------

def test_catalog_has_every_prompt_in_every_language() -> None:
    cat = load_catalog()
    assert list(cat.languages) == [*BOSTON, "ko"]  # ko: a test language (Vosk model)
    assert sorted(cat.prompt_names("caller")) == sorted(CALLER)
    assert sorted(cat.prompt_names("responder")) == sorted(RESPONDER)
    assert cat.missing() == []
    for name in cat.prompt_names():
        for lang in ("en", "es"):
            assert cat.text(name, lang, key="1", language="x", neighborhood="y", phone="+1",
                            minutes="5", days="30").strip()
    for name in cat.prompt_names("caller"):
        for lang in cat.languages:
            assert cat.text(name, lang, key="1").strip(), (name, lang)
    # Each language's menu line is in that language: it names the language as its
    # speakers do (the word a caller would also say at the menu).
    for lang, info in cat.languages.items():
        line = cat.text("language_option", lang, key="3").lower()
        assert info.menu_word.lower() in line or info.native_name.lower() in line, lang
        assert "3" in line, lang


def test_catalog_placeholders_and_honest_status() -> None:
    cat = load_catalog()
    for name, prompt in cat.prompts.items():
        for lang, entry in prompt.texts.items():
            used = {f for _, f, _, _ in string.Formatter().parse(entry.text) if f is not None}
            assert used <= FIELDS, (name, lang)
            # Nobody has reviewed these yet: never claim otherwise.
            assert entry.status == "draft" and entry.reviewer is None, (name, lang)
    assert cat.text("language_option", "es", key="2") == "Para español, oprima 2."
    assert cat.text("whisper_language", "en", language="Spanish") == "They speak Spanish."
    assert "police" in cat.text("promise", "en")
    assert "policía" in cat.text("transfer_promise", "es")


def test_text_errors_name_prompt_and_language(tmp_path: Path) -> None:
    cat = load_catalog(write(tmp_path, TINY))
    with pytest.raises(KeyError, match=r"whisper_language.*'es'"):
        cat.text("whisper_language", "es", language="x")
    with pytest.raises(KeyError, match="nope"):
        cat.text("nope", "en")
    with pytest.raises(KeyError, match="key"):
        cat.text("language_option", "en")
    assert cat.status("connecting", "en") == "reviewed"
    assert cat.missing() == []


def test_missing_lists_caller_prompts_without_a_language(tmp_path: Path) -> None:
    text = TINY.replace('      es: {text: "Le estamos comunicando ahora.", status: draft, '
                        'reviewer: null}\n', "")
    cat = load_catalog(write(tmp_path, text))
    assert cat.missing() == [("connecting", "es")]


@pytest.mark.parametrize("old, new, match", [
    ("status: reviewed, reviewer", "status: approved, reviewer",
     r"'connecting', language 'en'.*status"),
    ('text: "Connecting you now.", ', "", "'connecting', language 'en': missing text"),
    ("{key}.\", status: draft", "{digit}.\", status: draft",
     r"language_option.*'en'.*\{digit\}"),
    ("      es: {text: \"Le estamos", "      fr: {text: \"Le estamos",
     "'connecting', language 'fr'"),
    ('reviewer: "A. Tester"', "reviewer: null", r"connecting.*reviewer"),
    ("audience: responder", "audience: everyone", r"whisper_language.*audience"),
    ("voice: es-419, ", "", "language 'es' lacks voice"),
])
def test_broken_catalog_gives_clear_error(tmp_path: Path, old: str, new: str, match: str) -> None:
    assert old in TINY
    with pytest.raises(CatalogError, match=match):
        load_catalog(write(tmp_path, TINY.replace(old, new, 1)))


def test_unreadable_catalog(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="does not exist"):
        load_catalog(tmp_path / "none.yaml")
    with pytest.raises(CatalogError, match="YAML"):
        load_catalog(write(tmp_path, "prompts: [\n"))
    with pytest.raises(CatalogError, match="languages"):
        load_catalog(write(tmp_path, "prompts: {}\n"))


def test_prompt_file(cfg: config.Settings) -> None:
    assert prompt_file(cfg, "es", "promise") == "peoples-response/es/promise"


def test_keys_follow_the_configured_order_and_page_size(tmp_path: Path) -> None:
    cat = load_catalog()
    cfg = config.load(env={}, var_dir=str(tmp_path / "var"), languages=tuple(BOSTON))
    jobs = {j.rel: j for j in plan(cfg, cat)}
    assert jobs["en/language_option.wav"].text == "For English, press 1."
    assert jobs["es/language_option.wav"].text == "Para español, oprima 2."
    assert jobs["pt/language_option.wav"].text == "Para português, aperte 5."
    assert jobs["ar/language_option.wav"].text == "للغة العربية، اضغط 1."  # page 2 starts at 1
    short = config.load(env={}, var_dir=str(tmp_path / "var"), languages=tuple(BOSTON),
                        menu_page_size=2)
    jobs = {j.rel: j for j in plan(short, cat)}
    assert jobs["ht/language_option.wav"].text == "Pou kreyòl ayisyen, peze 1."
    assert jobs["am/language_option.wav"].text == "ለአማርኛ 3 ይጫኑ።"  # page 3: 2 + 8, then ru fr am


def test_neighborhood_prompts_for_the_whisper(cfg: config.Settings) -> None:
    from crisisline.neighborhoods import all_neighborhoods, slug

    jobs = {j.rel: j for j in plan(cfg, load_catalog())}
    for hood in all_neighborhoods():
        assert jobs[f"en/neighborhood_{slug(hood)}.wav"].text == f"{hood}."
    assert jobs["en/neighborhood_jamaica-plain.wav"].prompt == "neighborhood"


def test_available_languages_need_every_caller_prompt(tmp_path: Path) -> None:
    from crisisline.prompts.availability import available_languages

    cat = load_catalog()
    cfg = config.load(env={}, var_dir=str(tmp_path / "var"), languages=("en", "es", "so"))
    for lang in ("en", "es", "so"):
        (cfg.prompts_path / lang).mkdir(parents=True)
        for name in cat.prompt_names("caller"):
            if (lang, name) != ("so", "waiting"):
                (cfg.prompts_path / lang / f"{name}.wav").write_bytes(b"x")
    assert available_languages(cfg, cat) == ["en", "es"]
    (cfg.prompts_path / "so" / "waiting.gsm").write_bytes(b"a human recording, any format")
    assert available_languages(cfg, cat) == ["en", "es", "so"]


def test_plan_fills_keys_and_language_names(cfg: config.Settings, tmp_path: Path) -> None:
    cat = load_catalog(write(tmp_path, TINY))
    jobs = {j.rel: j for j in plan(cfg, cat)}
    assert jobs["en/language_option.wav"].text == "For English, press 1."
    assert jobs["es/language_option.wav"].text == "Para español, oprima 2."
    assert jobs["en/whisper_language_es.wav"].text == "They speak Spanish."
    assert jobs["en/whisper_language_en.wav"].text == "They speak English."
    assert "es/whisper_language_en.wav" not in jobs  # responder prompts beyond en: optional


# ---- rendering (real espeak-ng + sox) ---------------------------------------------------

def assert_phone_wav(path: Path) -> None:
    with wave.open(str(path), "rb") as w:
        assert w.getframerate() == 8000
        assert w.getnchannels() == 1
        assert w.getsampwidth() == 2
        assert w.getnframes() > 8000 * 0.5  # at least half a second of speech


def test_render_writes_phone_audio_once(cfg: config.Settings, tmp_path: Path) -> None:
    cat = load_catalog(write(tmp_path, TINY))
    calls: list[tuple[int, int, str]] = []
    report = render_all(cfg, cat, languages=("en",), progress=lambda *a: calls.append(a))
    root = cfg.prompts_path
    assert report.rendered == ["en/connecting.wav", "en/language_option.wav",
                               "en/whisper_language_en.wav", "en/whisper_language_es.wav"]
    for rel in report.rendered:
        assert_phone_wav(root / rel)
    assert (root / ".rendered.json").exists()
    assert len(calls) == 4 and calls[-1][:2] == (4, 4)
    assert sorted(c[0] for c in calls) == [1, 2, 3, 4]

    again = render_all(cfg, cat, languages=("en",))
    assert again.rendered == [] and len(again.unchanged) == 4

    forced = render_all(cfg, cat, languages=("en",), force=True)
    assert len(forced.rendered) == 4


def test_human_recording_is_never_overwritten(cfg: config.Settings, tmp_path: Path) -> None:
    cat = load_catalog(write(tmp_path, TINY))
    root = cfg.prompts_path
    # A recording placed before any render (not in the manifest).
    (root / "en").mkdir(parents=True)
    (root / "en" / "connecting.wav").write_bytes(b"a human voice")
    report = render_all(cfg, cat, languages=("en",))
    assert report.recorded == ["en/connecting.wav"]
    assert (root / "en" / "connecting.wav").read_bytes() == b"a human voice"
    # A recording placed over one of our renders (bytes differ from the manifest).
    (root / "en" / "language_option.wav").write_bytes(b"another human voice")
    report = render_all(cfg, cat, languages=("en",), force=True)
    assert report.recorded == ["en/connecting.wav", "en/language_option.wav"]
    assert (root / "en" / "language_option.wav").read_bytes() == b"another human voice"
    status = audio_status(cfg, cat)
    assert status["en"]["recorded"] == ["connecting", "language_option"]
    assert status["en"]["draft"] == ["whisper_language_en", "whisper_language_es"]
    assert status["es"]["missing_audio"] == ["connecting", "language_option"]


def test_changed_text_is_rendered_again(cfg: config.Settings, tmp_path: Path) -> None:
    path = write(tmp_path, TINY)
    render_all(cfg, load_catalog(path), languages=("en",))
    cat = load_catalog(write(tmp_path, TINY.replace("Connecting you now.", "Connecting you.")))
    assert audio_status(cfg, cat)["en"]["missing_audio"] == ["connecting"]
    report = render_all(cfg, cat, languages=("en",))
    assert report.rendered == ["en/connecting.wav"]
    assert audio_status(cfg, cat)["en"]["reviewed"] == ["connecting"]


def test_language_without_voice_is_missing_not_a_crash(tmp_path: Path) -> None:
    text = TINY.replace("languages:\n", "languages:\n  xx: {name: Nowhere, native_name: Nowhere,"
                        " voice: xx-nope, menu_word: Nowhere}\n", 1)
    text = text.replace('      en: {text: "Connecting you now."',
                        '      xx: {text: "Connecting.", status: draft, reviewer: null}\n'
                        '      en: {text: "Connecting you now."', 1)
    cfg = config.load(env={}, var_dir=str(tmp_path / "var"), languages=("en", "es", "xx"))
    cat = load_catalog(write(tmp_path, text))
    report = render_all(cfg, cat, languages=("xx",))
    assert report.rendered == []
    assert report.missing_audio == ["xx/connecting.wav", "xx/language_option.wav"]
    assert any("xx-nope" in p for p in report.problems)


def test_missing_tools_name_the_debian_packages(cfg: config.Settings, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolMissing, match="apt-get install espeak-ng sox"):
        render_all(cfg, load_catalog(write(tmp_path, TINY)))
