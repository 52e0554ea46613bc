"""Cold start: how R starts, what runs beside it, and the init that fetches the model beside R's start.

Speed is bench/bench_coldstart.py's business; these tests check what the
fast start must keep: R attaches only what serve.R needs, rpy2 runs no
``Rscript`` subprocess, the environment children inherit is untouched, the
library path comes from R_HOME's own etc/ldpaths (Debian's R and the zip's
bundled R), the download beside R's start begins only once R's start
adds no environment variable, and an init whose download fails or stalls still starts and leaves the
first request to report it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT
from rlambda import rsession

# A new process: R started by rsession with rpy2's subprocess helpers made to
# fail, so a start that still needed one would fail here.
START_PROBE = textwrap.dedent("""
    import json, os, subprocess, sys
    sys.path.insert(0, {root!r})
    spawned = []
    def refuse(*args, **kwargs):
        spawned.append(args[0] if args else kwargs.get("args"))
        raise OSError("no subprocess at R's start")
    subprocess.check_output = refuse
    subprocess.Popen = refuse
    before = {{k: os.environ.get(k) for k in ("LD_LIBRARY_PATH", "R_DEFAULT_PACKAGES", "R_ENABLE_JIT")}}
    from rlambda import rsession
    rsession.start()
    import rpy2.rinterface as ri
    after = {{k: os.environ.get(k) for k in before}}
    print(json.dumps({{
        "spawned": [str(s) for s in spawned],
        "search": list(ri.evalr("search()")),
        "jit": int(ri.evalr("compiler::enableJIT(-1)")[0]),
        "env_before": before, "env_after": after,
        "r_default_packages_in_r": str(ri.evalr('Sys.getenv("R_DEFAULT_PACKAGES")')[0]),
    }}))
""")


def probe(env: dict[str, str] | None = None) -> dict[str, Any]:
    run = subprocess.run([sys.executable, "-c", START_PROBE.format(root=str(ROOT))], capture_output=True, text=True,
                         env={**os.environ, **(env or {})}, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_r_starts_without_a_subprocess_with_stats_and_utils_only() -> None:
    # GIVEN a new process WHEN rsession starts R
    seen = probe()
    # THEN no Rscript ran, only stats and utils are attached, the JIT is off
    assert seen["spawned"] == []
    assert seen["search"] == [".GlobalEnv", "package:stats", "package:utils", "Autoloads", "package:base"]
    assert seen["jit"] == 0
    # and children inherit the environment as it was (no R start-up settings leak into an Rscript)
    assert seen["env_after"] == seen["env_before"]
    assert seen["r_default_packages_in_r"] == ""


def test_the_environment_chooses_r_start_up_settings() -> None:
    # GIVEN R_DEFAULT_PACKAGES and R_ENABLE_JIT set by whoever runs us
    seen = probe({"R_DEFAULT_PACKAGES": "datasets,utils,grDevices,graphics,stats,methods", "R_ENABLE_JIT": "3"})
    # THEN they win
    assert "package:methods" in seen["search"] and "package:graphics" in seen["search"]
    assert seen["jit"] == 3
    assert seen["spawned"] == []


def test_library_path_is_what_debians_r_front_end_sets() -> None:
    # GIVEN the machine's R WHEN its own front end answers what rpy2 would ask it at import
    home = subprocess.run(["R", "RHOME"], capture_output=True, text=True, check=True).stdout.strip()
    env = {k: v for k, v in os.environ.items() if k not in ("R_LD_LIBRARY_PATH", "LD_LIBRARY_PATH")}
    front = subprocess.run([f"{home}/bin/Rscript", "-e", 'cat(Sys.getenv("LD_LIBRARY_PATH"))'],
                           capture_output=True, text=True, check=True, env=env).stdout.strip().split(":")
    ours = rsession._ld_library_path(home).split(":")
    # THEN ours is what it starts with (Debian adds Java's library folder after it)
    assert ours and front[: len(ours)] == ours
    assert ours[0] == f"{home}/lib"


def test_library_path_of_a_bundled_r_is_relative_to_its_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN an R_HOME laid out as the zip's (scripts/package.sh writes this ldpaths)
    home = tmp_path / "task" / "R"
    (home / "etc").mkdir(parents=True)
    (home / "etc" / "ldpaths").write_text(": ${R_LD_LIBRARY_PATH=${R_HOME}/lib:${R_HOME}/../lib}\n"
                                          "export LD_LIBRARY_PATH\n")
    monkeypatch.delenv("R_LD_LIBRARY_PATH", raising=False)
    # THEN the path is read from it, with R_HOME filled in
    assert rsession._ld_library_path(str(home)) == f"{home}/lib:{home}/../lib"
    # and without an ldpaths file, R_HOME/lib
    assert rsession._ld_library_path(str(tmp_path)) == f"{tmp_path}/lib"


def test_served_answers_equal_r_with_its_usual_packages(model_path: Path, make_app: Any) -> None:
    """R started with stats and utils only answers as an Rscript with R's default packages."""
    # GIVEN the handler's R (started by rsession) and rows covering every rank
    app = make_app()
    rows = [{"gre": g, "gpa": p, "rank": r} for g, p, r in ((800, 4, 1), (300, 2.1, 4), (560, 3.3, 2), (640, 3.9, 3))]
    served = [row["probability"] for row in app.score({"instances": rows})["predictions"]]
    # WHEN R itself, with its default packages, predicts them
    script = (f'fit <- readRDS("{model_path}"); '
              'd <- data.frame(gre = c(800, 300, 560, 640), gpa = c(4, 2.1, 3.3, 3.9), '
              'rank = factor(c(1, 4, 2, 3), levels = 1:4)); '
              'cat(sprintf("%.17g", predict(fit, newdata = d, type = "response")), sep = "\\n")')
    expected = [float(x) for x in subprocess.run(["Rscript", "-e", script], capture_output=True, text=True,
                                                  check=True).stdout.split()]
    # THEN the numbers are the same
    assert served == pytest.approx(expected, abs=1e-12, rel=0)


