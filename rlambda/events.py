"""Event shapes in and out: one small adapter per event source.

Each adapter turns its event into a :class:`Request` and a :class:`Response`
back into what that source expects. Adapters know nothing about models or R;
the app knows nothing about event shapes. A new event source is a new
adapter here, not an ``if`` in the scoring path.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Protocol
from urllib.parse import parse_qsl

from .errors import BadRequest, HTTPError, Problem, UnsupportedMediaType

_NO_PAYLOAD = object()


@dataclass
class Request:
    """An invocation, whatever its event shape."""

    method: str
    path: str
    source: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    # Direct invocations arrive already parsed by the Lambda runtime.
    payload: Any = _NO_PAYLOAD
    # The query string's (name, value) pairs, repeats kept. Read only by the
    # route that takes its input from the query (GET /predict): anywhere
    # else a query string is ignored, as unknown body fields are.
    read_query: Callable[[], list[tuple[str, Any]]] = field(default=list, repr=False)

    @property
    def has_payload(self) -> bool:
        """True when the event itself is the JSON document (direct invocation)."""
        return self.payload is not _NO_PAYLOAD

    @property
    def origin(self) -> str | None:
        """The browser's Origin header, for CORS."""
        return self.headers.get("origin")


@dataclass
class Response:
    """What the app answers, before an adapter shapes it."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


class Adapter(Protocol):
    """Turns one kind of event into a Request and a Response back into its answer."""

    name: str

    def matches(self, event: Any) -> bool:
        """True if ``event`` has this adapter's shape."""

    def request(self, event: Any) -> Request:
        """The Request this event carries; BadRequest if it cannot be read."""

    def render(self, response: Response, error: HTTPError | None) -> Any:
        """What the Lambda function returns to this source."""


def _mapping(value: Any, name: str) -> Mapping[str, Any]:
    """An event member that must be an object (absent or null: empty).

    A hand-written or corrupted event (``aws lambda invoke``, a test tool)
    can carry anything here; it is the caller's mistake, so a 400, not a 500.
    """
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest(f"The event's {name} must be an object.", [Problem(name, "must be an object")])
    return value


def _lower(headers: Any) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in _mapping(headers, "headers").items() if v is not None}


