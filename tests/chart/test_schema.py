"""values.schema.json turns typos and wrong types into install errors that name the key."""

from __future__ import annotations

import json
import re

import pytest

from tests.support.render import CHART, HelmError, render_chart

CASES = [
    ({"workers": {"default": {"concurency": 4}}}, "concurency"),
    ({"workers": {"default": {"concurrency": 0}}}, "concurrency"),
    ({"workers": {"default": {"concurrency": "four"}}}, "concurrency"),
    ({"workerDefaults": {"autoscaling": {"engine": "kedaa"}}}, "engine"),
    ({"beat": {"replicas": 2}}, "replicas"),
    ({"redis": {"databse": 1}}, "databse"),
    ({"image": {"pullPolicy": "Sometimes"}}, "pullPolicy"),
    ({"web": {"service": {"port": 70000}}}, "port"),
    ({"workers": {"Bad_Name": {"queues": ["default"], "concurrency": 1}}}, "Bad_Name"),
    ({"workers": {"default": {"prefetchMultiplier": 0}}}, "prefetchMultiplier"),
    ({"workerDefaults": {"taskEvents": "yes"}}, "taskEvents"),
    ({"app": {"env": {"DB_PASSWORD": "x"}}}, "DB_PASSWORD"),
    ({"monitoring": {"alerts": {"queueBacklogFor": "ten minutes"}}}, "queueBacklogFor"),
    ({"monitoring": {"serviceMonitr": {"enabled": True}}}, "serviceMonitr"),
]


@pytest.mark.parametrize(("values", "key"), CASES, ids=[c[1] for c in CASES])
def test_bad_values_fail_naming_the_key(helm: str, values: dict, key: str) -> None:
    with pytest.raises(HelmError) as error:
        render_chart(values, helm=helm)
    assert "schema" in error.value.stderr.lower()
    assert key in error.value.stderr


def test_every_default_value_is_documented() -> None:
    """helm-docs style: every key has a `# --` comment right above it, or sits in a documented block."""
    key = re.compile(r"^(\s*)([A-Za-z0-9_.-]+):")
    stack: list[tuple[int, bool]] = []  # (indent, documented) of the enclosing keys
    comment_block: list[str] = []
    undocumented = []
    for line in (CHART / "values.yaml").read_text().splitlines():
        if line.strip().startswith("#"):
            comment_block.append(line.strip())
            continue
        match = key.match(line)
        if not match:
            if not line.strip():
                comment_block = []
            continue
        indent = len(match.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        documented = any(c.startswith("# --") for c in comment_block) or any(d for _, d in stack)
        if not documented and not line.rstrip().endswith(":"):
            undocumented.append(match.group(2))
        stack.append((indent, documented))
        comment_block = []
    assert not undocumented, undocumented


def test_our_objects_are_closed() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["additionalProperties"] is False
    open_objects = [k for k, v in schema["properties"].items()
                    if v.get("type") == "object" and "additionalProperties" not in v]
    # Kubernetes' own objects pass through as they are; the API server validates them.
    assert set(open_objects) <= {"podSecurityContext", "securityContext"}
