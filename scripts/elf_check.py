#!/usr/bin/env python3
"""ELF facts about a staged Lambda package, for scripts/package.sh.

  elf_check.py closure STAGE LIBDIR SEARCH-DIR...
      copy into STAGE/LIBDIR every shared library the ELF files in STAGE need
      (by DT_NEEDED, recursively), found in the SEARCH-DIRs (the build root's
      library folders), except glibc's own, which every Lambda runtime has.
  elf_check.py floors STAGE REPORT.json GLIBC-MAX GLIBCXX-MAX PY-TAG
      the highest GLIBC_x.y / GLIBCXX_x.y.z any file needs, and each Python
      extension module's ABI tag; writes REPORT.json and exits 1 naming the
      files over a limit or built for another Python.

Only objdump (binutils) is used: it reads the files, it never loads them.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

# glibc's libraries and the loader: provided by every Lambda runtime.
GLIBC = re.compile(
    r"^(linux-vdso\.so|ld-linux-x86-64\.so|libc\.so|libm\.so|libmvec\.so|libpthread\.so|libdl\.so|librt\.so"
    r"|libresolv\.so|libutil\.so|libanl\.so|libnss_|libBrokenLocale\.so|libthread_db\.so|libcrypt\.so\.1)"
)
VERSIONED = re.compile(r"\b(GLIBC|GLIBCXX|CXXABI)_([0-9]+(?:\.[0-9]+)*)\b")


def is_elf(path: Path) -> bool:
    """True for an ELF file (not a symlink)."""
    if path.is_symlink() or not path.is_file():
        return False
    with open(path, "rb") as f:
        return f.read(4) == b"\x7fELF"


def objdump(path: Path, flag: str) -> str:
    """objdump's output for one file, or a one-line failure."""
    proc = subprocess.run(["objdump", flag, str(path)], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"objdump {flag} {path} failed: {proc.stderr.strip()}")
    return proc.stdout


def needed(path: Path) -> list[str]:
    """The DT_NEEDED sonames of one ELF file."""
    return re.findall(r"^\s*NEEDED\s+(\S+)", objdump(path, "-p"), re.M)


def elfs(stage: Path) -> list[Path]:
    """Every ELF file under the stage, sorted."""
    return sorted(p for p in stage.rglob("*") if is_elf(p))


def closure(stage: Path, libdir: str, search: list[Path]) -> None:
    """Copy the missing non-glibc libraries into stage/libdir, recursively."""
    target = stage / libdir
    target.mkdir(parents=True, exist_ok=True)
    have = {p.name for p in stage.rglob("*.so*")}
    todo = elfs(stage)
    seen: set[Path] = set()
    while todo:
        f = todo.pop()
        if f in seen:
            continue
        seen.add(f)
        for name in needed(f):
            if GLIBC.match(name) or name in have:
                continue
            for d in search:
                if (d / name).exists():
                    src = (d / name).resolve()
                    dst = target / name  # under its soname (Debian's are symlinks)
                    shutil.copyfile(src, dst)
                    have.add(name)
                    todo.append(dst)
                    print(f"    {libdir}/{name}  <- {src}")
                    break
            else:
                sys.exit(f"{f.relative_to(stage)} needs {name}, found in none of: {', '.join(map(str, search))}")


def vkey(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split("."))


def floors(stage: Path, report: Path, glibc_max: str, glibcxx_max: str, py_tag: str) -> int:
    """Write the floors and ABI tags to report; 1 when a limit is broken."""
    by_file: dict[str, dict[str, str]] = {}
    problems: list[str] = []
    for f in elfs(stage):
        rel = str(f.relative_to(stage))
        found: dict[str, str] = {}
        for line in objdump(f, "-T").splitlines():
            if "*UND*" not in line:
                continue
            for kind, ver in VERSIONED.findall(line):
                if kind not in found or vkey(ver) > vkey(found[kind]):
                    found[kind] = ver
        by_file[rel] = found
        for kind, limit in (("GLIBC", glibc_max), ("GLIBCXX", glibcxx_max)):
            if kind in found and vkey(found[kind]) > vkey(limit):
                over = sorted({ln.split()[-1] + "@" + v for ln in objdump(f, "-T").splitlines() if "*UND*" in ln
                               for k, v in VERSIONED.findall(ln) if k == kind and vkey(v) > vkey(limit)})
                problems.append(f"{rel} needs {kind}_{found[kind]} (> {limit}): {' '.join(over[:6])}")
    # Python extension modules: name.cpython-3XY-x86_64-linux-gnu.so, name.abi3.so or a bare name.so
    abi: dict[str, str] = {}
    for f in sorted(stage.rglob("*.so")):
        rel = str(f.relative_to(stage))
        if rel.startswith(("R/", "lib/")) or ".libs/" in rel:
            continue  # R's and the shared libraries: not Python modules
        m = re.search(r"\.(cpython-\d+[a-z]*-[^.]+|abi3)\.so$", f.name)
        tag = m.group(1) if m else "untagged"
        abi[rel] = tag
        if tag != "abi3" and not tag.startswith(f"cpython-{py_tag}-"):
            problems.append(f"{rel}: extension module for {tag}, not CPython {py_tag[0]}.{py_tag[1:]}")
    floor = {k: max((v[k] for v in by_file.values() if k in v), key=vkey, default="none")
             for k in ("GLIBC", "GLIBCXX")}
    data = {"glibc_floor": floor["GLIBC"], "glibcxx_floor": floor["GLIBCXX"], "lambda_glibc": glibc_max,
            "lambda_glibcxx": glibcxx_max, "glibc_by_file": {k: v["GLIBC"] for k, v in by_file.items() if "GLIBC" in v},
            "glibcxx_by_file": {k: v["GLIBCXX"] for k, v in by_file.items() if "GLIBCXX" in v},
            "extension_modules": abi, "problems": problems}
    report.write_text(json.dumps(data, indent=1, sort_keys=True))
    width = max((len(k) for k in by_file), default=10)
    for rel, found in by_file.items():
        if found:
            print(f"      {rel:<{width}}  " + "  ".join(f"{k}_{v}" for k, v in sorted(found.items())))
    for rel, tag in abi.items():
        print(f"      {rel:<{width}}  Python ABI: {tag}")
    print(f"    GLIBC floor {floor['GLIBC']} (limit {glibc_max}); GLIBCXX floor {floor['GLIBCXX']} (limit {glibcxx_max})")
    for p in problems:
        print(f"package.sh: {p}", file=sys.stderr)
    return 1 if problems else 0


def main(argv: list[str]) -> int:
    if len(argv) >= 4 and argv[1] == "closure":
        closure(Path(argv[2]), argv[3], [Path(p) for p in argv[4:]])
        return 0
    if len(argv) == 7 and argv[1] == "floors":
        return floors(Path(argv[2]), Path(argv[3]), argv[4], argv[5], argv[6])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
