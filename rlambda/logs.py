"""Structured JSON logs with the request id and a cold-start marker.

One line per record, as CloudWatch Logs Insights reads best. Fields bound
for the current invocation (request id, cold start) are added to every
record logged during it.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import sys
import time
from typing import Any

_bound: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("rlambda_log_fields", default={})
# Attributes every LogRecord has; anything else came in through ``extra``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object."""

    def format(self, record: logging.LogRecord) -> str:
        """The record, its ``extra`` fields and the bound fields, as JSON."""
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        out.update(_bound.get())
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info and record.levelno >= logging.ERROR:
            # The trace goes to the log, never to a client.
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure() -> None:
    """JSON on the Lambda runtime's handler (or stderr), level from LOG_LEVEL."""
    root = logging.getLogger()
    level = os.environ.get("LOG_LEVEL", "INFO").upper()
    root.setLevel(getattr(logging, level, logging.INFO))
    if not root.handlers:
        root.addHandler(logging.StreamHandler(sys.stderr))
    for handler in root.handlers:
        handler.setFormatter(JsonFormatter())
    # botocore is chatty at INFO about credentials and endpoints.
    logging.getLogger("botocore").setLevel(logging.WARNING)


def bind(**fields: Any) -> contextvars.Token[dict[str, Any]]:
    """Add fields to every record of the current invocation."""
    return _bound.set({**_bound.get(), **fields})


def unbind(token: contextvars.Token[dict[str, Any]]) -> None:
    """Drop the fields bound by :func:`bind`."""
    _bound.reset(token)
