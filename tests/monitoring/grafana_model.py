"""Check a dashboard JSON with Grafana's own published types (grafana-foundation-sdk, Apache-2.0).

Grafana itself (AGPL) is not used. The SDK's ``Dashboard.from_json`` decodes a dashboard into the typed
models Grafana's schema generates (panel options and field config per panel plugin, queries per datasource
plugin), so three checks together say an import cannot fail on the dashboard's structure:

- ``lost_fields``: the round trip through the models keeps every field (a misspelt or unknown field is lost);
- ``type_errors``: every decoded value has the type the models declare (``"h": "8"``, an unknown enum value);
- ``reference_errors``: every panel type and every query's datasource type is a plugin the SDK knows, and
  every panel and query names its datasource (the dashboard's ``$datasource`` variable).
"""

from __future__ import annotations

import enum
import json
import types
import typing
from typing import Any

from grafana_foundation_sdk.cog import runtime
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models.dashboard import Dashboard

register_default_plugins()


def decode(dashboard: dict[str, Any]) -> Dashboard:
    return Dashboard.from_json(dashboard)


def round_trip(dashboard: dict[str, Any]) -> dict[str, Any]:
    """The dashboard as the SDK writes it back (with the schema's defaults filled in)."""
    return json.loads(json.dumps(decode(dashboard), cls=JSONEncoder))


def lost_fields(source: Any, written: Any, path: str = "dashboard") -> list[str]:
    """Fields of ``source`` that ``written`` lacks or changed (fields the models added are fine: defaults)."""
    if isinstance(source, dict):
        if not isinstance(written, dict):
            return [f"{path}: became {written!r:.60}"]
        return [lost for key, value in source.items() for lost in (
            lost_fields(value, written[key], f"{path}.{key}") if key in written else [f"{path}.{key}: dropped"])]
    if isinstance(source, list):
        if not isinstance(written, list) or len(written) != len(source):
            return [f"{path}: became {written!r:.60}"]
        return [lost for i, (a, b) in enumerate(zip(source, written, strict=True))
                for lost in lost_fields(a, b, f"{path}[{i}]")]
    return [] if source == written and type(source) is type(written) else [f"{path}: {source!r} became {written!r}"]


def _is_model(value: Any) -> bool:
    return type(value).__module__.startswith("grafana_foundation_sdk.models.") and not isinstance(value, enum.Enum)


def _fits(value: Any, hint: Any) -> bool:
    """Whether ``value`` has the shape of ``hint`` at its top level (``type_errors`` goes deeper)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint in (typing.Any, object):
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, alternative) for alternative in args)
    if origin is typing.Literal:
        return value in args
    if origin in (list, dict):
        return isinstance(value, origin)
    if hint is type(None):
        return value is None
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return isinstance(value, hint) or value in {member.value for member in hint}
    if hint in (int, float):  # JSON has no int/float distinction for floats; a bool is never a number
        return isinstance(value, (int, float) if hint is float else int) and not isinstance(value, bool)
    if isinstance(hint, type):
        return isinstance(value, hint)
    raise TypeError(f"no check for the annotation {hint!r}")


def type_errors(value: Any, hint: Any = Dashboard, path: str = "dashboard") -> list[str]:
    """Every value of a decoded model against the SDK's annotations, recursively."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        fitting = [alternative for alternative in args if _fits(value, alternative)]
        if not fitting:
            return [f"{path}: {value!r:.60} is not {hint}"]
        found = [type_errors(value, alternative, path) for alternative in fitting]
        return [] if any(not errors for errors in found) else found[0]
    if not _fits(value, hint):
        return [f"{path}: {value!r:.60} is not {hint}"]
    errors: list[str] = []
    if origin is list:
        for i, item in enumerate(value):
            errors += type_errors(item, args[0], f"{path}[{i}]")
    elif origin is dict:
        for key, item in value.items():
            errors += type_errors(item, args[1], f"{path}.{key}")
    if _is_model(value):  # options/fieldConfig are typed `object` in Panel: the panel plugin's class says more
        for name, field_hint in typing.get_type_hints(type(value)).items():
            errors += type_errors(getattr(value, name), field_hint, f"{path}.{name}")
    return errors


def reference_errors(dashboard: dict[str, Any]) -> list[str]:
    """Panel plugins and datasources: known to the SDK, and named on every panel and query."""
    known = runtime.Runtime()
    variables = {v.get("name"): v for v in dashboard.get("templating", {}).get("list", [])}
    errors = []

    def datasource(ref: Any, where: str) -> None:
        if not isinstance(ref, dict) or not ref.get("type") or not ref.get("uid"):
            errors.append(f"{where}: no datasource (type and uid)")
            return
        if ref["type"] not in known.dataquery_variants:
            errors.append(f"{where}: datasource type {ref['type']!r} is no datasource plugin the SDK knows")
        uid = str(ref["uid"])
        if uid.startswith("$"):
            variable = variables.get(uid.strip("${}"))
            if variable is None or variable.get("type") != "datasource" or variable.get("query") != ref["type"]:
                errors.append(f"{where}: {uid} is no datasource variable of type {ref['type']}")

    for panel in dashboard.get("panels", []):
        where = f"panel {panel.get('id')} {panel.get('title')!r}"
        if panel.get("type") == "row":
            continue
        if panel.get("type") not in known.panelcfg_variants:
            errors.append(f"{where}: panel type {panel.get('type')!r} is no panel plugin the SDK knows")
        datasource(panel.get("datasource"), where)
        for target in panel.get("targets") or [{}]:
            datasource(target.get("datasource"), f"{where} query {target.get('refId')}")
    for name, variable in variables.items():
        if variable.get("type") == "query":
            datasource(variable.get("datasource"), f"variable {name}")
    return errors


def problems(dashboard: dict[str, Any]) -> list[str]:
    """Everything the three checks find; empty for a dashboard Grafana can import."""
    return [*lost_fields(dashboard, round_trip(dashboard)), *type_errors(decode(dashboard)),
            *reference_errors(dashboard)]
