"""Benchmark: from a reviewer's save to the IVR playing the new audio.

Measures, in one run, for Haitian Creole:

  save -> heard   a reviewer corrects the promise's text in the panel (POST to the review
                  page, the Flask app in this process: SQL write, audit entry, re-render with
                  espeak-ng + sox), then a call is placed at once (stand-in PBX running our
                  dialplan, our FastAGI IVR, caller presses 3 for Haitian Creole); the time
                  ends when the PBX opens the promise's file for that call, and the bench
                  checks the file it opened is the new rendering. p50/p90 over the edits.
  save            the POST alone (what the reviewer waits for before the page returns).
  Baseline: a full ``prompts render --force`` of the same language (every file of it), the
  only way to get a corrected text to callers before the review pages.

The stand-in runs at time scale 0 (prompts take no time to play), so "heard" is the
moment the IVR asks for the file, as it would on Asterisk.

    .venv/bin/python bench/bench_prompts.py [--edits 50] [--redis redis://127.0.0.1:6379/12]

Uses (and flushes) its own Redis database, 12 by default: the IVR queues each call there.
Runs in about a minute.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import select  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from agi.app import AgiApp  # noqa: E402
from agi.server import AgiServer  # noqa: E402
from crisisline import config, db  # noqa: E402
from crisisline.prompts.catalog import load_catalog  # noqa: E402
from crisisline.prompts.overlay import apply_reviews  # noqa: E402
from crisisline.prompts.render import _read_manifest, render_all  # noqa: E402
from crisisline.prompts.reviews import read_all  # noqa: E402
from crisisline.users.schema import User  # noqa: E402
from standin.caller import CallerScript  # noqa: E402
from standin.pbx import StandinPBX  # noqa: E402
from standin.sounds import SoundResolver  # noqa: E402
from web import create_app  # noqa: E402
from web.auth import _fingerprint  # noqa: E402
from web.cli import user_add  # noqa: E402

LANGUAGES = ("en", "es", "ht")
TARGET = "peoples-response/ht/promise"
TEXT = ("Ou rive sou liy People's Response. Moun ki reponn yo se moun nan kominote ou. "
        "Nou pa janm rele lapolis. Vèsyon {n}.")


class WatchingResolver(SoundResolver):
    """The stand-in's file lookup, noting when (and which file) the promise was opened."""

    def __init__(self, *args: object, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.opened: list[tuple[float, str]] = []

    def resolve(self, name: str, language: str = "en") -> Path | None:
        path = super().resolve(name, language)
        if name == TARGET and path is not None:
            self.opened.append((time.perf_counter(), hashlib.sha256(path.read_bytes()).hexdigest()))
        return path


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run(edits: int, redis_url: str) -> None:
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    with tempfile.TemporaryDirectory(prefix="bench-prompts-") as var:
        settings = config.load(env={}, var_dir=var, redis_url=redis_url, languages=LANGUAGES,
                               web_secret_key="bench-only-secret-key-" + "x" * 20)
        catalog = load_catalog()
        print(f"rendering {', '.join(LANGUAGES)} once (setup)...", flush=True)
        render_all(settings, catalog)
        db.upgrade(settings)
        assert user_add(settings, "rev", "reviewer", io.StringIO("bench passphrase long enough\n"),
                        err=io.StringIO(), languages="ht") == 0
        app = create_app(settings, testing=True)
        client = app.test_client()
        with Session(app.extensions["peoples_response"].engine) as s:
            user = s.scalar(select(User).where(User.name == "rev"))
            with client.session_transaction() as sess:
                sess.update(user_id=user.id, fp=_fingerprint(user.password_hash), csrf_token="t")

        agi_app = AgiApp.from_settings(settings, load_speech=False)
        server = AgiServer(agi_app)
        await server.start("127.0.0.1", 0)
        pbx = StandinPBX(ROOT / "dialplan" / "extensions.conf",
                         globals_overrides={"PR_AGI": f"agi://127.0.0.1:{server.port}"},
                         sounds_dirs=[Path("/usr/share/asterisk/sounds")],
                         prompts_dir=settings.prompts_path,
                         prompts_prefix=settings.asterisk_prompts_path, spool_dir=Path(var))
        watcher = WatchingResolver([Path("/usr/share/asterisk/sounds")], settings.prompts_path,
                                   settings.asterisk_prompts_path)
        pbx.sounds = watcher
        heard_s: list[float] = []
        save_s: list[float] = []
        wav = settings.prompts_path / "ht" / "promise.wav"
        try:
            for n in range(1, edits + 1):
                watcher.opened.clear()
                t0 = time.perf_counter()
                response = await asyncio.to_thread(
                    client.post, "/review/ht/promise/text",
                    data={"csrf_token": "t", "version": str(n - 1), "text": TEXT.format(n=n)})
                t1 = time.perf_counter()
                assert response.status_code == 302, response.get_data(as_text=True)[-500:]
                expected = _read_manifest(settings.prompts_path)["ht/promise.wav"]["output"]
                assert hashlib.sha256(wav.read_bytes()).hexdigest() == expected
                await pbx.place_call("from-direct", "6175550100",
                                     CallerScript(keys="3 02121 2", stay_s=0))
                assert watcher.opened, "the call never reached the promise"
                at, digest = watcher.opened[0]
                assert digest == expected, "the IVR played an old rendering"
                save_s.append(t1 - t0)
                heard_s.append(at - t0)
        finally:
            await server.close()
            await agi_app.close()
            app.extensions["peoples_response"].hub.stop()

        live = apply_reviews(catalog, read_all(settings))
        t0 = time.perf_counter()
        report = render_all(settings, live, languages=["ht"], force=True)
        full = time.perf_counter() - t0
        count = len(report.rendered)

    redis.Redis.from_url(redis_url).flushdb()
    print(f"\nsave -> IVR plays the new audio, {edits} edits of ht/promise:")
    print(f"  save -> heard   p50 {pct(heard_s, .5) * 1000:7.0f} ms   p90 {pct(heard_s, .9) * 1000:7.0f} ms"
          f"   mean {statistics.fmean(heard_s) * 1000:.0f} ms")
    print(f"  save (POST)     p50 {pct(save_s, .5) * 1000:7.0f} ms   p90 {pct(save_s, .9) * 1000:7.0f} ms")
    print(f"baseline: prompts render --force --language ht: {full * 1000:.0f} ms ({count} files)")
    print(f"ratio save->heard p50 / full render: {pct(heard_s, .5) / full:.3f} "
          f"({full / pct(heard_s, .5):.1f}x sooner)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--edits", type=int, default=50)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/12")
    args = parser.parse_args()
    asyncio.run(run(args.edits, args.redis))


if __name__ == "__main__":
    main()
