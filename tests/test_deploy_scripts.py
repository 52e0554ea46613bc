"""scripts/deploy.sh and scripts/invoke.sh, without an AWS account.

deploy.sh --dry-run is checked for the commands it prints (and for running
none of them); its uploads run for real with the aws CLI against a moto
server on 127.0.0.1, reading the outputs of a stand-in stack the test creates
there. invoke.sh is checked against the handler run in-process on the same
event fixtures, and --remote against a stand-in `aws` that records its call.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "scripts" / "deploy.sh"
INVOKE = ROOT / "scripts" / "invoke.sh"
EVENTS = ROOT / "tests" / "events"
VENV_BIN = Path(sys.executable).parent


def run(cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None,
        timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing text output."""
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)


def commands(stdout: str) -> list[str]:
    """The "+ command" lines a script printed, without the "+ "."""
    return [line[2:] for line in stdout.splitlines() if line.startswith("+ ")]


def recorder(bin_dir: Path, name: str, log: Path) -> None:
    """A stand-in executable that only records that it was called, then fails."""
    path = bin_dir / name
    path.write_text(f'#!/bin/sh\necho "{name} $*" >> "{log}"\nexit 99\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.mark.parametrize("script", [DEPLOY, INVOKE], ids=lambda p: p.name)
def test_scripts_are_shellcheck_clean(script: Path) -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    proc = run([shellcheck, "--severity=style", str(script)])
    assert proc.returncode == 0, proc.stdout


# ---------------------------------------------------------------- deploy.sh


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A copy of the repository's deploy inputs, so a test controls what exists.

    deploy.sh works from its own checkout (the folder above scripts/): the
    package, the model and samconfig.toml are looked for there.
    """
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy2(DEPLOY, repo / "scripts" / "deploy.sh")
    shutil.copy2(ROOT / "template.yaml", repo / "template.yaml")
    for shared in ("rlambda", ".venv"):
        (repo / shared).symlink_to(ROOT / shared)
    (repo / "models").mkdir()
    web = repo / "web"
    web.mkdir()
    (web / "index.html").write_text("<!doctype html><title>admission</title>\n")
    (web / "app.js").write_text("console.log('page');\n")
    (web / "config.json").write_text(json.dumps({"apiBase": "", "apiKey": "dev-key", "title": "Admission"}))
    return repo


@pytest.fixture
def no_tools(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """An environment whose sam, aws, Rscript and bash-run package.sh only record calls."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "called.log"
    for name in ("sam", "aws", "Rscript"):
        recorder(bin_dir, name, log)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path)}
    return env, log


def test_dry_run_first_deploy_prints_build_guided_deploy_and_uploads(
    checkout: Path, no_tools: tuple[dict[str, str], Path]
) -> None:
    env, log = no_tools
    proc = run(["bash", str(checkout / "scripts" / "deploy.sh"), "--dry-run"], env=env)
    assert proc.returncode == 0, proc.stderr
    printed = commands(proc.stdout)
    python = f"{checkout}/.venv/bin/python"
    assert printed == [
        # Nothing is built yet in this checkout.
        "bash scripts/package.sh",
        "Rscript models/train.R --out models/admission.rds",
        # No samconfig.toml: the first deploy is guided.
        "sam deploy --template-file template.yaml --stack-name rlambda-admission --capabilities CAPABILITY_IAM"
        " --guided",
        "aws cloudformation describe-stacks --stack-name rlambda-admission"
        " --query 'Stacks[0].Outputs[].[OutputKey,OutputValue]' --output text",
        f"env PYTHONPATH={checkout} {python} -m rlambda.registry --uri 's3://<ModelBucketName>/models/admission/' publish models/admission.rds --keep-served",
        "aws s3 sync web 's3://<PageBucketName>/' --delete --exclude config.json",
        "aws s3 cp '<config.json>' 's3://<PageBucketName>/config.json' --content-type application/json"
        " --cache-control no-store",
        "aws cloudfront create-invalidation --distribution-id '<DistributionId>' --paths '/*'",
    ]
    assert "API URL:      <ApiUrl>" in proc.stdout
    assert "Page URL:     <PageUrl>" in proc.stdout
    assert "Model bucket: <ModelBucketName>" in proc.stdout
    # Printed, not run: no tool was called and nothing was built.
    assert not log.exists(), log.read_text()
    assert not (checkout / "build").exists()
    assert not (checkout / "models" / "admission.rds").exists()


