"""Model versions: immutable ``<version>.rds`` files, a manifest beside each, and a pointer.

Layout under a folder (S3 prefix or local directory)::

    models/admission/<version>.rds    the fitted R object, never overwritten
    models/admission/<version>.json   its manifest: sha256, metrics, data, predictors...
    models/admission/current.json     the pointer: which version is served

Serving reads the pointer (a small conditional GET when refreshing), then
the manifest, and checks the downloaded file's sha256 against it before R
reads it. Rolling back is moving the pointer.

    python -m rlambda.registry --uri s3://bucket/models/admission/ list
    python -m rlambda.registry --uri ... promote VERSION
    python -m rlambda.registry --uri ... rollback
    python -m rlambda.registry --uri ... publish FILE.rds [--keep-served]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

from .blobs import Blob, BlobChanged, BlobMissing, Blobs, DirBlobs, S3Blobs
from .location import Location

POINTER = "current.json"
# How often promote() re-reads and retries when another writer moved the pointer.
PROMOTE_ATTEMPTS = 5
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class BadPointer(ValueError):
    """current.json is not a pointer: wrong JSON type, a missing key, a bad version name."""


class PointerRace(RuntimeError):
    """Other writers kept moving the pointer; this promotion gave up cleanly."""


def utc_now() -> str:
    """An ISO-8601 UTC timestamp, to the second."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass(frozen=True)
class Pointer:
    """What ``current.json`` says, and its tag for conditional re-reads."""

    version: str
    sha256: str
    updated_at: str
    previous: str | None = None
    reason: str = ""
    etag: str = ""

    def document(self) -> dict[str, Any]:
        """The JSON stored in current.json."""
        out = asdict(self)
        out.pop("etag")
        return out


