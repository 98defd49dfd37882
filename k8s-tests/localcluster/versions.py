"""The pinned versions, read from k8s-tests/cluster/versions.env (the one place they are set)."""

from __future__ import annotations

from pathlib import Path

VERSIONS_FILE = Path(__file__).resolve().parents[1] / "cluster" / "versions.env"


def load(path: Path = VERSIONS_FILE) -> dict[str, str]:
    """KEY=value lines; comments and blank lines ignored."""
    values: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ValueError(f"{path}: not KEY=value: {raw!r}")
        values[key.strip()] = value.strip()
    return values


VERSIONS = load()


def get(key: str) -> str:
    try:
        return VERSIONS[key]
    except KeyError:
        raise KeyError(f"{key} is not pinned in {VERSIONS_FILE}") from None