def test_dry_run_later_deploy_uses_samconfig_and_passes_options(
    checkout: Path, no_tools: tuple[dict[str, str], Path]
) -> None:
    env, log = no_tools
    (checkout / "build").mkdir()
    (checkout / "build" / "admission.zip").write_bytes(b"PK")
    (checkout / "models" / "admission.rds").write_bytes(b"rds")
    (checkout / "samconfig.toml").write_text(
        'version = 0.1\n[default.deploy.parameters]\nstack_name = "admission-prod"\n'
        'region = "eu-west-1"\nresolve_s3 = true\ncapabilities = "CAPABILITY_IAM"\n'
    )
    proc = run(["bash", str(checkout / "scripts" / "deploy.sh"), "--dry-run", "--with-api-key",
                "--param", "MemorySize=2048", "--param", "ModelKey=models/admission.rds"], env=env)
    assert proc.returncode == 0, proc.stderr
    printed = commands(proc.stdout)
    assert printed[0] == (
        "sam deploy --template-file template.yaml --stack-name admission-prod --region eu-west-1"
        " --capabilities CAPABILITY_IAM --no-fail-on-empty-changeset"
        " --parameter-overrides MemorySize=2048 ModelKey=models/admission.rds"
    )
    # A single-file model key: upload only if nothing is there yet.
    assert printed[2:4] == [
        "aws s3api head-object --bucket '<ModelBucketName>' --key models/admission.rds --region eu-west-1",
        "aws s3 cp models/admission.rds 's3://<ModelBucketName>/models/admission.rds' --region eu-west-1",
    ]
    assert ("aws apigateway get-api-key --api-key '<ApiKeyId>' --include-value --query value --output text"
            " --region eu-west-1") in printed
    assert not any("package.sh" in c or "train.R" in c for c in printed)
    assert not log.exists()


def package(checkout: Path, cpython: str | None = "312", glibc_floor: str | None = None) -> None:
    """A zip (with a compiled extension for one CPython) and package.sh's report."""
    import zipfile

    (checkout / "build").mkdir(exist_ok=True)
    with zipfile.ZipFile(checkout / "build" / "admission.zip", "w") as zf:
        zf.writestr("handler.py", "")
        if cpython:
            zf.writestr(f"_cffi_backend.cpython-{cpython}-x86_64-linux-gnu.so", b"\x7fELF")
    if glibc_floor:
        report = {"glibc_floor": glibc_floor, "lambda_glibc": "2.34"}
        (checkout / "build" / "admission.report.json").write_text(json.dumps(report))
    (checkout / "models" / "admission.rds").write_bytes(b"rds")


def test_a_zip_for_another_python_than_the_runtime_is_refused(
    checkout: Path, no_tools: tuple[dict[str, str], Path]
) -> None:
    env, log = no_tools
    script = str(checkout / "scripts" / "deploy.sh")
    # GIVEN a zip built for CPython 3.13 and the template's python3.12 default
    package(checkout, cpython="313")
    refused = run(["bash", script, "--dry-run"], env=env)
    # THEN the runtime is not switched behind the user's back: the deploy stops
    assert refused.returncode == 2, refused.stdout
    assert "built for python3.13 but the function would run on python3.12" in refused.stderr
    assert "--python 3.12" in refused.stderr and "PythonRuntime=python3.13" in refused.stderr
    assert not commands(refused.stdout) and not log.exists()
    # An explicit runtime that agrees with the zip goes through unchanged.
    printed = commands(run(["bash", script, "--dry-run", "--param", "PythonRuntime=python3.13"], env=env).stdout)
    assert printed[0].endswith("--parameter-overrides PythonRuntime=python3.13")
    # And the default zip (3.12) deploys on the default runtime, with no parameter added.
    package(checkout, cpython="312")
    printed = commands(run(["bash", script, "--dry-run"], env=env).stdout)
    assert printed[0].startswith("sam deploy") and "PythonRuntime" not in printed[0]


