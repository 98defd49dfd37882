"""app.taskPayloads: the large-payload settings (apps.main.large_payloads) reach every role through the ConfigMap,
their defaults are the app's, and the schema takes exactly the codecs the app knows."""

from __future__ import annotations

import json
import subprocess
import sys
from functools import cache

import pytest

from apps.main.large_payloads import CODECS
from embedded.supervisor import APP_DIR, python_env
from portfolio_site import environment
from tests.support.render import CHART, HelmError, one, render_chart

N = "rel-celery-stack"
#: ConfigMap key -> the settings name it sets (the same: the environment variable of that name).
NAMES = {name: name for name in (environment.TASK_COMPRESSION, environment.TASK_COMPRESSION_THRESHOLD_BYTES,
                                 environment.TASK_CLAIM_CHECK_BYTES, environment.TASK_CLAIM_RETENTION_HOURS)}


def config(values: dict | None = None, helm: str = "helm3") -> dict[str, str]:
    return one(render_chart(values, helm=helm), "ConfigMap", f"{N}-config")["data"]


@cache
def app_defaults() -> dict[str, object]:
    """The settings as a process that sets none of these variables gets them (the app's defaults)."""
    env = python_env()
    for name in (*NAMES, environment.TASK_MAX_PAYLOAD_BYTES, environment.API_MAX_BODY_BYTES):
        env.pop(name, None)
    env[environment.SETTINGS_MODULE] = "portfolio_site.settings.base"
    names = [*NAMES, "TASK_MAX_PAYLOAD_BYTES", "API_MAX_BODY_BYTES"]
    code = ("import json, django; django.setup(); from django.conf import settings; "
            f"print(json.dumps({{n: getattr(settings, n) for n in {names!r}}}))")
    done = subprocess.run([sys.executable, "-c", code], cwd=APP_DIR, env=env, capture_output=True, text=True,
                          timeout=60, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_defaults_are_the_apps(helm: str) -> None:
    data, defaults = config(helm=helm), app_defaults()
    assert {key: data[key] for key in NAMES} == {key: str(defaults[name]) for key, name in NAMES.items()}
    # The maximum is left to the app, which derives it from API_MAX_BODY_BYTES.
    assert environment.TASK_MAX_PAYLOAD_BYTES not in data
    assert defaults["TASK_MAX_PAYLOAD_BYTES"] == 8 * defaults["API_MAX_BODY_BYTES"]


def test_values_reach_the_configmap_as_integers(helm: str) -> None:
    data = config({"app": {"taskPayloads": {"compression": "lzma", "compressionThresholdBytes": 4_194_304,
                                            "claimCheckBytes": 16_777_216, "claimRetentionHours": 24,
                                            "maxBytes": 67_108_864}}}, helm=helm)
    assert {key: data[key] for key in (*NAMES, environment.TASK_MAX_PAYLOAD_BYTES)} == {
        "TASK_COMPRESSION": "lzma", "TASK_COMPRESSION_THRESHOLD_BYTES": "4194304",
        "TASK_CLAIM_CHECK_BYTES": "16777216", "TASK_CLAIM_RETENTION_HOURS": "24",
        "TASK_MAX_PAYLOAD_BYTES": "67108864"}


@pytest.mark.parametrize(("values", "key"), [
    ({"compression": "snappy"}, "compression"),
    ({"compressionThresholdBytes": -1}, "compressionThresholdBytes"),
    ({"claimCheckBytes": "256k"}, "claimCheckBytes"),
    ({"claimRetentionHours": 0}, "claimRetentionHours"),
    ({"maxBytes": 0}, "maxBytes"),
    ({"claimCheckByte": 1}, "claimCheckByte"),
])
def test_bad_values_fail_naming_the_key(values: dict, key: str) -> None:
    with pytest.raises(HelmError) as error:
        render_chart({"app": {"taskPayloads": values}})
    assert "schema" in error.value.stderr.lower() and key in error.value.stderr


def test_the_schema_takes_the_codecs_the_app_knows() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["properties"]["app"]["properties"]["taskPayloads"]["properties"]["compression"]["enum"] == \
        list(CODECS)
