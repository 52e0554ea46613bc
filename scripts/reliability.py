"""Regenerate RELIABILITY.md: run the bad-input, fuzz, fault and concurrency tests, then the soak bench.

    .venv/bin/python scripts/reliability.py [--duration 120] [--fuzz-examples 500] [--out RELIABILITY.md]

The tests run under pytest with a JUnit XML report (pytest's own, no
plugin); each test records what it observed (status and message) as a
property, which becomes the "observed" column. The soak figures come from
bench/bench_soak.py's JSON. Exit status is non-zero when a test or a soak
check fails; the report is written either way, failures marked.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
TESTS = ["tests/test_corpus.py", "tests/test_fuzz.py", "tests/test_faults.py", "tests/test_concurrency.py"]

FIXED = [
    ("events", "A hand-made API Gateway event whose headers, requestContext or query members were not objects "
     "(or a multi-value query value not an array) was a 500; now a 400 naming the member."),
    ("events", "A non-string requestContext.stage in an HTTP API 2.0 event was a 500 (found by hypothesis); now ignored."),
    ("store", "/tmp full only for the small cache record: the verified model failed with 503 and a half-written "
     ".json temp stayed in /tmp; now the model is served and the temp removed."),
    ("app/store", "A corrupt .rds stayed cached with a valid record, so re-uploading a good file never helped "
     "(even a new process reused it); now a file R cannot load is evicted and the fix is picked up by the next request."),
    ("app/store", "Every swapped-out version's file stayed in /tmp; in a long-lived container versions filled it "
     "(the tmpfs case could not recover). Now the previous version's file is evicted after a swap."),
]


OPEN = [
    "Slow S3 with the production client (read timeout 10 s, 3 attempts) can hold one request about 30 s, past "
    "API Gateway's 29 s: a fresh container's caller would get the gateway's 504 rather than the 503, and a serving "
    "container's pointer refresh runs inline in a request, so that request stalls although a good model is loaded. "
    "The fault tests use a 0.5 s, one-attempt client; a shorter timeout for the pointer read would close this.",
    "No back-off after a failed first load: during an S3 outage every request retries S3 (one at a time, on the "
    "load lock).",
    "Tolerated on purpose (200): extra fields are ignored (batch CSVs carry id and outcome columns; rejecting them "
    "would break those callers); gre 1e308 and -0 are finite numbers and are scored.",
    "An integer of more than 4,300 digits handed to App.handle from Python (not JSON) is a 500 in "
    "prototype.parse_level (str(int) limit); Lambda's runtime and the HTTP body parser refuse such numbers first "
    "(corpus case gre-5000-digit-integer).",
]


def run_tests(fuzz_examples: int, xml_path: Path) -> int:
    """pytest with a JUnit report; its exit code."""
    env = {**os.environ, "FUZZ_EXAMPLES": str(fuzz_examples)}
    cmd = [PY, "-m", "pytest", "-q", "-p", "no:logging", "-o", "junit_family=xunit1", f"--junitxml={xml_path}", *TESTS]
    return subprocess.run(cmd, cwd=ROOT, env=env, timeout=1800).returncode


def results(xml_path: Path) -> dict[str, dict[str, Any]]:
    """test id (function[param]) -> outcome, seconds, observed."""
    out: dict[str, dict[str, Any]] = {}
    for case in ET.parse(xml_path).getroot().iter("testcase"):
        outcome = "passed"
        detail = ""
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome = {"failure": "FAILED", "error": "ERROR", "skipped": "skipped"}[tag]
                detail = (node.get("message") or "").splitlines()[0][:160] if node.get("message") else ""
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        out[case.get("name", "")] = {
            "outcome": outcome,
            "seconds": float(case.get("time") or 0),
            "observed": props.get("observed", ""),
            "detail": detail,
        }
    return out


def cell(text: str) -> str:
    """Safe inside a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ").strip()


def mark(result: dict[str, Any] | None) -> str:
    if result is None:
        return "—"
    if result["outcome"] == "passed":
        return "pass"
    return f"**{result['outcome']}** {cell(result['detail'])}"


def observed_status(result: dict[str, Any] | None) -> str:
    if result is None:
        return "—"
    status = (result["observed"] or "").split(" ", 1)[0]
    return f"{status} {mark(result)}" if status else mark(result)


