"""Shared fixtures: a real Redis (a database of its own, flushed per test) and settings."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from crisisline import config

ROOT = Path(__file__).resolve().parent.parent
REDIS_HOST = os.environ.get("PR_TEST_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("PR_TEST_REDIS_PORT", "6379"))
# Tests own one Redis database and flush it; never the one `up` uses (0). With pytest-xdist
# (scripts/test runs two workers) each worker has its own: 9, 10, ...
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
REDIS_DB = int(os.environ.get("PR_TEST_REDIS_DB", "9")) + int(_WORKER.removeprefix("gw") or 0)


@pytest.fixture
def redis_url() -> str:
    url = f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}"
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    except redis.ConnectionError:  # pragma: no cover - a broken environment, said plainly
        pytest.fail(f"no Redis at {REDIS_HOST}:{REDIS_PORT}: start it (scripts/test does)")
    yield url
    client.flushdb()
    client.close()


@pytest.fixture
def settings(tmp_path: Path, redis_url: str) -> config.Settings:
    return config.load(env={}, redis_url=redis_url, var_dir=str(tmp_path / "var"))


@pytest.fixture(scope="session")
def rendered_prompts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real catalog rendered once (espeak-ng + sox), for tests that play prompts."""
    from crisisline.prompts.catalog import load_catalog
    from crisisline.prompts.render import render_all

    var = tmp_path_factory.mktemp("rendered")
    s = config.load(env={}, var_dir=str(var), languages=("en", "es"))
    report = render_all(s, load_catalog())
    assert not report.missing_audio, report.problems
    return s.prompts_path


@pytest.fixture
def live_settings(settings: config.Settings, rendered_prompts: Path) -> config.Settings:
    """Settings whose prompts are rendered and whose Redis is the test database."""
    import dataclasses

    return dataclasses.replace(settings, prompts_dir=str(rendered_prompts))


def speak(text: str, path: Path, voice: str = "en-us") -> Path:
    """Real speech for tests: espeak-ng, then sox to what Asterisk records (8 kHz mono 16-bit)."""
    import subprocess

    raw = path.with_suffix(".raw.wav")
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(raw), text], check=True, capture_output=True)
    subprocess.run(["sox", str(raw), "-r", "8000", "-c", "1", "-b", "16", "-e", "signed-integer",
                    str(path)], check=True, capture_output=True)
    raw.unlink()
    return path


@pytest.fixture(scope="session")
def spoken_message(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return speak("I need someone to talk to. I am at home.",
                 tmp_path_factory.mktemp("speech") / "message.wav")


# Files that share something one machine has once run in the same xdist worker, one after
# the other: `up`'s fixed chat (8090) and SMS (8091) ports. (PostgreSQL tests each make a
# schema of their own: they run anywhere.)
SHARED = {"up": ("test_cli_up.py",)}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for group, files in SHARED.items():
            if item.path.name in files:
                item.add_marker(pytest.mark.xdist_group(group))


PG_URL = os.environ.get("PR_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
SQL_BACKENDS = ["sqlite"] + ([] if os.environ.get("PR_TEST_NO_POSTGRES") == "1" else ["postgresql"])


@pytest.fixture(params=SQL_BACKENDS)
def sql_settings(request: pytest.FixtureRequest, tmp_path: Path,
                 redis_url: str) -> Iterator[config.Settings]:
    """Settings on SQLite, then on PostgreSQL in a schema of the test's own (dropped after)."""
    if request.param == "sqlite":
        yield config.load(env={}, var_dir=str(tmp_path / "var"), redis_url=redis_url)
        return
    import uuid

    import sqlalchemy as sa

    schema = f"test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_URL)
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        pytest.fail(f"PostgreSQL is unreachable at {PG_URL} ({exc.orig})")
    url = f"{PG_URL}?options=-csearch_path%3D{schema}"
    try:
        yield config.load(env={}, var_dir=str(tmp_path / "var"), database_url=url,
                          redis_url=redis_url)
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
