#!/usr/bin/env bash
# Build build/admission.zip: the Lambda deployment package (python3.12 runtime
# by default, zip upload) that loads on Lambda's Amazon Linux 2023 (glibc
# 2.34, GLIBCXX 3.4.29). It carries an R built by the project in a Debian 11
# root (scripts/build_r.sh, cached under build/cache/), rpy2 in ABI mode (pure
# Python) with cffi's backend for the runtime's CPython, and the handler.
# tests/test_lambda_runtime.py runs it under Lambda's own runtime client.
#
# Usage: scripts/package.sh [--python 3.12|3.13] [--model FILE.rds] [--r-packages pkgA,pkgB] [--out FILE]
#   --python X.Y     the Lambda runtime's Python (default 3.12, or $LAMBDA_PYTHON)
#   --model FILE     bundle the R packages this saved model needs, found from
#                    the object itself (models/packages.R); e.g. a randomForest
#   --r-packages     extra R packages a model needs; each is built, with its
#                    Depends/Imports/LinkingTo, from Debian's r-cran-<name>
#                    source package in the build root (scripts/build_r.sh)
#   --out FILE       where to write the zip (default build/admission.zip)
# Environment:
#   LAMBDA_PYTHON    default for --python
#   LAMBDA_GLIBC     the target runtime's glibc (default 2.34, Amazon Linux 2023)
#   LAMBDA_GLIBCXX   the target runtime's libstdc++ (default 3.4.29)
#   LAMBDA_MAX_ZIP_BYTES, LAMBDA_MAX_UNZIPPED_BYTES
#                    size limits (default Lambda's 50 MB and 250 MB)
#   R_VERSION, R_BUILD_SUITE, R_SOURCE_SUITE, R_BUILD_MIRROR
#                    how R is built (see scripts/build_r.sh)
# Any failing step (a build, a floor above the target, an extension module
# for another Python, a size limit) stops the build with a one-line reason and
# leaves no zip.
set -euo pipefail
# The whole script is one block, read before it runs: editing the file while
# a build is under way cannot change what that build does next.
{

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

# The Python that runs pip and the checks (not the target's: nothing is
# compiled against it).
HOSTPY=${HOSTPY:-$ROOT/.venv/bin/python}
OUT=build/admission.zip
PYVER=${LAMBDA_PYTHON:-3.12}
LAMBDA_GLIBC=${LAMBDA_GLIBC:-2.34}
LAMBDA_GLIBCXX=${LAMBDA_GLIBCXX:-3.4.29}
EXTRA_R_PACKAGES=""
MODEL_RDS=""
# R packages every zip carries beyond base R, built like --r-packages.
# data.table: batch scoring reads and writes CSV chunks with fread/fwrite (rlambda/batch.R).
DEFAULT_R_PACKAGES="data.table"
RPY2_VERSION=3.5.17
CFFI_VERSION=2.1.1
# Lambda's limits; lower them to leave room for layers (they share the 250 MB).
MAX_ZIP=${LAMBDA_MAX_ZIP_BYTES:-$((50 * 1024 * 1024))}            # zip upload limit
MAX_UNZIPPED=${LAMBDA_MAX_UNZIPPED_BYTES:-$((250 * 1024 * 1024))} # unzipped size limit (incl. layers)
# Fixed mtime for every entry: zip stores DOS times (1980 at the earliest), so
# not @0. Together with sorted entries and -X this makes rebuilds identical.
FIXED_TIME="2000-01-01 00:00:00 UTC"

while [ $# -gt 0 ]; do
  case "$1" in
    --python) PYVER=${2:?--python needs a version such as 3.12}; shift ;;
    --python=*) PYVER=${1#*=} ;;
    --r-packages) EXTRA_R_PACKAGES=${2:?--r-packages needs a comma-separated list}; shift ;;
    --r-packages=*) EXTRA_R_PACKAGES=${1#*=} ;;
    --model) MODEL_RDS=${2:?--model needs an .rds file}; shift ;;
    --model=*) MODEL_RDS=${1#*=} ;;
    --out) OUT=${2:?--out needs a file name}; shift ;;
    --out=*) OUT=${1#*=} ;;
    -h|--help) sed -n '2,29p' "$0"; exit 0 ;;
    *) echo "package.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