def _query_pairs(event: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """(name, value) pairs from a 1.0 event's query members, repeats kept."""
    multi = _mapping(event.get("multiValueQueryStringParameters"), "multiValueQueryStringParameters")
    if not multi:
        return list(_mapping(event.get("queryStringParameters"), "queryStringParameters").items())
    pairs = []
    for key, values in multi.items():
        if values is None:
            continue
        if not isinstance(values, list):
            raise BadRequest(
                f"The event's multiValueQueryStringParameters.{key} must be an array.",
                [Problem(f"multiValueQueryStringParameters.{key}", "must be an array")],
            )
        pairs.extend((key, v) for v in values)
    return pairs


def _http_query_pairs(event: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """(name, value) pairs from a 2.0 event: its rawQueryString keeps repeats apart."""
    raw_query = event.get("rawQueryString")
    if raw_query is not None:
        return parse_qsl(str(raw_query), keep_blank_values=True)
    return list(_mapping(event.get("queryStringParameters"), "queryStringParameters").items())


def _body(event: Mapping[str, Any]) -> bytes | None:
    raw = event.get("body")
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise BadRequest("The event's body must be a string.", [Problem("body", "must be a string")])
    if event.get("isBase64Encoded"):
        try:
            return base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest(
                "The body is flagged base64 but is not valid base64; send plain JSON or encode it properly.",
                [Problem("body", "is not valid base64")],
            ) from None
    return raw.encode("utf-8", "surrogatepass")


def query_row(pairs: Iterable[tuple[str, Any]], fields: Iterable[str]) -> dict[str, Any]:
    """One row from query pairs (the last value of a name wins); a repeated model field is a 400.

    Only the model's own fields are checked: a tracking parameter sent twice
    (``utm=a&utm=b``) is as irrelevant as any unknown field.
    """
    wanted = set(fields)
    out: dict[str, Any] = {}
    dup: list[str] = []
    for key, value in pairs:
        if key in out and key in wanted and key not in dup:
            dup.append(key)
        out[key] = value
    if dup:
        raise BadRequest(
            f"Query parameter {dup[0]} is given more than once; send each field once.",
            [Problem(k, "is given more than once") for k in dup],
        )
    return out


# The types a JSON body is accepted under besides JSON's own: none at all,
# text/plain (what a page sends to avoid a CORS preflight) and
# application/x-www-form-urlencoded (curl -d's default). The body must
# still parse as JSON; other types (multipart/form-data, application/xml)
# are clearly something else and get a 415.
_JSON_COMPATIBLE = {"application/json", "text/json", "text/plain", "application/x-www-form-urlencoded"}


def check_json_content_type(value: str | None) -> None:
    """Raise UnsupportedMediaType unless a Content-Type header value may carry a JSON body.

    HTTP API 2.0 events join repeated headers with commas: each part must be
    acceptable.
    """
    for part in (value or "").split(","):
        media = part.split(";")[0].strip().lower()
        if media and media not in _JSON_COMPATIBLE and not media.endswith("+json"):
            raise UnsupportedMediaType(
                f"Content-Type {media} is not supported; send a JSON body as application/json.",
                [Problem("content-type", "must be application/json")],
            )


def strip_base_path(path: str, base_paths: Iterable[str]) -> str:
    """``path`` without the first of ``base_paths`` it starts with (a custom domain's API mapping)."""
    for base in base_paths:
        base = "/" + base.strip("/")
        if base == "/":
            continue
        if path == base:
            return "/"
        if path.startswith(base + "/"):
            return path[len(base):]
    return path


def _strip_stage(path: str, stage: Any) -> str:
    # HTTP APIs keep a named stage in the path (2.0 events, and the 1.0
    # format an HTTP API can also send); routes are matched without it. REST
    # APIs never put the stage in ``path``, so a REST path is left alone:
    # /prod/ping there is a route named /prod/ping. Only the event's own
    # stage is removed; a stage that is not a string (a hand-made event)
    # names no prefix.
    if isinstance(stage, str) and stage and stage != "$default":
        prefix = "/" + stage
        if path == prefix:
            return "/"
        if path.startswith(prefix + "/"):
            return path[len(prefix):]
    return path or "/"


def _http_answer(response: Response) -> dict[str, Any]:
    body = "" if response.body is None else json.dumps(response.body, separators=(",", ":"), allow_nan=False)
    headers = dict(response.headers)
    if response.body is not None:
        headers.setdefault("Content-Type", "application/json")
    return {"statusCode": response.status, "headers": headers, "body": body, "isBase64Encoded": False}


class RestApiAdapter:
    """API Gateway REST API proxy integration (payload format 1.0)."""

    name = "apigw-rest"

    def matches(self, event: Any) -> bool:
        """REST events carry ``httpMethod`` and a ``requestContext``."""
        return isinstance(event, dict) and "httpMethod" in event and "requestContext" in event

    def request(self, event: Any) -> Request:
        """Read method, stage-free path, query, headers and body."""
        context = _mapping(event.get("requestContext"), "requestContext")
        path = str(event.get("path") or "/")
        if event.get("version") == "1.0":  # an HTTP API sending payload format 1.0
            path = _strip_stage(path, context.get("stage"))
        return Request(
            method=str(event.get("httpMethod") or "GET").upper(),
            path=path,
            source=self.name,
            headers=_lower(event.get("headers")),
            body=_body(event),
            read_query=lambda: _query_pairs(event),
        )

    def render(self, response: Response, error: HTTPError | None) -> dict[str, Any]:
        """A proxy-integration answer."""
        return _http_answer(response)


class HttpApiAdapter:
    """API Gateway HTTP API (payload format 2.0) and Lambda function URLs (same shape)."""

    name = "apigw-http"

    def matches(self, event: Any) -> bool:
        """2.0 events say so and carry ``requestContext.http``."""
        return (
            isinstance(event, dict)
            and event.get("version") == "2.0"
            and isinstance(event.get("requestContext"), dict)
            and "http" in event["requestContext"]
        )

    def request(self, event: Any) -> Request:
        """Read method, stage-free path, query (from rawQueryString), headers and body."""
        context = event["requestContext"]
        http = _mapping(context.get("http"), "requestContext.http")
        domain = str(context.get("domainName") or "")
        return Request(
            method=str(http.get("method") or "GET").upper(),
            path=_strip_stage(str(event.get("rawPath") or http.get("path") or "/"), context.get("stage")),
            source="function-url" if ".lambda-url." in domain else self.name,
            headers=_lower(event.get("headers")),
            body=_body(event),
            read_query=lambda: _http_query_pairs(event),
        )

    def render(self, response: Response, error: HTTPError | None) -> dict[str, Any]:
        """A 2.0 answer (explicit, so API Gateway does not guess)."""
        return _http_answer(response)


class DirectAdapter:
    """``aws lambda invoke`` and SDK calls: the event is the JSON document itself."""

    name = "direct"

    def matches(self, event: Any) -> bool:
        """Anything that is not an HTTP event shape."""
        return True

    def request(self, event: Any) -> Request:
        """A POST /predict whose payload is the event."""
        return Request(method="POST", path="/predict", source=self.name, payload=event)

    def render(self, response: Response, error: HTTPError | None) -> Any:
        """The body; an error is raised, its message the JSON error document.

        That is what the original function did, so ``aws lambda invoke`` shows
        a FunctionError whose errorMessage a regex-mapped integration can match.
        """
        if error is not None:
            error.args = (json.dumps(response.body, separators=(",", ":")),)
            raise error
        return response.body


ADAPTERS: tuple[Adapter, ...] = (HttpApiAdapter(), RestApiAdapter(), DirectAdapter())


def adapter_for(event: Any) -> Adapter:
    """The first adapter whose shape matches the event (direct invocation last)."""
    for adapter in ADAPTERS:
        if adapter.matches(event):
            return adapter
    return ADAPTERS[-1]


@dataclass(frozen=True)
class S3Object:
    """One ``ObjectCreated`` record of an S3 event notification."""

    bucket: str
    key: str
    size: int
    etag: str
    version: str | None
    sequencer: str


def s3_objects(event: Any) -> list[S3Object]:
    """The created objects an S3 notification event names (keys URL-decoded).

    Records of other event sources or kinds are skipped; an event with none
    is a BadRequest, so a misrouted invocation fails loudly.
    """
    from urllib.parse import unquote_plus

    if isinstance(event, dict) and event.get("source") == "aws.s3" and "detail" in event:
        return [_eventbridge_s3_object(event)]
    records = event.get("Records") if isinstance(event, dict) else None
    if not isinstance(records, list):
        raise BadRequest("Not an S3 event: it has no Records list.", [Problem("Records", "is required")])
    out = []
    for record in records:
        if not isinstance(record, dict) or record.get("eventSource") != "aws:s3":
            continue
        if not str(record.get("eventName", "")).startswith("ObjectCreated"):
            continue
        s3 = record.get("s3") or {}
        obj = s3.get("object") or {}
        out.append(
            S3Object(
                bucket=str((s3.get("bucket") or {}).get("name", "")),
                # S3 URL-encodes keys in notifications, spaces as '+'
                key=unquote_plus(str(obj.get("key", ""))),
                size=int(obj.get("size") or 0),
                etag=str(obj.get("eTag", "")),
                version=obj.get("versionId"),
                sequencer=str(obj.get("sequencer", "")),
            )
        )
    if not out:
        raise BadRequest("The S3 event has no ObjectCreated record.", [Problem("Records", "has no ObjectCreated record")])
    return out


def _eventbridge_s3_object(event: dict[str, Any]) -> S3Object:
    """The object of an EventBridge "Object Created" event from S3.

    EventBridge carries the key as S3 stored it (no URL encoding, unlike S3's
    own notifications), under ``detail``.
    """
    if event.get("detail-type") != "Object Created":
        raise BadRequest(f"The EventBridge S3 event is {event.get('detail-type')!r}, not 'Object Created'.",
                         [Problem("detail-type", "must be 'Object Created'")])
    detail = event.get("detail") or {}
    obj = detail.get("object") or {}
    bucket = str((detail.get("bucket") or {}).get("name", ""))
    key = str(obj.get("key", ""))
    if not bucket or not key:
        raise BadRequest("The EventBridge S3 event names no bucket or key.",
                         [Problem("detail.object.key", "is required"), Problem("detail.bucket.name", "is required")])
    return S3Object(bucket=bucket, key=key, size=int(obj.get("size") or 0), etag=str(obj.get("etag", "")),
                    version=obj.get("version-id"), sequencer=str(obj.get("sequencer", "")))
