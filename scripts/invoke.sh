#!/usr/bin/env bash
# Run the handler on an event file and answer the way `aws lambda invoke` does,
# locally (no AWS needed) or against the deployed function.
#
#   scripts/invoke.sh EVENT.json [OUT.json]
#   scripts/invoke.sh --remote FUNCTION [--qualifier live] EVENT.json [OUT.json]
#
# Like the CLI: the invocation summary ({"StatusCode": 200, "ExecutedVersion":
# "$LATEST"}, plus "FunctionError": "Unhandled" when the handler raised) is
# printed to stdout and the payload is written to OUT.json; a raised error's
# payload is {"errorMessage", "errorType", "requestId", "stackTrace"}. Without
# OUT.json the payload goes to stdout and the summary to stderr, so the
# output can be piped.
#
# Unlike the CLI, which exits 0 even when the function failed, a
# FunctionError exits 1, so a script (or CI) using this stops on it.
# Exit codes: 0 success, 1 FunctionError, 2 bad usage or an event file that
# is not JSON (the service would refuse it before running anything).
#
# Locally the repo's .venv python runs handler.lambda_handler with
# MODEL_URI defaulting to models/admission.rds (built by models/train.R if
# missing); set MODEL_URI, THRESHOLD, CORS_ORIGINS... as the function would
# have them. HANDLER (default handler.lambda_handler) picks another entry
# point, e.g. handler.batch_handler.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REMOTE=""
QUALIFIER=""
REGION_ARGS=()

usage() {
  sed -n '2,24p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

die() {
  echo "invoke.sh: $*" >&2
  exit 2
}

ARGS=()
while (($#)); do
  case "$1" in
    --remote) REMOTE="${2:?--remote needs a function name or ARN}"; shift ;;
    --qualifier) QUALIFIER="${2:?--qualifier needs a version or alias}"; shift ;;
    --region) REGION_ARGS=(--region "${2:?--region needs a value}"); shift ;;
    -h | --help) usage; exit 0 ;;
    --) shift; ARGS+=("$@"); break ;;
    -*) die "unknown option: $1 (see --help)" ;;
    *) ARGS+=("$1") ;;
  esac
  shift
