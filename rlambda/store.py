"""Where models live: S3 or the local file system, cached once per container in /tmp.

An S3 object is streamed to a temporary name in the cache directory while
its sha256 is computed, checked for length, then renamed into place, so a
failed or cut download leaves nothing behind. A small sidecar JSON beside
the cached file records its ETag, version and sha256, so a new process in
the same container (or a benchmark's cold start) reuses the file without an
S3 call.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable

from .blobs import BlobMissing, DirBlobs, S3Blobs, botocore_error, client_error
from .errors import HTTPError, InternalError, ModelUnavailable
from .location import Location
from .registry import POINTER, Registry
from .s3reader import Fallback, ReadsFirst, S3Reader

log = logging.getLogger(__name__)
_CHUNK = 1 << 20


class ModelIntegrityError(InternalError):
    """The downloaded file's sha256 differs from its manifest: R must not read it."""


@dataclass(frozen=True)
class ModelFile:
    """A model file on local disk and where it came from."""

    path: str
    uri: str
    sha256: str
    etag: str | None = None
    version: str | None = None
    size: int = 0
    # For a folder URI: the pointer's tag, so a refresh can ask "changed since?"
    pointer_etag: str | None = None

    def provenance(self) -> dict[str, Any]:
        """Which model answered: URI, version or ETag, sha256."""
        return {
            "uri": self.uri,
            "version": self.version or self.etag or self.sha256[:12],
            "etag": self.etag,
            "sha256": self.sha256,
        }


