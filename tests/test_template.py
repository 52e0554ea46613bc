"""template.yaml: cfn-lint clean, transformed by the SAM translator, and wired as intended.

There is no AWS account here, so the checks are the ones that need none:
cfn-lint's rules (run on the SAM-transformed template), the translator's own
validation, and assertions on the CloudFormation the translator produces,
which is what CloudFormation would create. The template is transformed the
way `sam deploy` sees it: after packaging, CodeUri is an s3:// URI.
"""

from __future__ import annotations

import ast
import copy
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "template.yaml"
STAGE = "prod"

# cfn-lint warnings accepted on purpose, by rule id. None today; a warning
# that only SAM's generated resources cause would be named here with why.
ALLOWED_WARNINGS: dict[str, str] = {}


def load_template() -> dict[str, Any]:
    """template.yaml as SAM parses it (CloudFormation short-form tags included)."""
    from samtranslator.yaml_helper import yaml_parse

    return yaml_parse(TEMPLATE.read_text(encoding="utf-8"))


def transform(template: dict[str, Any], parameters: dict[str, Any] | None = None) -> dict[str, Any]:
    """The CloudFormation template the SAM transform produces (as after `sam package`)."""
    from samtranslator.translator.transform import transform as sam_transform

    packaged = copy.deepcopy(template)
    packaged["Globals"]["Function"]["CodeUri"] = "s3://packaging-bucket/admission.zip"

    class Policies:
        """The managed policies SAM looks up by name (only the basic execution role is used)."""

        def load(self) -> dict[str, str]:
            return {
                "AWSLambdaBasicExecutionRole": "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
            }

    return sam_transform(packaged, parameters or {}, Policies())


@pytest.fixture(scope="module")
def region() -> Iterator[None]:
    """The translator needs a region for pseudo parameters; no credentials are used."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        mp.delenv("AWS_PROFILE", raising=False)
        yield


@pytest.fixture(scope="module")
def source() -> dict[str, Any]:
    """The untransformed template."""
    return load_template()


@pytest.fixture(scope="module")
def cfn(region: None, source: dict[str, Any]) -> dict[str, Any]:
    """The transformed template with default parameters."""
    return transform(source)


@pytest.fixture(scope="module")
def resources(cfn: dict[str, Any]) -> dict[str, Any]:
    """Transformed resources by logical id."""
    return cfn["Resources"]


def of_type(resources: dict[str, Any], kind: str) -> dict[str, Any]:
    """Resources of one CloudFormation type."""
    return {k: v for k, v in resources.items() if v["Type"] == kind}


def sub_text(value: Any) -> str:
    """The template string of a value that may be a plain string or a Fn::Sub."""
    if isinstance(value, dict) and "Fn::Sub" in value:
        sub = value["Fn::Sub"]
        return sub if isinstance(sub, str) else sub[0]
    assert isinstance(value, str), value
    return value


def statements(resources: dict[str, Any], role: str) -> list[dict[str, Any]]:
    """Every inline policy statement of a role."""
    out = []
    for policy in resources[role]["Properties"].get("Policies", []):
        out.extend(policy["PolicyDocument"]["Statement"])
    return out


def as_list(value: Any) -> list[Any]:
    """A policy field that may be one value or a list."""
    return value if isinstance(value, list) else [value]


# ------------------------------------------------------------------ cfn-lint


def run_cfn_lint(path: Path) -> list[dict[str, Any]]:
    """cfn-lint's findings on a template file, as JSON records."""
    proc = subprocess.run(
        # cfn-lint's console entry point, run by this interpreter (no PATH lookup).
        [sys.executable, "-c", "import sys; from cfnlint.runner import main; sys.exit(main())",
         "--format", "json", str(path)],
        capture_output=True,
        text=True,
        env={"AWS_DEFAULT_REGION": "us-east-1", "PATH": "/usr/bin:/bin"},
    )
    # Exit codes are a bit mask of levels found; anything it printed is JSON.
    assert proc.stdout.strip(), f"cfn-lint printed nothing (exit {proc.returncode}): {proc.stderr}"
    return json.loads(proc.stdout)


def test_cfn_lint_has_no_errors_and_no_unexplained_warnings() -> None:
    findings = run_cfn_lint(TEMPLATE)
    errors = [f for f in findings if f["Level"] == "Error"]
    assert not errors, json.dumps(errors, indent=1)
    unexplained = [f for f in findings if f["Level"] == "Warning" and f["Rule"]["Id"] not in ALLOWED_WARNINGS]
    assert not unexplained, json.dumps(unexplained, indent=1)


def test_cfn_lint_would_catch_a_broken_template(tmp_path: Path) -> None:
    # The lint test above is only worth something if cfn-lint sees the
    # resources at all: a policy on a bucket that does not exist must fail.
    broken = TEMPLATE.read_text(encoding="utf-8").replace("Bucket: !Ref PageBucket", "Bucket: !Ref NoSuchBucket")
    assert broken != TEMPLATE.read_text(encoding="utf-8")
    (tmp_path / "template.yaml").write_text(broken, encoding="utf-8")
    findings = run_cfn_lint(tmp_path / "template.yaml")
    assert any(f["Level"] == "Error" and "NoSuchBucket" in f["Message"] for f in findings), findings


# ------------------------------------------------------------ the transform


def test_the_translator_transforms_it_into_plain_cloudformation(cfn: dict[str, Any]) -> None:
    assert "Transform" not in cfn
    kinds = {r["Type"] for r in cfn["Resources"].values()}
    assert not {k for k in kinds if k.startswith("AWS::Serverless::")}
    assert {"AWS::Lambda::Function", "AWS::Lambda::Alias", "AWS::ApiGateway::RestApi",
            "AWS::ApiGateway::UsagePlan", "AWS::ApiGateway::ApiKey"} <= kinds


