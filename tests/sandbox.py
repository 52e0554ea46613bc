"""Run an unpacked deployment package the way AWS Lambda runs it, in bubblewrap.

The sandbox is built from an empty root, not from the host's: the task root
is mounted read-only at /var/task, a host directory is the only writable place
(/tmp), the interpreter is mounted where Lambda keeps its own (/var/lang; a
distribution's Python with prefix /usr stays in /usr instead), and
boto3 (which every Lambda Python runtime provides, so the package does not
ship it) and Lambda's runtime interface client awslambdaric live in
/var/runtime. The system R is hidden (/usr/lib/R, /usr/share/R, /etc/R,
/usr/local; /usr/bin/R and Rscript are no programs there), and so is every shared library of the host that a
Lambda runtime would not have: /usr/lib/x86_64-linux-gnu shows only glibc and
what the Python runtime itself needs (its interpreter, the stdlib extension
modules boto3 imports, /bin/sh). A package that forgot libgfortran or an R
package therefore fails here as it would on Lambda.

The interpreter runs with ``-S`` (no site-packages at all), so rpy2 and
_cffi_backend can only come from the package.

The interpreter is the one the package targets (``find_python("3.12")``:
pyenv or PATH, never a hard-coded path) or, by default, the venv's base one.

Reusable: ``Sandbox.create(task_root, tmp, env, python=...)`` then
``invoke(events)``, ``run_python(...)``, ``run(argv)`` or ``command(argv)``
(tests/test_lambda_runtime.py runs awslambdaric with it).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build"
PACKAGE_ZIP = BUILD / "admission.zip"
PACKAGE_REPORT = BUILD / "admission.report.json"
LIBDIR = Path("/usr/lib/x86_64-linux-gnu")
# The host's R, hidden from the sandbox (Debian layout).
SYSTEM_R = ("/usr/lib/R", "/usr/share/R", "/etc/R", "/usr/local")
SYSTEM_R_PROGRAMS = ("/usr/bin/R", "/usr/bin/Rscript")
# What Lambda's Python runtime provides, copied from the venv into /var/runtime.
RUNTIME_PACKAGES = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3", "six.py")
# Lambda's runtime interface client (the python3.12+ runtimes' bootstrap), for /var/runtime.
AWSLAMBDARIC_VERSION = "4.2.2"
# Environment of a Lambda function (python3.x, x86_64), less the secrets.
LAMBDA_LD_LIBRARY_PATH = "/var/lang/lib:/lib64:/usr/lib64:/var/runtime:/var/runtime/lib:/var/task:/var/task/lib:/opt/lib"

BOOTSTRAP = r'''
"""A stand-in for Lambda's /var/runtime/bootstrap.py: import the handler
module by name, then call it once per event with a context object."""
import importlib, json, sys, time, uuid

T_START = time.time()
sys.path[:0] = ["/var/task", "/opt/python", "/var/runtime"]


class Context:
    """The attributes of the Python runtime's LambdaContext."""

    def __init__(self, deadline_ms):
        self.function_name = "admission"
        self.function_version = "$LATEST"
        self.invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:admission"
        self.memory_limit_in_mb = "1024"
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = "/aws/lambda/admission"
        self.log_stream_name = "2026/11/26/[$LATEST]sandbox"
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self):
        return max(0, int(self._deadline_ms - time.time() * 1000))


def main(events_path, result_path):
    events = json.load(open(events_path))
    module_name, function_name = "handler.lambda_handler".rsplit(".", 1)
    t0 = time.time()
    handler = getattr(importlib.import_module(module_name), function_name)
    t_init = time.time()
    out = []
    for event in events:
        t = time.time()
        ctx = Context(time.time() * 1000 + 30_000)
        try:
            result = {"ok": True, "response": handler(event, ctx)}
        except Exception as exc:  # what the runtime reports as an invocation error
            result = {"ok": False, "errorType": type(exc).__name__, "errorMessage": str(exc)}
        result["ms"] = (time.time() - t) * 1000
        result["t_done"] = time.time()
        out.append(result)
    # CPU seconds of this process and its waited-for children (any Rscript),
    # which a busy machine disturbs far less than wall time.
    import resource
    cpu = sum(u.ru_utime + u.ru_stime for u in (resource.getrusage(resource.RUSAGE_SELF),
                                                  resource.getrusage(resource.RUSAGE_CHILDREN)))
    json.dump({"t_start": T_START, "t_import": t0, "t_init_done": t_init, "results": out, "cpu_s": cpu},
              open(result_path, "w"), default=str)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