def test_a_zip_needing_a_newer_glibc_than_lambda_is_refused_unless_forced(
    checkout: Path, no_tools: tuple[dict[str, str], Path]
) -> None:
    env, log = no_tools
    package(checkout, cpython="312", glibc_floor="2.36")
    script = str(checkout / "scripts" / "deploy.sh")
    refused = run(["bash", script], env=env)
    assert refused.returncode == 2
    assert "needs glibc 2.36" in refused.stderr and "container image" in refused.stderr
    assert not log.exists(), "nothing may run before the refusal"
    forced = run(["bash", script, "--force"], env=env)
    # The stand-in sam fails (exit 99) after recording the call: the deploy went ahead.
    assert forced.returncode == 99
    assert log.read_text().startswith("sam deploy ")
    package(checkout, cpython="312", glibc_floor="2.34")
    assert run(["bash", script], env=env).returncode == 99


def test_bad_options_and_stack_names_are_refused(checkout: Path, no_tools: tuple[dict[str, str], Path]) -> None:
    env, _ = no_tools
    script = str(checkout / "scripts" / "deploy.sh")
    for args in (["--stack-name", "Admission"], ["--stack-name", "x" * 44], ["--param", "NoEquals"], ["--bogus"]):
        proc = run(["bash", script, "--dry-run", *args], env=env)
        assert proc.returncode == 2, (args, proc.stdout)
        assert "deploy.sh:" in proc.stderr


