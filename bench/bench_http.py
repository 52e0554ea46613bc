"""HTTP throughput and latency: rlambda's local server against a plumber API, with wrk.

Both serve the same .rds and answer POST /predict with the same JSON body;
plumber scores with predict(type = "response") (bench/plumber_api.R). Each is
measured at 1 and 4 connections (keep-alive, as wrk does), and plumber also
with a new connection per request, because on a keep-alive connection each
plumber answer takes about 40 ms longer (httpuv writes headers and body
separately; Nagle meets the client's delayed ACK), which alone would flatter
the ratio. All traffic stays on 127.0.0.1; every run is bounded.

    .venv/bin/python bench/bench_http.py [--duration 5] [--workers 1,2]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from benchutil import free_port

ROOT = Path(__file__).resolve().parent.parent
BODY = '{"gre":800,"gpa":4,"rank":1}'
LUA = f"""wrk.method = "POST"
wrk.body = '{BODY}'
wrk.headers["Content-Type"] = "application/json"
"""
# Issue 13's targets, at 4 connections with 2 workers (make serve): against
# plumber as wrk sees it (keep-alive) and against plumber with a new
# connection per request (without its Nagle stall).
TARGETS = {"plumber": 30.0, "plumber, new connection per request": 5.0}
TARGET_P99_MS = 5.0


@dataclass
class Run:
    """One wrk run."""

    server: str
    connections: int
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int


def post(port: int, timeout: float = 5.0) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/predict", body=BODY, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def wait_ready(port: int, proc: subprocess.Popen[Any], what: str, limit_s: float = 90.0) -> dict[str, Any]:
    """Poll POST /predict until it answers 200 (bounded)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode} before answering")
        try:
            status, doc = post(port, timeout=2)
            if status == 200:
                return doc
        except (OSError, ValueError, http.client.HTTPException):
            pass
        time.sleep(0.2)
    raise SystemExit(f"{what} did not answer within {limit_s:.0f} s")


def to_ms(text: str) -> float:
    """wrk's "512.00us" / "1.42ms" / "1.00s" / "2.00m" in milliseconds (NaN if unreadable)."""
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if m is None:
        return float("nan")
    return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[m.group(2)]


def _field(pattern: str, out: str) -> str:
    m = re.search(pattern, out)
    if m is None:
        raise SystemExit(f"cannot read {pattern!r} in wrk's output:\n{out}")
    return m.group(1)