case "$PYVER" in
  3.12|3.13) ;;
  *) echo "package.sh: --python $PYVER: Lambda's Amazon Linux 2023 runtimes are python3.12 and python3.13" >&2; exit 2 ;;
esac
PYTAG=${PYVER/./}

STEP=0
STEP_NAME="start"
T0=$(date +%s)
step() { STEP=$((STEP + 1)); STEP_NAME="$*"; printf '\n==> [%d] %s  (%d s)\n' "$STEP" "$*" "$(( $(date +%s) - T0 ))"; }
info() { printf '    %s\n' "$*"; }
die() { printf '\npackage.sh: FAILED at step [%d] %s: %s\n' "$STEP" "$STEP_NAME" "$*" >&2; exit 1; }
bytes_of() { find "$@" -type f -printf '%s\n' 2>/dev/null | awk '{s+=$1} END {print s+0}'; }
files_of() { find "$@" -type f 2>/dev/null | wc -l; }
is_elf() { [ "$(head -c 4 "$1" 2>/dev/null | od -An -c | tr -d ' ')" = '177ELF' ]; }

for tool in objdump strip zip unzip find; do
  command -v "$tool" >/dev/null || die "$tool is not installed (make setup installs what the build needs)"
done
[ -x "$HOSTPY" ] || die "no Python at $HOSTPY: run make setup, or set HOSTPY=/path/to/python"

if [ -n "$MODEL_RDS" ]; then
  # The model object names its packages (its classes', the models and recipe
  # it wraps); build_r.sh adds their dependencies from the sources.
  command -v Rscript >/dev/null || die "Rscript is needed to read $MODEL_RDS (make setup installs R)"
  model_pkgs=$(Rscript "$ROOT/models/packages.R" "$MODEL_RDS" | paste -sd, -) \
    || die "cannot find the R packages $MODEL_RDS needs"
  echo "package.sh: $MODEL_RDS needs R packages: ${model_pkgs:-none beyond base R}"
  EXTRA_R_PACKAGES="$EXTRA_R_PACKAGES,$model_pkgs"
fi
EXTRA_R_PACKAGES=$(printf '%s' "$DEFAULT_R_PACKAGES,$EXTRA_R_PACKAGES" | sed 's/^,*//; s/,*$//; s/,,*/,/g')

OUT_ABS=$(mkdir -p "$(dirname "$OUT")" && cd "$(dirname "$OUT")" && pwd)/$(basename "$OUT")
BUILD=$(dirname "$OUT_ABS")
STAGE=$(mktemp -d "$BUILD/.stage.XXXXXX")
REPORT=${OUT_ABS%.zip}.report.json
ZIP_TMP="$OUT_ABS.part"
trap 'rm -rf "$STAGE" "$ZIP_TMP" "$STAGE.floors.json"' EXIT
# A failed build leaves no zip: the old one goes first, the new one arrives by rename.
rm -f "$OUT_ABS" "$REPORT"
CACHE=${R_BUILD_CACHE:-$ROOT/build/cache}

# ---------------------------------------------------------------------------
step "R built for an old glibc (scripts/build_r.sh; cached in build/cache)"
RPKG_DIRS=()
BUILD_ROOTFS=""
IFS=, read -r -a want_packages <<<"$EXTRA_R_PACKAGES"
BUILD_OUT=$(bash "$ROOT/scripts/build_r.sh" "${want_packages[@]}") || die "building R failed (its reason is above)"
while read -r kind name dir; do
  case $kind in
    rpkg) RPKG_DIRS+=("$dir"); info "R package $name  <- ${dir#"$ROOT"/}" ;;
    root) BUILD_ROOTFS=$name ;;
  esac
