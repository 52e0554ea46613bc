"""Routes: predict, ping and metadata, the same for every event source.

The app owns the model's life in this process (loaded lazily on first use,
kept, reloaded only after a failure) and turns every error into data: a 4xx
whose message says what to send instead, or a 5xx without a traceback.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import threading
import time
import uuid
from typing import Any, Callable

from . import logs, openapi, rsession
from .errors import (
    BadRequest,
    HTTPError,
    InternalError,
    MethodNotAllowed,
    ModelUnavailable,
    NotFound,
    PayloadTooLarge,
    Problem,
)
from .events import Request, Response, RestApiAdapter, adapter_for, check_json_content_type, query_row, strip_base_path
from .model import Model, ModelLoadError, ModelUnsupported
from .prototype import NUMBER_LIKE, SPACE, _shown
from .settings import Settings
from .store import Location, ModelFile, Store

log = logging.getLogger("rlambda")

_ALLOW_HEADERS = "Content-Type,X-Api-Key,Authorization,X-Amz-Date,X-Amz-Security-Token"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON; send a finite number")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise BadRequest(
                    f"Field {key} is given more than once in one object; send each field once.",
                    [Problem(key, "is given more than once")],
                )
            seen.add(key)
    return out


def parse_json(body: bytes | None) -> Any:
    """The JSON document in a request body, or a BadRequest that says what is wrong."""
    if body is None or not body.strip():
        raise BadRequest(
            "The body is empty; send a JSON object with the model's fields (GET /metadata lists them).",
            [Problem("body", "is empty")],
        )
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(
            f"The body is not UTF-8 (byte {exc.start}); send UTF-8 encoded JSON.",
            [Problem("body", "is not UTF-8")],
        ) from None
    try:
        return json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise BadRequest(
            f"The body is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}).",
            [Problem("body", "is not valid JSON")],
        ) from None
    except ValueError as exc:
        raise BadRequest(f"The body is not valid JSON: {exc}.", [Problem("body", str(exc))]) from None
    except RecursionError:
        raise BadRequest("The body is nested too deeply.", [Problem("body", "is nested too deeply")]) from None


class _Prefetch:
    """The model's download on a thread of its own, so that the init's wait for it is bounded."""

    def __init__(self, fetch: Callable[[], ModelFile]) -> None:
        self._fetch = fetch
        self._done = threading.Event()
        self.value: ModelFile | None = None
        self.error: BaseException | None = None
        self.ms = 0.0
        # a daemon: a download stalled on a slow S3 never keeps the process alive
        threading.Thread(target=self._run, name="rlambda-prefetch", daemon=True).start()

    def _run(self) -> None:
        started = time.perf_counter()
        try:
            self.value = self._fetch()
        except BaseException as exc:  # handed to whoever waits for it
            self.error = exc
        finally:
            self.ms = (time.perf_counter() - started) * 1e3
            self._done.set()

    def wait(self, timeout: float | None = None) -> bool:
        """True once the download has finished (well or not)."""
        return self._done.wait(timeout)

    def result(self) -> ModelFile:
        """The downloaded file; raises the download's error."""
        self._done.wait()
        if self.error is not None:
            raise self.error
        assert self.value is not None
        return self.value


def _query_number(text: str) -> float | str:
    """A decimal number from query text (any exponent), or the text itself."""
    stripped = text.strip(SPACE)
    if NUMBER_LIKE.fullmatch(stripped):
        number = float(stripped)
        if math.isfinite(number):
            return number
    return text


def _interval_level(model: Model, payload: dict[str, Any]) -> float | None:
    """The confidence level a request asks for (``"interval": 0.95``), or None."""
    if "interval" not in payload:
        return None
    if not model.has_interval:
        raise BadRequest(
            f"This {model.describe()['class']} model gives no interval; leave out interval.",
            [Problem("interval", "is not available for this model")],
        )
    value = level = payload["interval"]
    if type(level) is int:
        level = float(level)
    if type(level) is not float or not 0.0 < level < 1.0:
        raise BadRequest(
            f"interval must be a confidence level between 0 and 1 (exclusive), such as 0.95; got {_shown(value)}.",
            [Problem("interval", "must be a number between 0 and 1, such as 0.95")],
        )
    return level