def wrk(port: int, connections: int, duration: int, script: Path, extra: list[str]) -> dict[str, Any]:
    cmd = ["wrk", f"-t{min(connections, 2)}", f"-c{connections}", f"-d{duration}s", "--latency",
           "--timeout", "5s", "-s", str(script), *extra, f"http://127.0.0.1:{port}/predict"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30, check=True).stdout
    rps = float(_field(r"Requests/sec:\s+([\d.]+)", out))
    p50 = to_ms(_field(r"50%\s+(\S+)", out))
    p99 = to_ms(_field(r"99%\s+(\S+)", out))
    total = int(_field(r"(\d+) requests in", out))
    if p50 != p50 or p99 != p99:  # NaN: show what wrk said rather than guess
        print(out, flush=True)
    errors = 0
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        errors += int(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        errors += sum(int(g) for g in m.groups())
    return {"rps": rps, "p50_ms": p50, "p99_ms": p99, "requests": total, "errors": errors}


def measure(name: str, port: int, conns: list[int], duration: int, script: Path, extra: list[str] | None = None) -> list[Run]:
    runs = []
    # Warm-up: R's JIT, plumber's first-request costs, the kernel's socket paths.
    wrk(port, 1, 1, script, extra or [])
    for c in conns:
        print(f"  {name}: {c} connection(s), {duration} s ...", flush=True)
        r = wrk(port, c, duration, script, extra or [])
        run = Run(name, c, **r)
        print(f"    {run.rps:9.0f} req/s  p50 {run.p50_ms:7.2f} ms  p99 {run.p99_ms:7.2f} ms  errors {run.errors}", flush=True)
        runs.append(run)
    return runs


def stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT if proc.args[0] == sys.executable else signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run (default 5)")
    parser.add_argument("--connections", default="1,4", help="connection counts (default 1,4)")
    parser.add_argument("--workers", default="1,2", help="rlambda.local --workers values to measure (default 1,2)")
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "admission.rds")
    parser.add_argument("--also", default="", metavar="MODULE",
                        help="another server module measured in the same run with --workers 2 (e.g. the previous "
                             "rlambda.local saved as rlambda/local_previous.py: git show <rev>:rlambda/local.py)")
    args = parser.parse_args()
    conns = [int(c) for c in args.connections.split(",")]
    for tool in ("wrk", "Rscript"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is not installed (make system)")
    if not args.model.exists():
        raise SystemExit(f"{args.model} is missing (make model)")

    # Other work on the machine skews every figure here: say how busy it was.
    load_before = os.getloadavg()[0]
    print(f"cpus {os.cpu_count()}, 1-minute load average {load_before:.2f}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench-http-"))
    script = tmp / "post.lua"
    script.write_text(LUA)
    runs: list[Run] = []
    procs: list[subprocess.Popen[Any]] = []
    try:
        print(f"plumber: starting bench/plumber_api.R on {args.model.name} ...", flush=True)
        pport = free_port()
        plumber = subprocess.Popen(["Rscript", str(ROOT / "bench" / "plumber_api.R"), str(args.model), str(pport)],
                                   cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(plumber)
        ref = wait_ready(pport, plumber, "plumber")
        runs += measure("plumber", pport, conns, args.duration, script)
        runs += measure("plumber, new connection per request", pport, conns, args.duration, script,
                        ["-H", "Connection: close"])
        stop(plumber)

        servers = [("rlambda.local", int(w)) for w in args.workers.split(",")]
        if args.also:
            servers.append((args.also, 2))
        for module, workers in servers:
            name = f"{module} --workers {workers}"
            print(f"{name}: starting ...", flush=True)
            port = free_port()
            ours = subprocess.Popen(
                [sys.executable, "-m", module, "--host", "127.0.0.1", "--port", str(port),
                 "--workers", str(workers)],
                cwd=ROOT, env={**os.environ, "MODEL_URI": str(args.model.resolve()), "MODEL_CACHE_DIR": str(tmp)},
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,  # the access log costs what it costs
            )
            procs.append(ours)
            doc = wait_ready(port, ours, name)
            # Same model, same answer (plumber rounds to 4 digits in its JSON).
            if abs(doc["probability"] - ref["probability"]) > 1e-4 or doc["result"] != ref["result"]:
                raise SystemExit(f"the servers disagree: {doc} vs {ref}")
            runs += measure(name, port, conns, args.duration, script)
            runs += measure(f"{name}, new connection per request", port, conns, args.duration, script,
                            ["-H", "Connection: close"])
            stop(ours)
    finally:
        for p in procs:
            stop(p)
        shutil.rmtree(tmp, ignore_errors=True)

    load_after = os.getloadavg()[0]
    print(f"\n1-minute load average: {load_before:.2f} before, {load_after:.2f} after")
    by = {(r.server, r.connections): r for r in runs}
    print("\nserver                                conns     req/s   p50 ms   p99 ms  errors")
    for r in runs:
        print(f"{r.server:<37} {r.connections:>5} {r.rps:>9.0f} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f} {r.errors:>7}")
    print()
    verdicts = []
    for r in runs:
        if not r.server.startswith("rlambda"):
            continue
        for base, target in TARGETS.items():
            ratio = r.rps / by[(base, r.connections)].rps
            print(f"{r.server}, {r.connections} conn: {ratio:6.1f}x {base}")
            if r.connections == 4 and r.server == "rlambda.local --workers 2":
                verdicts.append((f"{r.server} >= {target:.0f}x {base} at 4 connections", ratio >= target))
        if r.connections == 4 and r.server == "rlambda.local --workers 2":
            verdicts.append((f"{r.server} p99 < {TARGET_P99_MS:.0f} ms at 4 connections", r.p99_ms < TARGET_P99_MS))
        if r.errors:
            verdicts.append((f"{r.server} without errors at {r.connections} connections", False))
    print()
    for text, ok in verdicts:
        print(f"{'PASS' if ok else 'MISS'}  {text}")
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    path = out / f"http-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"duration_s": args.duration, "runs": [asdict(r) for r in runs],
                                "cpus": os.cpu_count(),
                                "load_average": [load_before, load_after]}, indent=2))
    print(f"\nresults: {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