done <<<"$BUILD_OUT"
R_SRC=$(tail -1 <<<"$BUILD_OUT")
[ -e "$R_SRC/lib/libR.so" ] || die "build_r.sh gave no R home ($R_SRC)"
R_VERSION=$(awk '/^R / {print $2; exit}' "$R_SRC/../BUILDINFO")
[ -d "$BUILD_ROOTFS" ] || die "build_r.sh named no build root"
info "R $R_VERSION from ${R_SRC#"$ROOT"/}"

# ---------------------------------------------------------------------------
step "R home without its library"
mkdir -p "$STAGE/R/bin/exec" "$STAGE/R/etc" "$STAGE/R/library" "$STAGE/R/modules" "$STAGE/R/lib" "$STAGE/lib"
cp "$R_SRC/bin/exec/R" "$STAGE/R/bin/exec/R"
# libR.so stays in R_HOME/lib: rpy2's ABI mode dlopen()s R_HOME/lib/libR.so.
# Its BLAS and LAPACK go to lib/, on Lambda's LD_LIBRARY_PATH at process
# start (the loader reads that variable once; setting it later is too late).
cp "$R_SRC/lib/libR.so" "$STAGE/R/lib/libR.so"
cp "$R_SRC/lib/libRblas.so" "$R_SRC/lib/libRlapack.so" "$STAGE/lib/"
# The Rscript binary execs $RHOME/bin/R, RHOME defaulting to the compiled-in
# /opt/R/lib/R; a wrapper sets RHOME first. rpy2 runs it at import.
cp "$R_SRC/bin/Rscript" "$STAGE/R/bin/exec/Rscript"
cat > "$STAGE/R/bin/Rscript" <<'EOF'
#!/bin/sh
# Rscript of the bundled R. The real binary (bin/exec/Rscript) would exec
# /opt/R/lib/R/bin/R, compiled in, unless RHOME says where R is.
case "$0" in */*) here=${0%/*} ;; *) here=$(command -v "$0"); here=${here%/*} ;; esac
RHOME=$(cd -P "$here/.." && pwd)
export RHOME
exec "$RHOME/bin/exec/Rscript" "$@"
EOF
# R's own bin/R hardcodes R_HOME_DIR and shells out to sed and uname. This
# front end finds R_HOME from its own path and passes arguments through
# unchanged. `R CMD` (building packages) has no place in a function.
cat > "$STAGE/R/bin/R" <<'EOF'
#!/bin/sh
# R front end of the bundled R: R_HOME is the directory above this script.
case "$0" in */*) here=${0%/*} ;; *) here=$(command -v "$0"); here=${here%/*} ;; esac
R_HOME=$(cd -P "$here/.." && pwd)
R_SHARE_DIR="$R_HOME/share"
R_INCLUDE_DIR="$R_HOME/include"
R_DOC_DIR="$R_HOME/doc"
export R_HOME R_SHARE_DIR R_INCLUDE_DIR R_DOC_DIR
case "$1" in
  RHOME|--print-home) echo "$R_HOME"; exit 0 ;;
  CMD) echo "R CMD is not available in this trimmed R (no compilers, no headers)" >&2; exit 1 ;;
esac
. "$R_HOME/etc/ldpaths"
exec "$R_HOME/bin/exec/R" "$@"
EOF
# ldpaths: the bundled libraries are in <task root>/lib (on Lambda's own
# LD_LIBRARY_PATH too); R_HOME/lib is kept first as R expects.
cat > "$STAGE/R/etc/ldpaths" <<'EOF'
: ${R_LD_LIBRARY_PATH=${R_HOME}/lib:${R_HOME}/../lib}
if test -z "${LD_LIBRARY_PATH}"; then
  LD_LIBRARY_PATH="${R_LD_LIBRARY_PATH}"
else
  LD_LIBRARY_PATH="${R_LD_LIBRARY_PATH}:${LD_LIBRARY_PATH}"
fi
export LD_LIBRARY_PATH
EOF
# Renviron is read by every R start (embedded too). Site libraries are made
# R_HOME-relative (%S = R_HOME/site-library); the build root's paths go.
# R 4.5 reads etc/repositories at start-up (utils' options), so it is kept;
# Makeconf and Rprofile.site serve R CMD / install.packages only.
sed -e "s|^R_LIBS_SITE=.*|R_LIBS_SITE=\${R_LIBS_SITE:-'%S'}|" \
  "$R_SRC/etc/Renviron" > "$STAGE/R/etc/Renviron"
grep -q "^R_LIBS_SITE=\${R_LIBS_SITE:-'%S'}" "$STAGE/R/etc/Renviron" || die "could not rewrite R_LIBS_SITE in Renviron"
# Collation in code point order, the same on every machine: R is built without
# ICU and would otherwise follow the runtime's locale tables (Renviron
# overrides the environment).
printf '\n## scripts/package.sh: strings sort in C (code point) order everywhere.\nLC_COLLATE=C\n' >> "$STAGE/R/etc/Renviron"
cp "$R_SRC/etc/repositories" "$STAGE/R/etc/"
# modules/lapack.so: loaded by solve(), chol(), svd()... Left out:
# internet.so (links libcurl; models come from S3 by boto3).
cp "$R_SRC/modules/lapack.so" "$STAGE/R/modules/"
info "bin: R, Rscript (front ends), exec/R, exec/Rscript; lib/libR.so; etc: Renviron, ldpaths, repositories; modules: lapack.so; lib/: libRblas.so, libRlapack.so"

# ---------------------------------------------------------------------------
step "R packages"
# What start-up and scoring load, found by running the handler and asking R
# (loadedNamespaces()): the default packages (datasets utils grDevices
# graphics stats methods), base, and compiler (R's JIT loads it the first time
# a function is compiled). tools: any model class other than lm/glm is looked
# up with utils::getS3method(), which loads it.
BASE_R_PACKAGES=(base compiler datasets graphics grDevices methods stats tools utils)
for pkg in "${BASE_R_PACKAGES[@]}"; do
  [ -d "$R_SRC/library/$pkg" ] || die "the built R has no package $pkg"
  cp -a "$R_SRC/library/$pkg" "$STAGE/R/library/$pkg"
done
info "base R: ${BASE_R_PACKAGES[*]}"
for dir in "${RPKG_DIRS[@]}"; do
  cp -a "$dir" "$STAGE/R/library/"
done
mapfile -t ALL_R_PACKAGES < <(find "$STAGE/R/library" -mindepth 1 -maxdepth 1 -printf '%f\n' | LC_ALL=C sort)
R_PACKAGES="${ALL_R_PACKAGES[*]}"
info "all: $R_PACKAGES"

# ---------------------------------------------------------------------------
step "Trim what no invocation reads"
# Help, manuals, demos, tests, translations, headers (LinkingTo is for
# compiling), help indexes; grDevices' font metrics, encodings and colour
# profiles serve only the pdf()/postscript() devices.
for pkgdir in "$STAGE"/R/library/*/; do
  rm -rf "$pkgdir"{help,html,doc,demo,tests,po,include,NEWS,NEWS.md,NEWS.Rd,CITATION,INDEX,README,README.md}
  rm -f "$pkgdir"Meta/{Rd,hsearch,links,demo,vignette}.rds
done
# grDevices/fonts (R >= 4.5: Roboto, Montserrat... for the graphics devices'
# text) likewise: no device opens in a function that returns JSON.
rm -rf "$STAGE/R/library/grDevices/"{afm,enc,icc,fonts}
rm -f "$STAGE/R/library/grDevices/libs/cairo.so"
info "removed help, html, doc, demo, tests, po, include, NEWS, CITATION, INDEX; grDevices afm/enc/icc/fonts"

# ---------------------------------------------------------------------------
step "Python packages for CPython $PYVER: rpy2 $RPY2_VERSION (ABI mode) and cffi's backend"
# Nothing is compiled against this machine's Python. rpy2 built with
# RPY2_CFFI_MODE=ABI is pure Python (its _rinterface_cffi_abi.py dlopen()s
# R_HOME/lib/libR.so at import); cffi's manylinux wheel for the target CPython
# brings _cffi_backend. Both wheels are cached under build/cache/wheels.
WHEELS=$CACHE/wheels
mkdir -p "$WHEELS"
rpy2_whl=$(find "$WHEELS" -maxdepth 1 -name "rpy2-$RPY2_VERSION-py3-none-any.whl" | head -1)
if [ -z "$rpy2_whl" ]; then
  tmpw=$(mktemp -d "$WHEELS/.rpy2.XXXXXX")
  info "pip wheel rpy2==$RPY2_VERSION with RPY2_CFFI_MODE=ABI"
  RPY2_CFFI_MODE=ABI "$HOSTPY" -m pip wheel -q --no-cache-dir --no-deps --no-binary rpy2 -w "$tmpw" "rpy2==$RPY2_VERSION" >"$tmpw/log" 2>&1 \
    || { tail -5 "$tmpw/log" >&2; rm -rf "$tmpw"; die "building rpy2 $RPY2_VERSION in ABI mode failed"; }
  rpy2_whl=$(find "$tmpw" -maxdepth 1 -name 'rpy2-*-py3-none-any.whl' | head -1)
  [ -n "$rpy2_whl" ] || { rm -rf "$tmpw"; die "rpy2's ABI-mode build gave no pure-Python wheel"; }
  mv "$rpy2_whl" "$WHEELS/"
  rpy2_whl=$WHEELS/${rpy2_whl##*/}
  rm -rf "$tmpw"
fi
cffi_whl=$(find "$WHEELS" -maxdepth 1 -name "cffi-$CFFI_VERSION-cp$PYTAG-cp$PYTAG-manylinux*x86_64*.whl" | head -1)
if [ -z "$cffi_whl" ]; then
  info "pip download cffi==$CFFI_VERSION for cp$PYTAG manylinux2014_x86_64"
  tmpw=$(mktemp -d "$WHEELS/.cffi.XXXXXX")
  "$HOSTPY" -m pip download -q --no-deps --only-binary=:all: --platform manylinux2014_x86_64 --implementation cp \
    --python-version "$PYVER" -d "$tmpw" "cffi==$CFFI_VERSION" >/dev/null 2>&1 \
    || { rm -rf "$tmpw"; die "pip download of cffi $CFFI_VERSION for CPython $PYVER failed"; }
  cffi_whl=$(find "$tmpw" -maxdepth 1 -name "cffi-$CFFI_VERSION-cp$PYTAG-cp$PYTAG-manylinux*x86_64*.whl" | head -1)
  [ -n "$cffi_whl" ] || { rm -rf "$tmpw"; die "no manylinux cffi $CFFI_VERSION wheel for CPython $PYVER"; }
  mv "$cffi_whl" "$WHEELS/"
  cffi_whl=$WHEELS/${cffi_whl##*/}
  rm -rf "$tmpw"
fi
# What the handler imports, checked with sys.modules after real requests:
# rpy2 (situation, rinterface, rinterface_lib) and _rinterface_cffi_abi, which
# imports _cffi_backend. Not robjects, rlike, ipython, tests, the C sources.
unzip -q "$rpy2_whl" -d "$STAGE/.rpy2"
mkdir -p "$STAGE/rpy2/rinterface_lib"
cp "$STAGE/.rpy2/rpy2/"{__init__.py,situation.py,rinterface.py} "$STAGE/rpy2/"
cp "$STAGE/.rpy2/rpy2/rinterface_lib/"*.py "$STAGE/rpy2/rinterface_lib/"
rm -f "$STAGE/rpy2/rinterface_lib/embedded_mswin.py"
cp "$STAGE/.rpy2/_rinterface_cffi_abi.py" "$STAGE/"
rm -rf "$STAGE/.rpy2"
unzip -q -j "$cffi_whl" "_cffi_backend.cpython-$PYTAG-*.so" -d "$STAGE" || die "no _cffi_backend in ${cffi_whl##*/}"
if unzip -l "$cffi_whl" | grep -q ' cffi\.libs/'; then unzip -q "$cffi_whl" 'cffi.libs/*' -d "$STAGE"; fi
info "${rpy2_whl##*/}: rpy2/{__init__,situation,rinterface}.py, rpy2/rinterface_lib/*.py, _rinterface_cffi_abi.py"
info "${cffi_whl##*/}: $(cd "$STAGE" && ls _cffi_backend.*)"

# ---------------------------------------------------------------------------
step "Handler and rlambda at the zip root"
cp handler.py test_handler.py "$STAGE/"
mkdir -p "$STAGE/rlambda"
( cd rlambda && find . -type f \( -name '*.py' -o -name '*.R' \) -not -path '*/__pycache__/*' -exec cp --parents {} "$STAGE/rlambda/" \; )
info "handler.py, test_handler.py, rlambda/ ($(files_of "$STAGE/rlambda") files)"

# ---------------------------------------------------------------------------
step "Shared libraries from the build root (DT_NEEDED closure, minus glibc)"
# Every Lambda runtime has glibc (libc, libm, libpthread, libdl, librt, ...)
# and the loader; everything else comes from the Debian 11 root R was built in
# and goes to lib/, which is on Lambda's LD_LIBRARY_PATH (/var/task/lib).
"$HOSTPY" "$ROOT/scripts/elf_check.py" closure "$STAGE" lib "$STAGE/lib" "$STAGE/R/lib" \
  "$BUILD_ROOTFS/lib/x86_64-linux-gnu" "$BUILD_ROOTFS/usr/lib/x86_64-linux-gnu" \
  || die "a shared library is missing (named above)"

# ---------------------------------------------------------------------------
step "Strip debug symbols, drop caches, fix modes and times"
find "$STAGE" \( -name __pycache__ -o -name '*.pyc' \) -prune -exec rm -rf {} +
n_stripped=0
while IFS= read -r -d '' f; do
  if is_elf "$f"; then
    strip --strip-unneeded "$f" 2>/dev/null || strip --strip-debug "$f"
    n_stripped=$((n_stripped + 1))
  fi
done < <(find "$STAGE" -type f -print0)
info "stripped $n_stripped ELF files"
# Lambda runs the code as another user: everything world-readable; programs,
# scripts and shared objects executable.
find "$STAGE" -type d -exec chmod 755 {} +
find "$STAGE" -type f -exec chmod 644 {} +
chmod 755 "$STAGE"/R/bin/R "$STAGE"/R/bin/Rscript "$STAGE"/R/bin/exec/*
find "$STAGE" -type f -name '*.so*' -exec chmod 755 {} +
find "$STAGE" -exec touch -h -d "$FIXED_TIME" {} +

# ---------------------------------------------------------------------------
step "Bytecode for CPython $PYVER"
# Lambda's /var/task is read-only, so without .pyc files every cold start
# compiles the Python it imports (measured: compiling rlambda, rpy2 and
# handler.py took 72 ms of CPython 3.12 here). Compiled by a CPython $PYVER
# found on this machine: .pyc files are valid across 3.12.x (one magic
# number); unchecked-hash ones never look at the sources' times, and
# tracebacks name /var/task/... as in Lambda. Without such a Python the zip
# still works, only each cold start compiles.
BYTECODE=false
target_python=""
if command -v pyenv >/dev/null 2>&1; then
  for v in $(pyenv versions --bare 2>/dev/null | sort -rV); do
    case "$v" in "$PYVER"|"$PYVER".*)
      p="$(pyenv prefix "$v" 2>/dev/null)/bin/python$PYVER"
      if [ -x "$p" ]; then target_python=$p; break; fi ;;
    esac
  done
fi
[ -n "$target_python" ] || target_python=$(command -v "python$PYVER" || true)
if [ -n "$target_python" ] && [ "$("$target_python" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" = "$PYVER" ]; then
  "$target_python" -I -m compileall -q --invalidation-mode unchecked-hash -s "$STAGE" -p /var/task \
    "$STAGE/rlambda" "$STAGE/rpy2" "$STAGE/handler.py" "$STAGE/_rinterface_cffi_abi.py" >/dev/null \
    || die "compileall with $target_python failed"
  find "$STAGE" -name __pycache__ -exec chmod 755 {} +
  find "$STAGE" -name '*.pyc' -exec chmod 644 {} +
  # the new files and the folders they went into: the zip's fixed time again
  find "$STAGE" -exec touch -h -d "$FIXED_TIME" {} +
  BYTECODE=true
  info "$(find "$STAGE" -name '*.pyc' | wc -l) .pyc files by $target_python (unchecked-hash)"
else
  info "no CPython $PYVER here (pyenv or python$PYVER on PATH): no .pyc; every cold start compiles the sources"
fi

# ---------------------------------------------------------------------------
step "Floors: GLIBC <= $LAMBDA_GLIBC, GLIBCXX <= $LAMBDA_GLIBCXX, extension modules for CPython $PYVER"
"$HOSTPY" "$ROOT/scripts/elf_check.py" floors "$STAGE" "$STAGE.floors.json" "$LAMBDA_GLIBC" "$LAMBDA_GLIBCXX" "$PYTAG" \
  || die "the package would not load on Lambda's python$PYVER runtime (files named above)"
read -r GLIBC_FLOOR GLIBCXX_FLOOR < <("$HOSTPY" -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["glibc_floor"], d["glibcxx_floor"])' "$STAGE.floors.json")

# ---------------------------------------------------------------------------
step "Zip (sorted entries, fixed times, no extra attributes)"
# Written under a temporary name and moved into place only once every check
# has passed: readers never see a partial zip, a failed build leaves none.
rm -f "$ZIP_TMP"
( cd "$STAGE" && find . -mindepth 1 -printf '%P\n' | LC_ALL=C sort | TZ=UTC zip -X -9 -q -@ "$ZIP_TMP" ) \
  || die "zip failed (disk full?)"
ZIP_BYTES=$(stat -c %s "$ZIP_TMP")
UNZIPPED_BYTES=$(bytes_of "$STAGE")
ZIP_SHA=$(sha256sum "$ZIP_TMP" | cut -d' ' -f1)
info "$OUT ($ZIP_BYTES bytes, sha256 $ZIP_SHA)"

# ---------------------------------------------------------------------------
step "Summary"
declare -a C_NAME=() C_FILES=() C_BYTES=()
component() {
  C_NAME+=("$1"); shift
  if [ $# -eq 0 ]; then C_FILES+=(0); C_BYTES+=(0); return; fi
  C_FILES+=("$(files_of "$@")"); C_BYTES+=("$(bytes_of "$@")")
}
shopt -s nullglob
math_libs=("$STAGE"/lib/lib{Rblas,Rlapack,gfortran,quadmath}*)
gcc_libs=("$STAGE"/lib/lib{stdc++,gcc_s,gomp}*)
other_libs=()
for f in "$STAGE"/lib/*; do
  case ${f##*/} in
    libRblas*|libRlapack*|libgfortran*|libquadmath*|libstdc++*|libgcc_s*|libgomp*) ;;
    *) other_libs+=("$f") ;;
  esac
