#!/usr/bin/env bash
# Deploy the whole system with one command: the stack (template.yaml), the
# model, and the web page with a config.json pointing at the API.
#
#   scripts/deploy.sh                 # first time: sam deploy --guided
#   scripts/deploy.sh --dry-run       # print every command, run none
#   scripts/deploy.sh --with-api-key  # put the API key's value in the page's config.json
#
# Steps, each printed as "+ command" before it runs:
#   1. build build/admission.zip (bash scripts/package.sh) and the example
#      model (Rscript models/train.R) if they are missing;
#   2. sam deploy, guided when no samconfig.toml holds this project's deploy
#      settings yet (SAM writes that file at the end of a guided deploy);
#   3. read the stack's outputs; upload the model if the bucket has none yet
#      (or always, with --model FILE), sync web/ to the page bucket and write
#      its config.json; invalidate the CloudFront cache;
#   4. print the API URL, the page URL and the model bucket.
#
# --skip-deploy does steps 3 and 4 only, against an existing stack.
# AWS_ENDPOINT_URL is honoured by the aws CLI (the tests point it at moto).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

DRY_RUN=0
SKIP_DEPLOY=0
WITH_API_KEY=0
GUIDED=auto
STACK_NAME="${STACK_NAME:-}"
REGION="${AWS_REGION:-${AWS_DEFAULT_REGION:-}}"
WEB_DIR="web"
MODEL_FILE="models/admission.rds"
MODEL_FORCED=0
PACKAGE_ZIP="build/admission.zip"
PARAMS=()
FORCE=0

usage() {
  cat <<'EOF'
Usage: scripts/deploy.sh [options]

  --dry-run            print every command without running any
  --stack-name NAME    stack name (lowercase, at most 43 characters; default:
                       samconfig.toml's, else rlambda-admission)
  --region REGION      AWS region (default: AWS_REGION, samconfig.toml, the CLI's config)
  --guided             force sam deploy --guided
  --no-guided          never guided (fails if SAM lacks settings it needs)
  --param KEY=VALUE    a template parameter override (repeatable), e.g. --param MemorySize=2048
  --with-api-key       write the API key's value into the page's config.json
                       (the page is public: the key then only meters, it does not protect)
  --model FILE         upload FILE as the model even if the bucket has one
  --web-dir DIR        the page's files (default: web)
  --skip-deploy        do not run sam deploy; upload to the existing stack
  --force              deploy a zip whose libraries need a newer glibc than Lambda's
  -h, --help           this help
EOF
}

die() {
  echo "deploy.sh: $*" >&2
  exit 2
}

while (($#)); do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --stack-name) STACK_NAME="${2:?--stack-name needs a value}"; shift ;;
    --region) REGION="${2:?--region needs a value}"; shift ;;
    --guided) GUIDED=yes ;;
    --no-guided) GUIDED=no ;;
    --param) PARAMS+=("${2:?--param needs KEY=VALUE}"); shift ;;
    --with-api-key) WITH_API_KEY=1 ;;
    --model) MODEL_FILE="${2:?--model needs a file}"; MODEL_FORCED=1; shift ;;
    --web-dir) WEB_DIR="${2:?--web-dir needs a directory}"; shift ;;
    --skip-deploy) SKIP_DEPLOY=1 ;;
    --force) FORCE=1 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown option: $1" ;;
  esac
  shift
done

for p in "${PARAMS[@]}"; do
  [[ "$p" == ?*=* ]] || die "--param wants KEY=VALUE, got: $p"
done

# JSON and TOML are read with Python (tomllib needs 3.11+): the repo's venv
# if there is one, so no jq or other tool is needed.
if [[ -x "$ROOT/.venv/bin/python" ]]; then
  PYTHON="$ROOT/.venv/bin/python"
else
  PYTHON="$(command -v python3 || true)"
fi
[[ -n "$PYTHON" ]] || die "python3 is needed to read samconfig.toml and write config.json"