def sha256_of(path: str | os.PathLike[str]) -> str:
    """The hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


class Store:
    """Fetches model files named by URI into a local cache directory."""

    def __init__(self, cache_dir: str = "/tmp", s3_client: Any = None) -> None:
        self.cache_dir = Path(cache_dir)
        self._s3 = s3_client
        # Given a client (tests, tools), use it for everything.
        self._s3_check = s3_client
        self._given = s3_client is not None
        self._session: Any = None
        self._reader: S3Reader | None | bool = False  # False: not looked at yet

    def _boto(self) -> Any:
        """This store's own botocore session (not a global one, so reset_clients can drop it).

        botocore's, which boto3 wraps: the same S3 client, and the fetch at
        a cold start spares boto3's own import (it imports s3transfer and
        its resource layer: about 0.09 s of CPU of the 0.44 s that importing
        boto3 and making a client took here).
        """
        if self._session is None:
            import botocore.session

            self._session = botocore.session.Session()
        return self._session

    @property
    def s3(self) -> Any:
        """A botocore S3 client, made on first use (import and creation: a few tenths of a second of CPU)."""
        if self._s3 is None:
            from botocore.config import Config

            # Worst case about 3 x (2 + 5) s: inside API Gateway's 29 s.
            self._s3 = self._boto().create_client(
                "s3",
                config=Config(
                    connect_timeout=2,
                    read_timeout=5,
                    retries={"mode": "standard", "max_attempts": 3},
                ),
            )
        return self._s3

    @property
    def s3_check(self) -> Any:
        """A client for the pointer re-read: one quick try, since a model is already serving."""
        if self._s3_check is None:
            from botocore.config import Config

            self._s3_check = self._boto().create_client(
                "s3",
                config=Config(connect_timeout=1, read_timeout=2, retries={"mode": "standard", "max_attempts": 1}),
            )
        return self._s3_check

    def reader(self) -> S3Reader | None:
        """The standard-library S3 reader, where the environment allows it (never with a given client)."""
        if self._reader is False:
            self._reader = None if self._given else S3Reader.from_env()
        return self._reader  # type: ignore[return-value]

    def _reads(self) -> Any:
        """A client for the registry's reads at a fetch: the reader first, botocore for the rest."""
        reader = self.reader()
        return self.s3 if reader is None else ReadsFirst(reader, lambda: self.s3)

    def reset_clients(self) -> None:
        """Forget the session and clients this store made; new ones are made on next use.

        After a SnapStart restore their pooled connections are dead and their
        credentials are those of the environment that took the snapshot. A
        client given to the store is the giver's to manage and is kept.
        """
        if not self._given:
            self._session = self._s3 = self._s3_check = None
            self._reader = False  # credentials may have changed too

    def fetch(self, uri: str) -> ModelFile:
        """A local copy of the model at ``uri``; downloads an S3 object once.

        For a folder URI, the version its pointer names, checked against the
        version's manifest before anything reads it.
        """
        fetched = self.refresh(uri, None)
        assert fetched is not None
        return fetched

    def refresh(self, uri: str, pointer_etag: str | None) -> ModelFile | None:
        """The model if it changed since ``pointer_etag`` (None: fetch it anyway).

        A single-file URI never changes once loaded; a folder's pointer is
        re-read with one conditional request and nothing is downloaded when it
        is unchanged.
        """
        loc = Location.parse(uri)
        if not loc.folder:
            if pointer_etag is not None:
                return None
            if loc.scheme == "file":
                return self._local(loc.key, uri)
            return self._s3_cached(loc, uri)
        return self._versioned(loc, uri, pointer_etag)

    def registry(self, loc: Location, quick: bool = False) -> Registry:
        """The version registry of a folder location (``quick``: for a refresh)."""
        if loc.scheme == "s3":
            return Registry(S3Blobs(self.s3_check if quick else self._reads(), loc.bucket), loc.key)
        return Registry(DirBlobs(loc.key), "")

    def _versioned(self, loc: Location, uri: str, pointer_etag: str | None) -> ModelFile | None:
        # A refresh runs inside a request while a good model is loaded: it
        # must fail fast (and keep serving) rather than stall on a slow S3.
        registry = self.registry(loc, quick=pointer_etag is not None)
        try:
            if pointer_etag is None:
                pointer = registry.pointer()
                if pointer is None:
                    raise ModelUnavailable(
                        f"No model version is served yet under {uri} ({POINTER} is missing); "
                        "publish one by retraining or promote a version.",
                        retry_after_s=30,
                    )
            else:
                pointer = registry.pointer_if_changed(pointer_etag)
                if pointer is None:
                    return None
            manifest = registry.manifest(pointer.version)
        except BlobMissing as exc:
            raise ModelUnavailable(f"{exc} is missing; the pointer names a version that is not whole.") from None
        except client_error() as exc:
            raise _s3_error(exc, loc) from None
        except botocore_error() as exc:
            raise ModelUnavailable(f"S3 is unreachable for {uri}: {exc}. It will be retried.") from None
        except (ValueError, KeyError) as exc:
            raise InternalError(f"The pointer or manifest under {uri} is malformed: {exc}.") from None
        key = registry.model_key(pointer.version)
        if loc.scheme == "s3":
            part = Location("s3", loc.bucket, key)
            record = self._s3_cached(part, f"s3://{loc.bucket}/{key}")
        else:
            record = self._local(key if os.path.isabs(key) else os.path.join(loc.key, key), uri + key)
        expected = str(manifest.get("sha256", ""))
        if record.sha256 != expected or pointer.sha256 != expected:
            if loc.scheme == "s3":
                # never keep a file that failed its check: a fixed upload must be fetched anew
                for path in (record.path, record.path + ".json"):
                    _unlink(path)
            log.error(
                "model integrity check failed",
                extra={"version": pointer.version, "sha256": record.sha256, "manifest_sha256": expected},
            )
            raise ModelIntegrityError(
                f"Model version {pointer.version} does not match its manifest (sha256 {record.sha256[:12]} "
                f"!= {expected[:12]}); refusing to load it."
            )
        return ModelFile(
            path=record.path,
            uri=record.uri,
            sha256=record.sha256,
            etag=record.etag,
            version=pointer.version,
            size=record.size,
            pointer_etag=pointer.etag,
        )

    def _local(self, path: str, uri: str) -> ModelFile:
        try:
            size = os.path.getsize(path)
            digest = sha256_of(path)
        except FileNotFoundError:
            raise ModelUnavailable(f"Model file {path} does not exist; build it or set MODEL_URI.") from None
        except OSError as exc:
            raise ModelUnavailable(f"Model file {path} cannot be read: {exc.strerror}.") from None
        return ModelFile(path=path, uri=uri, sha256=digest, size=size)

    def cache_path(self, loc: Location) -> Path:
        """Where the object is cached: one folder per bucket/key, the key's file name."""
        tag = hashlib.sha256(f"{loc.bucket}/{loc.key}".encode()).hexdigest()[:16]
        return self.cache_dir / "rlambda-models" / tag / (Path(loc.key).name or "model.rds")

    def evict(self, record: ModelFile) -> None:
        """Drop a downloaded file and its record, so the next fetch downloads it anew.

        Only files under this store's download folder are removed: a local
        MODEL_URI file is never touched.
        """
        path = Path(record.path).resolve()
        if (self.cache_dir / "rlambda-models").resolve() not in path.parents:
            return
        for name in (str(path), str(path) + ".json"):
            _unlink(name)

    def _s3_cached(self, loc: Location, uri: str) -> ModelFile:
        target = self.cache_path(loc)
        sidecar = target.with_name(target.name + ".json")
        cached = _read_sidecar(target, sidecar)
        if cached is not None:
            return cached
        return self.download(loc, uri, target, sidecar)

    def download(self, loc: Location, uri: str, target: Path, sidecar: Path) -> ModelFile:
        """Download to a temporary name, verify length and hash, then rename into place.

        The standard-library reader tries first where it can (s3reader.py:
        a cold start spares botocore's import); whatever it declines is
        downloaded anew by botocore, whose retries and errors are the ones
        reported.
        """
        reader = self.reader()
        if reader is not None:
            try:
                return self._download(reader.get_object, loc, uri, target, sidecar)
            except Fallback as exc:
                log.info("the reader declined; botocore downloads the model", extra={"uri": uri, "reason": str(exc)})
        return self._download(self.s3.get_object, loc, uri, target, sidecar)

    def _download(self, get_object: Callable[..., Any], loc: Location, uri: str, target: Path,
                  sidecar: Path) -> ModelFile:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _disk_error(exc, target.parent) from None
        tmp_name = ""
        try:
            response = get_object(Bucket=loc.bucket, Key=loc.key)
            expected = int(response.get("ContentLength", -1))
            with tempfile.NamedTemporaryFile(dir=target.parent, prefix=".part-", delete=False) as tmp:
                tmp_name = tmp.name
                digest, size = _copy(response["Body"], tmp)
                tmp.flush()
                os.fsync(tmp.fileno())
            if expected >= 0 and size != expected:
                raise ModelUnavailable(
                    f"Download of {uri} was cut short ({size} of {expected} bytes); it will be retried."
                )
            record = ModelFile(
                path=str(target),
                uri=uri,
                sha256=digest,
                etag=(response.get("ETag") or "").strip('"') or None,
                version=response.get("VersionId"),
                size=size,
            )
            os.replace(tmp_name, target)
            tmp_name = ""
            try:
                _write_sidecar(sidecar, record)
            except OSError as exc:
                # The sidecar only spares a later process a download; the
                # model is whole and verified, so serve it rather than fail.
                log.warning("cannot write the cache record; serving the model anyway",
                            extra={"path": str(sidecar), "reason": exc.strerror})
            log.info("downloaded model", extra={"uri": uri, "bytes": size, "sha256": digest})
            return record
        except client_error() as exc:
            raise _s3_error(exc, loc) from None
        except botocore_error() as exc:
            raise ModelUnavailable(f"S3 is unreachable for {uri}: {exc}. It will be retried.") from None
        except OSError as exc:
            raise _disk_error(exc, target.parent) from None
        finally:
            if tmp_name:
                _unlink(tmp_name)


