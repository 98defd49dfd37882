"""Read Prometheus text exposition with prometheus_client's own parser and sum matching samples."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


def parse(text: str) -> list[Sample]:
    """Every sample of an exposition; a malformed exposition raises (a scrape target must be valid)."""
    return [
        Sample(sample.name, dict(sample.labels), float(sample.value))
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def matching(samples: list[Sample], metric: str, /, **labels: str) -> list[Sample]:
    """Samples of exactly ``metric`` whose labels include ``labels`` (a subset match; ``name=`` is the
    task-name label, hence positional-only parameters)."""
    return [s for s in samples if s.name == metric and all(s.labels.get(k) == v for k, v in labels.items())]


def total(samples: list[Sample], metric: str, /, **labels: str) -> float:
    """Sum of the matching samples (0.0 when none match: a counter not yet incremented is absent)."""
    return sum(s.value for s in matching(samples, metric, **labels))
