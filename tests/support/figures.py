"""Print a test's measured figures to the terminal whatever pytest captures: the docs quote them."""

from __future__ import annotations

import pytest


def report(capsys: pytest.CaptureFixture[str], tag: str, title: str, rows: list[tuple[str, str]]) -> None:
    """``[tag] title`` then one aligned ``name  value`` line per row."""
    width = max(len(name) for name, _ in rows)
    with capsys.disabled():
        print(f"\n[{tag}] {title}")
        for name, value in rows:
            print(f"[{tag}]   {name:<{width}}  {value}")