def test_without_sam_a_real_deploy_says_how_to_get_it(checkout: Path, tmp_path: Path) -> None:
    (checkout / "build").mkdir()
    (checkout / "build" / "admission.zip").write_bytes(b"PK")
    (checkout / "models" / "admission.rds").write_bytes(b"rds")
    proc = run(["bash", str(checkout / "scripts" / "deploy.sh")], env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert proc.returncode == 2
    assert "pip install aws-sam-cli" in proc.stderr


# ------------------------------------------------- deploy.sh against moto


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    """A moto server on 127.0.0.1 (S3, CloudFormation, API Gateway, CloudFront)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def aws_env(moto_url: str, tmp_path: Path) -> dict[str, str]:
    """Environment for the aws CLI and boto3, pointed at moto, with fake credentials."""
    return {
        "PATH": f"{VENV_BIN}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "AWS_ENDPOINT_URL": moto_url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
    }


def client(moto_url: str, service: str) -> Any:
    """A boto3 client of the moto server."""
    import boto3

    return boto3.client(service, endpoint_url=moto_url, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def stand_in_stack(moto_url: str, name: str, model_key: str) -> dict[str, str]:
    """A stack with the outputs template.yaml has, made of what moto can create.

    moto cannot run the SAM transform, so the test builds the resources
    deploy.sh touches (two buckets, an API key, a distribution) and a plain
    CloudFormation stack whose outputs name them.
    """
    key = client(moto_url, "apigateway").create_api_key(
        name=f"{name}-key", value=f"{name}-secret-key-value-0123456789", enabled=True)
    distribution = client(moto_url, "cloudfront").create_distribution(DistributionConfig={
        "CallerReference": name, "Comment": name, "Enabled": True,
        "Origins": {"Quantity": 1, "Items": [
            {"Id": "page", "DomainName": f"{name}-page.s3.amazonaws.com", "S3OriginConfig": {"OriginAccessIdentity": ""}}]},
        "DefaultCacheBehavior": {"TargetOriginId": "page", "ViewerProtocolPolicy": "redirect-to-https"},
    })["Distribution"]
    template = {
        "Resources": {
            "ModelBucket": {"Type": "AWS::S3::Bucket", "Properties": {"BucketName": f"{name}-models-123456789012"}},
            "PageBucket": {"Type": "AWS::S3::Bucket", "Properties": {"BucketName": f"{name}-page"}},
        },
        "Outputs": {
            "ApiUrl": {"Value": "https://abc123.execute-api.us-east-1.amazonaws.com/prod/"},
            "PageUrl": {"Value": f"https://{distribution['DomainName']}/"},
            "ModelBucketName": {"Value": {"Ref": "ModelBucket"}},
            "ModelUri": {"Value": {"Fn::Sub": "s3://${ModelBucket}/" + model_key}},
            "PageBucketName": {"Value": {"Ref": "PageBucket"}},
            "DistributionId": {"Value": distribution["Id"]},
            "ApiKeyId": {"Value": key["id"]},
        },
    }
    client(moto_url, "cloudformation").create_stack(StackName=name, TemplateBody=json.dumps(template))
    return {"models": f"{name}-models-123456789012", "page": f"{name}-page", "key": key["value"],
            "distribution": distribution["Id"]}


def deploy_for_real(checkout: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """deploy.sh against the stand-in stack: no sam deploy, real aws CLI calls."""
    return run(["bash", str(checkout / "scripts" / "deploy.sh"), "--skip-deploy", *args], env=env)


@pytest.fixture
def aws_cli() -> None:
    """The uploads need the aws CLI (pip awscli, in the venv)."""
    if not (VENV_BIN / "aws").exists() and shutil.which("aws") is None:
        pytest.skip("the aws CLI is not installed (pip install awscli)")


def test_uploads_publish_the_model_and_the_page_for_real(
    aws_cli: None, moto_url: str, checkout: Path, tmp_path: Path, model_path: Path
) -> None:
    stack = stand_in_stack(moto_url, "first", "models/admission/")
    shutil.copy2(model_path, checkout / "models" / "admission.rds")
    (checkout / "build").mkdir()
    (checkout / "build" / "admission.zip").write_bytes(b"PK")
    s3 = client(moto_url, "s3")
    s3.put_object(Bucket=stack["page"], Key="old-page.js", Body=b"stale")
    env = aws_env(moto_url, tmp_path)

    proc = deploy_for_real(checkout, env, "--stack-name", "first", "--with-api-key")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert stack["key"] not in proc.stdout + proc.stderr, "the key's value must never be printed"

    # The model is served the way the functions read it: pointer, manifest, sha256.
    from rlambda.store import Store

    store = Store(str(tmp_path / "cache"), s3_client=s3)
    served = store.fetch(f"s3://{stack['models']}/models/admission/")
    digest = hashlib.sha256(model_path.read_bytes()).hexdigest()
    assert served.sha256 == digest
    assert served.version == f"file-{digest[:16]}"

    # The page: synced (stale file gone), config.json written for this API.
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=stack["page"])["Contents"]}
    assert keys == {"index.html", "app.js", "config.json"}
    config_object = s3.get_object(Bucket=stack["page"], Key="config.json")
    assert config_object["ContentType"] == "application/json"
    assert config_object["CacheControl"] == "no-store"
    config = json.loads(config_object["Body"].read())
    assert config == {"apiBase": "https://abc123.execute-api.us-east-1.amazonaws.com/prod",
                      "apiKey": stack["key"], "title": "Admission"}
    invalidations = client(moto_url, "cloudfront").list_invalidations(DistributionId=stack["distribution"])
    assert invalidations["InvalidationList"]["Quantity"] == 1

    assert "API URL:      https://abc123.execute-api.us-east-1.amazonaws.com/prod/" in proc.stdout
    assert f"Model bucket: {stack['models']}" in proc.stdout


def test_a_second_deploy_keeps_the_served_model_unless_asked(
    aws_cli: None, moto_url: str, checkout: Path, tmp_path: Path, model_path: Path
) -> None:
    stack = stand_in_stack(moto_url, "second", "models/admission/")
    shutil.copy2(model_path, checkout / "models" / "admission.rds")
    (checkout / "build").mkdir()
    (checkout / "build" / "admission.zip").write_bytes(b"PK")
    env = aws_env(moto_url, tmp_path)
    assert deploy_for_real(checkout, env, "--stack-name", "second").returncode == 0
    s3 = client(moto_url, "s3")
    pointer_key = "models/admission/current.json"
    first = json.loads(s3.get_object(Bucket=stack["models"], Key=pointer_key)["Body"].read())

    again = deploy_for_real(checkout, env, "--stack-name", "second")
    assert again.returncode == 0, again.stderr
    assert "kept" in again.stdout
    assert json.loads(s3.get_object(Bucket=stack["models"], Key=pointer_key)["Body"].read()) == first
    # Without --with-api-key the page gets no key, even if web/config.json has one.
    config = json.loads(s3.get_object(Bucket=stack["page"], Key="config.json")["Body"].read())
    assert config["apiKey"] == ""

    other = tmp_path / "other.rds"
    other.write_bytes(model_path.read_bytes() + b"\0")
    forced = deploy_for_real(checkout, env, "--stack-name", "second", "--model", str(other))
    assert forced.returncode == 0, forced.stderr
    pointer = json.loads(s3.get_object(Bucket=stack["models"], Key=pointer_key)["Body"].read())
    assert pointer["version"] != first["version"]
    assert pointer["previous"] == first["version"]
    assert pointer["sha256"] == hashlib.sha256(other.read_bytes()).hexdigest()


def test_a_single_file_model_uri_is_uploaded_once(
    aws_cli: None, moto_url: str, checkout: Path, tmp_path: Path
) -> None:
    stack = stand_in_stack(moto_url, "single", "models/admission.rds")
    (checkout / "models" / "admission.rds").write_bytes(b"first model")
    (checkout / "build").mkdir()
    (checkout / "build" / "admission.zip").write_bytes(b"PK")
    env = aws_env(moto_url, tmp_path)
    assert deploy_for_real(checkout, env, "--stack-name", "single").returncode == 0
    (checkout / "models" / "admission.rds").write_bytes(b"second model")
    proc = deploy_for_real(checkout, env, "--stack-name", "single")
    assert proc.returncode == 0, proc.stderr
    body = client(moto_url, "s3").get_object(Bucket=stack["models"], Key="models/admission.rds")["Body"].read()
    assert body == b"first model"


def test_a_missing_stack_fails_with_the_cli_error(aws_cli: None, moto_url: str, checkout: Path, tmp_path: Path) -> None:
    (checkout / "models" / "admission.rds").write_bytes(b"x")
    (checkout / "build").mkdir()
    (checkout / "build" / "admission.zip").write_bytes(b"PK")
    proc = deploy_for_real(checkout, aws_env(moto_url, tmp_path), "--stack-name", "never-deployed")
    assert proc.returncode != 0
    assert "never-deployed" in proc.stderr


# ---------------------------------------------------------------- invoke.sh


def invoke(event: Path, out: Path | None = None, env: dict[str, str] | None = None,
           *args: str) -> subprocess.CompletedProcess[str]:
    """scripts/invoke.sh on an event file."""
    cmd = ["bash", str(INVOKE), *args, str(event)]
    if out is not None:
        cmd.append(str(out))
    full_env = {**os.environ, **(env or {})}
    full_env.pop("MODEL_URI", None)
    return run(cmd, env=full_env)


OK_FIXTURES = [
    "direct_single.json",
    "direct_batch.json",
    "direct_single_strings.json",
    "apigw_rest_post_predict.json",
    "apigw_rest_get_predict.json",
    "apigw_rest_options_predict.json",
    "apigw_http_post_predict.json",
    "apigw_http_get_metadata.json",
    "function_url_post_predict_base64.json",
]


@pytest.mark.parametrize("fixture", OK_FIXTURES)
def test_invoke_returns_what_the_handler_returns(
    fixture: str, tmp_path: Path, make_app: Callable[..., Any], context: Any, model_path: Path
) -> None:
    out = tmp_path / "out.json"
    proc = invoke(EVENTS / fixture, out)
    assert proc.returncode == 0, proc.stderr
    # stdout is the CLI's summary and nothing else (R's and the logs' output go to stderr).
    assert json.loads(proc.stdout) == {"StatusCode": 200, "ExecutedVersion": "$LATEST"}
    expected = make_app(model_uri=str(model_path)).handle(json.loads((EVENTS / fixture).read_text()), context)
    got = json.loads(out.read_text())
    if fixture == "apigw_http_get_metadata.json":
        # Runtime versions may differ between this process and the script's.
        for doc in (got, expected):
            body = json.loads(doc["body"])
            body.pop("python_version")
            doc["body"] = body
    assert got == json.loads(json.dumps(expected))


def test_invoke_bad_event_gives_a_function_error_and_exit_1(
    tmp_path: Path, make_app: Callable[..., Any], context: Any, model_path: Path
) -> None:
    out = tmp_path / "out.json"
    proc = invoke(EVENTS / "direct_bad.json", out)
    assert proc.returncode == 1
    assert json.loads(proc.stdout) == {"StatusCode": 200, "FunctionError": "Unhandled", "ExecutedVersion": "$LATEST"}
    payload = json.loads(out.read_text())
    assert set(payload) == {"errorMessage", "errorType", "requestId", "stackTrace"}
    assert payload["errorType"] == "BadRequest"
    error = json.loads(payload["errorMessage"])
    assert error["request_id"] == payload["requestId"]
    assert error["httpStatus"] == 400
    with pytest.raises(Exception) as raised:
        make_app(model_uri=str(model_path)).handle(json.loads((EVENTS / "direct_bad.json").read_text()), context)
    in_process = json.loads(str(raised.value))
    assert error["errors"] == in_process["errors"] and error["message"] == in_process["message"]
    assert any("handler.py" in frame and "lambda_handler" in frame for frame in payload["stackTrace"])


def test_invoke_without_out_prints_the_payload_and_keeps_the_summary_on_stderr(tmp_path: Path) -> None:
    proc = invoke(EVENTS / "direct_single.json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["result"] is True
    assert '"StatusCode": 200' in proc.stderr


def test_invoke_refuses_what_the_service_would(tmp_path: Path) -> None:
    not_json = tmp_path / "event.json"
    not_json.write_text("{gre: 800")
    proc = invoke(not_json, tmp_path / "out.json")
    assert proc.returncode == 2
    assert "Could not parse request body into json" in proc.stderr
    assert not (tmp_path / "out.json").exists()
    assert invoke(tmp_path / "missing.json").returncode == 2


def test_invoke_reports_a_handler_that_cannot_be_loaded(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    proc = invoke(EVENTS / "direct_single.json", out, {"HANDLER": "handler.no_such_function"})
    assert proc.returncode == 1
    payload = json.loads(out.read_text())
    assert payload["errorType"] == "Runtime.HandlerNotFound"
    proc = invoke(EVENTS / "direct_single.json", out, {"HANDLER": "no_such_module.handler"})
    assert proc.returncode == 1
    assert json.loads(out.read_text())["errorType"] == "Runtime.ImportModuleError"


@pytest.fixture
def fake_aws(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """An `aws` that records its arguments and answers like `aws lambda invoke`."""
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    log = tmp_path / "aws-args.txt"
    script = bin_dir / "aws"
    script.write_text(
        "#!/bin/sh\n"
        f'printf "%s\\n" "$@" > "{log}"\n'
        'for last; do :; done\n'
        'if [ -n "$FAKE_FAIL" ]; then\n'
        '  printf \'{"errorMessage":"boom","errorType":"BadRequest","requestId":"r","stackTrace":[]}\' > "$last"\n'
        '  printf \'{\\n    "StatusCode": 200,\\n    "FunctionError": "Unhandled",\\n    "ExecutedVersion": "7"\\n}\\n\'\n'
        'else\n'
        '  printf \'{"result": true}\' > "$last"\n'
        '  printf \'{\\n    "StatusCode": 200,\\n    "ExecutedVersion": "7"\\n}\\n\'\n'
        'fi\n'
    )
    script.chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}"}, log


def test_invoke_remote_calls_aws_lambda_invoke_and_passes_its_result_on(
    tmp_path: Path, fake_aws: tuple[dict[str, str], Path]
) -> None:
    env, log = fake_aws
    out = tmp_path / "out.json"
    event = EVENTS / "direct_single.json"
    proc = invoke(event, out, env, "--remote", "admission-ScoringFunction-abc", "--qualifier", "live")
    assert proc.returncode == 0, proc.stderr
    assert log.read_text().splitlines() == [
        "lambda", "invoke", "--function-name", "admission-ScoringFunction-abc", "--qualifier", "live",
        "--payload", f"fileb://{event}", str(out),
    ]
    assert json.loads(proc.stdout)["ExecutedVersion"] == "7"
    assert json.loads(out.read_text()) == {"result": True}

    failed = invoke(event, out, {**env, "FAKE_FAIL": "1"}, "--remote", "admission-ScoringFunction-abc")
    assert failed.returncode == 1
    assert json.loads(failed.stdout)["FunctionError"] == "Unhandled"
    assert json.loads(out.read_text())["errorType"] == "BadRequest"


# ---------------------------------------------------------------- Dockerfile


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_runs_the_same_handler_through_awslambdaric() -> None:
    steps = dockerfile_instructions()
    assert ("ARG", "BASE=public.ecr.aws/lambda/python:3.12") in steps
    froms = [args for word, args in steps if word == "FROM"]
    assert froms == ["${BASE} AS build", "${BASE}"]
    final = steps[max(i for i, (word, _) in enumerate(steps) if word == "FROM"):]
    assert ("ENTRYPOINT", '["/var/lang/bin/python3", "-m", "awslambdaric"]') in final
    assert ("CMD", '["handler.lambda_handler"]') in final
    assert ("COPY", "handler.py ${LAMBDA_TASK_ROOT}/") in final
    assert ("COPY", "rlambda/ ${LAMBDA_TASK_ROOT}/rlambda/") in final
    # R from the base image's own packages, at run time too.
    assert any(word == "RUN" and "dnf install -y R-core " in args + " " for word, args in final)


def test_dockerfile_pins_the_rpy2_requirements_txt_pins() -> None:
    pinned = next(line.split("==")[1].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()
                  if line.startswith("rpy2=="))
    assert ("ARG", f"RPY2_VERSION={pinned}") in dockerfile_instructions()


def test_the_image_holds_every_module_the_handler_imports() -> None:
    # The image installs rpy2 and awslambdaric; the runtime brings boto3. A
    # new third-party import in the handler's code would break the image.
    # Followed from handler.py through the rlambda modules it imports (lazy
    # imports included), so the local server's own (uvicorn) is not counted.
    import ast

    # s3transfer is boto3's own dependency (every runtime has it);
    # snapshot_restore_py is imported only if present (rlambda/snapstart.py):
    # without it the SnapStart hooks are not registered, and SnapStart does
    # not apply to container images anyway.
    # _rinterface_cffi_api/_abi are rpy2's compiled interfaces, installed by
    # rpy2 as top-level modules (rsession starts R from them).
    provided = {"handler", "rlambda", "rpy2", "_rinterface_cffi_api", "_rinterface_cffi_abi", "boto3", "botocore",
                "s3transfer", "snapshot_restore_py"}
    todo, seen = [ROOT / "handler.py"], set()
    missing: dict[str, list[str]] = {}
    while todo:
        source = todo.pop()
        if source in seen or not source.exists():
            continue
        seen.add(source)
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 1:
                names = [f"rlambda.{node.module}"] if node.module else [f"rlambda.{a.name}" for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + ([f"rlambda.{a.name}" for a in node.names] if node.module == "rlambda" else [])
            for name in names:
                top = name.split(".")[0]
                if top == "rlambda" and "." in name:
                    todo.append(ROOT / "rlambda" / (name.split(".")[1] + ".py"))
                elif top not in sys.stdlib_module_names and top not in provided:
                    missing.setdefault(top, []).append(source.name)
    assert ROOT / "rlambda" / "app.py" in seen and ROOT / "rlambda" / "rsession.py" in seen
    assert ROOT / "rlambda" / "local.py" not in seen, "the handler must not import the local server"
    assert not missing, f"not in the image: {missing}"


def test_dockerignore_sends_only_the_handler_and_rlambda() -> None:
    lines = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert lines[0] == "*"
    assert {"!handler.py", "!rlambda/"} <= set(lines)