done
((${#ARGS[@]} >= 1 && ${#ARGS[@]} <= 2)) || { usage >&2; exit 2; }
EVENT="${ARGS[0]}"
OUT="${ARGS[1]:-}"
[[ -f "$EVENT" ]] || die "event file $EVENT does not exist"

if [[ -x "$ROOT/.venv/bin/python" ]]; then
  PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
else
  PYTHON="${PYTHON:-python3}"
fi

# ------------------------------------------------------------------ remote
if [[ -n "$REMOTE" ]]; then
  command -v aws >/dev/null || die "the aws CLI is missing (pip install awscli)"
  payload_file="$OUT"
  if [[ -z "$OUT" ]]; then
    payload_file="$(mktemp)"
    trap 'rm -f "$payload_file"' EXIT
  fi
  cmd=(aws lambda invoke --function-name "$REMOTE" "${REGION_ARGS[@]}")
  [[ -n "$QUALIFIER" ]] && cmd+=(--qualifier "$QUALIFIER")
  # fileb:// sends the file's bytes as they are, with CLI v1 and v2 alike.
  cmd+=(--payload "fileb://$EVENT" "$payload_file")
  summary="$("${cmd[@]}")"
  if [[ -z "$OUT" ]]; then
    printf '%s\n' "$summary" >&2
    cat "$payload_file"
    echo
  else
    printf '%s\n' "$summary"
  fi
  # The summary is JSON; a FunctionError key means the function failed.
  if "$PYTHON" -c 'import json, sys; sys.exit(1 if json.loads(sys.argv[1]).get("FunctionError") else 0)' "$summary"; then
    exit 0
  fi
  exit 1
fi

# ------------------------------------------------------------------- local
if [[ -z "${MODEL_URI:-}" ]]; then
  MODEL_URI="$ROOT/models/admission.rds"
  if [[ ! -f "$MODEL_URI" ]]; then
    echo "invoke.sh: building $MODEL_URI with models/train.R" >&2
    Rscript "$ROOT/models/train.R" --out "$MODEL_URI" >&2
  fi
fi
export MODEL_URI

exec "$PYTHON" - "$ROOT" "$EVENT" "$OUT" "${HANDLER:-handler.lambda_handler}" <<'PY'
"""Invoke a handler in-process and report like the Lambda service and the aws CLI."""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
import traceback
import uuid
from contextlib import contextmanager
from typing import Any, Callable, Iterator

EXIT_OK, EXIT_FUNCTION_ERROR, EXIT_USAGE = 0, 1, 2


class LambdaContext:
    """The context object the Python runtime passes, with a real deadline."""

    def __init__(self, handler: str) -> None:
        self.aws_request_id = str(uuid.uuid4())
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "admission-local")
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = int(os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024"))
        self.invoked_function_arn = f"arn:aws:lambda:local:000000000000:function:{self.function_name}"
        self.log_group_name = f"/aws/lambda/{self.function_name}"
        self.log_stream_name = time.strftime("%Y/%m/%d/[$LATEST]local")
        self.handler = handler
        timeout_s = float(os.environ.get("AWS_LAMBDA_FUNCTION_TIMEOUT", "29"))
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before the function's timeout."""
        return max(0, int((self._deadline - time.monotonic()) * 1000))


@contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send everything the function prints (Python or R, fd 1) to stderr.

    In Lambda a function's prints go to its logs, never into the response;
    here stdout carries the summary (or the payload), so it must stay clean.
    """
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def error_payload(exc: BaseException, request_id: str, error_type: str | None = None,
                  message: str | None = None) -> dict[str, Any]:
    """The runtime's payload for an unhandled exception (awslambdaric's shape)."""
    frames = traceback.extract_tb(exc.__traceback__)
    # The frames of this script are the runtime's, which Lambda leaves out too.
    frames = [f for f in frames if f.filename != "<stdin>"]
    return {
        "errorMessage": str(exc) if message is None else message,
        "errorType": error_type or type(exc).__name__,
        "requestId": request_id,
        "stackTrace": traceback.format_list(frames),
    }


def load(handler: str) -> Callable[[Any, Any], Any]:
    """Import ``module.function`` like the runtime does."""
    module_name, _, function_name = handler.rpartition(".")
    module = importlib.import_module(module_name)
    return getattr(module, function_name)


def invoke(root: str, event_path: str, handler_name: str) -> tuple[dict[str, Any], str]:
    """Run the handler on the event: the CLI's summary and the payload text."""
    summary: dict[str, Any] = {"StatusCode": 200, "ExecutedVersion": "$LATEST"}
    failed: dict[str, Any] = {"StatusCode": 200, "FunctionError": "Unhandled", "ExecutedVersion": "$LATEST"}
    context = LambdaContext(handler_name)
    with open(event_path, "rb") as fh:
        raw = fh.read()
    try:
        event = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        # The service refuses such a payload before any code runs.
        print(
            "An error occurred (InvalidRequestContentException) when calling the Invoke operation: "
            f"Could not parse request body into json: {exc}",
            file=sys.stderr,
        )
        sys.exit(EXIT_USAGE)
    sys.path.insert(0, root)
    with stdout_to_stderr():
        module, _, name = handler_name.rpartition(".")
        try:
            function = load(handler_name)
        except AttributeError:  # the errors Lambda reports for a handler it cannot load
            payload = error_payload(Exception(), context.aws_request_id, "Runtime.HandlerNotFound",
                                    f"Handler '{name}' missing on module '{module}'")
            return failed, json.dumps(payload)
        except Exception as exc:
            payload = error_payload(exc, context.aws_request_id, "Runtime.ImportModuleError",
                                    f"Unable to import module '{module}': {exc}")
            payload["stackTrace"] = []
            return failed, json.dumps(payload)
        try:
            result = function(event, context)
        except Exception as exc:
            return failed, json.dumps(error_payload(exc, context.aws_request_id))
    try:
        return summary, json.dumps(result)
    except (TypeError, ValueError) as exc:
        payload = error_payload(exc, context.aws_request_id, "Runtime.MarshalError",
                                f"Unable to marshal response: {exc}")
        payload["stackTrace"] = []
        return failed, json.dumps(payload)


def main() -> int:
    """Invoke, then write the summary and the payload where the CLI would."""
    root, event_path, out_path, handler_name = sys.argv[1:5]
    summary, payload = invoke(root, event_path, handler_name)
    text = json.dumps(summary, indent=4)
    if out_path:
        with open(out_path, "w", encoding="utf-8") as fh:
            fh.write(payload)
        print(text)
    else:
        print(text, file=sys.stderr)
        print(payload)
    return EXIT_FUNCTION_ERROR if "FunctionError" in summary else EXIT_OK


sys.exit(main())
PY
