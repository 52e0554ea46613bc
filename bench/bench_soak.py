"""Soak: the local server under wrk for a sustained run of mixed valid and invalid requests.

Measures requests per second, latency p50/p99/p99.9, and the server's RSS
(VmRSS from /proc/PID/status) after a warm-up and at the end; checks that
no response had an unexpected status (bench/soak.lua knows the one status
each request type must get), that 200s and errors carry the right bodies,
that RSS grew less than a bound over at least 100,000 predictions (R
objects must not leak through rpy2), and that a valid request is answered
correctly afterwards. All traffic stays on 127.0.0.1; every wait is bounded.

    .venv/bin/python bench/bench_soak.py [--duration 120] [--connections 16] [--rss-bound-mb 10]

Exit status 0 when every check passes. Results: bench/results/soak-*.json
(or --out).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from benchutil import free_port

ROOT = Path(__file__).resolve().parent.parent
LUA = ROOT / "bench" / "soak.lua"
CHECK_BODY = b'{"gre": 640, "gpa": 3.3, "rank": 2}'
MIN_PREDICTIONS = 100_000


def rss_kb(pid: int) -> int:
    """Resident set size of a process, from /proc/PID/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def predict(port: int) -> tuple[int, dict[str, Any]]:
    """One valid POST /predict."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", "/predict", body=CHECK_BODY, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def start_server(model: Path, cache: str) -> tuple[subprocess.Popen[Any], int]:
    """rlambda.local (one worker, access log off) on a free port; waits until it scores (bounded).

    Its stderr goes to a file: every 4xx is logged there, and an unread pipe
    would fill and stall the server mid-run.
    """
    port = free_port()
    log = open(Path(cache) / "server.log", "w+b")
    proc = subprocess.Popen(
        [sys.executable, "-m", "rlambda.local", "--host", "127.0.0.1", "--port", str(port), "--quiet"],
        cwd=ROOT,
        env={**os.environ, "MODEL_URI": str(model), "MODEL_CACHE_DIR": cache},
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"rlambda.local exited with {proc.returncode}: {Path(log.name).read_text()[-2000:]}")
        try:
            if predict(port)[0] == 200:
                return proc, port
        except OSError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("rlambda.local did not answer within 90 s")


def run_wrk(port: int, duration: int, connections: int, threads: int) -> dict[str, Any]:
    """One wrk run with soak.lua; its JSON line, parsed."""
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--timeout", "10s", "--latency",
           "-s", str(LUA), f"http://127.0.0.1:{port}"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    for line in done.stdout.splitlines():
        if line.startswith("SOAK_JSON "):
            return json.loads(line[len("SOAK_JSON "):])
    raise SystemExit(f"wrk gave no result (exit {done.returncode}): {done.stdout[-1500:]} {done.stderr[-1500:]}")


def sample_rss(pid: int, stop: threading.Event, out: list[int], every_s: float = 1.0) -> None:
    """RSS once a second until ``stop`` (the caller bounds the run)."""
    while not stop.wait(every_s):
        try:
            out.append(rss_kb(pid))
        except (OSError, RuntimeError):
            return


def main(argv: list[str] | None = None) -> int:
    """Run the soak and print/write the figures; non-zero exit when a check fails."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=120, help="seconds of measured load (default 120)")
    parser.add_argument("--warmup", type=int, default=10, help="seconds of load before RSS is first read (default 10)")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    # 10 MB over >= 500,000 predictions (the default run) catches a leak of about 20 bytes a prediction;
    # one R vector left alive per request is more than that.
    parser.add_argument("--rss-bound-mb", type=float, default=10.0, help="largest RSS growth allowed (default 10 MB)")
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "admission.rds")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if not 1 <= args.duration <= 3600:
        parser.error("--duration must be 1..3600 seconds")
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (make system)")

    cache = tempfile.mkdtemp(prefix="soak-cache-")
    proc, port = start_server(args.model, cache)
    try:
        status, reference = predict(port)
        assert status == 200
        run_wrk(port, args.warmup, args.connections, args.threads)  # allocator and R heap settle
        rss_start = rss_kb(proc.pid)
        samples: list[int] = []
        stop = threading.Event()
        sampler = threading.Thread(target=sample_rss, args=(proc.pid, stop, samples), daemon=True)
        sampler.start()
        wrk = run_wrk(port, args.duration, args.connections, args.threads)
        stop.set()
        sampler.join(timeout=5)
        rss_end = rss_kb(proc.pid)
        status, after = predict(port)
        alive = proc.poll() is None
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        stderr = Path(cache, "server.log").read_text(errors="replace")
        shutil.rmtree(cache, ignore_errors=True)

    seconds = wrk["duration_us"] / 1e6
    # In flight when wrk stopped: issued but never answered, at most one per connection.
    drift = {s: wrk[f"issued{s}"] - wrk[f"got{s}"] for s in (200, 400, 404, 405, 415)}
    growth_mb = (rss_end - rss_start) / 1024
    checks = {
        "no unexpected status": wrk["unexpected"] == 0,
        "bodies match statuses": wrk["bad_body"] == 0,
        "every status as issued (within in-flight)": all(0 <= d <= args.connections for d in drift.values()),
        "no socket errors": sum(wrk["socket_errors"].values()) == 0,
        f"RSS growth <= {args.rss_bound_mb} MB": growth_mb <= args.rss_bound_mb,
        "valid request answered correctly after the run": status == 200 and after == reference,
        "server alive, no traceback, no ERROR log line": alive and "Traceback" not in stderr
        and '"level": "ERROR"' not in stderr,
    }
    if args.duration >= 60:  # short runs (smoke tests) cannot reach it
        checks[f">= {MIN_PREDICTIONS:,} predictions"] = wrk["predictions"] >= MIN_PREDICTIONS
    result = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "duration_s": round(seconds, 1),
        "connections": args.connections,
        "threads": args.threads,
        "requests": wrk["requests"],
        "predictions": wrk["predictions"],
        "rps": round(wrk["requests"] / seconds, 1),
        "p50_ms": wrk["p50_us"] / 1000,
        "p99_ms": wrk["p99_us"] / 1000,
        "p999_ms": wrk["p999_us"] / 1000,
        "max_ms": wrk["max_us"] / 1000,
        "statuses": {str(s): wrk[f"got{s}"] for s in (200, 400, 404, 405, 415)},
        "unexpected": wrk["unexpected"],
        "bad_body": wrk["bad_body"],
        "socket_errors": wrk["socket_errors"],
        "rss_start_mb": round(rss_start / 1024, 1),
        "rss_end_mb": round(rss_end / 1024, 1),
        "rss_max_mb": round(max(samples + [rss_end]) / 1024, 1),
        "rss_growth_mb": round(growth_mb, 2),
        "rss_bound_mb": args.rss_bound_mb,
        "checks": checks,
        "passed": all(checks.values()),
    }
    out = args.out or ROOT / "bench" / "results" / f"soak-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"soak {result['duration_s']} s, {args.connections} connections: {result['requests']:,} requests "
          f"({result['predictions']:,} predictions), {result['rps']:,} req/s, p50 {result['p50_ms']:.2f} ms, "
          f"p99 {result['p99_ms']:.2f} ms, p99.9 {result['p999_ms']:.2f} ms; RSS {result['rss_start_mb']} -> "
          f"{result['rss_end_mb']} MB (max {result['rss_max_mb']})")
    for name, ok in checks.items():
        print(f"  {'ok  ' if ok else 'FAIL'} {name}")
    print(f"results: {out}")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