class Registry:
    """Versions of one model under one folder."""

    def __init__(self, blobs: Blobs, prefix: str) -> None:
        self.blobs = blobs
        self.prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"

    def key(self, name: str) -> str:
        """The full key of a file in this folder."""
        return self.prefix + name

    def model_key(self, version: str) -> str:
        """Where a version's .rds lives."""
        return self.key(f"{version}.rds")

    def manifest_key(self, version: str) -> str:
        """Where a version's manifest lives."""
        return self.key(f"{version}.json")

    @staticmethod
    def _pointer(blob: Blob) -> Pointer:
        try:
            doc = json.loads(blob.data)
        except ValueError as exc:
            raise BadPointer(f"{POINTER} is not JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise BadPointer(f"{POINTER} must be a JSON object, got {type(doc).__name__}")
        for name in ("version", "sha256"):
            if not isinstance(doc.get(name), str) or not doc[name]:
                raise BadPointer(f"{POINTER} has no {name!r} string")
        if not _VERSION.fullmatch(doc["version"]):
            raise BadPointer(f"{POINTER} names no valid version: {doc['version'][:40]!r}")
        previous = doc.get("previous")
        return Pointer(
            version=doc["version"],
            sha256=doc["sha256"],
            updated_at=str(doc.get("updated_at", "")),
            previous=previous if isinstance(previous, str) and _VERSION.fullmatch(previous) else None,
            reason=str(doc.get("reason", "")),
            etag=blob.etag,
        )

    def _read(self) -> tuple[Pointer | None, str | None]:
        """The pointer and the tag to write against (None, None when there is none)."""
        try:
            blob = self.blobs.get(self.key(POINTER))
        except BlobMissing:
            return None, None
        try:
            return self._pointer(blob), blob.etag
        except BadPointer:
            # A malformed pointer may be replaced by a promotion (that is how
            # it is repaired), but conditionally, against what was read.
            return None, blob.etag

    def pointer(self) -> Pointer | None:
        """The served version, or None when nothing has been promoted yet."""
        try:
            return self._pointer(self.blobs.get(self.key(POINTER)))
        except BlobMissing:
            return None

    def pointer_if_changed(self, etag: str | None) -> Pointer | None:
        """The pointer if it changed since ``etag`` (one conditional request), else None."""
        blob = self.blobs.get_if_changed(self.key(POINTER), etag)
        return None if blob is None else self._pointer(blob)

    def manifest(self, version: str) -> dict[str, Any]:
        """A version's manifest; BlobMissing if there is none."""
        return json.loads(self.blobs.get(self.manifest_key(version)).data)

    def has(self, version: str) -> bool:
        """True if the version's manifest exists (written last, so the version is whole)."""
        return self.blobs.exists(self.manifest_key(version))

    def versions(self) -> list[dict[str, Any]]:
        """Every version's manifest, oldest first."""
        out = []
        for key in self.blobs.keys(self.prefix):
            name = key[len(self.prefix):]
            if "/" in name or not name.endswith(".json") or name == POINTER:
                continue
            try:
                out.append(json.loads(self.blobs.get(key).data))
            except (BlobMissing, ValueError):
                continue
        return sorted(out, key=lambda m: (m.get("created_at", ""), m.get("version", "")))

    def publish(self, version: str, rds: bytes, manifest: dict[str, Any]) -> None:
        """Store a new version: the .rds first, the manifest last (it marks the version whole)."""
        if self.has(version):
            raise FileExistsError(f"version {version} already exists; versions are immutable")
        self.blobs.put(self.model_key(version), rds)
        self.blobs.put(self.manifest_key(version), json.dumps(manifest, indent=2).encode(), "application/json")

    def promote(self, version: str, reason: str, expect: str | None | bool = False) -> Pointer:
        """Point serving at ``version`` (which must exist); remembers the previous one.

        The write is conditional on the pointer being unchanged since it was
        read (S3 If-Match on its ETag), so two promotions cannot interleave
        and break the ``previous`` chain: the loser re-reads and retries, and
        gives up with :class:`PointerRace` after ``PROMOTE_ATTEMPTS``.
        ``expect`` (when not False) is the version the pointer must still be
        on (None: no pointer); otherwise the promotion is abandoned with
        :class:`PointerRace` (the pointer has moved past this version).
        """
        manifest = self.manifest(version)
        for _ in range(PROMOTE_ATTEMPTS):
            current, etag = self._read()
            if expect is not False and (current.version if current else None) != expect:
                raise PointerRace(f"the pointer moved to {current.version if current else None} "
                                  f"(expected {expect}); {version} is not promoted")
            pointer = Pointer(
                version=version,
                sha256=str(manifest["sha256"]),
                updated_at=utc_now(),
                previous=current.version if current and current.version != version else (current.previous if current else None),
                reason=reason,
            )
            try:
                new_etag = self.blobs.put_if(self.key(POINTER), json.dumps(pointer.document()).encode(), etag)
            except BlobChanged:
                time.sleep(0.05)
                continue
            return Pointer(**{**pointer.document(), "etag": new_etag})
        raise PointerRace(f"{POINTER} kept changing; {version} was not promoted after {PROMOTE_ATTEMPTS} attempts")

    def rollback(self) -> Pointer:
        """Move the pointer back to the version served before the current one (conditionally)."""
        current = self.pointer()
        if current is None or not current.previous:
            raise LookupError("there is no previous version to roll back to")
        return self.promote(current.previous, f"rollback from {current.version}", expect=current.version)


def publish_file(registry: Registry, path: str) -> Pointer:
    """Store a hand-made .rds as a version (named by its sha256) and serve it."""
    with open(path, "rb") as fh:
        rds = fh.read()
    sha256 = hashlib.sha256(rds).hexdigest()
    # Named after the content: publishing the same file twice is one version.
    version = f"file-{sha256[:16]}"
    if not registry.has(version):
        registry.publish(version, rds, {
            "version": version,
            "sha256": sha256,
            "created_at": utc_now(),
            "source": {"file": os.path.basename(path)},
            "metrics": None,
            "gate": {"passed": True, "reason": "published by hand"},
        })
    return registry.promote(version, f"published from {os.path.basename(path)}")


def registry_for(uri: str, s3_client: Any = None) -> Registry:
    """The registry of a folder URI: ``s3://bucket/prefix/`` or a local directory."""
    loc = Location.parse(uri)
    if loc.scheme == "s3":
        if s3_client is None:
            import boto3

            s3_client = boto3.client("s3")
        return Registry(S3Blobs(s3_client, loc.bucket), loc.key)
    return Registry(DirBlobs(loc.key), "")


def main(argv: list[str] | None = None) -> int:
    """List versions with their metrics, promote one, or roll back."""
    parser = argparse.ArgumentParser(prog="python -m rlambda.registry", description="Model versions and the pointer.")
    parser.add_argument("--uri", default=os.environ.get("MODEL_URI", ""), help="folder URI (default: MODEL_URI)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="versions with their metrics; * marks the served one")
    promote = sub.add_parser("promote", help="serve VERSION")
    promote.add_argument("version")
    sub.add_parser("rollback", help="serve the previously served version")
    publish = sub.add_parser("publish", help="store a local .rds as a version and serve it")
    publish.add_argument("file")
    publish.add_argument("--keep-served", action="store_true",
                         help="do nothing if a version is already served")
    args = parser.parse_args(argv)
    if not args.uri.endswith("/"):
        parser.error("--uri must name a folder ending in / (for example s3://bucket/models/admission/)")
    registry = registry_for(args.uri)
    try:
        if args.command == "list":
            current = registry.pointer()
            print(f"{'':2}{'version':<20} {'created_at':<21} {'rows':>7} {'logloss':>8} {'auc':>6} {'acc':>6}  gate")
            for m in registry.versions():
                metrics = (m.get("metrics") or {}).get("holdout") or {}
                mark = "*" if current and current.version == m.get("version") else " "
                gate = m.get("gate") or {}
                print(
                    f"{mark} {m.get('version', '?'):<20} {m.get('created_at', ''):<21} "
                    f"{(m.get('training_data') or {}).get('rows', ''):>7} "
                    f"{_fmt(metrics.get('logloss')):>8} {_fmt(metrics.get('auc')):>6} {_fmt(metrics.get('accuracy')):>6}  "
                    f"{'passed' if gate.get('passed') else gate.get('reason', '-')}"
                )
        elif args.command == "promote":
            pointer = registry.promote(args.version, "promoted by hand")
            print(f"serving {pointer.version} (previous: {pointer.previous})")
        elif args.command == "publish":
            current = registry.pointer()
            if current is not None and args.keep_served:
                print(f"{args.uri} already serves {current.version}; kept")
                return 0
            pointer = publish_file(registry, args.file)
            print(f"{args.uri} now serves {pointer.version} (previous: {pointer.previous})")
        else:
            pointer = registry.rollback()
            print(f"serving {pointer.version} (rolled back)")
    except (BlobMissing, LookupError, KeyError, OSError, BadPointer, PointerRace) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "-"


if __name__ == "__main__":
    sys.exit(main())