def test_every_handler_named_exists_in_handler_py(source: dict[str, Any]) -> None:
    tree = ast.parse((ROOT / "handler.py").read_text(encoding="utf-8"))
    defined = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    handlers = {
        r["Properties"]["Handler"]
        for r in source["Resources"].values()
        if r["Type"] == "AWS::Serverless::Function"
    }
    assert handlers == {"handler.lambda_handler", "handler.retrain_handler", "handler.batch_handler"}
    for handler in handlers:
        module, _, name = handler.partition(".")
        assert module == "handler" and name in defined, f"{handler} is not defined in handler.py"


def functions_by_handler(resources: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Lambda functions keyed by their handler string."""
    return {r["Properties"]["Handler"]: r for r in of_type(resources, "AWS::Lambda::Function").values()}


def test_functions_runtime_memory_timeout_and_environment(resources: dict[str, Any]) -> None:
    by_handler = functions_by_handler(resources)
    scoring = by_handler["handler.lambda_handler"]["Properties"]
    assert scoring["Runtime"] == {"Ref": "PythonRuntime"}
    assert scoring["Code"] == {"S3Bucket": "packaging-bucket", "S3Key": "admission.zip"}
    assert scoring["MemorySize"] == {"Ref": "MemorySize"}
    assert scoring["Timeout"] == {"Ref": "Timeout"}
    env = scoring["Environment"]["Variables"]
    assert env["THRESHOLD"] == {"Ref": "Threshold"}
    assert sub_text(env["MODEL_URI"]) == "s3://${AWS::StackName}-models-${AWS::AccountId}/${ModelKey}"
    assert set(env) >= {"MODEL_URI", "THRESHOLD", "CORS_ORIGINS", "MAX_ROWS", "MODEL_REFRESH_S", "LOG_LEVEL",
                        "MODEL_CACHE_DIR"}
    retrain = by_handler["handler.retrain_handler"]["Properties"]
    assert retrain["MemorySize"] == {"Ref": "RetrainMemorySize"}
    assert retrain["Timeout"] == {"Ref": "RetrainTimeout"}
    assert retrain["Environment"]["Variables"]["GATE_MARGIN"] == {"Ref": "GateMargin"}
    batch = by_handler["handler.batch_handler"]["Properties"]
    assert batch["MemorySize"] == {"Ref": "BatchMemorySize"}


def test_runtime_defaults_to_python312_and_allows_only_what_a_zip_can_be_built_for(source: dict[str, Any]) -> None:
    runtime = source["Parameters"]["PythonRuntime"]
    assert runtime["Default"] == "python3.12"
    # Amazon Linux 2023's runtimes, which scripts/package.sh builds for (--python 3.12|3.13)
    assert set(runtime["AllowedValues"]) == {"python3.12", "python3.13"}


def test_retrain_gets_more_memory_and_time_than_scoring_by_default(source: dict[str, Any]) -> None:
    params = source["Parameters"]
    assert params["RetrainMemorySize"]["Default"] > params["MemorySize"]["Default"]
    assert params["RetrainTimeout"]["Default"] > params["Timeout"]["Default"]
    # API Gateway REST integrations stop waiting at 29 s.
    assert params["Timeout"]["Default"] <= 29


# -------------------------------------------------------------------- routes


@pytest.fixture(scope="module")
def api_body(resources: dict[str, Any]) -> dict[str, Any]:
    """The REST API's OpenAPI body."""
    (api,) = of_type(resources, "AWS::ApiGateway::RestApi").values()
    return api["Properties"]["Body"]


def test_routes_are_proxy_integrations_of_the_live_alias(api_body: dict[str, Any], resources: dict[str, Any]) -> None:
    routes = {(path, method) for path, methods in api_body["paths"].items() for method in methods}
    assert routes == {
        ("/predict", "post"), ("/predict", "get"), ("/predict", "options"),
        ("/ping", "get"),
        ("/metadata", "get"), ("/metadata", "options"),
        ("/openapi.json", "get"), ("/openapi.json", "options"),
    }
    (alias_id,) = of_type(resources, "AWS::Lambda::Alias")
    for path, methods in api_body["paths"].items():
        for method, spec in methods.items():
            integration = spec["x-amazon-apigateway-integration"]
            assert integration["type"] == "aws_proxy", (path, method)
            assert integration["httpMethod"] == "POST"
            # The API calls the alias, so moving the alias rolls the API back.
            assert "${%s}" % alias_id in sub_text(integration["uri"]), (path, method)


def test_api_key_on_prediction_routes_only(api_body: dict[str, Any]) -> None:
    keyed = {
        (path, method)
        for path, methods in api_body["paths"].items()
        for method, spec in methods.items()
        if {"api_key": []} in spec.get("security", [])
    }
    assert keyed == {("/predict", "post"), ("/predict", "get")}
    assert api_body["securityDefinitions"]["api_key"] == {"type": "apiKey", "name": "x-api-key", "in": "header"}
    # /ping, /metadata and preflights declare no security at all (open).
    assert api_body["paths"]["/ping"]["get"]["security"] == []
    assert api_body["paths"]["/openapi.json"]["get"]["security"] == []


def test_usage_plan_links_the_key_to_the_stage_with_throttle_and_quota(resources: dict[str, Any]) -> None:
    (plan_id, plan), = of_type(resources, "AWS::ApiGateway::UsagePlan").items()
    (key_id, key), = of_type(resources, "AWS::ApiGateway::ApiKey").items()
    (link,) = of_type(resources, "AWS::ApiGateway::UsagePlanKey").values()
    (stage_id, stage), = of_type(resources, "AWS::ApiGateway::Stage").items()
    (api_id,) = of_type(resources, "AWS::ApiGateway::RestApi")
    props = plan["Properties"]
    # The original's limits, as parameter defaults.
    assert props["Throttle"] == {"RateLimit": 10, "BurstLimit": 20}
    assert props["Quota"] == {"Limit": 500, "Period": "DAY"}
    assert props["ApiStages"] == [{"ApiId": {"Ref": api_id}, "Stage": {"Ref": stage_id}}]
    assert link["Properties"] == {"KeyId": {"Ref": key_id}, "KeyType": "API_KEY", "UsagePlanId": {"Ref": plan_id}}
    assert key["Properties"]["Enabled"] is True
    assert stage["Properties"]["StageName"] == STAGE


def test_throttle_and_quota_parameters_reach_the_usage_plan(region: None, source: dict[str, Any]) -> None:
    cfn = transform(source, {"ThrottleRateLimit": 3, "ThrottleBurstLimit": 4, "QuotaPerDay": 99})
    (plan,) = of_type(cfn["Resources"], "AWS::ApiGateway::UsagePlan").values()
    assert plan["Properties"]["Throttle"] == {"RateLimit": 3, "BurstLimit": 4}
    assert plan["Properties"]["Quota"] == {"Limit": 99, "Period": "DAY"}


def test_stage_throttles_the_open_routes_too(resources: dict[str, Any]) -> None:
    (stage,) = of_type(resources, "AWS::ApiGateway::Stage").values()
    (setting,) = stage["Properties"]["MethodSettings"]
    assert setting["ResourcePath"] == "/*" and setting["HttpMethod"] == "*"
    assert setting["ThrottlingRateLimit"] == {"Ref": "ThrottleRateLimit"}


def test_cors_preflight_is_open_and_gateway_errors_carry_cors_headers(
    api_body: dict[str, Any], resources: dict[str, Any]
) -> None:
    for path in ("/predict", "/metadata", "/openapi.json"):
        assert api_body["paths"][path]["options"]["security"] == [], path
    responses = api_body["x-amazon-apigateway-gateway-responses"]
    for kind in ("DEFAULT_4XX", "DEFAULT_5XX"):
        headers = responses[kind]["responseParameters"]
        assert "X-Api-Key" in headers["gatewayresponse.header.Access-Control-Allow-Headers"]
    # The function answers preflights with the origins from this parameter.
    scoring = functions_by_handler(resources)["handler.lambda_handler"]
    assert scoring["Properties"]["Environment"]["Variables"]["CORS_ORIGINS"] == {"Ref": "CorsOrigins"}


def evaluate(value: Any, params: dict[str, str], conditions: dict[str, Any]) -> Any:
    """The CloudFormation intrinsics the gateway responses use, evaluated for ``params`` (None: AWS::NoValue)."""
    if isinstance(value, str):
        return value
    (fn, arg), = value.items()
    if fn == "Ref":
        return None if arg == "AWS::NoValue" else params[arg]
    if fn == "Fn::Sub":
        return re.sub(r"\$\{(\w+)\}", lambda m: params[m.group(1)], arg)
    if fn == "Fn::Split":
        return evaluate(arg[1], params, conditions).split(arg[0])
    if fn == "Fn::Join":
        return arg[0].join(evaluate(arg[1], params, conditions))
    if fn == "Fn::Equals":
        return evaluate(arg[0], params, conditions) == evaluate(arg[1], params, conditions)
    if fn == "Fn::If":
        chosen = evaluate(conditions[arg[0]], params, conditions)
        return evaluate(arg[1] if chosen else arg[2], params, conditions)
    raise AssertionError(f"unexpected intrinsic {fn}")


@pytest.mark.parametrize("origins,allowed", [
    ("*", "'*'"),
    ("https://page.example", "'https://page.example'"),
    # several: a static header cannot pick one, so none is allowed (never a broader '*')
    ("https://page.example,https://other.example", None),
])
def test_gateway_errors_allow_the_cors_origins_parameter(cfn: dict[str, Any], api_body: dict[str, Any],
                                                           origins: str, allowed: str | None) -> None:
    # GIVEN CorsOrigins WHEN API Gateway answers by itself (403 without a key, 429, 504)
    responses = api_body["x-amazon-apigateway-gateway-responses"]
    for kind in ("DEFAULT_4XX", "DEFAULT_5XX"):
        value = responses[kind]["responseParameters"]["gatewayresponse.header.Access-Control-Allow-Origin"]
        # THEN the origin it allows is the parameter's, never a hard-coded '*'
        assert evaluate(value, {"CorsOrigins": origins}, cfn["Conditions"]) == allowed
        assert responses[kind]["responseParameters"]["gatewayresponse.header.Vary"] == "'Origin'"


GATEWAY_KINDS = {"API_KEY": 403, "MISSING_AUTHENTICATION_TOKEN": 403, "ACCESS_DENIED": 403, "THROTTLED": 429,
                 "QUOTA_EXCEEDED": 429, "REQUEST_TOO_LARGE": 413, "INTEGRATION_TIMEOUT": 504, "INTEGRATION_FAILURE": 504}


@pytest.fixture(scope="module")
def error_schema(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The Error schema of the served model's OpenAPI document."""
    from rlambda.app import App
    from rlambda.events import Request
    from rlambda.settings import Settings

    app = App(Settings(model_uri=str(model_path), cache_dir=str(tmp_path_factory.mktemp("cache"))))
    return app.route(Request("GET", "/openapi.json", "test")).body["components"]["schemas"]["Error"]


@pytest.mark.parametrize("kind,status", sorted(GATEWAY_KINDS.items()))
def test_gateway_refusals_answer_with_the_functions_error_document(api_body: dict[str, Any],
                                                                  error_schema: dict[str, Any],
                                                                  kind: str, status: int) -> None:
    """A refusal API Gateway makes by itself (no key, throttled, too large, timed out) has the function's
    error document, with its own status, and the same CORS headers as every other answer."""
    import jsonschema

    responses = api_body["x-amazon-apigateway-gateway-responses"]
    response = responses[kind]
    # GIVEN the status API Gateway documents for the kind, and the headers of the defaults
    assert response["statusCode"] == str(status)
    for name in ("Access-Control-Allow-Origin", "Access-Control-Allow-Headers", "Vary"):
        key = f"gatewayresponse.header.{name}"
        assert response["responseParameters"][key] == responses["DEFAULT_4XX"]["responseParameters"][key]
    # WHEN API Gateway fills its template in (simple substitution; messageString is a quoted JSON string)
    template = response["responseTemplates"]["application/json"]
    message = 'He said "no" \\ twice'
    body = (template.replace("$context.error.responseType", kind)
            .replace("$context.requestId", "0b7f3a4e-6c1d-4f2a-9d8e-1a2b3c4d5e6f")
            .replace("$context.error.messageString", json.dumps(message)))
    assert "$" not in body
    document = json.loads(body)
    # THEN it is the error document the OpenAPI description promises, with the kind's status
    jsonschema.validate(document, error_schema)
    assert document["httpStatus"] == status and document["errorType"] == kind
    assert document["message"] == message and document["errors"] == []


def test_api_gateway_may_invoke_only_the_alias(resources: dict[str, Any]) -> None:
    (alias_id,) = of_type(resources, "AWS::Lambda::Alias")
    api_permissions = [
        p["Properties"] for p in of_type(resources, "AWS::Lambda::Permission").values()
        if p["Properties"]["Principal"] == "apigateway.amazonaws.com"
    ]
    assert len(api_permissions) == 8  # one per route and method
    for permission in api_permissions:
        assert permission["FunctionName"] == {"Ref": alias_id}


# ---------------------------------------------------------------- the alias


def test_alias_live_points_at_a_published_version(resources: dict[str, Any]) -> None:
    (alias,) = of_type(resources, "AWS::Lambda::Alias").values()
    (version_id, version), = of_type(resources, "AWS::Lambda::Version").items()
    scoring_id = next(k for k, v in of_type(resources, "AWS::Lambda::Function").items()
                      if v["Properties"]["Handler"] == "handler.lambda_handler")
    assert alias["Properties"]["Name"] == "live"
    assert alias["Properties"]["FunctionVersion"] == {"Fn::GetAtt": [version_id, "Version"]}
    assert version["Properties"]["FunctionName"] == {"Ref": scoring_id}
    # Old versions stay when a new one is published, so there is one to go back to.
    assert version["DeletionPolicy"] == "Retain"


def test_snapstart_on_the_scoring_functions_published_versions(resources: dict[str, Any],
                                                                 source: dict[str, Any]) -> None:
    # GIVEN the transformed template WHEN looking at the functions
    by_handler = functions_by_handler(resources)
    scoring = by_handler["handler.lambda_handler"]["Properties"]
    # THEN the scoring function has SnapStart on its published versions, behind a condition
    assert scoring["SnapStart"] == {"Fn::If": ["UseSnapStart", {"ApplyOn": "PublishedVersions"},
                                               {"Ref": "AWS::NoValue"}]}
    assert source["Parameters"]["SnapStart"]["Default"] == "true"
    # on by default, off when asked; every runtime allowed has it (SnapStart for Python starts at 3.12)
    assert source["Conditions"]["UseSnapStart"] == {"Fn::Equals": [{"Ref": "SnapStart"}, "true"]}
    allowed = source["Parameters"]["PythonRuntime"]["AllowedValues"]
    assert all(tuple(int(x) for x in r.removeprefix("python").split(".")) >= (3, 12) for r in allowed)
    # and nothing SnapStart refuses: provisioned concurrency, EFS, more than 512 MB of /tmp
    assert "ProvisionedConcurrencyConfig" not in source["Resources"]["ScoringFunction"]["Properties"]
    assert not of_type(resources, "AWS::EFS::FileSystem")
    assert "FileSystemConfigs" not in scoring
    assert scoring.get("EphemeralStorage", {"Size": 512})["Size"] <= 512
    # the other functions are not snapshotted (S3 triggers invoke $LATEST, never a version)
    for handler in ("handler.retrain_handler", "handler.batch_handler"):
        assert "SnapStart" not in by_handler[handler]["Properties"]


# ------------------------------------------------------------------ IAM


def s3_grants(resources: dict[str, Any], role: str) -> dict[str, set[str]]:
    """S3 action -> the resource ARNs (as Sub templates) a role is allowed on."""
    grants: dict[str, set[str]] = {}
    for statement in statements(resources, role):
        assert statement["Effect"] == "Allow"
        if as_list(statement["Action"]) == ["sqs:SendMessage"]:
            # SAM's grant for the OnFailure destination: that queue and nothing else
            assert references(statement["Resource"]) == {"FailedEventsQueue"}, statement
            continue
        for action in as_list(statement["Action"]):
            assert action.startswith("s3:"), f"{role} has a non-S3 inline permission {action}"
            assert "*" not in action, f"{role} has a wildcard action {action}"
            for resource in as_list(statement["Resource"]):
                grants.setdefault(action, set()).add(sub_text(resource))
    return grants


BUCKET_ARN = "arn:${AWS::Partition}:s3:::${AWS::StackName}-models-${AWS::AccountId}"


def role_of(resources: dict[str, Any], handler: str) -> str:
    """The logical id of a function's role."""
    role = functions_by_handler(resources)[handler]["Properties"]["Role"]
    return role["Fn::GetAtt"][0]


def test_scoring_role_reads_the_models_prefix_and_nothing_else(resources: dict[str, Any]) -> None:
    grants = s3_grants(resources, role_of(resources, "handler.lambda_handler"))
    assert grants == {
        "s3:GetObject": {BUCKET_ARN + "/models/*"},
        # Names only, for honest 404s (see the template's comment).
        "s3:ListBucket": {BUCKET_ARN},
    }


def test_model_uri_is_inside_what_the_scoring_role_may_read(source: dict[str, Any], resources: dict[str, Any]) -> None:
    key = source["Parameters"]["ModelKey"]["Default"]
    pattern = source["Parameters"]["ModelKey"]["AllowedPattern"]
    assert re.fullmatch(pattern, key)
    # Any key the parameter accepts is under models/, which the role reads.
    assert pattern == "^models/.+"
    assert not re.fullmatch(pattern, "data/admission.rds")
    assert key.endswith("/"), "the default MODEL_URI is the versioned folder the retrain function writes"


def test_retrain_role_reads_data_and_writes_its_model_folder_only(resources: dict[str, Any], source: dict[str, Any]) -> None:
    grants = s3_grants(resources, role_of(resources, "handler.retrain_handler"))
    # the prefix it writes: the served model's folder (versions, manifests, pointer), not all of models/
    assert grants == {
        "s3:GetObject": {BUCKET_ARN + "/data/*", BUCKET_ARN + "/${ModelKey}*"},
        "s3:PutObject": {BUCKET_ARN + "/${ModelKey}*"},
        "s3:ListBucket": {BUCKET_ARN},
    }
    # and MODEL_URI, where the trainer writes, is that folder
    uri = source["Globals"]["Function"]["Environment"]["Variables"]["MODEL_URI"]
    assert sub_text(uri).endswith("/${ModelKey}"), uri


def test_batch_role_writes_outputs_only(resources: dict[str, Any]) -> None:
    grants = s3_grants(resources, role_of(resources, "handler.batch_handler"))
    assert grants == {
        "s3:GetObject": {BUCKET_ARN + "/inputs/*", BUCKET_ARN + "/models/*", BUCKET_ARN + "/outputs/*"},
        "s3:PutObject": {BUCKET_ARN + "/outputs/*"},
        "s3:DeleteObject": {BUCKET_ARN + "/outputs/*"},
        "s3:ListBucket": {BUCKET_ARN},
    }


def test_roles_log_through_the_basic_execution_policy_only(resources: dict[str, Any]) -> None:
    for role in of_type(resources, "AWS::IAM::Role").values():
        principals = [st["Principal"]["Service"] for st in role["Properties"]["AssumeRolePolicyDocument"]["Statement"]]
        if principals != [["lambda.amazonaws.com"]] and principals != ["lambda.amazonaws.com"]:
            continue  # the state machine's and EventBridge's roles (tested below)
        assert role["Properties"]["ManagedPolicyArns"] == [
            "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
        ]


# ----------------------------------------------------- buckets and triggers


def test_model_bucket_is_versioned_private_encrypted_and_deterministically_named(resources: dict[str, Any]) -> None:
    bucket = resources["ModelBucket"]["Properties"]
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    assert len(bucket["PublicAccessBlockConfiguration"]) == 4
    rule = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    # The policies refer to this exact name rather than !Ref ModelBucket.
    assert sub_text(bucket["BucketName"]) == "${AWS::StackName}-models-${AWS::AccountId}"


def triggered(notifications: list[dict[str, Any]], key: str) -> list[str]:
    """Which functions an object created at ``key`` would invoke."""
    out = []
    for config in notifications:
        assert config["Event"] == "s3:ObjectCreated:*"
        rules = {r["Name"]: r["Value"] for r in config["Filter"]["S3Key"]["Rules"]}
        if key.startswith(rules.get("prefix", "")) and key.endswith(rules.get("suffix", "")):
            out.append(config["Function"]["Fn::GetAtt"][0])
    return out


def test_s3_triggers_fire_on_their_prefixes_and_never_on_what_functions_write(resources: dict[str, Any]) -> None:
    notifications = resources["ModelBucket"]["Properties"]["NotificationConfiguration"]["LambdaConfigurations"]
    ids = {r["Properties"]["Handler"]: k for k, r in of_type(resources, "AWS::Lambda::Function").items()}
    assert triggered(notifications, "data/2026-11.csv") == [ids["handler.retrain_handler"]]
    # inputs/ goes through EventBridge, routed by size (below), never also directly
    assert triggered(notifications, "inputs/applicants.csv") == []
    for written in ("outputs/applicants.csv", "outputs/applicants.errors.csv",
                    "models/admission/v-0123.rds", "models/admission/v-0123.json",
                    "models/admission/current.json", "data/notes.txt", "inputs/readme.md"):
        assert triggered(notifications, written) == [], written


def test_s3_may_invoke_the_triggered_functions(resources: dict[str, Any]) -> None:
    s3_permissions = [p for p in of_type(resources, "AWS::Lambda::Permission").values()
                      if p["Properties"]["Principal"] == "s3.amazonaws.com"]
    assert len(s3_permissions) == 1
    # The bucket is created after the permissions, or S3 refuses the config.
    assert set(resources["ModelBucket"]["DependsOn"]) == {
        k for k, p in of_type(resources, "AWS::Lambda::Permission").items()
        if p["Properties"]["Principal"] == "s3.amazonaws.com"
    }


def references(value: Any) -> set[str]:
    """Logical ids a value refers to through Ref, Fn::GetAtt or Fn::Sub."""
    found: set[str] = set()
    if isinstance(value, dict):
        for key, inner in value.items():
            if key == "Ref" and isinstance(inner, str):
                found.add(inner.split(".")[0])
            elif key == "Fn::GetAtt":
                target = inner[0] if isinstance(inner, list) else inner.split(".")[0]
                found.add(target)
            elif key == "Fn::Sub":
                text = inner if isinstance(inner, str) else inner[0]
                found.update(n.split(".")[0] for n in re.findall(r"\$\{([^}!]+)\}", text))
                if isinstance(inner, list):
                    found.update(references(inner[1]))
            else:
                found.update(references(inner))
    elif isinstance(value, list):
        for inner in value:
            found.update(references(inner))
    return found


def test_no_circular_dependency(cfn: dict[str, Any]) -> None:
    resources = cfn["Resources"]
    graph = {}
    for name, resource in resources.items():
        deps = references(resource.get("Properties", {})) | set(as_list(resource.get("DependsOn", [])))
        graph[name] = {d for d in deps if d in resources}
    # The edge that would close the classic cycle must not exist.
    assert "ModelBucket" not in graph[next(k for k in resources if k.startswith("ScoringFunctionRole"))]
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        if state.get(node) == 2:
            return
        assert state.get(node) != 1, "cycle: " + " -> ".join(path + [node])
        state[node] = 1
        for dep in sorted(graph[node]):
            visit(dep, path + [node])
        state[node] = 2

    for node in sorted(graph):
        visit(node, [])


def test_page_bucket_is_private_and_read_by_cloudfront_alone(resources: dict[str, Any]) -> None:
    bucket = resources["PageBucket"]["Properties"]
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    (statement,) = resources["PageBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Service": "cloudfront.amazonaws.com"}
    assert statement["Action"] == "s3:GetObject"
    source_arn = sub_text(statement["Condition"]["StringEquals"]["AWS:SourceArn"])
    assert source_arn.endswith(":distribution/${PageDistribution}")


def test_distribution_uses_origin_access_control_and_never_caches_config(resources: dict[str, Any]) -> None:
    config = resources["PageDistribution"]["Properties"]["DistributionConfig"]
    (origin,) = config["Origins"]
    assert origin["OriginAccessControlId"] == {"Fn::GetAtt": ["PageOriginAccessControl", "Id"]}
    assert origin["S3OriginConfig"] == {"OriginAccessIdentity": ""}
    assert origin["DomainName"] == {"Fn::GetAtt": ["PageBucket", "RegionalDomainName"]}
    oac = resources["PageOriginAccessControl"]["Properties"]["OriginAccessControlConfig"]
    assert (oac["SigningBehavior"], oac["SigningProtocol"], oac["OriginAccessControlOriginType"]) == (
        "always", "sigv4", "s3")
    assert config["DefaultRootObject"] == "index.html"
    assert config["DefaultCacheBehavior"]["ViewerProtocolPolicy"] == "redirect-to-https"
    (config_behaviour,) = config["CacheBehaviors"]
    assert config_behaviour["PathPattern"] == "config.json"
    # AWS's managed CachingDisabled policy.
    assert config_behaviour["CachePolicyId"] == "4135ea2d-6df8-44a3-9df3-4b5a84be39ad"


# ----------------------------------------------------- logs, alarm, outputs


def test_functions_log_json_to_log_groups_with_retention(resources: dict[str, Any]) -> None:
    groups = of_type(resources, "AWS::Logs::LogGroup")
    for function in of_type(resources, "AWS::Lambda::Function").values():
        logging_config = function["Properties"]["LoggingConfig"]
        assert logging_config["LogFormat"] == "JSON"
        (group_id,) = references(logging_config["LogGroup"])
        assert groups[group_id]["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
        assert function["Properties"]["Environment"]["Variables"]["LOG_LEVEL"] == {"Ref": "LogLevel"}


def test_lambda_log_filter_never_drops_what_the_code_logs(source: dict[str, Any]) -> None:
    levels = source["Mappings"]["LambdaLogLevel"]
    assert set(levels) == set(source["Parameters"]["LogLevel"]["AllowedValues"])
    # Lambda reads Python's WARNING (and lines without its timestamp key) as
    # INFO, so it must never filter above INFO.
    assert {v["Level"] for v in levels.values()} <= {"DEBUG", "INFO"}


def test_alarm_watches_the_5xx_rate_of_this_api_stage(resources: dict[str, Any], source: dict[str, Any]) -> None:
    alarm = resources["Api5xxAlarm"]
    props = alarm["Properties"]
    assert (props["Namespace"], props["MetricName"], props["Statistic"]) == ("AWS/ApiGateway", "5XXError", "Average")
    dims = {d["Name"]: d["Value"] for d in props["Dimensions"]}
    (api,) = of_type(resources, "AWS::ApiGateway::RestApi").values()
    assert sub_text(dims["ApiName"]) == sub_text(api["Properties"]["Name"])
    assert dims["Stage"] == STAGE
    assert props["Threshold"] == {"Ref": "FiveXXRateThreshold"}
    assert props["TreatMissingData"] == "notBreaching"


def test_outputs_name_the_api_the_page_and_the_model_bucket(cfn: dict[str, Any]) -> None:
    outputs = cfn["Outputs"]
    assert sub_text(outputs["ApiUrl"]["Value"]).endswith(f".execute-api.${{AWS::Region}}.${{AWS::URLSuffix}}/{STAGE}/")
    assert sub_text(outputs["PageUrl"]["Value"]) == "https://${PageDistribution.DomainName}/"
    assert outputs["ModelBucketName"]["Value"] == {"Ref": "ModelBucket"}
    # deploy.sh reads these too.
    assert {"ModelUri", "PageBucketName", "DistributionId", "ApiKeyId"} <= set(outputs)
    assert outputs["ApiKeyId"]["Value"]["Ref"] in cfn["Resources"]


# ------------------------------------- batch: routing by size, Distributed Map


def _matches(pattern: Any, event: Any) -> bool:
    """EventBridge matching for what the template uses: exact values, wildcard, numeric."""
    if isinstance(pattern, dict):
        return isinstance(event, dict) and all(k in event and _matches(v, event[k]) for k, v in pattern.items())
    assert isinstance(pattern, list)
    for rule in pattern:
        if isinstance(rule, dict) and "wildcard" in rule:
            if re.fullmatch(re.escape(rule["wildcard"]).replace(r"\*", ".*"), str(event)):
                return True
        elif isinstance(rule, dict) and "numeric" in rule:
            op, bound = rule["numeric"]
            assert isinstance(bound, (int, float)), "EventBridge needs a JSON number here"
            if {"<": event < bound, ">=": event >= bound}[op]:
                return True
        elif isinstance(rule, dict) and "Fn::Sub" in rule:
            if sub_text(rule) == "${AWS::StackName}-models-${AWS::AccountId}" and event == "stack-models-1":
                return True
        elif rule == event:
            return True
    return False


def routes(resources: dict[str, Any], key: str, size: int) -> list[str]:
    """Which targets an S3 "Object Created" EventBridge event would reach."""
    event = {"source": "aws.s3", "detail-type": "Object Created",
             "detail": {"bucket": {"name": "stack-models-1"}, "object": {"key": key, "size": size}}}
    out = []
    for rule in of_type(resources, "AWS::Events::Rule").values():
        if _matches(rule["Properties"]["EventPattern"], event):
            out.extend(t["Arn"].get("Ref") or t["Arn"]["Fn::GetAtt"][0] for t in rule["Properties"]["Targets"])
    return out


def test_each_input_csv_is_routed_once_by_its_size(resources: dict[str, Any]) -> None:
    batch = next(k for k, r in of_type(resources, "AWS::Lambda::Function").items()
                 if r["Properties"]["Handler"] == "handler.batch_handler")
    threshold = 100_000_000
    assert routes(resources, "inputs/a.csv", 10) == [batch]
    assert routes(resources, "inputs/a.csv", threshold - 1) == [batch]
    assert routes(resources, "inputs/a.csv", threshold) == ["BatchStateMachine"]
    assert routes(resources, "inputs/2026/big.csv", 50 * 2**30) == ["BatchStateMachine"]
    for key in ("outputs/a.csv", "inputs/readme.md", "data/a.csv", "outputs/.map-runs/x/manifest.json"):
        assert routes(resources, key, 10) == [] and routes(resources, key, threshold) == [], key
    assert resources["ModelBucket"]["Properties"]["NotificationConfiguration"]["EventBridgeConfiguration"] == {
        "EventBridgeEnabled": True}


def definition(resources: dict[str, Any]) -> dict[str, Any]:
    """The state machine's ASL, substitutions left as ${...} text."""
    props = resources["BatchStateMachine"]["Properties"]
    body = props["DefinitionString"]
    text = body["Fn::Join"][1] if "Fn::Join" in body else sub_text(body)
    if isinstance(text, list):
        text = "".join(t if isinstance(t, str) else "${X}" for t in text)
    return json.loads(text)


def test_distributed_map_reads_the_csv_batches_rows_and_writes_results(resources: dict[str, Any]) -> None:
    asl = definition(resources)
    assert asl["StartAt"] == "Plan"
    score = asl["States"]["Score"]
    assert score["Type"] == "Map"
    assert score["ItemReader"]["Resource"] == "arn:aws:states:::s3:getObject"
    assert score["ItemReader"]["ReaderConfig"] == {"InputType": "CSV", "CSVHeaderLocation": "FIRST_ROW"}
    # the object version the event announced, carried by Plan: a key written again meanwhile is not read
    plan = asl["States"]["Plan"]
    assert plan["Parameters"]["Payload"]["Plan"]["version.$"] == "$.detail.object.version-id"
    assert plan["ResultSelector"]["version.$"] == "$.Payload.version"
    assert score["ItemReader"]["Parameters"] == {"Bucket.$": "$.bucket", "Key.$": "$.key", "VersionId.$": "$.version"}
    assert score["ItemSelector"] == {"index.$": "$$.Map.Item.Index", "row.$": "$$.Map.Item.Value"}
    batcher = score["ItemBatcher"]
    assert batcher["MaxItemsPerBatchPath"] == "$.rows_per_batch"
    assert batcher["MaxInputBytesPerBatch"] <= 256 * 1024
    assert set(batcher["BatchInput"]) == {"bucket.$", "key.$", "model_version.$"}
    assert score["MaxConcurrencyPath"] == "$.max_concurrency"
    assert score["ItemProcessor"]["ProcessorConfig"]["Mode"] == "DISTRIBUTED"
    (task,) = score["ItemProcessor"]["States"].values()
    assert task["Resource"] == "arn:aws:states:::lambda:invoke"
    assert task["Parameters"]["FunctionName"] == "${BatchFunctionArn}"
    assert score["ResultWriter"]["Resource"] == "arn:aws:states:::s3:putObject"
    assert score["ResultWriter"]["Parameters"]["Prefix"].startswith("outputs/")
    assert asl["States"]["Collect"]["Parameters"]["Payload"]["Collect"]["manifest.$"] == "$.map.ResultWriterDetails.Key"
    subs = resources["BatchStateMachine"]["Properties"]["DefinitionSubstitutions"]
    assert subs["RowsPerBatch"] == {"Ref": "BatchRowsPerBatch"}
    assert subs["MaxConcurrency"] == {"Ref": "BatchMaxConcurrency"}


def _path(doc: Any, path: str) -> Any:
    """A plain JSONPath ($.a.b-c) in ``doc``: KeyError where Step Functions fails the state."""
    for part in path.removeprefix("$.").split("."):
        doc = doc[part]
    return doc


def test_plan_reads_bucket_key_and_version_from_an_s3_object_created_event(resources: dict[str, Any],
                                                                         context: Any) -> None:
    """Plan's payload paths resolve in a real EventBridge "Object Created" event (versioned bucket), and the
    batch function's answer has every field the ResultSelector reads."""
    import handler

    event = json.loads((ROOT / "tests" / "events" / "eventbridge_s3_object_created_inputs.json").read_text())
    plan = definition(resources)["States"]["Plan"]
    payload = {name.removesuffix(".$"): _path(event, path) for name, path in plan["Parameters"]["Payload"]["Plan"].items()}
    assert payload == {"bucket": "serverless-poc-models", "key": "inputs/applicants.csv",
                       "version": "IYV3p45BT0ac8hjHg1houSdS1a.Mro8e"}
    answer = {"Payload": handler.batch_handler({"Plan": payload}, context)}
    selected = {name.removesuffix(".$"): _path(answer, path) for name, path in plan["ResultSelector"].items()
                if path.startswith("$.Payload")}
    assert selected["version"] == payload["version"] and selected["key"] == payload["key"] and selected["model_version"]


def test_state_machine_role_is_least_privilege(resources: dict[str, Any]) -> None:
    role = resources["BatchStateMachine"]["Properties"]["RoleArn"]["Fn::GetAtt"][0]
    grants: dict[str, set[str]] = {}
    for st in statements(resources, role):
        for action in as_list(st["Action"]):
            for res in as_list(st["Resource"]):
                grants.setdefault(action, set()).add(json.dumps(res, sort_keys=True))
    assert {a for a in grants if a.startswith("s3:")} == {
        "s3:GetObject", "s3:GetObjectVersion", "s3:PutObject", "s3:ListMultipartUploadParts",
        "s3:AbortMultipartUpload"}
    assert grants["s3:GetObjectVersion"] == {json.dumps({"Fn::Sub": BUCKET_ARN + "/inputs/*"})}
    assert all("/outputs/.map-runs/*" in r or "/inputs/*" in r for a, rs in grants.items()
               if a.startswith("s3:") for r in rs)
    assert grants["s3:PutObject"] == {json.dumps({"Fn::Sub": BUCKET_ARN + "/outputs/.map-runs/*"})}
    assert all("BatchFunction" in r for r in grants["lambda:InvokeFunction"])
    assert all("${AWS::StackName}-batch" in r for a in ("states:StartExecution", "states:DescribeExecution")
               for r in grants[a])
    # only the vended-logs actions, which AWS documents as account-wide, are on "*"
    assert {a for a, rs in grants.items() if json.dumps("*") in rs} <= {
        "logs:CreateLogDelivery", "logs:GetLogDelivery", "logs:UpdateLogDelivery", "logs:DeleteLogDelivery",
        "logs:ListLogDeliveries", "logs:PutResourcePolicy", "logs:DescribeResourcePolicies", "logs:DescribeLogGroups"}


def test_async_failures_go_to_a_queue_with_an_alarm(resources: dict[str, Any]) -> None:
    configs = of_type(resources, "AWS::Lambda::EventInvokeConfig")
    by_function = {c["Properties"]["FunctionName"]["Ref"]: c["Properties"] for c in configs.values()}
    funcs = {r["Properties"]["Handler"]: k for k, r in of_type(resources, "AWS::Lambda::Function").items()}
    retrain, batch = by_function[funcs["handler.retrain_handler"]], by_function[funcs["handler.batch_handler"]]
    assert retrain["MaximumRetryAttempts"] == 1 and batch["MaximumRetryAttempts"] == 2
    for cfg in (retrain, batch):
        assert cfg["DestinationConfig"]["OnFailure"]["Destination"] == {"Fn::GetAtt": ["FailedEventsQueue", "Arn"]}
    assert resources[funcs["handler.retrain_handler"]]["Properties"]["ReservedConcurrentExecutions"] == 1
    for rule in of_type(resources, "AWS::Events::Rule").values():
        for target in rule["Properties"]["Targets"]:
            assert target["DeadLetterConfig"]["Arn"] == {"Fn::GetAtt": ["FailedEventsQueue", "Arn"]}
    alarm = resources["FailedEventsAlarm"]["Properties"]
    assert alarm["Namespace"] == "AWS/SQS" and alarm["MetricName"] == "ApproximateNumberOfMessagesVisible"
    assert alarm["Threshold"] == 0 and alarm["ComparisonOperator"] == "GreaterThanThreshold"