def test_a_local_model_never_imports_boto3_or_robjects(model_path: Path, tmp_path: Path) -> None:
    """What the first answer does not need is not imported: boto3 only for s3:// models."""
    # GIVEN a new process serving a local model file WHEN Lambda's init runs and one request is answered
    code = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(ROOT)!r})
        import handler
        out = handler.lambda_handler({{"gre": 800, "gpa": 4, "rank": 1}}, None)
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("boto3", "botocore", "s3transfer")
                        or m.startswith("rpy2.robjects"))
        print(json.dumps({{"result": out["result"], "loaded": loaded, "model_at_init": handler.app._model is not None}}))
    """)
    env = {**os.environ, "MODEL_URI": str(model_path), "MODEL_CACHE_DIR": str(tmp_path)}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    # THEN the model was read at init, the answer is right, and neither boto3 nor robjects was imported
    assert seen["result"] is True and seen["model_at_init"] is True
    assert seen["loaded"] == []


HELPER_PROBE = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {root!r})
    import importlib
    from rlambda import coldstart, rsession
    rsession._find_r_home()
    rsession._libr()
    for name in coldstart.EXTENSIONS:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    before = set(sys.modules)
    rsession.prepare()
    done = {{}}
    coldstart._import(done)
    assert "app" in done, done
    loaded = sorted(m for m in set(sys.modules) - before
                    if str(getattr(sys.modules[m], "__file__", "") or "").endswith(".so"))
    print(json.dumps(loaded))
""")


def test_the_threads_beside_r_start_import_pure_python_only() -> None:
    """What is imported beside R's start (rpy2, the service) is pure Python: the C extensions initialise before."""
    # GIVEN a new process, as Lambda's init prepares it (rpy2's cffi module, then coldstart.EXTENSIONS)
    run = subprocess.run([sys.executable, "-c", HELPER_PROBE.format(root=str(ROOT))], capture_output=True,
                         text=True, timeout=120, env={**os.environ, "MODEL_URI": "/nonexistent.rds"})
    assert run.returncode == 0, run.stderr[-3000:]
    # WHEN rpy2's import and the helper thread's work are done THEN they loaded no extension module (.so)
    assert json.loads(run.stdout.strip().splitlines()[-1]) == []


