#!/usr/bin/env bash
# Build build/admission.zip: the Lambda deployment package (python3.x runtime,
# zip upload), carrying its own trimmed R, the shared libraries R needs, rpy2
# and the handler. tests/test_package.py proves it runs where no R is installed.
#
# Usage: scripts/package.sh [--strict] [--full-icu] [--model FILE.rds] [--r-packages pkgA,pkgB] [--out FILE]
#   --strict         a GLIBC floor above LAMBDA_GLIBC is an error, not a warning
#   --full-icu       ship ICU's 31 MB data library instead of a stub (see below)
#   --model FILE     bundle the R packages this saved model needs, found from
#                    the object itself (models/packages.R); e.g. a randomForest
#   --r-packages     extra R packages a model needs (copied with their
#                    Depends/Imports, recursively, from the build machine's R)
#   --out FILE       where to write the zip (default build/admission.zip)
# Environment:
#   PY               the Python the package is built for (default .venv/bin/python);
#                    rpy2 and cffi are taken from its site-packages
#   LAMBDA_PYTHON    e.g. 3.12: refuse to build when PY is another version
#   LAMBDA_GLIBC     the target runtime's glibc (default 2.34, Amazon Linux 2023)
#   LAMBDA_MAX_ZIP_BYTES, LAMBDA_MAX_UNZIPPED_BYTES
#                    size limits (default Lambda's 50 MB and 250 MB)
#   R_SRC            the R home to copy from (default: `R RHOME`)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

PY=${PY:-$ROOT/.venv/bin/python}
OUT=build/admission.zip
LAMBDA_GLIBC=${LAMBDA_GLIBC:-2.34}
STRICT=0
FULL_ICU=0
EXTRA_R_PACKAGES=""
MODEL_RDS=""
# Lambda's limits; lower them to leave room for layers (they share the 250 MB).
MAX_ZIP=${LAMBDA_MAX_ZIP_BYTES:-$((50 * 1024 * 1024))}            # zip upload limit
MAX_UNZIPPED=${LAMBDA_MAX_UNZIPPED_BYTES:-$((250 * 1024 * 1024))} # unzipped size limit (incl. layers)
# Fixed mtime for every entry: zip stores DOS times (1980 at the earliest), so
# not @0. Together with sorted entries and -X this makes rebuilds identical.
FIXED_TIME="2000-01-01 00:00:00 UTC"

while [ $# -gt 0 ]; do
  case "$1" in
    --strict) STRICT=1 ;;
    --r-packages) EXTRA_R_PACKAGES=${2:?--r-packages needs a comma-separated list}; shift ;;
    --r-packages=*) EXTRA_R_PACKAGES=${1#*=} ;;
    --model) MODEL_RDS=${2:?--model needs an .rds file}; shift ;;
    --model=*) MODEL_RDS=${1#*=} ;;
    --out) OUT=${2:?--out needs a file name}; shift ;;
    --out=*) OUT=${1#*=} ;;
    --full-icu) FULL_ICU=1 ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "package.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

if [ -n "$MODEL_RDS" ]; then
  # The model object names its packages (its classes', the models and recipe
  # it wraps, their Depends/Imports); an uninstalled one stops the build here.
  model_pkgs=$(Rscript "$ROOT/models/packages.R" "$MODEL_RDS" | paste -sd, -) \
    || { echo "package.sh: cannot find the R packages $MODEL_RDS needs" >&2; exit 1; }
  echo "package.sh: $MODEL_RDS needs R packages: ${model_pkgs:-none beyond base R}"
  EXTRA_R_PACKAGES=$(printf '%s' "$EXTRA_R_PACKAGES,$model_pkgs" | sed 's/^,*//; s/,*$//; s/,,*/,/g')
fi

STEP=0
T0=$(date +%s)
step() { STEP=$((STEP + 1)); printf '\n==> [%d] %s\n' "$STEP" "$*"; }
info() { printf '    %s\n' "$*"; }
die() { printf '\npackage.sh: ERROR: %s\n' "$*" >&2; exit 1; }
warn() { printf '\n!!! WARNING: %s\n' "$*" >&2; }
bytes_of() { find "$@" -type f -printf '%s\n' 2>/dev/null | awk '{s+=$1} END {print s+0}'; }
files_of() { find "$@" -type f 2>/dev/null | wc -l; }
is_elf() { [ "$(head -c 4 "$1" 2>/dev/null | od -An -c | tr -d ' ')" = '177ELF' ]; }