done
cffi_files=("$STAGE"/_cffi_backend.*)
[ -d "$STAGE/cffi.libs" ] && cffi_files+=("$STAGE/cffi.libs")
abi_pyc=("$STAGE"/__pycache__/_rinterface_cffi_abi.*)
handler_pyc=("$STAGE"/__pycache__/handler.*)
shopt -u nullglob
component "R home (bin, etc, modules)" "$STAGE/R/bin" "$STAGE/R/etc" "$STAGE/R/modules"
component "R packages (R/library)" "$STAGE/R/library"
component "libR.so" "$STAGE/R/lib"
component "R's BLAS/LAPACK, gfortran, quadmath" "${math_libs[@]}"
component "libstdc++, libgcc_s, libgomp" "${gcc_libs[@]}"
component "other shared libraries" "${other_libs[@]}"
component "Python: rpy2 + _cffi_backend" "$STAGE/rpy2" "$STAGE/_rinterface_cffi_abi.py" "${abi_pyc[@]}" "${cffi_files[@]}"
component "handler, test_handler, rlambda" "$STAGE/handler.py" "${handler_pyc[@]}" "$STAGE/test_handler.py" "$STAGE/rlambda"
printf '\n    %-36s %7s %14s\n' "component" "files" "bytes unzipped"
printf '    %-36s %7s %14s\n' "------------------------------------" "-------" "--------------"
total_files=0
for i in "${!C_NAME[@]}"; do
  printf '    %-36s %7d %14d\n' "${C_NAME[$i]}" "${C_FILES[$i]}" "${C_BYTES[$i]}"
  total_files=$((total_files + C_FILES[i]))
