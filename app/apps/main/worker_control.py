"""The workers' answers to ``inspect conf`` and ``inspect report`` without secrets: Flower shows the configuration
on each worker's page (Config) and in /api/workers, and anyone with broker access can ask for both.

Celery's own commands censor by setting name (API, TOKEN, KEY, SECRET, PASS, DATABASE) and mask only a broker URL
named exactly ``broker_url``; with the Django settings as the source (CELERY namespace) the table holds every Django
setting, so CELERY_BROKER_URL, REDIS_URL and CACHES' LOCATION came out with the Redis password. These replace the
commands (same names, alias and arguments) with the same table cleansed as the DEBUG page cleanses the settings
(apps.main.reporting: by name, URL passwords by pattern, the process's secrets by value). Importing this module
registers them; the Celery app does, before a worker starts its consumer.
"""

from __future__ import annotations

from typing import Any

from celery.utils.serialization import jsonify, strtobool
from celery.worker.control import inspect_command, ok
from kombu.utils.encoding import safe_repr

from apps.main.reporting import SecretHidingFilter, mask_secrets


@inspect_command(alias="dump_conf", signature="[include_defaults=False]", args=[("with_defaults", strtobool)])
def conf(state: Any, with_defaults: bool = False, **kwargs: Any) -> Any:
    """List configuration."""
    cleanse = SecretHidingFilter().cleanse_setting
    table = state.app.conf.table(with_defaults=with_defaults)
    return jsonify({key: cleanse(key, value) for key, value in table.items()},
                   keyfilter=lambda key: isinstance(key, str) and not key.startswith("__"),
                   unknown_type_filter=safe_repr)


@inspect_command()
def report(state: Any) -> dict[str, str]:
    """Information about Celery installation for bug reports."""
    return ok(mask_secrets(state.app.bugreport()))
