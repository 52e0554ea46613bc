"""One S3 GetObject without botocore: the cold start's download, standard library only.

Why this is written here rather than left to botocore, which the project
prefers: at a cold start botocore made the model's download longer than R's
whole start. Measured on the 2-core machine of
bench/bench_coldstart.py, importing botocore took 0.11-0.15 s and making its
S3 client another 0.07 s, before any byte moved; the same signed GET through
``http.client`` needs about 0.02 s of imports (``bench_coldstart`` prints the
fetch phase of both paths).

It does that one request and no other, and hands everything unusual back:

- :meth:`S3Reader.from_env` answers None (and so does ``S3_READER=off``)
  unless the environment is what Lambda gives a function (credentials and region in environment variables;
  no profile, config file, proxy, FIPS or dual-stack setting), so botocore
  is used wherever its configuration could differ (``AWS_CA_BUNDLE`` is
  honoured as botocore honours it);
- any answer but 200, any network error, a redirect and a checksum that does
  not match raise :class:`Fallback`, and the caller repeats the request
  through botocore, whose retries, redirects and error reports stay the only
  ones. The reader itself never retries.

The signature is AWS Signature Version 4 as S3 documents it; tests check it
against botocore's own signer and against moto's server with authentication
on. Checksums are verified as botocore does without the CRT: CRC32, SHA-1 or
SHA-256 when S3 sends a full-object one.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import io
import logging
import os
import re
import zlib
from dataclasses import dataclass
from typing import Any, Callable, Mapping
from urllib.parse import quote, urlsplit

log = logging.getLogger(__name__)
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()

# Virtual-hosted addressing needs a name that is one DNS label: no dots (TLS
# wildcard), no capitals or underscores (legacy buckets).
_DNS_BUCKET = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
# The "aws" partition's regions (amazonaws.com); China and isolated ones differ.
_REGION = re.compile(r"^(?!cn-)[a-z]{2}(-gov)?-[a-z]+-\d{1,2}$")
# Settings under which botocore might reach S3 otherwise than this reader
# would: with any of them set, botocore makes the request.
_DEFER_TO_BOTOCORE = (
    "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_USE_FIPS_ENDPOINT",
    "AWS_USE_DUALSTACK_ENDPOINT", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
    "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy",
)
# Checksums botocore verifies without the CRT, in its order of preference.
_CHECKSUMS: tuple[tuple[str, Callable[[], Any]], ...] = (
    ("crc32", lambda: _Crc32()),
    ("sha1", hashlib.sha1),
    ("sha256", hashlib.sha256),
)


class Fallback(Exception):
    """This request is botocore's to make; the message says why."""


@dataclass(frozen=True)
class Endpoint:
    """Where requests go: S3's regional name, or a configured URL (path-style)."""

    scheme: str
    host: str  # with the port when it is not the scheme's default
    path: str = ""