class App:
    """The scoring service: routes, model life and error handling."""

    def __init__(self, settings: Settings | None = None, store: Store | None = None) -> None:
        self.settings = settings or Settings.from_env()
        self.store = store or Store(self.settings.cache_dir)
        self._model: Model | None = None
        self._load_lock = threading.Lock()
        self._next_check = 0.0
        self._prefetch: _Prefetch | None = None
        self._warmed = False
        self.init_phases: dict[str, float] = {}
        try:
            self._versioned = Location.parse(self.settings.model_uri).folder
        except ValueError:
            self._versioned = False  # reported as a misconfiguration on first use
        self._cold = True
        self._routes: dict[str, dict[str, Callable[[Request], Response]]] = {
            "/predict": {"GET": self.predict_get, "POST": self.predict_post},
            "/ping": {"GET": self.ping},
            "/metadata": {"GET": self.metadata},
            "/openapi.json": {"GET": self.openapi},
        }
        # (model, document): rebuilt only when another model is served.
        self._openapi: tuple[Model, dict[str, Any]] | None = None

    # -- model life -------------------------------------------------------

    def model(self) -> Model:
        """The served model: loaded on first use, then kept.

        For a versioned folder, the pointer is re-read at most every
        ``refresh_s`` seconds and a new version is swapped in between
        requests; requests already holding the old model finish on it.
        """
        model = self._model
        if model is None:
            with self._load_lock:
                if self._model is None:
                    self._model = self._load(self._prefetched() or self._fetch())
                    self._next_check = time.monotonic() + self.settings.refresh_s
                return self._model
        if self._versioned and time.monotonic() >= self._next_check:
            self._refresh(model)
            return self._model or model
        return model

    def prefetch(self) -> None:
        """Begin the model's download on a thread of its own, unless one is pending (Lambda's init)."""
        if self._prefetch is None and self._model is None:
            self._prefetch = _Prefetch(self._fetch)

    def warm_up(self, started: float | None = None) -> dict[str, float]:
        """Lambda's init: start R, download the model beside R's start, read it into R.

        The download begins once R's start has set its environment variables
        (rsession._initr says why not before), so that it runs beside the
        long part of R's start. Never raises: R that does not start, or a
        model that cannot be fetched or loaded, is logged here and reported
        by the first request (a 503 with Retry-After while it may clear),
        which tries again. The wait for the download is bounded
        (``init_wait_s``; Lambda's init has 10 s); a download still running
        then is finished by the first request. Returns the phases in ms (also
        logged); ``started`` is the ``perf_counter`` at which the init began,
        if before this call (coldstart.py starts R and the download first and
        records what it measured).
        """
        started = time.perf_counter() if started is None else started
        phases = self.init_phases
        if self._model is not None or self._warmed:
            return phases
        self._warmed = True
        try:
            rsession.start(beside=self.prefetch)
        except Exception as exc:
            log.error("R did not start at init; requests will report it", extra={"reason": str(exc)})
            return phases
        phases.setdefault("r_start_ms", round((time.perf_counter() - started) * 1e3, 2))
        self.prefetch()  # R was up before this call, or the model is loaded: no-op otherwise
        fetch = self._prefetch
        if fetch is None:  # a request loaded the model meanwhile
            return phases
        if not fetch.wait(self.settings.init_wait_s):
            log.warning("the model is still downloading at the end of init; the first request waits for it",
                        extra={"waited_s": self.settings.init_wait_s})
            return phases
        phases["fetch_ms"] = round(fetch.ms, 2)
        if fetch.error is not None:
            reason = fetch.error.message if isinstance(fetch.error, HTTPError) else repr(fetch.error)
            log.warning("the model could not be fetched at init; the first request tries again",
                        extra={"reason": reason})
            return phases
        loading = time.perf_counter()
        with self._load_lock:
            if self._model is None and self._prefetch is fetch:
                self._prefetch = None
                try:
                    self._model = self._load(fetch.result())
                    self._next_check = time.monotonic() + self.settings.refresh_s
                except HTTPError:
                    pass  # logged by _load; the first request tries again
        phases["load_ms"] = round((time.perf_counter() - loading) * 1e3, 2)
        phases["init_ms"] = round((time.perf_counter() - started) * 1e3, 2)
        log.info("init", extra=phases)
        return phases

    def _prefetched(self) -> ModelFile | None:
        """The init's download, if one is pending or went well (called under the load lock).

        A download that failed at init is not replayed: its error may be
        minutes old, so the caller fetches again.
        """
        fetch, self._prefetch = self._prefetch, None
        if fetch is None or (fetch.wait(0) and fetch.error is not None):
            return None
        return fetch.result()

    def prime(self) -> None:
        """R started, the model loaded and one made-up row scored (SnapStart's before-snapshot).

        Raises what loading or scoring raised; the model is then dropped, so
        a scorer that failed its first row is never kept.
        """
        model = self.model()
        try:
            model.predict([model.prototype.example()])
        except Exception:
            with self._load_lock:
                if self._model is model:
                    self._model = None
            raise

    def reread_pointer(self) -> None:
        """Read a versioned model's pointer now (after a SnapStart restore: time has passed)."""
        model = self._model
        if self._versioned and model is not None:
            self._refresh(model)

    def _refresh(self, current: Model) -> None:
        # One thread refreshes; the others keep scoring with the current model.
        if not self._load_lock.acquire(blocking=False):
            return
        try:
            self._next_check = time.monotonic() + self.settings.refresh_s
            record = self.store.refresh(self.settings.model_uri, current.source.pointer_etag)
            if record is None:
                return
            fresh = self._load(record)
            self._model = fresh
            if record.path != current.source.path:
                # R holds the old version in memory; its file would only fill
                # /tmp version after version in a long-lived container.
                self.store.evict(current.source)
            log.info("model swapped", extra={"from": current.source.version, "to": record.version})
        except HTTPError as exc:
            # A bad new version never replaces a good one; retried next interval.
            log.error(
                "model refresh failed; the previous version keeps serving",
                extra={"serving": current.source.version, "reason": exc.message},
            )
        finally:
            self._load_lock.release()

    def _fetch(self) -> ModelFile:
        try:
            return self.store.fetch(self.settings.model_uri)
        except ValueError as exc:  # a malformed MODEL_URI: configuration, not input
            log.error("bad MODEL_URI", extra={"reason": str(exc)})
            raise InternalError(f"The function is misconfigured: {exc}.") from None

    def _load(self, source: ModelFile) -> Model:
        started = time.perf_counter()
        try:
            model = Model.load(source, self.settings.threshold)
        except ModelLoadError as exc:
            log.error("model cannot be loaded", extra={"uri": source.uri, "reason": str(exc)})
            # A cached file R cannot use would be reused by every later fetch:
            # drop it, so a fixed upload is downloaded without a restart.
            self.store.evict(source)
            if isinstance(exc, ModelUnsupported):
                # Not a broken server: this model cannot be served exactly as R would.
                raise ModelUnavailable(f"The model at {source.uri} cannot be served: {exc}") from None
            raise InternalError(f"The model at {source.uri} cannot be served: {exc}") from None
        except rsession.RUnavailable as exc:
            log.error("R is unavailable", extra={"reason": str(exc)})
            raise ModelUnavailable("The R runtime could not be started; the error is logged.") from None
        log.info(
            "model loaded",
            extra={**source.provenance(), "load_ms": round((time.perf_counter() - started) * 1e3, 2)},
        )
        return model

    # -- entry point ------------------------------------------------------

    def handle(self, event: Any, context: Any = None) -> Any:
        """Answer one Lambda invocation of any supported shape."""
        started = time.perf_counter()
        request_id = str(getattr(context, "aws_request_id", "") or uuid.uuid4())
        cold, self._cold = self._cold, False
        token = logs.bind(request_id=request_id, cold_start=cold)
        adapter = adapter_for(event)
        request: Request | None = None
        error: HTTPError | None = None
        try:
            request = adapter.request(event)
            request.path = strip_base_path(request.path, self.settings.base_paths)
            response = self.route(request)
        except HTTPError as exc:
            error = exc
        except Exception:
            log.exception("internal error")
            error = InternalError("Internal error; it is logged with this request_id.")
        if error is not None:
            response = Response(error.status, error.body(request_id), dict(error.headers))
        self._cors(request, response)
        # Successes log at DEBUG: a JSON line costs about as much as the
        # Python side of a prediction, and API Gateway has access logs.
        status = response.status
        level = logging.ERROR if status >= 500 else logging.WARNING if status >= 400 else logging.DEBUG
        if cold or log.isEnabledFor(level):
            log.log(
                max(level, logging.INFO) if cold else level,
                "request",
                extra={
                    "source": adapter.name,
                    "method": request.method if request else None,
                    "path": request.path if request else None,
                    "status": status,
                    "ms": round((time.perf_counter() - started) * 1e3, 3),
                },
            )
        logs.unbind(token)
        return adapter.render(response, error)

    def refuse(self, error: HTTPError, request_id: str, origin: str | None = None) -> dict[str, Any]:
        """The REST proxy answer, CORS included, for an error a server finds before there is an event.

        The local server's own 400 (malformed HTTP), 408, 413, 431 and 503
        are rendered here so they are the same documents the handler gives.
        """
        request = Request("-", "-", "http", headers={"origin": origin} if origin else {})
        response = Response(error.status, error.body(request_id), dict(error.headers))
        self._cors(request, response)
        return RestApiAdapter().render(response, error)

    def route(self, request: Request) -> Response:
        """Dispatch by path and method; 404, 405 and preflight answered here."""
        path = request.path.rstrip("/") or "/"
        methods = self._routes.get(path)
        if methods is None:
            raise NotFound(
                f"No route {path}; use POST /predict, GET /predict, GET /ping, GET /metadata or GET /openapi.json.",
                [Problem("path", f"{path} is not a route")],
            )
        if request.method == "OPTIONS":
            return Response(204, None, {"Access-Control-Allow-Methods": ",".join([*methods, "OPTIONS"])})
        handler = methods.get(request.method)
        if handler is None:
            allowed = ", ".join([*methods, "OPTIONS"])
            raise MethodNotAllowed(
                f"{request.method} is not allowed on {path}; use {allowed}.",
                [Problem("method", f"must be one of {allowed}")],
                headers={"Allow": allowed},
            )
        return handler(request)

    def _cors(self, request: Request | None, response: Response) -> None:
        origins = self.settings.cors_origins
        headers = response.headers
        if "*" in origins:
            headers["Access-Control-Allow-Origin"] = "*"
        else:
            origin = request.origin if request else None
            if origin in origins:
                headers["Access-Control-Allow-Origin"] = origin
            headers["Vary"] = "Origin"
        headers.setdefault("Access-Control-Allow-Methods", "GET,POST,OPTIONS")
        headers["Access-Control-Allow-Headers"] = _ALLOW_HEADERS
        headers["Access-Control-Max-Age"] = "600"

    # -- routes -------------------------------------------------------------

    def predict_post(self, request: Request) -> Response:
        """POST /predict: one row, or ``{"instances": [...]}`` scored in one R call."""
        if request.has_payload:
            payload = request.payload
        else:
            self._check_body(request)
            payload = parse_json(request.body)
        return Response(200, self.score(payload))

    def score(self, payload: Any) -> dict[str, Any]:
        """Score a parsed document: a row object or an ``instances`` batch."""
        model = self.model()
        if isinstance(payload, dict) and "instances" in payload:
            rows = payload["instances"]
            if not isinstance(rows, list):
                raise BadRequest(
                    "instances must be an array of row objects.",
                    [Problem("instances", "must be an array of objects")],
                )
            if not rows:
                raise BadRequest("instances is empty; send at least one row.", [Problem("instances", "is empty")])
            limit = self.settings.max_rows
            if len(rows) > limit:
                raise BadRequest(
                    f"{len(rows)} rows is more than the {limit} allowed per request; split the batch.",
                    [Problem("instances", f"has {len(rows)} rows, more than {limit}")],
                )
            level = _interval_level(model, payload)
            return {"predictions": model.predict(rows, "instances", level), "model": model.source.provenance()}
        if not isinstance(payload, dict):
            names = ", ".join(p.name for p in model.prototype.predictors)
            raise BadRequest(
                f"The body must be a JSON object with {names}, or {{\"instances\": [...]}}.",
                [Problem("body", "must be a JSON object")],
            )
        result = model.predict([payload], None, _interval_level(model, payload))[0]
        return {**result, "model": model.source.provenance()}

    def predict_get(self, request: Request) -> Response:
        """GET /predict?gre=&gpa=&rank=: one row from the query string (the original API)."""
        fields = [p.name for p in self.model().prototype.predictors]
        query: dict[str, Any] = query_row(request.read_query(), [*fields, "interval"])
        if "interval" in query:
            # text in a query string; a JSON number in a body
            query["interval"] = _query_number(query["interval"])
        return Response(200, self.score(query))

    def ping(self, request: Request) -> Response:
        """GET /ping: 200 only when R and the model are loaded."""
        model = self.model()
        return Response(200, {"status": "ok", "model": model.source.provenance()})

    def metadata(self, request: Request) -> Response:
        """GET /metadata: predictors, outputs, threshold, model and runtime versions."""
        model = self.model()
        versions = rsession.versions()
        return Response(
            200,
            {
                **model.describe(),
                "model": model.source.provenance(),
                "max_rows": self.settings.max_rows,
                "r_version": versions["r"],
                "rpy2_version": versions["rpy2"],
                "python_version": sys.version.split()[0],
            },
        )

    def openapi(self, request: Request) -> Response:
        """GET /openapi.json: the OpenAPI 3.1 document of the served model (built once per model)."""
        model = self.model()
        cached = self._openapi
        if cached is None or cached[0] is not model:
            cached = self._openapi = (model, openapi.build(model, self.settings))
        return Response(200, cached[1])

    def _check_body(self, request: Request) -> None:
        check_json_content_type(request.headers.get("content-type"))
        size = len(request.body or b"")
        if size > self.settings.max_body_bytes:
            raise PayloadTooLarge(
                f"The body is {size} bytes, more than the {self.settings.max_body_bytes} allowed.",
                [Problem("body", f"is larger than {self.settings.max_body_bytes} bytes")],
            )