# A new process: R started by rsession (R first, rpy2 imported beside it and
# then taking it over) or by rpy2's own initr_simple, with the same start-up
# settings; what rpy2 set up is read back.
STATE_PROBE = textwrap.dedent("""
    import json, os, sys
    sys.path.insert(0, {root!r})
    from rlambda import rsession
    if sys.argv[1] == "rsession":
        rsession.start()
        import rpy2.rinterface as ri
    else:
        os.environ.update(TZ="UTC", R_DEFAULT_PACKAGES=rsession.DEFAULT_PACKAGES, R_ENABLE_JIT=rsession.JIT_LEVEL)
        rsession._find_r_home()
        ri = rsession.prepare()
        ri.initr_simple()
    from rpy2.rinterface_lib import callbacks, embedded, ffi_proxy, openrlib
    lib, ffi = openrlib.rlib, openrlib.ffi
    source = callbacks if ffi_proxy.get_ffi_mode(openrlib._rinterface_cffi) == ffi_proxy.InterfaceType.ABI else lib
    def address(pointer):
        return int(ffi.cast("uintptr_t", pointer))
    printed = []
    callbacks.consolewrite_print = printed.append
    ri.evalr('cat("from R\\n")')
    twice = ri.rternalize(lambda x: ri.IntSexpVector([x[0] * 2]))
    state = {{
        "ready": embedded.isready(), "interactive": lib.R_Interactive, "signal_handlers": lib.R_SignalHandlers,
        "c_stack_limit": lib.R_CStackLimit, "output_file_null": lib.R_Outputfile == ffi.NULL,
        "console_file_null": lib.R_Consolefile == ffi.NULL,
        "callbacks": {{symbol: address(getattr(lib, symbol)) == (0 if name is None else address(getattr(source, name)))
                      for symbol, name in embedded.CALLBACK_INIT_PAIRS}},
        "printed": "".join(printed),
        "python_from_r": int(twice(ri.IntSexpVector([21]))[0]),
        "na": [ri.NA_Character is not None, int(ri.NA_Integer), ri.NA_Logical is ri.NA],
        "search": list(ri.evalr("search()")),
        "tempdir": str(ri.evalr("tempdir()")[0]),
    }}
    print(json.dumps(state))
""")


def check_same_start(states: dict[str, dict[str, Any]]) -> None:
    """rsession's start and rpy2's own (STATE_PROBE's two ways) left rpy2 set up alike, and as rpy2 means to."""
    assert states["rsession"] == states["rpy2"]
    ours = states["rsession"]
    assert ours["ready"] is True and all(ours["callbacks"].values()), ours
    assert ours["printed"] == "from R\n" and ours["python_from_r"] == 42
    assert ours["c_stack_limit"] == 2**64 - 1 and ours["signal_handlers"] == 0


@pytest.mark.parametrize("cffi_mode", ["", "ABI"])
def test_r_started_before_rpy2_is_imported_is_set_up_as_rpy2s_own_start(cffi_mode: str) -> None:
    """rsession starts R from rpy2's cffi module and lets rpy2 take it over: the state equals rpy2's own start.

    In rpy2's API mode (compiled against libR, the host's) and its ABI mode (libR opened at run time, the zip's).
    """
    states = {}
    for how in ("rsession", "rpy2"):
        # GIVEN a new process WHEN R is started one way or the other
        run = subprocess.run([sys.executable, "-c", STATE_PROBE.format(root=str(ROOT)), how], capture_output=True,
                             text=True, timeout=120, env={**os.environ, "RPY2_CFFI_MODE": cffi_mode})
        assert run.returncode == 0, run.stderr[-3000:]
        states[how] = json.loads(run.stdout.strip().splitlines()[-1])
        # AND the process has ended: rpy2's exit handler ended R, which removed its session folder
        assert not os.path.exists(states[how].pop("tempdir"))
    # THEN what rpy2 sets up is the same, and it is what rpy2 means to set up: its console callbacks,
    # Python callable from R, no C stack check
    check_same_start(states)


