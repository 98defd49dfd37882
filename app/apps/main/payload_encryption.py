"""Encrypted task payloads: the kombu serializer ``json+fernet`` and what keeps an encrypted task's arguments
and results out of every other place a message leaves them.

A message body is JSON (kombu's encoder, as the ``json`` serializer: dates, UUIDs, decimals) sealed with
Fernet (AES-128-CBC with HMAC-SHA256: authenticated, so an altered, truncated or foreign body is refused, never
decoded into something else). Keys come from ``PAYLOAD_ENCRYPTION_KEYS`` (settings; the environment variable
of that name, comma separated): the first encrypts, every one decrypts (``MultiFernet``), which is how a key is
rotated without losing messages in flight (docs/security.md).

Which tasks are encrypted is decided in one place, ``apps.main.queues.ENCRYPTED_TASKS``: their routes and their
task class carry this serializer and hide ``argsrepr``/``kwargsrepr`` (message headers, task events, the
result row and the worker's log lines show ``HIDDEN``). Their result rows (``results_backend``) and dead
letters (``deadletter``) are sealed with the same keys. A body no key opens is refused by the worker as
undecodable and dead-lettered with the reason said by ``PayloadDecryptionError`` (``worker_steps``).

Importing this module registers the serializer with kombu; the settings do it before Celery reads
``accept_content``.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from collections.abc import Iterable
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from kombu.serialization import register
from kombu.utils.json import dumps as json_dumps
from kombu.utils.json import loads as json_loads

SERIALIZER = "json+fernet"
CONTENT_TYPE = "application/x-json+fernet"
CONTENT_ENCODING = "utf-8"
#: What an encrypted task's argsrepr/kwargsrepr (headers, task events, result rows, logs) and redacted
#: event fields show instead of the values.
HIDDEN = "<encrypted>"
#: Options of an encrypted task's route (apps.main.queues): senders that do not have the task registered get
#: them from the router; the task class carries the serializer too, because its own options win over a route's.
ROUTE_OPTIONS: dict[str, str] = {"serializer": SERIALIZER, "argsrepr": HIDDEN, "kwargsrepr": HIDDEN}

#: How every Fernet token begins: version byte 0x80 and the timestamp's leading zero bytes, in base64.
TOKEN_PREFIX = "gAAAAA"
#: A whole Fernet token: version, timestamp, IV, ciphertext blocks, HMAC; url-safe base64.
_TOKEN = re.compile(TOKEN_PREFIX + r"[A-Za-z0-9_\-]{60,}={0,2}")
_OVERHEAD = 1 + 8 + 16 + 32  # version, timestamp, IV, HMAC around the ciphertext blocks
_BLOCK = 16
_DEVELOPMENT_INFO = b"celery-stack payload encryption: development key v1"


class PayloadDecryptionError(ValueError):
    """A body that none of the configured keys opens; its message says why, for the dead letter."""


# --- keys ---------------------------------------------------------------------------------------------


def parse_keys(keys: Iterable[str], source: str = "PAYLOAD_ENCRYPTION_KEYS") -> list[str]:
    """The keys, each checked to be a Fernet key (32 bytes in url-safe base64); raises ValueError naming the
    bad one by position, never by value."""
    parsed = [key.strip() for key in keys if key and key.strip()]
    for position, key in enumerate(parsed, 1):
        try:
            Fernet(key)
        except (ValueError, binascii.Error):
            raise ValueError(
                f"{source}: key {position} of {len(parsed)} is not a Fernet key (32 random bytes, base64: "
                f"python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')"
            ) from None
    return parsed


def generate_key() -> str:
    return Fernet.generate_key().decode("ascii")


def development_key(secret_key: str) -> str:
    """The key of a development or test setup that sets no keys (production refuses to start without them).

    Derived from SECRET_KEY (HKDF-SHA256), not random: every process started with the same settings — web,
    each worker, beat, a shell — must share it, or they could not read each other's messages."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_DEVELOPMENT_INFO)
    return base64.urlsafe_b64encode(hkdf.derive(secret_key.encode("utf-8"))).decode("ascii")


@functools.lru_cache(maxsize=8)
def _cipher(keys: tuple[str, ...]) -> MultiFernet:
    if not keys:
        raise PayloadDecryptionError("no payload encryption keys are configured (PAYLOAD_ENCRYPTION_KEYS)")
    return MultiFernet([Fernet(key) for key in keys])


def cipher(keys: Iterable[str] | None = None) -> MultiFernet:
    """The MultiFernet of ``keys``, by default the settings' PAYLOAD_ENCRYPTION_KEYS (built once per key list)."""
    if keys is None:
        from django.conf import settings

        keys = settings.PAYLOAD_ENCRYPTION_KEYS
    return _cipher(tuple(keys))


# --- the serializer -----------------------------------------------------------------------------------


def dumps(value: Any, keys: Iterable[str] | None = None) -> str:
    """``value`` as JSON, encrypted with the first key: a Fernet token (ASCII)."""
    return cipher(keys).encrypt(json_dumps(value).encode("utf-8")).decode("ascii")


def dumps_json(text: str, keys: Iterable[str] | None = None) -> str:
    """Like ``dumps``, for a value already encoded as JSON ``text`` (``loads`` gives the value back)."""
    return cipher(keys).encrypt(text.encode("utf-8")).decode("ascii")


def loads(token: str | bytes | bytearray | memoryview, keys: Iterable[str] | None = None) -> Any:
    """The value sealed in ``token`` by any of the keys; PayloadDecryptionError says why when none opens it."""
    try:
        raw = token.encode("ascii") if isinstance(token, str) else bytes(token)
        plain = cipher(keys).decrypt(raw)
    except (InvalidToken, UnicodeEncodeError, TypeError):
        raise PayloadDecryptionError(_why_not(token, keys)) from None
    return json_loads(plain)


def _why_not(token: Any, keys: Iterable[str] | None) -> str:
    """Why a token did not open: malformed or truncated (visible in its structure), else not authentic."""
    try:
        text = token if isinstance(token, str) else bytes(token).decode("ascii")
        raw = base64.urlsafe_b64decode(text.encode("ascii"))
    except (ValueError, TypeError, binascii.Error):
        return "encrypted payload is malformed: not a Fernet token (url-safe base64)"
    size = len(raw)
    if size < _OVERHEAD + _BLOCK or (size - _OVERHEAD) % _BLOCK or raw[0] != 0x80:
        return f"encrypted payload is truncated or malformed: {size} bytes do not make a Fernet token"
    count = len(tuple(keys)) if keys is not None else len(_configured_keys())
    return (f"encrypted payload is not authentic under any of the {count} configured key(s): altered, or "
            "encrypted with a key that is no longer in PAYLOAD_ENCRYPTION_KEYS")


def _configured_keys() -> list[str]:
    from django.conf import settings

    return list(settings.PAYLOAD_ENCRYPTION_KEYS)


def is_token(value: Any) -> bool:
    """True when ``value`` looks like a Fernet token (a sealed text), whether or not a key opens it."""
    return isinstance(value, str) and _TOKEN.fullmatch(value) is not None


def reveal(value: str) -> Any:
    """A sealed text opened (any of the keys); any other text as it is. For operators and tests."""
    return loads(value) if is_token(value) else value


register(SERIALIZER, dumps, loads, content_type=CONTENT_TYPE, content_encoding=CONTENT_ENCODING)