'''


@dataclass
class Run:
    """One sandboxed process: its exit code, output and (for invoke) results."""

    returncode: int
    stdout: str
    stderr: str
    results: list[dict[str, Any]] = field(default_factory=list)
    timing: dict[str, float] = field(default_factory=dict)

    def responses(self) -> list[Any]:
        """The handler's return values; raises if an invocation failed."""
        bad = [r for r in self.results if not r["ok"]]
        if self.returncode != 0 or bad or not self.results:
            raise AssertionError(f"sandboxed invocation failed: rc={self.returncode} {bad}\n{self.stderr[-4000:]}")
        return [r["response"] for r in self.results]


def package_sources() -> list[Path]:
    """Everything the zip is made from, for the staleness check."""
    files = [ROOT / "scripts" / name for name in ("package.sh", "build_r.sh", "elf_check.py", "r-sources.sha256")]
    files += [ROOT / "handler.py", ROOT / "test_handler.py", ROOT / "requirements.txt"]
    files += [p for p in (ROOT / "rlambda").rglob("*") if p.suffix in (".py", ".R") and "__pycache__" not in p.parts]
    return [p for p in files if p.exists()]


def package_is_stale() -> bool:
    """True when build/admission.zip (or its report) is missing or older than a source."""
    if not PACKAGE_ZIP.exists() or not PACKAGE_REPORT.exists():
        return True
    return PACKAGE_ZIP.stat().st_mtime < max(p.stat().st_mtime for p in package_sources())


def ensure_package(log: Any = None) -> Path:
    """build/admission.zip, (re)built by scripts/package.sh when stale.

    The first build on a machine also builds R (scripts/build_r.sh, several
    minutes); later ones reuse build/cache and take seconds.

    Concurrent callers share build/: one builds under a lock, the others wait.
    A failed build raises CalledProcessError with the script's output.
    """
    BUILD.mkdir(exist_ok=True)
    with open(BUILD / ".package.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if package_is_stale():
            if log:
                log("building build/admission.zip (scripts/package.sh)")
            subprocess.run(["bash", str(ROOT / "scripts" / "package.sh")], cwd=ROOT, check=True,
                           capture_output=True, text=True, timeout=3600)  # R from nothing: ~10 min
    return PACKAGE_ZIP


def base_python() -> Path:
    """The interpreter the venv was made from (not the venv: no site-packages)."""
    return Path(os.path.realpath(getattr(sys, "_base_executable", sys.executable)))


def package_python_version() -> str:
    """The Python the built package targets (its report), e.g. "3.12"."""
    return json.loads(PACKAGE_REPORT.read_text())["python"]


def _probe(python: Path) -> dict[str, str] | None:
    """The real executable, version and base prefix of an interpreter, or None if it does not run."""
    code = "import json, sys; print(json.dumps({'exe': sys.executable, 'ver': '%d.%d' % sys.version_info[:2], 'prefix': sys.base_prefix}))"
    try:
        proc = subprocess.run([str(python), "-I", "-S", "-c", code], capture_output=True, text=True, timeout=60)
    except OSError:
        return None
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def find_python(version: str) -> Path | None:
    """An installed CPython ``version`` (e.g. "3.12"): pyenv's, then one on PATH; None if none.

    Never a hard-coded path: ``pyenv prefix`` for each installed 3.x.y, then
    ``python3.x`` on PATH (pyenv's shims fail for a version that is not
    selected, so each candidate is run once to be sure).
    """
    candidates: list[Path] = []
    if shutil.which("pyenv"):
        proc = subprocess.run(["pyenv", "versions", "--bare"], capture_output=True, text=True)
        for name in sorted(proc.stdout.split(), reverse=True):
            if name == version or name.startswith(version + "."):
                prefix = subprocess.run(["pyenv", "prefix", name], capture_output=True, text=True).stdout.strip()
                if prefix:
                    candidates.append(Path(prefix) / "bin" / f"python{version}")
    on_path = shutil.which(f"python{version}")
    if on_path:
        candidates.append(Path(on_path))
    for candidate in candidates:
        facts = _probe(candidate)
        if facts and facts["ver"] == version:
            return Path(os.path.realpath(facts["exe"]))
    return None


def _ldd(paths: Iterable[str]) -> set[str]:
    """Resolved paths of the shared libraries the given ELF files need."""
    found: set[str] = set()
    for path in paths:
        out = subprocess.run(["ldd", path], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}).stdout
        for line in out.splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[1] == "=>" and parts[2].startswith("/"):
                found.add(parts[2])
            elif parts and parts[0].startswith("/"):
                found.add(parts[0])
    return found


def _glibc_files() -> list[str]:
    """glibc's own files in the multiarch directory (dpkg -L libc6), incl. gconv."""
    out = subprocess.run(["dpkg", "-L", "libc6"], capture_output=True, text=True, check=True).stdout
    keep = []
    for line in out.splitlines():
        # dpkg names them /lib/x86_64-linux-gnu/... (merged /usr: the same files)
        p = Path(line)
        if p.parent.name == LIBDIR.name and (p.is_file() or p.is_symlink()):
            keep.append(str(LIBDIR / p.name))
    keep.append(str(LIBDIR / "gconv"))
    return keep


def runtime_dir(python: Path) -> Path:
    """/var/runtime for ``python``: boto3 and its dependencies (pure Python, from
    the venv), Lambda's runtime interface client awslambdaric (its manylinux
    wheel for that CPython, from PyPI) and the stand-in bootstrap; made once.

    Built under a temporary name and renamed: an interrupted build leaves none.
    """
    from importlib.metadata import version

    facts = _probe(python)
    if facts is None:
        raise RuntimeError(f"{python} does not run")
    ver = facts["ver"]
    target = BUILD / f"sandbox-runtime-{ver}"
    stamp = target / ".complete"
    # Remade when the venv's boto3/botocore or the pinned awslambdaric change.
    wanted = f"boto3 {version('boto3')} botocore {version('botocore')} awslambdaric {AWSLAMBDARIC_VERSION}"
    if not stamp.exists() or stamp.read_text() != wanted:
        tmp = BUILD / f".sandbox-runtime-{ver}.{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        site = Path(sysconfig.get_paths()["purelib"])
        for name in RUNTIME_PACKAGES:
            src = site / name
            if src.is_dir():
                shutil.copytree(src, tmp / name, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(src, tmp / name)
        # For the target CPython, never compiled here: like Lambda's own copy.
        pip = [sys.executable, "-m", "pip", "install", "-q", "--no-compile", "--target", str(tmp),
               "--only-binary=:all:", "--platform", "manylinux2014_x86_64", "--implementation", "cp",
               "--python-version", ver, f"awslambdaric=={AWSLAMBDARIC_VERSION}"]
        proc = subprocess.run(pip, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            raise RuntimeError(f"pip could not install awslambdaric {AWSLAMBDARIC_VERSION} for CPython {ver}:\n{proc.stderr[-2000:]}")
        (tmp / ".complete").write_text(wanted)
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
    (target / "bootstrap.py").write_text(BOOTSTRAP)
    return target


def runtime_libraries(python: Path, runtime: Path) -> list[str]:
    """Host files the emulated Lambda runtime may see in /usr/lib/x86_64-linux-gnu.

    glibc, plus what the interpreter and the stdlib extension modules loaded by
    importing boto3 need (Lambda's runtime has its own copies of those), plus
    what /bin/sh and the coreutils R calls at start-up (uname, rm) need.
    """
    probe = (
        "import sys; sys.path[:0] = [sys.argv[1]]\n"
        "import boto3, botocore.session, json, hashlib, ssl, tempfile, array, contextvars, logging, "
        "urllib.parse, unittest, importlib, uuid, decimal, http.client\n"
        "import awslambdaric.bootstrap, runtime_client\n"
        "boto3.client('s3', region_name='us-east-1', endpoint_url='http://127.0.0.1:9')\n"
        "print('\\n'.join(sorted({m.__file__ for m in list(sys.modules.values()) "
        "if (getattr(m, '__file__', None) or '').endswith('.so')})))\n"
    )
    out = subprocess.run([str(python), "-I", "-S", "-c", probe, str(runtime)], capture_output=True, text=True, check=True)
    elfs = [str(python), *out.stdout.split(), "/bin/sh", "/usr/bin/uname", "/usr/bin/rm"]
    libs = {p for p in _ldd(elfs) if p.startswith(("/lib/", "/usr/lib/", "/lib64/"))}
    keep = set(_glibc_files())
    for p in libs:
        real = Path(p)
        keep.add(str(LIBDIR / real.name) if real.parent.name == "x86_64-linux-gnu" else p)
    return sorted(k for k in keep if k.startswith(str(LIBDIR)))


@dataclass
class Sandbox:
    """A Lambda-like bubblewrap sandbox around one unpacked package."""

    task_root: Path
    tmp: Path
    python: Path
    runtime: Path
    allowed_libs: list[str]
    env: dict[str, str]

    @classmethod
    def create(cls, task_root: Path, tmp: Path, env: Mapping[str, str] | None = None,
               python: Path | None = None) -> "Sandbox":
        """A sandbox for ``task_root`` with ``tmp`` as its /tmp and extra ``env``.

        ``python``: the runtime's interpreter (default: the venv's base
        interpreter); a package built for python3.12 needs a CPython 3.12
        (``find_python("3.12")``).
        """
        if shutil.which("bwrap") is None:
            raise RuntimeError("bubblewrap (bwrap) is not installed: make setup installs it")
        python = python or base_python()
        runtime = runtime_dir(python)
        tmp.mkdir(parents=True, exist_ok=True)
        ver = _probe(python)["ver"]  # type: ignore[index]
        base_env = {
            "LAMBDA_TASK_ROOT": "/var/task",
            "LAMBDA_RUNTIME_DIR": "/var/runtime",
            "LD_LIBRARY_PATH": LAMBDA_LD_LIBRARY_PATH,
            "PATH": "/var/lang/bin:/usr/local/bin:/usr/bin/:/bin:/opt/bin",
            "PYTHONPATH": "/var/task:/opt/python:/var/runtime",
            "LANG": "C.UTF-8",
            "TZ": ":UTC",
            "_HANDLER": "handler.lambda_handler",
            "AWS_EXECUTION_ENV": f"AWS_Lambda_python{ver}",
            "AWS_LAMBDA_FUNCTION_NAME": "admission",
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024",
            "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/admission",
            "AWS_LAMBDA_LOG_STREAM_NAME": "2026/11/26/[$LATEST]sandbox",
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
        }
        base_env.update(env or {})
        return cls(task_root, tmp, python, runtime, runtime_libraries(python, runtime), base_env)

    def _layout(self) -> dict[str, str]:
        """Where the interpreter lives: its base prefix, version and sandbox path."""
        if not hasattr(self, "_facts"):
            facts = _probe(self.python)
            if facts is None:
                raise RuntimeError(f"{self.python} does not run")
            self._facts = facts
        return self._facts

    def command(self, argv: Sequence[str], env: Mapping[str, str] | None = None) -> list[str]:
        """The bwrap command line that runs ``argv`` inside the sandbox."""
        facts = self._layout()
        prefix, ver = Path(facts["prefix"]), facts["ver"]
        cmd = [
            "bwrap", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--die-with-parent", "--new-session",
            "--ro-bind", "/usr", "/usr",
            "--ro-bind", "/etc", "/etc",
            "--symlink", "usr/bin", "/bin", "--symlink", "usr/sbin", "/sbin",
            "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
            "--proc", "/proc", "--dev", "/dev",
        ]
        for hidden in SYSTEM_R:
            cmd += ["--tmpfs", hidden]
        for program in SYSTEM_R_PROGRAMS:  # the front ends of the hidden R: no longer programs
            if Path(program).exists():
                cmd += ["--ro-bind", "/dev/null", program]
        # Only glibc and the Python runtime's own libraries stay visible.
        cmd += ["--tmpfs", str(LIBDIR)]
        for lib in self.allowed_libs:
            cmd += ["--ro-bind", lib, lib]
        # Debian's Python packages (rpy2, cffi... of the system): Lambda has none.
        for site in (f"/usr/lib/python{ver}/site-packages", "/usr/lib/python3/dist-packages"):
            if Path(site).is_dir():
                cmd += ["--tmpfs", site]
        # A self-contained prefix (pyenv's) goes where Lambda keeps its Python.
        # A distribution's Python (Debian's, prefix /usr) stays where it is,
        # under the /usr already mounted: mounting /usr at /var/lang would
        # bring the system R back in (/var/lang/lib/R).
        if prefix != Path("/usr"):
            cmd += ["--ro-bind", str(prefix), "/var/lang"]
            if (prefix / "lib" / f"python{ver}" / "site-packages").is_dir():
                cmd += ["--tmpfs", f"/var/lang/lib/python{ver}/site-packages"]
        cmd += [
            "--ro-bind", str(self.runtime), "/var/runtime",
            "--ro-bind", str(self.task_root), "/var/task",
            "--bind", str(self.tmp), "/tmp",
            "--chdir", "/var/task",
            "--clearenv",
        ]
        for key, value in {**self.env, **(env or {})}.items():
            cmd += ["--setenv", key, value]
        return cmd + list(argv)

    @property
    def interpreter(self) -> str:
        """The interpreter's path inside the sandbox."""
        facts = self._layout()
        if Path(facts["prefix"]) == Path("/usr"):
            return str(self.python)
        return f"/var/lang/bin/{self.python.name}"

    def run(self, argv: Sequence[str], env: Mapping[str, str] | None = None, timeout: float = 120) -> Run:
        """Run any command inside the sandbox."""
        proc = subprocess.run(self.command(argv, env), capture_output=True, text=True, timeout=timeout)
        return Run(proc.returncode, proc.stdout, proc.stderr)

    def run_python(self, args: Sequence[str], env: Mapping[str, str] | None = None, timeout: float = 120) -> Run:
        """Run the runtime's interpreter without site-packages (-S), as Lambda's does."""
        return self.run([self.interpreter, "-S", "-B", *args], env, timeout)

    def invoke(self, events: Sequence[Any], env: Mapping[str, str] | None = None, timeout: float = 120) -> Run:
        """Start a fresh runtime process, import the handler, call it once per event.

        ``timing`` holds seconds from before the process was spawned to: the
        bootstrap starting, the handler imported (Lambda's init), the first
        answer (``cold_start_s``), and the last answer.
        """
        name = f"bootstrap-{os.getpid()}-{time.monotonic_ns()}"
        events_file = self.tmp / f"{name}-events.json"
        result_file = self.tmp / f"{name}-result.json"
        events_file.write_text(json.dumps(list(events)))
        t0 = time.time()
        run = self.run_python(["/var/runtime/bootstrap.py", f"/tmp/{events_file.name}", f"/tmp/{result_file.name}"],
                              env, timeout)
        events_file.unlink()
        if result_file.exists():
            data = json.loads(result_file.read_text())
            result_file.unlink()
            run.results = data["results"]
            run.timing = {
                "process_start_s": data["t_start"] - t0,
                "init_s": data["t_init_done"] - t0,
                "init_import_handler_s": data["t_init_done"] - data["t_import"],
                "cpu_s": data["cpu_s"],
            }
            if run.results:
                run.timing["cold_start_s"] = run.results[0]["t_done"] - t0
                run.timing["last_answer_s"] = run.results[-1]["t_done"] - t0
        return run
