"""Errors that carry an HTTP status and, for bad input, field-level problems.

Every error the product raises on purpose is an :class:`HTTPError`; the
adapters turn it into the same JSON body whatever the event shape was.
Anything else is an internal fault and becomes a 500 without a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the request: which field, and what was expected."""

    field: str
    problem: str

    def as_dict(self) -> dict[str, str]:
        """The JSON shape of this problem."""
        return {"field": self.field, "problem": self.problem}


class HTTPError(Exception):
    """Base class: an error with an HTTP status and a message a person can act on."""

    status: int = 500

    def __init__(
        self,
        message: str,
        problems: list[Problem] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.problems = problems or []
        self.headers = headers or {}

    @property
    def error_type(self) -> str:
        """The name clients see in ``errorType``."""
        return type(self).__name__

    def body(self, request_id: str) -> dict[str, Any]:
        """The JSON error document, the same for every event shape."""
        return {
            "errorType": self.error_type,
            "httpStatus": self.status,
            "request_id": request_id,
            "message": self.message,
            "errors": [p.as_dict() for p in self.problems],
        }


class BadRequest(HTTPError):
    """400: the request cannot be scored as sent."""

    status = 400


class NotFound(HTTPError):
    """404: no such route."""

    status = 404


class MethodNotAllowed(HTTPError):
    """405: the route exists but not with this method."""

    status = 405


class RequestTimeout(HTTPError):
    """408: the request did not arrive in time (a server's own answer)."""

    status = 408


class PayloadTooLarge(HTTPError):
    """413: more rows or bytes than the function accepts."""

    status = 413


class UnsupportedMediaType(HTTPError):
    """415: a body that is not JSON."""

    status = 415


class HeadersTooLarge(HTTPError):
    """431: a request head or trailer larger than the server reads (a server's own answer)."""

    status = 431


class InternalError(HTTPError):
    """500: a fault on our side; the message never includes a traceback."""

    status = 500


class ModelUnavailable(HTTPError):
    """503: the model cannot be fetched or loaded right now; retrying may help."""

    status = 503

    def __init__(self, message: str, retry_after_s: int = 5) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


class ServerBusy(HTTPError):
    """503: more connections than the server takes (a server's own answer)."""

    status = 503

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})