@dataclass(frozen=True)
class S3Reader:
    """Signed GETs of S3 objects with the environment's credentials."""

    access_key: str
    secret_key: str
    token: str | None
    region: str
    endpoint: Endpoint | None = None  # None: https://<bucket>.s3.<region>.amazonaws.com
    ca_bundle: str | None = None  # AWS_CA_BUNDLE: the certificates TLS trusts instead of the system's
    connect_timeout: float = 1.0
    read_timeout: float = 3.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> S3Reader | None:
        """A reader for this environment, or None where botocore must decide."""
        env = os.environ if environ is None else environ
        # S3_READER=off: botocore for everything, e.g. under an SDK mock
        # (moto's mock_aws patches botocore, which this reader bypasses).
        if env.get("S3_READER", "on").strip().lower() in ("off", "0", "false", "no"):
            return None
        access, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
        region = env.get("AWS_DEFAULT_REGION") or env.get("AWS_REGION")
        if not (access and secret and region) or any(env.get(name) for name in _DEFER_TO_BOTOCORE):
            return None
        config = env.get("AWS_CONFIG_FILE") or os.path.join(os.path.expanduser("~"), ".aws", "config")
        if os.path.exists(config):  # it may name an endpoint or addressing style for S3
            return None
        url = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
        endpoint = None
        if url:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
                return None
            endpoint = Endpoint(parts.scheme, parts.netloc, parts.path.rstrip("/"))
        elif not _REGION.match(region):
            return None
        return cls(access, secret, env.get("AWS_SESSION_TOKEN") or None, region, endpoint,
                   ca_bundle=env.get("AWS_CA_BUNDLE") or None)

    def where(self, bucket: str, key: str) -> tuple[Endpoint, str]:
        """The endpoint and the (encoded) path of an object; Fallback if botocore would address it otherwise."""
        encoded = quote(key, safe="/~")
        if self.endpoint is not None:
            return self.endpoint, f"{self.endpoint.path}/{quote(bucket, safe='')}/{encoded}"
        if not _DNS_BUCKET.match(bucket):
            raise Fallback(f"bucket name {bucket!r} needs path-style addressing")
        return Endpoint("https", f"{bucket}.s3.{self.region}.amazonaws.com"), f"/{encoded}"

    def sign(self, host: str, path: str, query: Mapping[str, str], headers: Mapping[str, str],
             now: datetime.datetime) -> dict[str, str]:
        """The request's headers with SigV4's: every header given (and host) is signed."""
        amz_date = now.strftime("%Y%m%dT%H%M%SZ")
        day = amz_date[:8]
        signed = {k.lower(): " ".join(str(v).split()) for k, v in headers.items()}
        signed.update({"host": host, "x-amz-date": amz_date, "x-amz-content-sha256": EMPTY_SHA256})
        if self.token:
            signed["x-amz-security-token"] = self.token
        names = sorted(signed)
        canonical_query = "&".join(
            f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(query.items()))
        canonical = "\n".join([
            "GET", path, canonical_query,
            "".join(f"{name}:{signed[name]}\n" for name in names),
            ";".join(names), EMPTY_SHA256,
        ])
        scope = f"{day}/{self.region}/s3/aws4_request"
        to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                             hashlib.sha256(canonical.encode()).hexdigest()])
        key = _hmac(f"AWS4{self.secret_key}".encode(), day)
        for part in (self.region, "s3", "aws4_request"):
            key = _hmac(key, part)
        signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        out = {name: value for name, value in signed.items() if name != "host"}
        out["Authorization"] = (f"AWS4-HMAC-SHA256 Credential={self.access_key}/{scope}, "
                                f"SignedHeaders={';'.join(names)}, Signature={signature}")
        return out

    def get_object(self, Bucket: str, Key: str, VersionId: str | None = None) -> dict[str, Any]:
        """GetObject's answer as botocore shapes it (Body, ContentLength, ETag, VersionId).

        The body verifies S3's checksum as it is read and raises Fallback at
        its end if the bytes differ; any answer but 200 raises Fallback.
        """
        import http.client

        endpoint, path = self.where(Bucket, Key)
        query = {"versionId": VersionId} if VersionId else {}
        headers = self.sign(endpoint.host, path, query, {"x-amz-checksum-mode": "ENABLED"},
                            datetime.datetime.now(datetime.timezone.utc))
        target = path + ("?" + "&".join(f"{k}={quote(v, safe='-_.~')}" for k, v in query.items()) if query else "")
        if endpoint.scheme == "https":
            import ssl

            conn: Any = http.client.HTTPSConnection(endpoint.host, timeout=self.connect_timeout,
                                                   context=ssl.create_default_context(cafile=self.ca_bundle))
        else:
            conn = http.client.HTTPConnection(endpoint.host, timeout=self.connect_timeout)
        try:
            conn.connect()
            conn.sock.settimeout(self.read_timeout)
            conn.request("GET", target, headers={"Host": endpoint.host, **headers})
            response = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise Fallback(f"S3 GET failed: {exc!r}") from None
        if response.status != 200:
            conn.close()
            raise Fallback(f"S3 answered {response.status} {response.reason}")
        length = response.getheader("Content-Length")
        return {
            "Body": _Body(conn, response, _checksum(response)),
            "ContentLength": int(length) if length and length.isdigit() else -1,
            "ETag": response.getheader("ETag", ""),
            "VersionId": response.getheader("x-amz-version-id"),
        }


class _Crc32:
    def __init__(self) -> None:
        self.value = 0

    def update(self, data: bytes) -> None:
        self.value = zlib.crc32(data, self.value)

    def digest(self) -> bytes:
        return self.value.to_bytes(4, "big")


def _checksum(response: Any) -> tuple[str, Any, str] | None:
    """The full-object checksum S3 sent that can be verified here: (name, hasher, expected base64)."""
    for name, make in _CHECKSUMS:
        value = response.getheader(f"x-amz-checksum-{name}")
        # "<checksum>-<parts>": a checksum of the parts' checksums (multipart), not of the bytes
        if value and "-" not in value:
            return name, make(), value
    return None


class _Body:
    """The response body: read in chunks, checked against S3's checksum at its end."""

    def __init__(self, conn: Any, response: Any, checksum: tuple[str, Any, str] | None) -> None:
        self._conn = conn
        self._response = response
        self._checksum = checksum

    def read(self, size: int = -1) -> bytes:
        try:
            data = self._response.read() if size < 0 else self._response.read(size)
        except Exception as exc:  # a cut connection: botocore downloads it again
            self.close()
            raise Fallback(f"S3 body read failed: {exc!r}") from None
        if self._checksum is not None:
            name, hasher, expected = self._checksum
            if data:
                hasher.update(data)
            if not data or size < 0:
                self._checksum = None
                if base64.b64encode(hasher.digest()).decode() != expected:
                    self.close()
                    raise Fallback(f"the body's {name} differs from the one S3 sent")
        if not data or size < 0:
            self.close()
        return data

    def close(self) -> None:
        self._conn.close()


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


class ReadsFirst:
    """A botocore-shaped client whose plain GetObject tries the reader first.

    Everything else (conditional gets, writes, listings) and every GET the
    reader hands back goes to botocore's client, made only then.
    """

    def __init__(self, reader: S3Reader, client: Callable[[], Any]) -> None:
        self._reader = reader
        self._client = client

    def get_object(self, **kwargs: Any) -> dict[str, Any]:
        if set(kwargs) <= {"Bucket", "Key", "VersionId"}:
            try:
                out = self._reader.get_object(**kwargs)
                data = out["Body"].read()  # small objects (pointer, manifest): read and checked here
                return {**out, "Body": io.BytesIO(data)}
            except Fallback as exc:
                log.info("the reader declined; botocore reads the object", extra={"key": kwargs.get("Key"),
                                                                                  "reason": str(exc)})
        return self._client().get_object(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client(), name)

