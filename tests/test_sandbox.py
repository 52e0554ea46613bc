"""The Lambda-like sandbox hides the system R whatever Python it runs on.

On a fresh Debian machine without pyenv the venv's base interpreter is
Debian's own /usr/bin/python3.x (base prefix /usr). Mounting that prefix at
/var/lang, as is right for pyenv's self-contained prefixes, would put
/usr/lib/R back inside the "no R" sandbox; Debian's Python also keeps its
packages in /usr/lib/python3/dist-packages, not lib/python3.x/site-packages.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sandbox import Sandbox, find_python  # noqa: E402


def distribution_python() -> Path | None:
    """A CPython whose base prefix is /usr (Debian's python3), if this machine has one."""
    for name in ("python3", *(f"python3.{minor}" for minor in range(15, 8, -1))):
        path = Path("/usr/bin") / name
        if path.exists():
            proc = subprocess.run([str(path), "-I", "-S", "-c", "import sys; print(sys.base_prefix)"],
                                  capture_output=True, text=True)
            if proc.returncode == 0 and proc.stdout.strip() == "/usr":
                return path.resolve()
    return None


PROBE = """
import json, os, sys
def ls(d):
    return sorted(os.listdir(d)) if os.path.isdir(d) else None
try:
    import rpy2
    rpy2_found = rpy2.__file__
except ImportError:
    rpy2_found = None
print(json.dumps({
    "usr_lib_R": ls("/usr/lib/R"), "var_lang": ls("/var/lang"), "var_lang_lib_R": ls("/var/lang/lib/R"),
    "dist_packages": ls("/usr/lib/python3/dist-packages"), "rpy2": rpy2_found,
    "libs": ls("/usr/lib/x86_64-linux-gnu"), "executable": sys.executable,
    "R_on_path": [p for p in os.environ["PATH"].split(":") for r in ("R", "Rscript")
                  if os.path.isfile(os.path.join(p, r)) and os.access(os.path.join(p, r), os.X_OK)],
}))
"""


@pytest.mark.parametrize("kind", ["distribution", "pyenv"])
def test_the_sandbox_hides_the_system_r_on_any_python(kind: str, tmp_path: Path) -> None:
    python = distribution_python() if kind == "distribution" else find_python("3.12")
    if python is None:
        pytest.skip(f"no {kind} Python on this machine")
    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed")
    task = tmp_path / "task"
    task.mkdir()
    (task / "probe.py").write_text(PROBE)
    sandbox = Sandbox.create(task, tmp_path / "tmp", python=python)
    command = sandbox.command(["true"])
    if kind == "distribution":
        # its prefix /usr is not mounted a second time at /var/lang
        assert not any(a == "/usr" and b == "/var/lang" for a, b in zip(command, command[1:])), command
        assert sandbox.interpreter == str(python)
    run = sandbox.run([sandbox.interpreter, "/var/task/probe.py"])
    assert run.returncode == 0, run.stderr
    seen = json.loads(run.stdout)
    assert seen["usr_lib_R"] == [] and seen["R_on_path"] == []
    assert seen["var_lang_lib_R"] is None, "the system R is visible under /var/lang"
    assert seen["rpy2"] is None, f"rpy2 leaked into the sandbox from {seen['rpy2']}"
    assert seen["dist_packages"] in (None, [])
    assert not [n for n in seen["libs"] if n.startswith(("libR", "libblas", "liblapack", "libgfortran", "libicu"))]
    assert "libc.so.6" in seen["libs"]