done
[ "$total_files" -eq "$(files_of "$STAGE")" ] || die "the size table covers $total_files of $(files_of "$STAGE") files"
printf '    %-36s %7d %14d\n' "total unzipped" "$(files_of "$STAGE")" "$UNZIPPED_BYTES"
printf '    %-36s %7s %14d   (%s MB)\n' "zip ($OUT)" "" "$ZIP_BYTES" "$(awk -v b="$ZIP_BYTES" 'BEGIN {printf "%.1f", b / 1048576}')"
printf '    GLIBC floor %s (Lambda python%s: %s), GLIBCXX floor %s (%s)\n' "$GLIBC_FLOOR" "$PYVER" "$LAMBDA_GLIBC" "$GLIBCXX_FLOOR" "$LAMBDA_GLIBCXX"
printf '\n    largest files:\n'
(cd "$STAGE" && find . -type f -printf '%s %P\n' | sort -k1,1nr -k2 | awk 'NR <= 8 {printf "      %10d  %s\n", $1, $2}')

# ---------------------------------------------------------------------------
step "Lambda limits"
[ "$ZIP_BYTES" -le "$MAX_ZIP" ] || die "the zip is $ZIP_BYTES bytes, over the limit of $MAX_ZIP (Lambda's direct upload: 50 MB); trim it, or upload through S3 / use a layer"
[ "$UNZIPPED_BYTES" -le "$MAX_UNZIPPED" ] || die "the package unzips to $UNZIPPED_BYTES bytes, over the limit of $MAX_UNZIPPED (Lambda: 250 MB with layers); trim it or use a container image"
info "zip $ZIP_BYTES <= $MAX_ZIP; unzipped $UNZIPPED_BYTES <= $MAX_UNZIPPED"

