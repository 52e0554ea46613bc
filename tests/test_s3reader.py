"""The cold start's standard-library S3 reader (rlambda/s3reader.py) and its hand-over to botocore.

The reader signs its own GETs, so its signature is checked two ways: equal
to botocore's own signer on the same request, and accepted by moto's server
with authentication on (which recomputes it and refuses a wrong one).
Anything it declines is downloaded by botocore: faults injected between the
store and moto's server show the model still arrives whole, or fails with
botocore's own report when the fault persists.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Iterator

import pytest

from conftest import ROOT
from faultproxy import FaultProxy
from rlambda.errors import InternalError, ModelUnavailable
from rlambda.s3reader import Fallback, S3Reader
from rlambda.store import Store, sha256_of

BUCKET = "reader-models"
KEYS = ["admission.rds", "dir/sp ace+plus=é ü~x.rds", "a/b/c%2F(1)*!'.rds", "models/admission/v/model.rds"]
FROZEN = datetime.datetime(2026, 11, 26, 15, 4, 5, tzinfo=datetime.timezone.utc)


@pytest.fixture(scope="module")
def moto(model_path: Path) -> Iterator[dict[str, Any]]:
    """moto's S3 server on 127.0.0.1 with an IAM user, the model under several keys, then authentication on."""
    import boto3
    from moto import settings
    from moto.core.authorization import ActionAuthenticatorMixin
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    plain = dict(endpoint_url=url, region_name="us-east-1", aws_access_key_id="setup", aws_secret_access_key="setup")
    iam = boto3.client("iam", **plain)
    iam.create_user(UserName="reader")
    iam.put_user_policy(UserName="reader", PolicyName="read", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
    key = iam.create_access_key(UserName="reader")["AccessKey"]
    s3 = boto3.client("s3", **plain)
    s3.create_bucket(Bucket=BUCKET)
    data = model_path.read_bytes()
    for name in KEYS:
        s3.put_object(Bucket=BUCKET, Key=name, Body=data, ChecksumAlgorithm="CRC32")
    s3.put_object(Bucket=BUCKET, Key="sha256.rds", Body=data, ChecksumAlgorithm="SHA256")
    from rlambda.registry import publish_file, registry_for

    publish_file(registry_for(f"s3://{BUCKET}/models/versioned/", s3), str(model_path))
    saved = settings.INITIAL_NO_AUTH_ACTION_COUNT
    # from here every request must carry a signature moto recomputes and accepts
    settings.INITIAL_NO_AUTH_ACTION_COUNT = ActionAuthenticatorMixin.request_count
    try:
        yield {"url": url, "host": host, "port": port, "id": key["AccessKeyId"], "secret": key["SecretAccessKey"],
               "sha256": hashlib.sha256(data).hexdigest()}
    finally:
        settings.INITIAL_NO_AUTH_ACTION_COUNT = saved
        server.stop()


@pytest.fixture
def proxy(moto: dict[str, Any]) -> Iterator[FaultProxy]:
    p = FaultProxy((moto["host"], moto["port"]))
    yield p
    p.close()


def reader_env(moto: dict[str, Any], url: str | None = None, **extra: str) -> dict[str, str]:
    return {"AWS_ACCESS_KEY_ID": moto["id"], "AWS_SECRET_ACCESS_KEY": moto["secret"],
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": url or moto["url"], **extra}


@pytest.fixture
def env_store(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, moto: dict[str, Any]) -> Any:
    """A Store configured by the environment only (as in Lambda), pointed at ``url``."""

    def make(url: str | None = None) -> Store:
        for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy",
                     "S3_READER"):
            monkeypatch.delenv(name, raising=False)
        for name, value in reader_env(moto, url).items():
            monkeypatch.setenv(name, value)
        return Store(str(tmp_path / "cache"))

    return make


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("token", [None, "IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJHMEUCIQ=="])
@pytest.mark.parametrize("version", [None, "3sL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY+MTRCxf3vjVBH40Nr8X8gdRQBpUMLUo"])
@pytest.mark.parametrize("endpoint", [None, "http://127.0.0.1:9000"])
def test_signature_equals_botocores(monkeypatch: pytest.MonkeyPatch, key: str, token: str | None,
                                    version: str | None, endpoint: str | None) -> None:
    """The same GET signed by the reader and by botocore's S3SigV4Auth carries the same Authorization."""
    import botocore.auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    env = {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
           "AWS_DEFAULT_REGION": "eu-west-3"}
    if token:
        env["AWS_SESSION_TOKEN"] = token
    if endpoint:
        env["AWS_ENDPOINT_URL"] = endpoint
    reader = S3Reader.from_env(env)
    assert reader is not None
    where, path = reader.where("my-models", key)
    query = {"versionId": version} if version else {}
    ours = reader.sign(where.host, path, query, {"x-amz-checksum-mode": "ENABLED"}, FROZEN)
    # botocore signs a plain-http URL's payload as the empty body's sha256, as the reader always does
    url = f"http://{where.host}{path}" + (f"?versionId={version.replace('+', '%2B')}" if version else "")
    request = AWSRequest(method="GET", url=url, headers={"x-amz-checksum-mode": "ENABLED"})
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: FROZEN.replace(tzinfo=None))
    botocore.auth.S3SigV4Auth(Credentials(env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"], token),
                              "s3", "eu-west-3").add_auth(request)
    assert ours["Authorization"] == request.headers["Authorization"]
    assert ours["x-amz-date"] == request.headers["X-Amz-Date"]


def test_addressing_is_botocores_for_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    """Virtual-hosted on S3's regional name; a bucket name that is not one DNS label goes to botocore."""
    reader = S3Reader.from_env({"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b", "AWS_REGION": "eu-west-3"})
    assert reader is not None
    where, path = reader.where("my-models", "models/a b.rds")
    assert (where.scheme, where.host, path) == ("https", "my-models.s3.eu-west-3.amazonaws.com", "/models/a%20b.rds")
    for bucket in ("my.models", "My_Models"):
        with pytest.raises(Fallback):
            reader.where(bucket, "x.rds")


@pytest.mark.parametrize("setting", [
    {"AWS_ACCESS_KEY_ID": ""}, {"AWS_DEFAULT_REGION": "", "AWS_REGION": ""}, {"AWS_PROFILE": "dev"},
    {"AWS_USE_FIPS_ENDPOINT": "true"}, {"AWS_USE_DUALSTACK_ENDPOINT": "true"},
    {"HTTPS_PROXY": "http://proxy:3128"}, {"https_proxy": "http://proxy:3128"},
    {"AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": "true"}, {"AWS_DEFAULT_REGION": "cn-north-1"},
    {"AWS_ENDPOINT_URL": "ftp://example"}, {"S3_READER": "off"}, {"S3_READER": "false"},
])
def test_settings_botocore_honours_leave_the_request_to_it(setting: dict[str, str], tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Under any setting that could make botocore reach S3 differently, the reader stands aside."""
    monkeypatch.setenv("HOME", str(tmp_path))
    base = {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b", "AWS_DEFAULT_REGION": "us-east-1"}
    assert S3Reader.from_env(base) is not None
    assert S3Reader.from_env({**base, **setting}) is None


def test_a_config_file_leaves_the_request_to_botocore(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """~/.aws/config (or AWS_CONFIG_FILE) may name an S3 endpoint or addressing style: botocore reads it."""
    monkeypatch.setenv("HOME", str(tmp_path))
    base = {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b", "AWS_DEFAULT_REGION": "us-east-1"}
    (tmp_path / ".aws").mkdir()
    (tmp_path / ".aws" / "config").write_text("[default]\ns3 =\n  addressing_style = path\n")
    assert S3Reader.from_env(base) is None
    assert S3Reader.from_env({**base, "AWS_CONFIG_FILE": str(tmp_path / "absent")}) is not None


@pytest.mark.parametrize("key", KEYS + ["sha256.rds"])
def test_moto_with_authentication_accepts_the_signature(moto: dict[str, Any], model_path: Path, key: str) -> None:
    """moto recomputes the signature (authentication on) and serves the object; its checksum is verified."""
    reader = S3Reader.from_env(reader_env(moto))
    assert reader is not None
    out = reader.get_object(Bucket=BUCKET, Key=key)
    body = out["Body"]
    assert body._checksum is not None  # S3 sent a checksum and the reader checks it
    data = b"".join(iter(lambda: body.read(4096), b""))
    assert data == model_path.read_bytes() and out["ContentLength"] == len(data)
    assert out["ETag"].strip('"')


def test_a_wrong_secret_is_refused_and_left_to_botocore(moto: dict[str, Any]) -> None:
    """A signature moto does not accept is a 403: the reader declines rather than report it itself."""
    reader = S3Reader.from_env(reader_env(moto, AWS_SECRET_ACCESS_KEY="not-the-secret"))
    assert reader is not None
    with pytest.raises(Fallback, match="403"):
        reader.get_object(Bucket=BUCKET, Key="admission.rds")


@pytest.mark.parametrize("kind", ["status", "cut", "checksum", "delay"])
def test_a_fault_once_is_downloaded_by_botocore(env_store: Any, proxy: FaultProxy, moto: dict[str, Any],
                                                kind: str) -> None:
    """The reader's one attempt fails; botocore's download brings the whole model; nothing half-written."""
    # GIVEN one fault on the model's first request (a 503, a cut body, a wrong checksum, a stall past the read timeout)
    options = {"delay_s": 6.0} if kind == "delay" else {}
    proxy.set(kind, match="admission.rds", times=1, **options)
    store = env_store(proxy.url)
    assert store.reader() is not None
    # WHEN the model is fetched
    record = store.fetch(f"s3://{BUCKET}/admission.rds")
    # THEN the fault fired, and botocore's second request brought the exact bytes, cached once
    assert proxy.faulted == 1
    assert record.sha256 == moto["sha256"] == sha256_of(record.path)
    assert sorted(p.name for p in Path(record.path).parent.iterdir()) == sorted(
        [Path(record.path).name, Path(record.path).name + ".json"])
    assert store._s3 is not None  # botocore's client made the second request


@pytest.mark.parametrize("kind, options, error, words", [
    ("status", {"status": 503, "code": "SlowDown"}, ModelUnavailable, "throttling or unavailable"),
    ("status", {"status": 403, "code": "AccessDenied"}, InternalError, "denied"),
    ("checksum", {}, ModelUnavailable, "retried"),
])
def test_a_fault_that_stays_is_reported_as_botocore_reports_it(env_store: Any, proxy: FaultProxy, kind: str,
                                                                options: dict[str, Any], error: type,
                                                                words: str) -> None:
    """A persistent fault: the error is botocore's (after its retries), never the reader's, and nothing is cached."""
    proxy.set(kind, match="admission.rds", **options)
    store = env_store(proxy.url)
    with pytest.raises(error, match=words):
        store.fetch(f"s3://{BUCKET}/admission.rds")
    assert proxy.faulted >= 2  # the reader's request, then botocore's
    assert not list((store.cache_dir / "rlambda-models").rglob("*.rds"))


def test_a_missing_model_is_reported_by_botocore(env_store: Any) -> None:
    """A 404 reaches the user in botocore's words: the model does not exist."""
    store = env_store()
    with pytest.raises(ModelUnavailable, match="does not exist"):
        store.fetch(f"s3://{BUCKET}/nothing-here.rds")


COLD = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {root!r})
    import handler
    out = handler.lambda_handler({{"gre": 800, "gpa": 4, "rank": 1}}, None)
    print(json.dumps({{"probability": out.get("probability"), "version": out.get("model", {{}}).get("version"),
                      "botocore": sorted(m for m in sys.modules if m.split(".")[0] in ("boto3", "botocore")),
                      "model_at_init": handler.app._model is not None}}))
""")


@pytest.mark.parametrize("uri", [f"s3://{BUCKET}/admission.rds", f"s3://{BUCKET}/models/versioned/"])
def test_a_cold_start_from_s3_never_imports_botocore(moto: dict[str, Any], tmp_path: Path, uri: str) -> None:
    """Lambda's init fetches a single model or a versioned folder's, signed by the reader, without botocore."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k != "S3_READER"}
    env.update(reader_env(moto), MODEL_URI=uri, MODEL_CACHE_DIR=str(tmp_path), HOME=str(tmp_path))
    run = subprocess.run([sys.executable, "-c", COLD.format(root=str(ROOT))], capture_output=True, text=True,
                         env=env, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    # R's own predict on the same model, in a separate process
    expected = subprocess.run(
        ["Rscript", "-e", f'm <- readRDS("{ROOT / "models" / "admission.rds"}"); '
         'cat(sprintf("%.17g", predict(m, data.frame(gre = 800, gpa = 4, rank = factor(1, levels = 1:4)), '
         'type = "response")))'], capture_output=True, text=True, check=True).stdout
    assert seen["model_at_init"] is True
    assert seen["probability"] == pytest.approx(float(expected), rel=1e-12)
    assert seen["botocore"] == []


def test_renewed_clients_read_the_environment_again(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """After a SnapStart restore (reset_clients) the reader takes the environment's credentials anew, or stands aside."""
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "snapshot-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "snapshot-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    store = Store(str(tmp_path / "cache"))
    first = store.reader()
    assert first is not None and first.access_key == "snapshot-key"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "restored-key")
    assert store.reader() is first  # kept between requests
    store.reset_clients()
    renewed = store.reader()
    assert renewed is not None and renewed.access_key == "restored-key"
    # a SnapStart environment has its credentials from the container endpoint, not the environment
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    store.reset_clients()
    assert store.reader() is None
    # a client given to the store (tests, tools) is used for everything: no reader at all
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "given")
    assert Store(str(tmp_path / "cache"), s3_client=object()).reader() is None
