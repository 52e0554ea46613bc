"""Small helpers the benchmarks share (each bench/*.py runs as a script, so this is a sibling import)."""

from __future__ import annotations

import socket
import sys


def progress(msg: str) -> None:
    """A progress line on stderr; stdout carries only the figures."""
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