# Machine-readable figures for tests, bench/bench_package.py and the docs.
"$HOSTPY" - "$REPORT.part" "$STAGE.floors.json" <<EOF || die "could not write the report"
import json, sys
names = """$(printf '%s\n' "${C_NAME[@]}")""".splitlines()
files = [int(x) for x in "${C_FILES[*]}".split()]
sizes = [int(x) for x in "${C_BYTES[*]}".split()]
floors = json.load(open(sys.argv[2]))
floors.pop("problems")
json.dump({
    "zip": "$OUT", "zip_bytes": $ZIP_BYTES, "zip_sha256": "$ZIP_SHA", "unzipped_bytes": $UNZIPPED_BYTES,
    "components": [{"name": n, "files": f, "bytes": s} for n, f, s in zip(names, files, sizes)],
    **floors,
    "python": "$PYVER", "r_version": "$R_VERSION", "r_home_source": "${R_SRC#"$ROOT"/}",
    "rpy2": "$RPY2_VERSION", "rpy2_cffi_mode": "ABI", "cffi": "$CFFI_VERSION",
    "r_packages": "$R_PACKAGES".split(), "bytecode": $([ "$BYTECODE" = true ] && echo True || echo False),
    "build_seconds": $(( $(date +%s) - T0 )),
}, open(sys.argv[1], "w"), indent=1)
EOF
mv "$REPORT.part" "$REPORT"
mv "$ZIP_TMP" "$OUT_ABS"
info "figures written to ${REPORT#"$ROOT"/}"
info "built for python$PYVER, R $R_VERSION, rpy2 $RPY2_VERSION (ABI), GLIBC floor $GLIBC_FLOOR, GLIBCXX floor $GLIBCXX_FLOOR, in $(( $(date +%s) - T0 )) s"
exit 0
}
