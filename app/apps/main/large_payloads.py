"""Large task payloads: every task message is measured as it is published, compressed when large (or when its task
asks for it), stored in the database when still too large for the broker (claim-check, apps.main.payload_claims),
and refused above a hard limit. docs/payloads.md has the limits, what they cost and what is kept when.

The one place every sender passes through is kombu's ``Producer._prepare``: it gets the serialized body and the
message headers (task name and id) of every publish — the API, a task sending another, a retry, beat,
``send_task`` by name, a dead-letter requeue. ``PayloadProducer`` overrides it, and ``PayloadAMQP`` (``Celery(amqp=
…)`` in portfolio_site.celery) makes it the producer of the app's producer pool (``apply_async``, ``send_task``),
of beat (``app.amqp.Producer``) and of ``send_task(connection=…)``. Celery's ``before_task_publish`` signal could
not do this: it sees the arguments before they are serialized, and cannot replace the body. Messages that are not
task messages (events, remote control) pass unchanged.

Per task message, in this order:

1. the serialized body above TASK_MAX_PAYLOAD_BYTES → ``PayloadTooLarge``, nothing is sent. Measured before
   compression: that is what a worker holds and decodes, however well it compressed;
2. compressed with TASK_COMPRESSION when the task is in ``queues.COMPRESSED_TASKS``, when the body is above
   TASK_COMPRESSION_THRESHOLD_BYTES, or with the codec a sender names (Celery's ``compression`` option). The
   compressed body is kept only when it is smaller: an encrypted body (the base64 text of ciphertext) still
   shrinks by about a quarter, an already compressed one does not and is sent as it is;
3. the body, compressed or not, above TASK_CLAIM_CHECK_BYTES → stored as a payload claim, and the message carries
   a reference (``payload_claims``).

Consumers need nothing for compression: kombu decompresses in ``Message.__init__`` from the ``compression``
header. Encrypted tasks (json+fernet) are compressed after encryption, as kombu layers it: about 25 % smaller, where
compressing the JSON before encrypting it would save as much as for a plain body — that would take a change of the
serializer's format.
"""

from __future__ import annotations

from typing import Any

import kombu.compression
from celery.app.amqp import AMQP
from kombu import pools
from kombu.messaging import Producer
from kombu.utils.encoding import ensure_bytes

from apps.main import payload_claims
from apps.main.queues import is_compressed

#: Codecs kombu registers only when a package provides them, and that package (kombu.compression).
OPTIONAL_CODECS: dict[str, str] = {"brotli": "brotli", "zstd": "backports.zstd"}
#: Every codec name TASK_COMPRESSION may take where its package is installed.
CODECS: tuple[str, ...] = ("zlib", "gzip", "bzip2", "lzma", *OPTIONAL_CODECS)


class PayloadTooLarge(ValueError):
    """A task message whose body is above TASK_MAX_PAYLOAD_BYTES; nothing was sent (the API answers 413)."""

    def __init__(self, task_name: str, size: int, limit: int) -> None:
        super().__init__(f"the message of {task_name} would be {size} bytes, more than TASK_MAX_PAYLOAD_BYTES "
                         f"({limit}): not sent")
        self.size, self.limit = size, limit


def available_codecs() -> list[str]:
    """The codec names kombu compresses with in this environment."""
    found = []
    for name in CODECS:
        try:
            kombu.compression.get_encoder(name)
        except KeyError:
            continue
        found.append(name)
    return found


def codec(name: str) -> str:
    """``name`` when kombu compresses with it here; ValueError saying why not (and what would) otherwise."""
    if name in available_codecs():
        return name
    if name in OPTIONAL_CODECS:
        raise ValueError(f"TASK_COMPRESSION: {name!r} needs the Python package {OPTIONAL_CODECS[name]}, which is "
                         f"not installed; installed codecs: {', '.join(available_codecs())}")
    raise ValueError(f"TASK_COMPRESSION: {name!r} is not a compression kombu knows; use one of "
                     f"{', '.join(available_codecs())}")


def prepare(body: bytes, content_type: str, content_encoding: str, headers: dict[str, Any],
            compression: str | None = None) -> tuple[bytes, str, str]:
    """The body, content type and encoding to publish for a serialized task message (see the module doc);
    sets or removes the ``compression`` header in ``headers``."""
    from django.conf import settings

    name, size = str(headers["task"]), len(body)
    headers.pop("compression", None)  # decided here, for the body as it is now
    headers.pop(payload_claims.HEADER, None)  # the worker's note of an opened claim, should a sender copy headers
    if content_type == payload_claims.CONTENT_TYPE:  # a reference sent again (celery migrate): as it is
        return body, content_type, content_encoding
    if size > settings.TASK_MAX_PAYLOAD_BYTES:
        raise PayloadTooLarge(name, size, settings.TASK_MAX_PAYLOAD_BYTES)
    if not compression and (is_compressed(name) or size > settings.TASK_COMPRESSION_THRESHOLD_BYTES):
        compression = settings.TASK_COMPRESSION
    compressed_as = ""
    if compression:
        packed, kind = kombu.compression.compress(body, compression)
        if len(packed) < size:
            body, compressed_as = packed, kind
    if len(body) > settings.TASK_CLAIM_CHECK_BYTES:
        claim = payload_claims.store(task_id=str(headers["id"]), task_name=name, body=body, content_type=content_type,
                                     content_encoding=content_encoding, compression=compressed_as, size=size)
        return payload_claims.reference(claim), payload_claims.CONTENT_TYPE, payload_claims.CONTENT_ENCODING
    if compressed_as:
        headers["compression"] = compressed_as
    return body, content_type, content_encoding


class PayloadProducer(Producer):
    """kombu's producer, passing every task message through ``prepare`` once it is serialized."""

    def _prepare(self, body: Any, serializer: str | None = None, content_type: str | None = None,
                 content_encoding: str | None = None, compression: str | None = None,
                 headers: dict[str, Any] | None = None) -> tuple[Any, str, str]:
        headers = {} if headers is None else headers
        if not (headers.get("task") and headers.get("id")):  # not a task message (protocol 2): kombu's way
            return super()._prepare(body, serializer, content_type, content_encoding, compression, headers)
        body, content_type, content_encoding = super()._prepare(body, serializer, content_type, content_encoding,
                                                                None, headers)
        return prepare(ensure_bytes(body), content_type, content_encoding, headers, compression)


class PayloadAMQP(AMQP):
    """Celery's AMQP API with ``PayloadProducer`` for every task message this app publishes."""

    Producer = PayloadProducer

    @property
    def producer_pool(self) -> pools.ProducerPool:
        # Celery takes its pool from kombu's shared ones (kombu.pools.producers), which build kombu's Producer:
        # this app gets a pool of its own, on the same shared connection pool.
        if self._producer_pool is None:
            self._producer_pool = pools.ProducerPool(pools.connections[self.app.connection_for_write()],
                                                     limit=self.app.pool.limit, Producer=self.Producer)
        return self._producer_pool

    publisher_pool = producer_pool
