"""Where a model lives: a parsed MODEL_URI (S3 key or local path, file or folder).

Its own module so that the store (which fetches) and the registry (which
versions) can both use it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse


@dataclass(frozen=True)
class Location:
    """A parsed MODEL_URI: ``s3://bucket/key``, ``file:///abs/path`` or a plain path."""

    scheme: str  # "s3" or "file"
    bucket: str
    key: str  # the S3 key, or the absolute local path
    folder: bool = False  # a versioned folder served through its pointer

    @classmethod
    def parse(cls, uri: str) -> "Location":
        """Parse a model URI; a malformed one is a configuration error."""
        if uri.startswith("s3://"):
            parsed = urlparse(uri)
            key = parsed.path.lstrip("/")
            if not parsed.netloc or not key:
                raise ValueError(f"MODEL_URI {uri!r} must look like s3://bucket/key")
            return cls("s3", parsed.netloc, key, key.endswith("/"))
        if uri.startswith("file://"):
            parsed = urlparse(uri)
            if parsed.netloc not in ("", "localhost"):
                raise ValueError(f"MODEL_URI {uri!r}: file URIs must be file:///absolute/path")
            path = unquote(parsed.path)
        elif "://" in uri:
            raise ValueError(f"MODEL_URI {uri!r}: only s3://, file:// and plain paths are supported")
        else:
            path = uri
        folder = path.endswith("/")
        resolved = str(Path(path).expanduser().resolve())
        return cls("file", "", resolved + "/" if folder else resolved, folder)
