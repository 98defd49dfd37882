"""Checks on a request body that the API runs before trusting it; none of them can recurse.

* Nesting depth is measured on the raw text, before ``json.loads``: the C decoder recurses once per
  level, so a body of 100 000 ``[`` would raise ``RecursionError`` (a 500) inside it, and a body
  that parses fine at 500 levels crashes the worker later, when it pickles the arguments.
* PostgreSQL stores text and ``jsonb`` as valid UTF-8 without U+0000: a NUL character or a lone
  surrogate (``"\\ud800"`` is valid JSON, not valid Unicode) would be accepted here and refused by
  the database after the task ran.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import IO, Any

# One token per match: a whole string (escapes included; an unterminated one runs to the end) or one
# bracket. Possessive quantifiers: linear time on any input, no backtracking.
_STRING_OR_BRACKET = re.compile(r'"(?:[^"\\]++|\\.)*+"?|[\[\]{}]', re.DOTALL)
_OPENING = frozenset("[{")

#: Characters PostgreSQL cannot store in text or jsonb.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def nesting_exceeds(text: str, limit: int) -> bool:
    """True when arrays and objects in the JSON ``text`` nest deeper than ``limit`` (``{}`` is depth 1).

    Brackets inside strings do not count. Malformed text gives some answer; the parser refuses it next.
    """
    depth = 0
    for match in _STRING_OR_BRACKET.finditer(text):
        token = match.group()
        if token in _OPENING:
            depth += 1
            if depth > limit:
                return True
        elif token in "]}":
            depth -= 1
    return False


def read_at_most(stream: IO[bytes], limit: int, chunk_size: int = 64 * 1024) -> bytes | None:
    """The whole stream, or None when it holds more than ``limit`` bytes (reads at most limit + 1)."""
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = stream.read(min(chunk_size, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return None if size > limit else b"".join(chunks)


def _describe(character: str) -> str:
    if character == "\x00":
        return "U+0000 (NUL), which PostgreSQL cannot store"
    return f"a lone surrogate U+{ord(character):04X}, which is not valid Unicode"


#: Where a value sits: None for the body itself, else (where its container sits, key or index).
_Place = tuple[Any, str | int] | None


def _render(place: _Place) -> str:
    parts: list[str] = []
    while place is not None:
        place, step = place
        parts.append(f"[{step}]" if isinstance(step, int) else f".{step}")
    return "".join(reversed(parts)).removeprefix(".") or "the body"


def _strings(value: Any) -> Iterator[tuple[_Place, str, bool]]:
    """(place, text, is_key) for every string in ``value``, without recursion; places are built as
    links, rendered only for the one reported."""
    stack: list[tuple[_Place, Any]] = [(None, value)]
    while stack:
        place, item = stack.pop()
        if isinstance(item, str):
            yield place, item, False
        elif isinstance(item, dict):
            for key, child in item.items():
                yield place, key, True
                stack.append(((place, key), child))
        elif isinstance(item, list):
            stack.extend(((place, index), child) for index, child in enumerate(item))


def unstorable_text(value: Any) -> str | None:
    """Why ``value`` (parsed JSON) cannot be stored, naming where; None when every key and string can."""
    for place, text, is_key in _strings(value):
        if found := _UNSTORABLE.search(text):
            where = _render(place)
            return f"{'a key in ' if is_key else ''}{where} contains {_describe(found.group())}"
    return None
