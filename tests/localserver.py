"""``python -m rlambda.local`` as a test fixture: a real process on a free port."""

from __future__ import annotations

import http.client
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


class LocalServer:
    """``python -m rlambda.local`` on a free port, stopped with SIGINT."""

    def __init__(self, model: Path | str, tmp: Path, *extra: str, env: dict[str, str] | None = None) -> None:
        self.stderr_path = tmp / f"server-{uuid.uuid4().hex[:8]}.log"
        self._stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rlambda.local", "--host", "127.0.0.1", "--port", "0", *extra],
            cwd=ROOT,
            env={**os.environ, "MODEL_URI": str(model), "MODEL_CACHE_DIR": str(tmp), **(env or {})},
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            start_new_session=True,  # its own process group: workers included in a forced stop
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        try:
            first = self.line()
            assert "http://" in first, first
            self.url = first.split("http://", 1)[1].split("/", 1)[0]
            self.host, port = self.url.rsplit(":", 1)
            self.port = int(port)
            ready = self.line()
            assert "(version " in ready, ready
        except BaseException:
            self.stop()  # a failed start must not leave a server behind
            raise

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put("<eof>")

    def line(self, timeout: float = 120) -> str:
        """The next stdout line (bounded wait, so a hung server fails the test)."""
        return self.lines.get(timeout=timeout)

    def connection(self) -> http.client.HTTPConnection:
        """A new connection to the server."""
        return http.client.HTTPConnection(self.host, self.port, timeout=60)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._stderr.close()
        return self.proc.returncode

    def log(self) -> str:
        """What the server wrote to stderr (its access log and errors)."""
        return self.stderr_path.read_text(errors="replace")

    @property
    def base(self) -> str:
        """http://host:port."""
        return f"http://{self.url}"

    def api(self, method: str, path: str, doc: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        """Call the API directly (not through the page): the reference answer."""
        conn = self.connection()
        body = None if doc is None else json.dumps(doc)
        conn.request(method, path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        out = resp.status, json.loads(resp.read() or b"null")
        conn.close()
        return out