def corpus_section(res: dict[str, dict[str, Any]]) -> list[str]:
    cases = [json.loads(p.read_text()) for p in sorted((ROOT / "tests" / "corpus").glob("*.json"))]
    bad = sum(c["expect"]["status"] >= 400 for c in cases)
    lines = [
        "## Bad input",
        "",
        f"{len(cases)} requests from `tests/corpus/*.json` ({bad} malformed, {len(cases) - bad} tolerated on purpose), "
        "each sent as a direct invocation (where the body is a JSON document Lambda's runtime could hand over), "
        "as an API Gateway REST event in-process, and over real HTTP to `python -m rlambda.local`. "
        "Every answer must be the expected status with a message containing the expected words, never a 5xx; "
        "after each, a valid request must get the right answer. Cells: observed status and result.",
        "",
        "| case | category | what is sent | expected | direct | API Gateway event | HTTP (local server) | message (event) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in cases:
        cid = c["id"]
        direct = res.get(f"test_direct_invocation[{cid}]")
        event = res.get(f"test_api_gateway_event[{cid}]")
        http = res.get(f"test_over_http[{cid}]")
        expected = str(c["expect"]["status"])
        if c["expect"].get("http", {}).get("status", c["expect"]["status"]) != c["expect"]["status"]:
            expected += f" (HTTP {c['expect']['http']['status']})"
        message = (event or {}).get("observed", "").split(" ", 1)[-1]
        lines.append(f"| `{cid}` | {c['category']} | {cell(c['about'])} | {expected} | {observed_status(direct)} | "
                     f"{observed_status(event)} | {observed_status(http)} | {cell(message[:110])} |")
    return lines


def soak_section(soak: dict[str, Any] | None, note: str) -> list[str]:
    lines = ["## Load and soak", ""]
    if soak is None:
        return lines + [f"Not run: {note}", ""]
    lines += [
        f"`bench/bench_soak.py`: `rlambda.local` (one worker) under wrk, {soak['connections']} connections, "
        f"{soak['duration_s']} s after a warm-up, mixed valid and invalid requests (`bench/soak.lua`: single rows, "
        "10-row batches, GET query, ping, bad fields, bad JSON, empty batch, XML (415), unknown path, DELETE).",
        "",
        "| figure | value |",
        "|---|---|",
        f"| requests | {soak['requests']:,} |",
        f"| predictions | {soak['predictions']:,} |",
        f"| requests per second | {soak['rps']:,} |",
        f"| latency p50 / p99 / p99.9 / max | {soak['p50_ms']:.2f} / {soak['p99_ms']:.2f} / {soak['p999_ms']:.2f} / {soak['max_ms']:.2f} ms |",
        f"| statuses | {', '.join(f'{k}: {v:,}' for k, v in soak['statuses'].items())} |",
        f"| unexpected statuses / wrong bodies / socket errors | {soak['unexpected']} / {soak['bad_body']} / {sum(soak['socket_errors'].values())} |",
        f"| RSS after warm-up -> end (max) | {soak['rss_start_mb']} -> {soak['rss_end_mb']} MB ({soak['rss_max_mb']} MB) |",
        f"| RSS growth (bound) | {soak['rss_growth_mb']} MB ({soak['rss_bound_mb']} MB) |",
        "",
        "| check | result |",
        "|---|---|",
    ]
    lines += [f"| {cell(k)} | {'pass' if v else '**FAILED**'} |" for k, v in soak["checks"].items()]
    return lines + [""]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=120, help="soak seconds (default 120; 0 skips the soak)")
    parser.add_argument("--fuzz-examples", type=int, default=500, help="hypothesis examples per property (default 500)")
    parser.add_argument("--out", type=Path, default=ROOT / "RELIABILITY.md")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="reliability-"))
    started = time.monotonic()
    code = run_tests(args.fuzz_examples, work / "junit.xml")
    res = results(work / "junit.xml")
    test_s = time.monotonic() - started
    soak, note = None, "--duration 0"
    if args.duration > 0:
        done = subprocess.run([PY, "bench/bench_soak.py", "--duration", str(args.duration), "--out", str(work / "soak.json")],
                              cwd=ROOT, timeout=args.duration + 300)
        soak = json.loads((work / "soak.json").read_text()) if (work / "soak.json").exists() else None
        note = f"bench_soak.py exited {done.returncode} without results"
    failed = [n for n, r in res.items() if r["outcome"] in ("FAILED", "ERROR")]
    ok = code == 0 and not failed and (soak is None or soak["passed"])

    versions = subprocess.run(["R", "--version"], capture_output=True, text=True).stdout.splitlines()[:1]
    lines = [
        "# Reliability",
        "",
        "What the product survives, measured. Regenerate with `make reliability` "
        "(`.venv/bin/python scripts/reliability.py [--duration 120] [--fuzz-examples 500]`); do not edit by hand.",
        "",
        f"Generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {os.cpu_count()} cores, "
        f"Python {sys.version.split()[0]}, {versions[0] if versions else 'R ?'}. "
        f"Tests: {sum(r['outcome'] == 'passed' for r in res.values())} passed, {len(failed)} failed, "
        f"{sum(r['outcome'] == 'skipped' for r in res.values())} skipped in {test_s:.0f} s. "
        f"Overall: **{'PASS' if ok else 'FAIL'}**.",
        "",
    ]
    lines += corpus_section(res) + [""]
    lines += ["## Property-based fuzzing", "",
              f"`tests/test_fuzz.py` (hypothesis, {args.fuzz_examples} examples per property, the real model in R): "
              "HTTP-shaped events always get a well-formed answer (int status, string headers, strict JSON) with a "
              "2xx/4xx status; direct invocations get a result or an `HTTPError` below 500.", "",
              "| property | result | s |", "|---|---|---|"]
    fuzz_names = ["test_rest_events_never_5xx", "test_http_api_events_never_5xx", "test_any_body_bytes_never_5xx",
                  "test_direct_invocation_result_or_4xx", "test_every_field_value_is_scored_or_named"]
    lines += [f"| `{n}` | {mark(res.get(n))} | {res.get(n, {}).get('seconds', 0):.1f} |" for n in fuzz_names] + [""]
    lines += ["## Faults", "",
              "`tests/test_faults.py`: moto's S3 server on 127.0.0.1 behind `tests/faultproxy.py` (switchable delays, "
              "S3 error documents, connections cut after half the body, stop/start listening); /tmp full is a 128 KiB "
              "tmpfs filled by the test. The same App, with no restart, must recover once the fault clears, and no "
              "temporary file may be left in the cache.", "",
              "| fault | fresh container: answer while the fault lasts | then recovers | serving container (versioned folder, new version promoted during the fault) |",
              "|---|---|---|---|"]
    for name in ["missing", "denied", "down", "slow", "throttled", "cut", "corrupt", "tmp-full"]:
        fresh = res.get(f"test_fresh_container_gets_a_clear_5xx_then_recovers[{name}]")
        serving = res.get(f"test_serving_container_keeps_the_last_good_model[{name}]")
        lines.append(f"| {name} | {cell((fresh or {}).get('observed', ''))} | {mark(fresh)} | "
                     f"{cell((serving or {}).get('observed', ''))}; new version served after: {mark(serving)} |")
    for name, label in [("test_sha256_mismatch_is_refused_then_served_once_fixed", "sha256 mismatch"),
                        ("test_tmp_full_only_for_the_sidecar", "/tmp full for the cache record only")]:
        r = res.get(name)
        lines.append(f"| {label} | {cell((r or {}).get('observed', ''))} | {mark(r)} | (see test) |")
    lines += ["", "## Concurrency", "",
              "`tests/test_concurrency.py`: a guard wrapped around every entry into R in `rlambda.rsession` records "
              "entries without R's lock and overlapping threads (and is shown to catch both).", "",
              "| test | result | s |", "|---|---|---|"]
    for n, r in res.items():
        if n.startswith(("test_64", "test_guard")):
            lines.append(f"| `{n}` | {mark(r)} | {r['seconds']:.1f} |")
    lines += [""] + soak_section(soak, note)
    lines += ["## Found and fixed", ""] + [f"- **{where}**: {what}" for where, what in FIXED] + [""]
    lines += ["## Noticed, not fixed", ""] + [f"- {what}" for what in OPEN] + [""]
    if failed:
        lines += ["## Failures", ""] + [f"- `{n}`: {cell(res[n]['detail'])}" for n in failed] + [""]
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out} ({'PASS' if ok else 'FAIL'})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