def _copy(body: BinaryIO, out: BinaryIO) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    for chunk in iter(lambda: body.read(_CHUNK), b""):
        digest.update(chunk)
        out.write(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def _read_sidecar(target: Path, sidecar: Path) -> ModelFile | None:
    """The cached record, if both files exist and the file still has its hash."""
    try:
        record = ModelFile(**json.loads(sidecar.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None
    try:
        if os.path.getsize(target) != record.size or sha256_of(target) != record.sha256:
            log.warning("cached model does not match its record; downloading again", extra={"path": str(target)})
            return None
    except OSError:
        return None
    return record


def _write_sidecar(sidecar: Path, record: ModelFile) -> None:
    tmp = sidecar.with_name(f".{sidecar.name}.{os.getpid()}")
    try:
        tmp.write_text(json.dumps(asdict(record)), encoding="utf-8")
        os.replace(tmp, sidecar)
    except OSError:
        _unlink(str(tmp))  # a full disk must not leave a half-written record behind
        raise


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _s3_error(exc: Any, loc: Location) -> HTTPError:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    where = f"s3://{loc.bucket}/{loc.key}"
    if code in ("NoSuchKey", "404", "NotFound"):
        return ModelUnavailable(f"Model {where} does not exist; upload it or fix MODEL_URI.", retry_after_s=30)
    if code == "NoSuchBucket":
        return ModelUnavailable(f"Bucket {loc.bucket} does not exist; create it or fix MODEL_URI.", retry_after_s=30)
    if code in ("AccessDenied", "403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
        return InternalError(f"Access to {where} is denied; the function's role needs s3:GetObject on it.")
    if code in ("SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "503") or status in (500, 503):
        return ModelUnavailable(f"S3 is throttling or unavailable for {where} ({code}); retry shortly.")
    return ModelUnavailable(f"S3 refused {where} ({code or status}); retry shortly.")


def _disk_error(exc: OSError, where: Path) -> HTTPError:
    if exc.errno == errno.ENOSPC:
        return ModelUnavailable(f"No space left in {where} to cache the model; free /tmp or raise ephemeral storage.")
    return InternalError(f"Cannot write the model cache in {where}: {exc.strerror}.")
