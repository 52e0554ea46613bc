"""Object storage behind one small interface: S3, or a local folder laid out the same way.

The model registry, retraining and batch scoring read and write through a
:class:`Blobs`, so the local file store (``make serve``, tests) and S3 share
one code path. Writes are atomic in both: S3 objects appear whole, local
files are written to a temporary name and renamed.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Protocol

_CHUNK = 1 << 20


def client_error() -> Any:
    """botocore's ClientError once botocore is imported; before, an empty tuple (catches nothing).

    An except clause's expression is evaluated only when an exception reaches
    it, and an S3 client error can only come from botocore once it is
    imported: a read the standard-library reader (s3reader.py) answered thus
    never imports botocore (0.1 s at a cold start) just to name its errors.
    """
    module = sys.modules.get("botocore.exceptions")
    return module.ClientError if module is not None else ()


def botocore_error() -> Any:
    """botocore's BotoCoreError once botocore is imported, else an empty tuple (see client_error)."""
    module = sys.modules.get("botocore.exceptions")
    return module.BotoCoreError if module is not None else ()


class BlobMissing(Exception):
    """No object at that key."""


class BlobChanged(Exception):
    """A conditional write lost: the object is no longer what was read."""


@dataclass(frozen=True)
class Blob:
    """An object's bytes and its entity tag (ETag on S3, a content hash locally)."""

    data: bytes
    etag: str


class Blobs(Protocol):
    """What the registry, retraining and batch scoring need from a store."""

    def get(self, key: str) -> Blob:
        """The object's bytes; BlobMissing if absent."""

    def get_if_changed(self, key: str, etag: str | None) -> Blob | None:
        """The object if its tag differs from ``etag`` (a conditional GET), else None."""

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        """Write the whole object; returns its new tag."""

    def put_if(self, key: str, data: bytes, etag: str | None, content_type: str = "application/json") -> str:
        """Write only if the object still has tag ``etag`` (None: only if absent); else BlobChanged."""

    def upload(self, key: str, path: str | os.PathLike[str], content_type: str = "text/csv") -> None:
        """Write a local file as the object (streamed, for large outputs)."""

    def exists(self, key: str) -> bool:
        """True if an object is at ``key``."""

    def keys(self, prefix: str) -> list[str]:
        """Every key under ``prefix``, sorted."""

    def delete(self, key: str) -> None:
        """Remove the object if it is there (no error if it is not)."""

    def open(self, key: str) -> BinaryIO:
        """A streaming reader of the object; BlobMissing if absent."""

    def uri(self, key: str) -> str:
        """The URI of ``key`` (s3://bucket/key or file:///path)."""


class S3Blobs:
    """A bucket."""

    def __init__(self, client: Any, bucket: str, pinned: dict[str, str] | None = None) -> None:
        self.s3 = client
        self.bucket = bucket
        # key -> VersionId: an event names the version it is about, and a
        # key overwritten since must not be read in its place.
        self.pinned = dict(pinned or {})

    def _version(self, key: str) -> dict[str, str]:
        version = self.pinned.get(key)
        return {"VersionId": version} if version else {}

    def _missing(self, exc: Any) -> bool:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        return code in ("NoSuchKey", "404", "NotFound")

    def get(self, key: str) -> Blob:
        """The object's bytes; BlobMissing if absent."""
        try:
            out = self.s3.get_object(Bucket=self.bucket, Key=key, **self._version(key))
        except client_error() as exc:
            if self._missing(exc):
                raise BlobMissing(self.uri(key)) from None
            raise
        return Blob(out["Body"].read(), str(out.get("ETag", "")).strip('"'))

    def get_if_changed(self, key: str, etag: str | None) -> Blob | None:
        """A conditional GET: S3 answers 304 Not Modified when the ETag still matches."""
        if etag is None:
            return self.get(key)
        try:
            out = self.s3.get_object(Bucket=self.bucket, Key=key, IfNoneMatch=f'"{etag}"')
        except client_error() as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("304", "NotModified") or status == 304:
                return None
            if self._missing(exc):
                raise BlobMissing(self.uri(key)) from None
            raise
        blob = Blob(out["Body"].read(), str(out.get("ETag", "")).strip('"'))
        return None if blob.etag == etag else blob

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        """Write the whole object; returns its ETag."""
        out = self.s3.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)
        return str(out.get("ETag", "")).strip('"')

    def put_if(self, key: str, data: bytes, etag: str | None, content_type: str = "application/json") -> str:
        """S3's conditional write: If-Match on the ETag read, or If-None-Match: * for a new key."""
        cond = {"IfMatch": f'"{etag}"'} if etag else {"IfNoneMatch": "*"}
        try:
            out = self.s3.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type, **cond)
        except client_error() as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            code = str(exc.response.get("Error", {}).get("Code", ""))
            # 412: the object changed; 409: another conditional write was in flight
            if status in (409, 412) or code in ("PreconditionFailed", "ConditionalRequestConflict"):
                raise BlobChanged(self.uri(key)) from None
            raise
        return str(out.get("ETag", "")).strip('"')

    def upload(self, key: str, path: str | os.PathLike[str], content_type: str = "text/csv") -> None:
        """Multipart upload of a local file when it is large.

        s3transfer, which boto3's ``upload_file`` runs, used directly: it
        works on any S3 client, a plain botocore one included.
        """
        from s3transfer.manager import TransferManager

        with TransferManager(self.s3) as manager:
            manager.upload(str(path), self.bucket, key, extra_args={"ContentType": content_type}).result()

    def exists(self, key: str) -> bool:
        """A HEAD request."""
        try:
            self.s3.head_object(Bucket=self.bucket, Key=key)
            return True
        except client_error() as exc:
            if self._missing(exc) or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                return False
            raise

    def keys(self, prefix: str) -> list[str]:
        """Every key under ``prefix`` (paginated)."""
        out: list[str] = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            out.extend(item["Key"] for item in page.get("Contents", []))
        return sorted(out)

    def delete(self, key: str) -> None:
        """DeleteObject (S3 answers 204 whether or not the key exists)."""
        self.s3.delete_object(Bucket=self.bucket, Key=key)

    def open(self, key: str) -> BinaryIO:
        """The streaming body of a GET."""
        try:
            return self.s3.get_object(Bucket=self.bucket, Key=key, **self._version(key))["Body"]
        except client_error() as exc:
            if self._missing(exc):
                raise BlobMissing(self.uri(key)) from None
            raise

    def uri(self, key: str) -> str:
        """s3://bucket/key."""
        return f"s3://{self.bucket}/{key}"