# A new process: Lambda's init (App.warm_up), watching the C environment
# (glibc's environ array, the one getenv reads): when the download is begun,
# when it starts, and once the model is loaded.
ORDER_PROBE = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {root!r})
    import _cffi_backend as B  # rpy2's, and the zip's (ctypes needs libffi, which the sandbox has not)
    from rlambda import rsession
    from rlambda.app import App
    from rlambda.settings import Settings
    from rlambda.store import Store
    uintptr = B.new_primitive_type("uintptr_t")
    char_pp = B.new_pointer_type(B.new_pointer_type(B.new_primitive_type("char")))
    libc = B.load_library(None)
    def snapshot():
        env, names, i = libc.read_variable(char_pp, "environ"), [], 0
        while int(B.cast(uintptr, env[i])):
            names.append(B.string(env[i]).split(b"=", 1)[0].decode())
            i += 1
        return {{"array": int(B.cast(uintptr, env)), "names": names}}
    seen = {{}}
    begin, fetch = App.prefetch, Store.fetch
    def prefetch(self):
        seen.setdefault("begun", {{"r_started": rsession.started(), **snapshot()}})
        return begin(self)
    def fetched(self, uri):
        seen["fetch"] = snapshot()
        return fetch(self, uri)
    App.prefetch, Store.fetch = prefetch, fetched
    assert not rsession.started()
    app = App(Settings(model_uri={model!r}, cache_dir={cache!r}))
    app.warm_up()
    seen["end"] = snapshot()
    seen["model"] = app._model is not None
    seen["tempdir"] = str(rsession._ri.evalr("tempdir()")[0])
    seen["session_tmpdir"] = str(rsession._ri.evalr('Sys.getenv("R_SESSION_TMPDIR")')[0])
    print(json.dumps(seen))
""")


def test_the_download_runs_beside_r_start_once_r_has_set_its_environment(model_path: Path, tmp_path: Path) -> None:
    """The download (name resolution, TLS) begins while R starts, but only once R's start adds no variable.

    glibc's setenv moves the environment array as it grows: a getenv on the
    download's thread at that moment read freed memory (a crash seen in CI).
    """
    # GIVEN a new process in which R has not started WHEN Lambda's init (warm_up) runs
    code = ORDER_PROBE.format(root=str(ROOT), model=str(model_path), cache=str(tmp_path))
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    # THEN the download was begun during R's start, after R's Renviron was applied
    assert seen["begun"]["r_started"] is False
    assert {"R_PLATFORM", "R_LIBS_SITE", "R_SESSION_TMPDIR"} <= set(seen["begun"]["names"])
    # AND from then until the model was loaded the environment array never moved
    assert seen["begun"]["array"] == seen["fetch"]["array"] == seen["end"]["array"]
    assert seen["model"] is True
    # AND R's session folder is its own new one, named in R_SESSION_TMPDIR as R always does
    assert os.path.basename(seen["tempdir"]).startswith("Rtmp")
    assert seen["session_tmpdir"] == seen["tempdir"]


HALF_STARTED_PROBE = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {root!r})
    from rlambda import rsession
    def broken():
        raise rsession.RUnavailable("rpy2 is broken here")
    rsession.prepare = broken
    errors = []
    for attempt in range(2):
        try:
            rsession.start()
        except rsession.RUnavailable as exc:
            errors.append(str(exc))
    print(json.dumps({{"errors": errors, "started": rsession.started()}}))
""")


def test_an_r_that_rpy2_cannot_take_over_is_reported_and_not_started_twice() -> None:
    """R starts once per process: if rpy2 fails after R started, later starts report it without starting R again."""
    # GIVEN a new process whose rpy2 import fails while R starts WHEN R is asked to start twice
    run = subprocess.run([sys.executable, "-c", HALF_STARTED_PROBE.format(root=str(ROOT))], capture_output=True,
                         text=True, timeout=120)
    # THEN the process lives on (a second Rf_initialize_R would not) and both starts said why R is unavailable
    assert run.returncode == 0, run.stderr[-3000:]
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    assert seen["started"] is False
    assert seen["errors"][0] == "rpy2 is broken here"
    assert "rpy2 could not take it over" in seen["errors"][1]
