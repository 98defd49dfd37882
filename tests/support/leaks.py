"""Secrets that must never leave their place: how to look for them in text and in files, and the test run's own.

A secret shows up raw, percent-encoded (inside a URL) or base64-encoded (a Kubernetes Secret's data, a basic-auth
header), so every one of those forms is searched for. Hits name the secret and show it masked: the report of a
leak must not leak it once more.
"""

from __future__ import annotations

import base64
import os
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

#: Shorter values would match unrelated text by chance; every secret a test passes here is longer.
MIN_LENGTH = 12

#: Secrets that tests made during the run (a Flower password, ...): name -> value (``remember``).
_remembered: dict[str, str] = {}


@dataclass(frozen=True)
class Leak:
    where: str  # file:line, or what was fetched
    name: str  # which secret
    value: str

    def __str__(self) -> str:
        return f"{self.where}: {self.name} ({mask(self.value)})"


def mask(value: str) -> str:
    return f"{value[:2]}{'*' * 6} ({len(value)} chars)"


def forms(value: str) -> set[str]:
    """What ``value`` looks like in text: itself, percent-encoded, and base64 (both alphabets) at each of the
    three byte alignments it can have inside a longer encoded string (only the characters that depend on the
    value alone: the first group may mix in the bytes before it, the last partial one the bytes after)."""
    if len(value) < MIN_LENGTH:
        raise ValueError(f"a secret of {len(value)} characters is too short to search for (min {MIN_LENGTH})")
    raw = value.encode()
    found = {value, urllib.parse.quote(value, safe="")}
    for pad in range(3):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            text = encode(b"\0" * pad + raw).decode()
            found.add(text[4 if pad else 0: 4 * ((pad + len(raw)) // 3)])
    return found


def find(text: str, secrets: Mapping[str, str]) -> list[str]:
    """Names of the secrets that occur in ``text`` in any form."""
    return [name for name, value in secrets.items() if any(form in text for form in forms(value))]


def scan_files(paths: Iterable[Path], secrets: Mapping[str, str]) -> list[Leak]:
    """Every line of ``paths`` holding a secret (a whole file is searched first: most have none)."""
    patterns = {name: forms(value) for name, value in secrets.items()}
    leaks = []
    for path in paths:
        text = path.read_text(errors="replace")
        hit = [name for name, found in patterns.items() if any(form in text for form in found)]
        for number, line in enumerate(text.splitlines(), 1) if hit else ():
            leaks += [Leak(f"{path}:{number}", name, secrets[name]) for name in hit
                      if any(form in line for form in patterns[name])]
    return leaks


def remember(name: str, value: str) -> str:
    """Add a secret a test made to those the run's logs are searched for (tests/conftest.py); returns it."""
    forms(value)  # refuses a value too short to search for
    _remembered[name] = value
    return value


def run_secrets() -> dict[str, str]:
    """The secrets of this test run: the session's Redis and PostgreSQL passwords (tests.support.backends), the
    API token, the Django secret key and the payload encryption keys (the test settings, the same in every
    subprocess) and those tests remembered."""
    from django.conf import settings

    found = {
        "Redis password": urllib.parse.urlsplit(os.environ["REDIS_URL"]).password,
        "PostgreSQL password": urllib.parse.urlsplit(os.environ["DATABASE_URL"]).password,
        "API_TOKEN": settings.API_TOKEN,
        "SECRET_KEY": settings.SECRET_KEY,
        **{f"PAYLOAD_ENCRYPTION_KEYS[{i}]": key for i, key in enumerate(settings.PAYLOAD_ENCRYPTION_KEYS)},
        **_remembered,
    }
    # TEST_REDIS_URL / TEST_DATABASE_URL may name servers of one's own without a password, or with a short one
    # that would match by chance: those are not searched for (the session's own servers' are long and random).
    return {name: value for name, value in found.items() if value and len(value) >= MIN_LENGTH}


def describe(leaks: list[Leak], limit: int = 30) -> str:
    shown = "\n".join(f"  {leak}" for leak in leaks[:limit])
    more = f"\n  … and {len(leaks) - limit} more" if len(leaks) > limit else ""
    return f"{len(leaks)} occurrence(s) of the run's secrets:\n{shown}{more}"