for tool in R Rscript ldd objdump strip zip find; do
  command -v "$tool" >/dev/null || die "$tool is not installed (make setup installs what the build needs)"
done
[ -x "$PY" ] || die "no Python at $PY: run make setup, or set PY=/path/to/python"

OUT_ABS=$(mkdir -p "$(dirname "$OUT")" && cd "$(dirname "$OUT")" && pwd)/$(basename "$OUT")
BUILD=$(dirname "$OUT_ABS")
STAGE=$BUILD/stage
REPORT=${OUT_ABS%.zip}.report.json

# ---------------------------------------------------------------------------
step "Python the package is built for"
PYVER=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
PYTAG=$("$PY" -c 'import sys; print("cpython-%d%d" % sys.version_info[:2])')
info "building for Python $PYVER ($PY)"
if [ -n "${LAMBDA_PYTHON:-}" ] && [ "$LAMBDA_PYTHON" != "$PYVER" ]; then
  die "LAMBDA_PYTHON=$LAMBDA_PYTHON but the package would be built with Python $PYVER.
  rpy2's API-mode extension (_rinterface_cffi_api.abi3.so) is abi3 and would load on
  any CPython 3, but cffi's _cffi_backend.$PYTAG-x86_64-linux-gnu.so is specific to
  CPython $PYVER: on python$LAMBDA_PYTHON the import of rpy2 fails ('No module named
  _cffi_backend'). Build with a Python $LAMBDA_PYTHON environment that has rpy2 installed
  (PY=/path/to/python$LAMBDA_PYTHON make package), or deploy with runtime python$PYVER."
fi
# Where rpy2 and cffi's backend really are for this interpreter.
read -r SITE CFFI_BACKEND RPY2_API RPY2_VERSION < <("$PY" - <<'EOF'
import importlib.util, os, rpy2, _cffi_backend
api = importlib.util.find_spec("_rinterface_cffi_api")
print(os.path.dirname(os.path.dirname(rpy2.__file__)), _cffi_backend.__file__,
      api.origin if api else "-", rpy2.__version__)
EOF
) || die "rpy2 is not importable with $PY (make setup installs it)"
[ "$RPY2_API" != "-" ] || die "rpy2's API-mode extension _rinterface_cffi_api is missing in $SITE (reinstall rpy2 from source with R headers present)"
info "rpy2 $RPY2_VERSION from $SITE"

# ---------------------------------------------------------------------------
step "R home without its library"
R_SRC=${R_SRC:-$(R RHOME)}
# shellcheck disable=SC2016 # R code: the $ is R's
R_VERSION=$(Rscript -e 'cat(R.version$major, R.version$minor, sep = ".")')
info "R $R_VERSION from $R_SRC"
rm -rf "$STAGE"
mkdir -p "$STAGE/R/bin/exec" "$STAGE/R/etc" "$STAGE/R/library" "$STAGE/R/modules" "$STAGE/lib"
cp "$R_SRC/bin/exec/R" "$STAGE/R/bin/exec/R"
# The Rscript binary execs $RHOME/bin/R, RHOME defaulting to the compiled-in
# /usr/lib/R (see `strings $R_SRC/bin/Rscript`); a wrapper sets RHOME first.
cp "$R_SRC/bin/Rscript" "$STAGE/R/bin/exec/Rscript"
cat > "$STAGE/R/bin/Rscript" <<'EOF'
#!/bin/sh
# Rscript of the bundled R. The real binary (bin/exec/Rscript) would exec
# /usr/lib/R/bin/R, compiled in, unless RHOME says where R is.
case "$0" in */*) here=${0%/*} ;; *) here=$(command -v "$0"); here=${here%/*} ;; esac
RHOME=$(cd -P "$here/.." && pwd)
export RHOME
exec "$RHOME/bin/exec/Rscript" "$@"
EOF
# Debian's bin/R hardcodes R_HOME_DIR=/usr/lib/R and shells out to sed and
# uname. This front end finds R_HOME from its own path and passes arguments
# through unchanged (quoted "$@" needs none of the ~+~ escaping the original
# does for its unquoted $args, and exec/R reads -e expressions verbatim).
# `R CMD` (building packages) has no place in a function.
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
# R_HOME-relative (%S = R_HOME/site-library); Debian's /usr/local paths go.
# Renviron.site, Rprofile.site (CRAN mirror), Makeconf and repositories are
# read only by R CMD / install.packages, or set nothing a function needs.
sed -e "s|^R_LIBS_SITE=.*|R_LIBS_SITE=\${R_LIBS_SITE:-'%S'}|" \
  "$R_SRC/etc/Renviron" > "$STAGE/R/etc/Renviron"
grep -q "^R_LIBS_SITE=\${R_LIBS_SITE:-'%S'}" "$STAGE/R/etc/Renviron" || die "could not rewrite R_LIBS_SITE in Renviron"
# modules/lapack.so: loaded by solve(), chol(), svd()... Left out:
# internet.so (links libcurl, gnutls, ldap, ...; models come from S3 by boto3),
# R_X11.so and R_de.so (X11 front ends).
cp "$R_SRC/modules/lapack.so" "$STAGE/R/modules/"
info "bin: R, Rscript (front ends), exec/R, exec/Rscript; etc: Renviron, ldpaths; modules: lapack.so"

# ---------------------------------------------------------------------------
step "R packages"
# What start-up and scoring load, found by running the handler and asking R
# (loadedNamespaces()) and by strace: the default packages (datasets utils
# grDevices graphics stats methods), base, and compiler (R's JIT loads it the
# first time a function is compiled, i.e. on the second call of a closure).
# tools, the 2017 list's eighth, is not loaded for a plain lm/glm, but any
# other model class is looked up with utils::getS3method(), which loads it
# (tests/test_package.py: a randomForest zip without tools refuses the model
# with "package 'tools' does not have a namespace"). 2.4 MB unzipped.
BASE_R_PACKAGES=(base compiler datasets graphics grDevices methods stats tools utils)
extra=()
if [ -n "$EXTRA_R_PACKAGES" ]; then
  mapfile -t extra < <(Rscript -e '
    want <- strsplit(commandArgs(TRUE)[1], ",")[[1]]
    want <- trimws(want[nzchar(trimws(want))])
    ip <- installed.packages()
    missing <- setdiff(want, rownames(ip))
    if (length(missing)) stop("not installed on the build machine: ", paste(missing, collapse = ", "))
    deps <- tools::package_dependencies(want, db = ip, which = c("Depends", "Imports"), recursive = TRUE)
    cat(sort(unique(c(want, unlist(deps)))), sep = "\n")' "$EXTRA_R_PACKAGES" || echo "!failed")
  [ "${extra[*]: -1}" != "!failed" ] || die "cannot resolve --r-packages $EXTRA_R_PACKAGES"
fi
mapfile -t ALL_R_PACKAGES < <(printf '%s\n' "${BASE_R_PACKAGES[@]}" "${extra[@]}" | LC_ALL=C sort -u)
R_PACKAGES="${ALL_R_PACKAGES[*]}"
for pkg in "${ALL_R_PACKAGES[@]}"; do
  src=$(Rscript -e 'cat(find.package(commandArgs(TRUE)[1]))' "$pkg" 2>/dev/null) || die "R package $pkg is not installed"
  # Everything in .Library: it is always on the library path, whatever the
  # environment says.
  cp -a "$src" "$STAGE/R/library/$pkg"
  info "$pkg  <- $src"
done

# ---------------------------------------------------------------------------
step "Trim what no invocation reads"
# Help, manuals, demos, tests, translations, headers (LinkingTo is for
# compiling), help indexes; grDevices' font metrics, encodings and colour
# profiles serve only the pdf()/postscript() devices.
for pkgdir in "$STAGE"/R/library/*/; do
  rm -rf "$pkgdir"{help,html,doc,demo,tests,po,include,NEWS,NEWS.md,NEWS.Rd,CITATION,INDEX,README,README.md}
  rm -f "$pkgdir"Meta/{Rd,hsearch,links,demo,vignette}.rds
done
rm -rf "$STAGE/R/library/grDevices/"{afm,enc,icc}
# grDevices/libs/cairo.so is the cairo device (png(type = "cairo")),
# loaded only when such a device opens; it alone pulls in X11, cairo, pango,
# harfbuzz, glib, freetype, fontconfig, tiff, jpeg, webp ... (~40 libraries).
rm -f "$STAGE/R/library/grDevices/libs/cairo.so"
info "removed help, html, doc, demo, tests, po, include, NEWS, CITATION, INDEX; grDevices afm/enc/icc and the cairo device"

# ---------------------------------------------------------------------------
step "Python packages: rpy2's low-level interface and cffi's backend"
# What the handler imports, checked with sys.modules after real requests:
# rpy2 (situation, rinterface, rinterface_lib), the API-mode extension
# _rinterface_cffi_api (abi3), and _cffi_backend, which that extension imports.
# Not the cffi package (a build-time tool), pycparser, jinja2 or tzlocal
# (robjects' and ipython's needs), nor rpy2.robjects, rlike, ipython, tests.
# boto3/botocore are in every Lambda Python runtime and are not shipped.
mkdir -p "$STAGE/rpy2/rinterface_lib"
cp "$SITE/rpy2/"{__init__.py,situation.py,rinterface.py} "$STAGE/rpy2/"
cp "$SITE/rpy2/rinterface_lib/"*.py "$STAGE/rpy2/rinterface_lib/"
rm -f "$STAGE/rpy2/rinterface_lib/embedded_mswin.py"
cp "$RPY2_API" "$STAGE/"
cp "$CFFI_BACKEND" "$STAGE/"
info "$(basename "$RPY2_API"), $(basename "$CFFI_BACKEND"), rpy2/{__init__,situation,rinterface}.py, rpy2/rinterface_lib/*.py"

# ---------------------------------------------------------------------------
step "Handler and rlambda at the zip root"
cp handler.py test_handler.py "$STAGE/"
mkdir -p "$STAGE/rlambda"
( cd rlambda && find . -type f \( -name '*.py' -o -name '*.R' \) -not -path '*/__pycache__/*' -exec cp --parents {} "$STAGE/rlambda/" \; )
info "handler.py, test_handler.py, rlambda/ ($(files_of "$STAGE/rlambda") files)"

# ---------------------------------------------------------------------------
step "Shared libraries (ldd closure, minus glibc)"
# Every Lambda runtime has glibc (libc, libm, libpthread, libdl, librt,
# libresolv, ...) and the loader; everything else is shipped in lib/, which
# is on Lambda's LD_LIBRARY_PATH (/var/task/lib). libR.so goes there too:
# rpy2's API-mode extension links libR.so by soname, and its RUNPATH points at
# the build machine (/usr/lib/R/lib), so it is found through LD_LIBRARY_PATH.
# (RPY2_CFFI_MODE=ABI would dlopen R_HOME/lib/libR.so by path instead; a
# one-row request measured the same either way, ~0.36 ms, R's evaluation
# dominates. ABI mode would still need lib/ on LD_LIBRARY_PATH for libR.so's
# own dependencies, so API mode, the default, is kept.)
GLIBC_LIBS='^(linux-vdso\.so|ld-linux-x86-64\.so|libc\.so|libm\.so|libmvec\.so|libpthread\.so|libdl\.so|librt\.so|libresolv\.so|libutil\.so|libanl\.so|libnss_|libBrokenLocale\.so|libthread_db\.so)'
declare -A NEEDED=()
elfs=()
while IFS= read -r -d '' f; do is_elf "$f" && elfs+=("$f"); done < <(find "$STAGE" -type f -print0)
# libR.so itself is resolved the same way as everything else (through the
# host's copy), so it needs nothing special beyond being in the list.
for f in "${elfs[@]}" "$R_SRC/lib/libR.so"; do
  while read -r name arrow path _; do
    [ "$arrow" = "=>" ] || continue
    [[ "$name" =~ $GLIBC_LIBS ]] && continue
    [ "$path" = "not" ] && die "$(basename "$f") needs $name, which is not found on the build machine"
    NEEDED[$name]=$path
  done < <(env -u LD_LIBRARY_PATH ldd "$f" 2>/dev/null || true)
done
for name in $(printf '%s\n' "${!NEEDED[@]}" | LC_ALL=C sort); do
  real=$(readlink -f "${NEEDED[$name]}")
  # Copied under the soname: Debian's libblas.so.3 and liblapack.so.3 are
  # alternatives symlinks (/etc/alternatives -> .../blas/libblas.so.3).
  cp "$real" "$STAGE/lib/$name"
  if [ "$real" != "${NEEDED[$name]}" ]; then info "$name  <- $real"; else info "$name"; fi
done

# ---------------------------------------------------------------------------
step "ICU data"
# libR.so links libicuuc/libicui18n, so they must load; R calls ICU only to
# collate strings (sort, order, factor levels, and methods' start-up) in a
# non-C collation locale, C.UTF-8 included. libicudata is 31 MB of tables
# (12 MB zipped, 40% of the zip) that only that collation reads. By default
# it is replaced by a stub that defines the same symbol, and R/etc/Renviron
# pins LC_COLLATE=C (Renviron overrides the environment) and clears
# R_ICU_LOCALE, so R never opens an ICU collator: strings sort in C (code
# point) order, the same on every machine. --full-icu ships the real data
# (locale-aware collation); so does any bundled R package that links ICU
# itself (e.g. stringi), detected below.
icudata=""
for f in "$STAGE"/lib/libicudata.so.*; do [ -e "$f" ] && icudata=${f##*/}; done
icu_users=""
for f in "$STAGE"/R/library/*/libs/*.so; do
  [ -e "$f" ] || continue
  if objdump -p "$f" 2>/dev/null | grep -q 'NEEDED *libicu'; then icu_users="$icu_users ${f#"$STAGE"/}"; fi
done
if [ -z "$icudata" ]; then
  info "no libicudata in the closure (R built without ICU)"
elif [ "$FULL_ICU" = 1 ]; then
  info "--full-icu: shipping $icudata ($(stat -c %s "$STAGE/lib/$icudata") bytes)"
elif [ -n "$icu_users" ]; then
  info "shipping the real $icudata: R packages link ICU themselves:$icu_users"
elif ! command -v gcc >/dev/null; then
  warn "gcc is not installed: cannot build the ICU data stub, shipping the real $icudata"
else
  icu_major=${icudata#libicudata.so.}
  icu_major=${icu_major%%.*}
  stub_src=$BUILD/icudata-stub.c
  printf '%s\n' "/* Stands in for ICU's data library (see scripts/package.sh): defines the" \
    "   symbol libicuuc links to; ICU finds no valid data in it and reports an error" \
    "   if it is ever asked for some, which R avoids with LC_COLLATE=C. */" \
    "const unsigned char icudt${icu_major}_dat[16] __attribute__((aligned(16))) = {0};" > "$stub_src"
  gcc -shared -fPIC -O2 -Wl,-soname,"$icudata" -o "$STAGE/lib/$icudata" "$stub_src"
  rm -f "$stub_src"
  objdump -T "$STAGE/lib/$icudata" | grep -q "icudt${icu_major}_dat" || die "the ICU stub lacks icudt${icu_major}_dat"
  printf '\n## This package ships a stub of ICU'"'"'s data (scripts/package.sh): keep string\n## collation out of ICU. Build with --full-icu for locale-aware collation.\nLC_COLLATE=C\nR_ICU_LOCALE=\n' >> "$STAGE/R/etc/Renviron"
  info "$icudata replaced by a stub (icudt${icu_major}_dat); Renviron: LC_COLLATE=C, R_ICU_LOCALE unset"
fi

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
step "Zip (sorted entries, fixed times, no extra attributes)"
# Written under a temporary name and moved into place only once every check
# below has passed: readers never see a partial zip, a failed build leaves none.
ZIP_TMP="$OUT_ABS.part"
rm -f "$ZIP_TMP" "$OUT_ABS"
trap 'rm -f "$ZIP_TMP"' EXIT
( cd "$STAGE" && find . -mindepth 1 -printf '%P\n' | LC_ALL=C sort | TZ=UTC zip -X -9 -q -@ "$ZIP_TMP" )
ZIP_BYTES=$(stat -c %s "$ZIP_TMP")
UNZIPPED_BYTES=$(bytes_of "$STAGE")
ZIP_SHA=$(sha256sum "$ZIP_TMP" | cut -d' ' -f1)
info "$OUT ($ZIP_BYTES bytes, sha256 $ZIP_SHA)"

# ---------------------------------------------------------------------------
step "GLIBC floor (highest GLIBC_x.y any bundled binary needs; target $LAMBDA_GLIBC)"
# objdump -T lists the dynamic symbols with their versions; the undefined
# ones are what the file needs from glibc.
ver_gt() { [ "$1" != "$2" ] && [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | tail -1)" = "$1" ]; }
GLIBC_FLOOR=0
declare -A GLIBC_OF=()
over=()
for f in $(cd "$STAGE" && find . -type f -printf '%P\n' | LC_ALL=C sort); do
  is_elf "$STAGE/$f" || continue
  v=$(objdump -T "$STAGE/$f" 2>/dev/null | awk '/\*UND\*/' | grep -oE 'GLIBC_[0-9]+(\.[0-9]+)+' | sed 's/GLIBC_//' | sort -uV | tail -1 || true)
  [ -n "$v" ] || continue
  GLIBC_OF[$f]=$v
  ver_gt "$v" "$GLIBC_FLOOR" && GLIBC_FLOOR=$v
  if ver_gt "$v" "$LAMBDA_GLIBC"; then
    syms=$(objdump -T "$STAGE/$f" | awk '/\*UND\*/' | grep -oE 'GLIBC_[0-9.]+\)? +[^ ]+$' | tr -d ')' \
      | while read -r gv sym; do ver_gt "${gv#GLIBC_}" "$LAMBDA_GLIBC" && echo "$sym@${gv}"; done | sort -u | tr '\n' ' ' || true)
    over+=("$f needs GLIBC_$v: $syms")
  fi
done
info "GLIBC floor of the package: $GLIBC_FLOOR (Lambda target: $LAMBDA_GLIBC)"
for f in $(printf '%s\n' "${!GLIBC_OF[@]}" | LC_ALL=C sort); do
  printf '      %-58s GLIBC_%s\n' "$f" "${GLIBC_OF[$f]}"
done
if ver_gt "$GLIBC_FLOOR" "$LAMBDA_GLIBC"; then
  msg="the package needs GLIBC $GLIBC_FLOOR but the Lambda runtime has $LAMBDA_GLIBC:
$(printf '      %s\n' "${over[@]}")
  On Lambda these fail to load ('version GLIBC_$GLIBC_FLOOR not found'). Build on
  Amazon Linux 2023 (e.g. in public.ecr.aws/lambda/python:3.12 or an al2023 container,
  with R built or installed there) so the binaries link against glibc $LAMBDA_GLIBC,
  or ship this Debian build as a Lambda container image instead of a zip."
  if [ "$STRICT" = 1 ]; then die "$msg"; else warn "$msg
  (--strict makes this an error)"; fi
fi

# ---------------------------------------------------------------------------
step "Summary"
declare -a C_NAME=() C_FILES=() C_BYTES=()
component() {
  C_NAME+=("$1"); shift
  if [ $# -eq 0 ]; then C_FILES+=(0); C_BYTES+=(0); return; fi
  C_FILES+=("$(files_of "$@")"); C_BYTES+=("$(bytes_of "$@")")
}
shopt -s nullglob
icu_libs=("$STAGE"/lib/libicu*)
math_libs=("$STAGE"/lib/lib{blas,lapack,gfortran,quadmath}*)
gcc_libs=("$STAGE"/lib/lib{stdc++,gcc_s,gomp}*)
other_libs=()
for f in "$STAGE"/lib/*; do
  case ${f##*/} in
    libR.so|libicu*|libblas*|liblapack*|libgfortran*|libquadmath*|libstdc++*|libgcc_s*|libgomp*) ;;
    *) other_libs+=("$f") ;;
  esac
done
shopt -u nullglob
component "R home (bin, etc, modules)" "$STAGE/R/bin" "$STAGE/R/etc" "$STAGE/R/modules"
component "R packages (R/library)" "$STAGE/R/library"
component "libR.so" "$STAGE/lib/libR.so"
component "ICU (lib/libicu*)" "${icu_libs[@]}"
component "BLAS/LAPACK, gfortran, quadmath" "${math_libs[@]}"
component "libstdc++, libgcc_s, libgomp" "${gcc_libs[@]}"
component "other shared libraries" "${other_libs[@]}"
component "Python: rpy2 + _cffi_backend" "$STAGE/rpy2" "$STAGE/$(basename "$RPY2_API")" "$STAGE/$(basename "$CFFI_BACKEND")"
component "handler, test_handler, rlambda" "$STAGE/handler.py" "$STAGE/test_handler.py" "$STAGE/rlambda"
printf '\n    %-34s %7s %14s\n' "component" "files" "bytes unzipped"
printf '    %-34s %7s %14s\n' "----------------------------------" "-------" "--------------"
total_files=0
for i in "${!C_NAME[@]}"; do
  printf '    %-34s %7d %14d\n' "${C_NAME[$i]}" "${C_FILES[$i]}" "${C_BYTES[$i]}"
  total_files=$((total_files + C_FILES[i]))
done
[ "$total_files" -eq "$(files_of "$STAGE")" ] || warn "components cover $total_files of $(files_of "$STAGE") files"
printf '    %-34s %7d %14d\n' "total unzipped" "$(files_of "$STAGE")" "$UNZIPPED_BYTES"
printf '    %-34s %7s %14d   (%s MB)\n' "zip ($OUT)" "" "$ZIP_BYTES" "$(awk -v b="$ZIP_BYTES" 'BEGIN {printf "%.1f", b / 1048576}')"
printf '\n    largest files:\n'
# (awk reads all its input: `head` would end the pipe early, and pipefail with it)
(cd "$STAGE" && find . -type f -printf '%s %P\n' | sort -k1,1nr -k2 | awk 'NR <= 8 {printf "      %10d  %s\n", $1, $2}')

# Machine-readable figures for bench/bench_package.py and the docs.
"$PY" - "$REPORT" <<EOF
import json, sys
names = """$(printf '%s\n' "${C_NAME[@]}")""".splitlines()
files = [int(x) for x in "${C_FILES[*]}".split()]
sizes = [int(x) for x in "${C_BYTES[*]}".split()]
glibc = {k: v for k, v in (line.split("=", 1) for line in """$(for f in "${!GLIBC_OF[@]}"; do echo "$f=${GLIBC_OF[$f]}"; done)""".splitlines() if line)}
json.dump({
    "zip": "$OUT", "zip_bytes": $ZIP_BYTES, "zip_sha256": "$ZIP_SHA", "unzipped_bytes": $UNZIPPED_BYTES,
    "components": [{"name": n, "files": f, "bytes": s} for n, f, s in zip(names, files, sizes)],
    "glibc_floor": "$GLIBC_FLOOR", "lambda_glibc": "$LAMBDA_GLIBC", "glibc_by_file": dict(sorted(glibc.items())),
    "python": "$PYVER", "r_version": "$R_VERSION", "rpy2": "$RPY2_VERSION", "full_icu": $FULL_ICU == 1,
    "r_packages": "$R_PACKAGES".split(),
}, open(sys.argv[1], "w"), indent=1)
EOF
info "figures written to ${REPORT#"$ROOT"/}"

# ---------------------------------------------------------------------------
step "Lambda limits"
[ "$ZIP_BYTES" -le "$MAX_ZIP" ] || die "the zip is $ZIP_BYTES bytes, over the limit of $MAX_ZIP (Lambda's direct upload: 50 MB); trim it, or upload through S3 / use a layer"
[ "$UNZIPPED_BYTES" -le "$MAX_UNZIPPED" ] || die "the package unzips to $UNZIPPED_BYTES bytes, over the limit of $MAX_UNZIPPED (Lambda: 250 MB with layers); trim it or use a container image"
info "zip $ZIP_BYTES <= $MAX_ZIP; unzipped $UNZIPPED_BYTES <= $MAX_UNZIPPED"
mv "$ZIP_TMP" "$OUT_ABS"
info "built for Python $PYVER, R $R_VERSION, rpy2 $RPY2_VERSION, GLIBC floor $GLIBC_FLOOR, in $(( $(date +%s) - T0 )) s"