class DirBlobs:
    """A local folder whose relative paths are the keys."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root.resolve() not in path.parents and path != self.root.resolve():
            raise ValueError(f"key {key!r} leaves the store")
        return path

    def get(self, key: str) -> Blob:
        """The file's bytes; its tag is their sha256."""
        try:
            data = self._path(key).read_bytes()
        except FileNotFoundError:
            raise BlobMissing(self.uri(key)) from None
        return Blob(data, hashlib.sha256(data).hexdigest())

    def get_if_changed(self, key: str, etag: str | None) -> Blob | None:
        """The file if its content hash changed."""
        blob = self.get(key)
        return None if blob.etag == etag else blob

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        """Write to a temporary name beside the target, then rename."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".part-", delete=False) as tmp:
            tmp.write(data)
        os.replace(tmp.name, path)
        return hashlib.sha256(data).hexdigest()

    def put_if(self, key: str, data: bytes, etag: str | None, content_type: str = "application/json") -> str:
        """Compare and rename under an exclusive lock on a sibling lock file."""
        import fcntl

        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.parent / f".lock-{path.name}", "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                now: str | None = hashlib.sha256(path.read_bytes()).hexdigest()
            except FileNotFoundError:
                now = None
            if now != etag:
                raise BlobChanged(self.uri(key))
            return self.put(key, data, content_type)

    def upload(self, key: str, path: str | os.PathLike[str], content_type: str = "text/csv") -> None:
        """Copy a local file in, atomically."""
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "rb") as src, tempfile.NamedTemporaryFile(dir=target.parent, prefix=".part-", delete=False) as tmp:
            for chunk in iter(lambda: src.read(_CHUNK), b""):
                tmp.write(chunk)
        os.replace(tmp.name, target)

    def exists(self, key: str) -> bool:
        """True if the file exists."""
        return self._path(key).is_file()

    def keys(self, prefix: str) -> list[str]:
        """Relative paths under the prefix."""
        base = self.root.resolve()
        found = (str(p.relative_to(base)) for p in base.rglob("*")
                 if p.is_file() and not p.name.startswith((".part-", ".lock-")))
        return sorted(k for k in found if k.startswith(prefix))

    def delete(self, key: str) -> None:
        """Unlink the file if it is there."""
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            pass

    def open(self, key: str) -> BinaryIO:
        """The open file."""
        try:
            return open(self._path(key), "rb")
        except FileNotFoundError:
            raise BlobMissing(self.uri(key)) from None

    def uri(self, key: str) -> str:
        """file:///absolute/path."""
        return self._path(key).as_uri()


def iter_lines(stream: BinaryIO) -> Iterator[bytes]:
    """Lines of a binary stream, read in bounded chunks."""
    pending = b""
    for chunk in iter(lambda: stream.read(_CHUNK), b""):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        yield from (line + b"\n" for line in lines)
    if pending:
        yield pending
