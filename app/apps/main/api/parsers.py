"""The API's only parser: JSON within the size and depth limits, holding only text PostgreSQL can store."""

from __future__ import annotations

import json
import math
from typing import IO, Any

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser, get_encoding
from rest_framework.renderers import JSONRenderer

from apps.main.api import limits
from apps.main.api.errors import RequestTooLarge


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 parses to inf, which neither JSON nor jsonb can carry
        raise ValueError(f"number out of range: {text}")
    return value


def _no_constants(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


class LimitedJSONParser(BaseParser):
    """``application/json`` with the limits of the API (settings API_MAX_BODY_BYTES, API_MAX_JSON_DEPTH).

    Not a subclass of DRF's JSONParser on purpose: DRF hands that class ``request.body``, read whole
    under Django's own DATA_UPLOAD_MAX_MEMORY_SIZE (an HTML 400); this one reads the stream itself.
    """

    media_type = "application/json"
    renderer_class = JSONRenderer

    def parse(self, stream: IO[bytes], media_type: str | None = None,
              parser_context: dict[str, Any] | None = None) -> Any:
        encoding = get_encoding(parser_context or {})  # refuses bytes-to-bytes codecs (zlib_codec…)
        limit = settings.API_MAX_BODY_BYTES
        raw = limits.read_at_most(stream, limit)  # Content-Length was checked; this counts what arrives
        if raw is None:
            raise RequestTooLarge(limit)
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError as exc:
            raise ParseError(f"JSON parse error - the body is not valid {encoding}: {exc.reason}") from exc
        depth = settings.API_MAX_JSON_DEPTH
        if limits.nesting_exceeds(text, depth):
            raise ParseError(f"JSON arrays and objects are nested deeper than {depth} levels (API_MAX_JSON_DEPTH)")
        try:
            data = json.loads(text, parse_float=_finite_float, parse_constant=_no_constants)
        except (ValueError, RecursionError) as exc:  # RecursionError only if the depth limit is set absurdly high
            raise ParseError(f"JSON parse error - {exc}") from exc
        if reason := limits.unstorable_text(data):
            raise ParseError(reason)
        return data
