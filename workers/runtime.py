"""Process-wide state for RQ jobs: the settings and the speech models.

``peoples-response worker`` fills this in once, before RQ starts taking jobs, so that jobs
(run in forked work horses or in-process) find the models already loaded. A process that
didn't configure it (an ad-hoc ``rq worker``) falls back to loading settings from the
environment and models on first use: correct, but each forked job then pays the model load.
"""

from __future__ import annotations

import logging

from redis import Redis

from crisisline import config
from crisisline.speech.models import ModelRegistry
from crisisline.stores import sync_redis

log = logging.getLogger(__name__)

_settings: config.Settings | None = None
_registry: ModelRegistry | None = None


def configure(settings: config.Settings | None, registry: ModelRegistry | None = None) -> None:
    global _settings, _registry
    _settings = settings
    _registry = registry


def reset() -> None:
    """Forget the settings and models (tests; a process that reconfigures)."""
    configure(None, None)


def settings() -> config.Settings:
    global _settings
    if _settings is None:
        _settings = config.load()
    return _settings


def registry() -> ModelRegistry:
    global _registry
    if _registry is None:
        log.warning("no preloaded speech models in this process: models load on first use")
        _registry = ModelRegistry(settings())
    return _registry


def connection() -> Redis:
    """The running job's Redis connection, or one from the settings outside a job."""
    from rq import get_current_job

    job = get_current_job()
    if job is not None:
        return job.connection
    return sync_redis(settings().effective_redis_url)