# Print a command as "+ cmd args", quoted so it can be pasted into a shell.
trace() {
  local arg out="+"
  for arg in "$@"; do
    if [[ "$arg" =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then
      out+=" $arg"
    else
      out+=" '${arg//\'/\'\\\'\'}'"
    fi
  done
  printf '%s\n' "$out"
}

# Print a command, then run it unless this is a dry run.
run() {
  trace "$@"
  if ((DRY_RUN)); then
    return 0
  fi
  "$@"
}

# A value from samconfig.toml's [default.deploy.parameters], or nothing.
samconfig_get() {
  [[ -f samconfig.toml ]] || return 0
  "$PYTHON" - "$1" <<'PY'
import sys
import tomllib

with open("samconfig.toml", "rb") as fh:
    config = tomllib.load(fh)
value = config.get("default", {}).get("deploy", {}).get("parameters", {}).get(sys.argv[1])
if value is not None:
    print(str(value).lower() if isinstance(value, bool) else value)
PY
}

resolve_stack() {
  if [[ -z "$STACK_NAME" ]]; then
    STACK_NAME="$(samconfig_get stack_name)"
  fi
  STACK_NAME="${STACK_NAME:-rlambda-admission}"
  if [[ -z "$REGION" ]]; then
    REGION="$(samconfig_get region)"
  fi
  # The model bucket is named after the stack; S3 wants lowercase names of
  # at most 63 characters ("-models-" and a 12-digit account id take 20).
  [[ "$STACK_NAME" =~ ^[a-z][a-z0-9-]{0,42}$ ]] \
    || die "stack name '$STACK_NAME' must be lowercase letters, digits and '-', at most 43 characters"
}

REGION_ARGS=()
set_region_args() {
  REGION_ARGS=()
  if [[ -n "$REGION" ]]; then
    REGION_ARGS=(--region "$REGION")
  fi
}

# ------------------------------------------------------------------ step 1
build_if_missing() {
  if [[ ! -f "$PACKAGE_ZIP" ]]; then
    run bash scripts/package.sh
  fi
  if [[ ! -f "$MODEL_FILE" ]]; then
    ((MODEL_FORCED)) && die "model file $MODEL_FILE does not exist"
    run Rscript models/train.R --out "$MODEL_FILE"
  fi
}

# The zip's compiled extensions (cffi's backend) fix the CPython it runs on,
# and its shared libraries the oldest glibc it loads with. A function whose
# runtime is another Python cannot import rpy2 and answers 503 to everything,
# so a disagreement between the zip and the template's runtime is refused
# here (never papered over by switching the runtime).
check_package() {
  [[ -f "$PACKAGE_ZIP" ]] || return 0
  local zip_python
  zip_python="$("$PYTHON" - "$PACKAGE_ZIP" <<'PY'
import json
import re
import sys
import zipfile

report = sys.argv[1][: -len(".zip")] + ".report.json"
try:
    print("python" + json.load(open(report))["python"])
    sys.exit(0)
except (OSError, ValueError, KeyError):
    pass
try:
    names = zipfile.ZipFile(sys.argv[1]).namelist()
except zipfile.BadZipFile:
    names = []  # sam deploy reports an unusable zip itself
tags = {m.group(1) for n in names for m in [re.search(r"\.cpython-3(\d+)-", n)] if m}
print(f"python3.{tags.pop()}" if len(tags) == 1 else "")
PY
)"
  local p runtime="" where="--param PythonRuntime"
  for p in "${PARAMS[@]}"; do
    [[ "$p" == PythonRuntime=* ]] && runtime="${p#PythonRuntime=}"
  done
  if [[ -z "$runtime" ]]; then
    runtime="$(awk '/^  PythonRuntime:/ {f = 1} f && /Default:/ {print $2; exit}' template.yaml)"
    where="template.yaml's PythonRuntime default"
  fi
  if [[ -n "$zip_python" && -n "$runtime" && "$zip_python" != "$runtime" ]]; then
    die "$PACKAGE_ZIP is built for $zip_python but the function would run on $runtime ($where): rpy2 could not load there. Rebuild with scripts/package.sh --python ${runtime#python}, or deploy with --param PythonRuntime=$zip_python"
  fi
  [[ -n "$zip_python" ]] && echo "# $PACKAGE_ZIP is built for $zip_python; the function runs on $runtime"
  local report="${PACKAGE_ZIP%.zip}.report.json" floors
  [[ -f "$report" ]] || return 0
  floors="$("$PYTHON" -c 'import json, sys; r = json.load(open(sys.argv[1])); print(r.get("glibc_floor", ""), r.get("lambda_glibc", ""))' "$report")"
  local need="${floors% *}" have="${floors#* }"
  if [[ -n "$need" && -n "$have" ]] && [[ "$(printf '%s\n%s\n' "$need" "$have" | sort -V | tail -n1)" != "$have" ]]; then
    local msg="$PACKAGE_ZIP needs glibc $need but Lambda's Amazon Linux 2023 has $have: R would not load there. Rebuild it with scripts/package.sh (it checks the floor), or deploy the container image (docs/DEPLOY.md)"
    if ((FORCE || DRY_RUN)); then
      echo "warning: $msg" >&2
    else
      die "$msg; --force deploys it anyway"
    fi
  fi
}

# ------------------------------------------------------------------ step 2
sam_deploy() {
  if ((!DRY_RUN)) && ! command -v sam >/dev/null; then
    die "the sam CLI is missing: pip install aws-sam-cli (or see docs/DEPLOY.md)"
  fi
  local guided="$GUIDED"
  if [[ "$guided" == auto ]]; then
    # SAM saves the answers of a guided deploy in samconfig.toml: no stack
    # name there means this checkout has never deployed.
    if [[ -n "$(samconfig_get stack_name)" ]]; then guided=no; else guided=yes; fi
  fi
  local cmd=(sam deploy --template-file template.yaml --stack-name "$STACK_NAME" "${REGION_ARGS[@]}"
    --capabilities CAPABILITY_IAM)
  if [[ "$guided" == yes ]]; then
    cmd+=(--guided)
  else
    cmd+=(--no-fail-on-empty-changeset)
    # A packaging bucket is needed for the zip; keep the one a guided deploy
    # chose, else let SAM create and reuse its managed bucket.
    if [[ -z "$(samconfig_get s3_bucket)" && -z "$(samconfig_get resolve_s3)" ]]; then
      cmd+=(--resolve-s3)
    fi
  fi
  if ((${#PARAMS[@]})); then
    cmd+=(--parameter-overrides "${PARAMS[@]}")
  fi
  run "${cmd[@]}"
  if [[ "$guided" == yes ]] && ((!DRY_RUN)); then
    # The user may have typed another stack name or region at the prompts.
    STACK_NAME="$(samconfig_get stack_name)"
    STACK_NAME="${STACK_NAME:-rlambda-admission}"
    REGION="$(samconfig_get region)"
    set_region_args
  fi
}

# ------------------------------------------------------------------ step 3
declare -A OUT=()
read_outputs() {
  local cmd=(aws cloudformation describe-stacks --stack-name "$STACK_NAME" "${REGION_ARGS[@]}"
    --query 'Stacks[0].Outputs[].[OutputKey,OutputValue]' --output text)
  if ((DRY_RUN)); then
    run "${cmd[@]}"
    local key
    for key in ApiUrl PageUrl ModelBucketName ModelUri PageBucketName DistributionId ApiKeyId; do
      OUT[$key]="<$key>"
    done
    # The template's default ModelKey unless --param overrides it.
    local model_key="models/admission/" p
    for p in "${PARAMS[@]}"; do
      [[ "$p" == ModelKey=* ]] && model_key="${p#ModelKey=}"
    done
    OUT[ModelUri]="s3://<ModelBucketName>/$model_key"
    return 0
  fi
  local text key value
  trace "${cmd[@]}"
  text="$("${cmd[@]}")"
  while IFS=$'\t' read -r key value; do
    [[ -n "$key" ]] && OUT[$key]="$value"
  done <<<"$text"
  local needed
  for needed in ApiUrl PageUrl ModelBucketName ModelUri PageBucketName; do
    [[ -n "${OUT[$needed]:-}" ]] || die "stack $STACK_NAME has no output $needed; is it deployed from this template.yaml?"
  done
}

# Publish a local .rds as a version of the folder URI $1 and point serving
# at it, through the repo's own registry code (rlambda/registry.py), so the
# layout is exactly what the functions read: <version>.rds, <version>.json
# (the manifest with its sha256), current.json. Without --model, a folder
# whose pointer already names a version is left alone.
publish_version() {
  local uri="$1" file="$2" force="$3"
  echo "# publish $file under $uri as a version, then point current.json at it$( ((force)) || echo ' (only if nothing is served yet)')"
  local cmd=(env "PYTHONPATH=$ROOT" "$PYTHON" -m rlambda.registry --uri "$uri" publish "$file")
  ((force)) || cmd+=(--keep-served)
  if [[ -n "$REGION" ]]; then
    cmd=(env "AWS_DEFAULT_REGION=$REGION" "${cmd[@]:1}")
  fi
  trace "${cmd[@]}"
  ((DRY_RUN)) && return 0
  "${cmd[@]}"
}

upload_model() {
  local uri="${OUT[ModelUri]}"
  if [[ "$uri" == */ ]]; then
    publish_version "$uri" "$MODEL_FILE" "$MODEL_FORCED"
    return 0
  fi
  if ((MODEL_FORCED)); then
    run aws s3 cp "$MODEL_FILE" "$uri" "${REGION_ARGS[@]}"
    return 0
  fi
  # A single-file MODEL_URI: never overwrite a model that is already there
  # (it may be newer than the example in this checkout).
  local rest="${uri#s3://}"
  local head=(aws s3api head-object --bucket "${rest%%/*}" --key "${rest#*/}" "${REGION_ARGS[@]}")
  if ((DRY_RUN)); then
    run "${head[@]}"
    echo "# (only if the head-object above finds no model:)"
    run aws s3 cp "$MODEL_FILE" "$uri" "${REGION_ARGS[@]}"
    return 0
  fi
  trace "${head[@]}"
  if "${head[@]}" >/dev/null 2>&1; then
    echo "A model is already at $uri; kept (use --model FILE to replace it)."
  else
    run aws s3 cp "$MODEL_FILE" "$uri" "${REGION_ARGS[@]}"
  fi
}

# config.json for the page: web/config.json's keys, with apiBase (the API
# URL without its trailing slash) and apiKey (empty unless asked for).
write_config() {
  local target="$1" api_key="$2"
  "$PYTHON" - "$WEB_DIR/config.json" "${OUT[ApiUrl]}" "$api_key" "$target" <<'PY'
import json
import sys
from pathlib import Path

source, api_url, api_key, target = sys.argv[1:5]
try:
    config = json.loads(Path(source).read_text(encoding="utf-8"))
except FileNotFoundError:
    config = {}
if not isinstance(config, dict):
    sys.exit(f"{source} must hold a JSON object")
config["apiBase"] = api_url.rstrip("/")
config["apiKey"] = api_key
Path(target).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
PY
}

upload_page() {
  [[ -d "$WEB_DIR" ]] || die "the page directory $WEB_DIR does not exist"
  local bucket="${OUT[PageBucketName]}" api_key=""
  if ((WITH_API_KEY)); then
    local cmd=(aws apigateway get-api-key --api-key "${OUT[ApiKeyId]:-}" --include-value
      --query value --output text "${REGION_ARGS[@]}")
    if ((DRY_RUN)); then
      run "${cmd[@]}"
      api_key="<api-key-value>"
    else
      trace "${cmd[@]}"
      api_key="$("${cmd[@]}")"
    fi
  fi
  run aws s3 sync "$WEB_DIR" "s3://$bucket/" --delete --exclude config.json "${REGION_ARGS[@]}"
  local config="<config.json>"
  if ((DRY_RUN)); then
    echo "# write $config: $WEB_DIR/config.json with apiBase=${OUT[ApiUrl]%/} apiKey=${api_key:-\"\"}"
  else
    config="$(mktemp "${TMPDIR:-/tmp}/config.XXXXXX.json")"
    # The key never stays on disk longer than the upload.
    trap 'rm -f "$config"' EXIT
    write_config "$config" "$api_key"
  fi
  # no-store: browsers must not keep a config pointing at an old API.
  run aws s3 cp "$config" "s3://$bucket/config.json" --content-type application/json \
    --cache-control no-store "${REGION_ARGS[@]}"
  if ((!DRY_RUN)); then
    rm -f "$config"
    trap - EXIT
  fi
  local distribution="${OUT[DistributionId]:-}"
  if [[ -n "$distribution" && "$distribution" != None ]]; then
    # index.html and app.js are cached at the edge for up to a day; a new
    # page must replace them now (the first 1000 paths a month are free).
    run aws cloudfront create-invalidation --distribution-id "$distribution" --paths "/*" \
      "${REGION_ARGS[@]}"
  else
    echo "warning: the stack reports no CloudFront distribution; the edge cache was not invalidated" >&2
  fi
}

# ------------------------------------------------------------------ main
resolve_stack
set_region_args
((DRY_RUN)) && echo "# dry run: commands are printed, none is run"
build_if_missing
if ((!SKIP_DEPLOY)); then
  check_package
  sam_deploy
fi
read_outputs
upload_model
upload_page

echo
echo "API URL:      ${OUT[ApiUrl]}"
echo "Page URL:     ${OUT[PageUrl]}"
echo "Model bucket: ${OUT[ModelBucketName]}"
if ((!WITH_API_KEY)); then
  echo "API key:      aws apigateway get-api-key --api-key ${OUT[ApiKeyId]:-<ApiKeyId>} --include-value --query value --output text"
fi
