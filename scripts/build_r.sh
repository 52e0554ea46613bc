#!/usr/bin/env bash
# Build R (and extra R packages) from Debian's sources inside a Debian 11 root
# (glibc 2.31), so that every binary loads on Lambda's Amazon Linux 2023
# (glibc 2.34, GLIBCXX <= 3.4.29). Used by scripts/package.sh; callable alone.
#
# Usage: scripts/build_r.sh [R-PACKAGE ...]
#   Prints, on its last line of stdout, nothing but the cached R home
#   (build/cache/R-<version>-<key>/R), after a "root <dir>" line naming the
#   build root (where the shared libraries R needs are); each named R package (with its
#   Depends/Imports/LinkingTo, recursively, base R's excepted) is built from
#   Debian's r-cran-<name> source package into its own cache entry, listed on
#   stdout as "rpkg <name> <dir>" lines before the R home line.
# Settings (environment):
#   R_BUILD_MIRROR   Debian mirror (default: the first one apt already uses)
#   R_BUILD_SUITE    the old Debian release to build in (default bullseye: glibc 2.31)
#   R_SOURCE_SUITE   the release whose source packages are used (default trixie)
#   R_VERSION        the R version wanted (default 4.5.0); its orig tarball's
#                    sha256 must be pinned in scripts/r-sources.sha256
#   R_BUILD_JOBS     make -j (default 2)
#   R_BUILD_CACHE    the cache folder (default build/cache)
# Every cache entry is built under a temporary name and renamed when whole:
# a failed step leaves nothing half-filled, and says which step failed.
set -euo pipefail
# The whole script is one block, read before it runs: editing the file while
# a build is under way cannot change what that build does next.
{

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

# Bump when the way R is built changes, so old cache entries are not reused.
RECIPE=1
R_VERSION=${R_VERSION:-4.5.0}
R_BUILD_SUITE=${R_BUILD_SUITE:-bullseye}
R_SOURCE_SUITE=${R_SOURCE_SUITE:-trixie}
R_BUILD_JOBS=${R_BUILD_JOBS:-2}
CACHE=${R_BUILD_CACHE:-$ROOT/build/cache}
PINS=$ROOT/scripts/r-sources.sha256
R_CONFIGURE_FLAGS="--enable-R-shlib --without-x --without-recommended-packages --without-readline --without-ICU --disable-java --without-tcltk"
# What the root needs to build R and the C/C++/Fortran code of R packages.
BUILD_DEPS="gcc g++ gfortran make perl libpcre2-dev liblzma-dev libbz2-dev zlib1g-dev libcurl4-openssl-dev xz-utils ca-certificates"

say() { printf '    [build_r] %s\n' "$*" >&2; }
die() { printf 'build_r.sh: FAILED at step "%s": %s\n' "${STEP:-setup}" "$*" >&2; exit 1; }
# Long steps print their progress to stderr; stdout carries only the results.
run_logged() { # LOGFILE CMD...: run CMD with output in LOGFILE, dots on stderr while it runs
  local log=$1; shift
  "$@" >"$log" 2>&1 &
  local pid=$! t0=$SECONDS
  while kill -0 "$pid" 2>/dev/null; do
    sleep 10
    kill -0 "$pid" 2>/dev/null && say "$STEP: $((SECONDS - t0)) s, $(wc -l <"$log") log lines ($(tail -c 100 "$log" | tr -d '\n\r' | tail -c 60))"
  done
  wait "$pid" || { tail -n 15 "$log" >&2; return 1; }
}

for tool in debootstrap bwrap apt-get patchelf sha256sum; do
  command -v "$tool" >/dev/null || { STEP="tools"; die "$tool is not installed (make setup installs it)"; }
done
[ "$(id -u)" = 0 ] || { STEP="tools"; die "debootstrap and apt-get in the build root need root"; }

if [ -z "${R_BUILD_MIRROR:-}" ]; then
  # The mirror apt already uses, from deb822 .sources or one-line .list files.
  R_BUILD_MIRROR=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/ {print $2}' | grep -v security | head -1 || true)
  [ -n "$R_BUILD_MIRROR" ] || R_BUILD_MIRROR=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | awk '$1 == "deb" && $0 !~ /security/ {for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) {print $i; exit}}' || true)
  [ -n "$R_BUILD_MIRROR" ] || { STEP="mirror"; die "no Debian mirror found in apt's sources; set R_BUILD_MIRROR"; }
fi
mkdir -p "$CACHE"

# Run a command inside the build root (bubblewrap: no mounts to clean up).
# shellcheck disable=SC2317 # called through run_logged
in_root() { # ROOTFS [EXTRA-BWRAP-ARGS... --] CMD...
  local rootfs=$1; shift
  local extra=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do extra+=("$1"); shift; done
  [ "${1:-}" = "--" ] && shift
  bwrap --bind "$rootfs" / --dev /dev --proc /proc --tmpfs /tmp \
    --ro-bind /etc/resolv.conf /etc/resolv.conf --cap-add ALL "${extra[@]}" \
    env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
    DEBIAN_FRONTEND=noninteractive "$@"
}

# ---------------------------------------------------------------------------
# Debian source packages through a private apt configuration: the machine's own
# apt state is left alone.
STEP="source index ($R_SOURCE_SUITE)"
APTSRC=$CACHE/apt-src-$R_SOURCE_SUITE
APT_OPTS=(-o "Dir::Etc::sourcelist=$APTSRC/sources.list" -o "Dir::Etc::sourceparts=-"
  -o "Dir::State::Lists=$APTSRC/lists" -o "Dir::Cache=$APTSRC/cache" -o "APT::Get::List-Cleanup=0"
  -o "Dir::State::status=$APTSRC/status" -o "APT::Sandbox::User=root" -o "Debug::NoLocking=1")
source_index() {
  [ -e "$APTSRC/lists/.ready" ] && return 0
  local STEP="source index ($R_SOURCE_SUITE)"
  mkdir -p "$APTSRC/lists/partial" "$APTSRC/cache/archives/partial"
  : >"$APTSRC/status"
  echo "deb-src $R_BUILD_MIRROR $R_SOURCE_SUITE main" >"$APTSRC/sources.list"
  say "apt-get update ($R_SOURCE_SUITE sources from $R_BUILD_MIRROR)"
  # --error-on=any: an unreachable mirror is an error, not a warning.
  if ! run_logged "$APTSRC/update.log" apt-get "${APT_OPTS[@]}" --error-on=any update \
    || ! compgen -G "$APTSRC/lists/*Sources*" >/dev/null; then
    die "apt-get update of $R_SOURCE_SUITE sources from $R_BUILD_MIRROR failed (log: $APTSRC/update.log)"
  fi
  touch "$APTSRC/lists/.ready"
}

# Fetch a Debian source package's upstream tarball, checked against the pin.
# Prints the tarball's path.
fetch_orig() { # SOURCE-PACKAGE [VERSION-PREFIX]
  local srcpkg=$1 want=${2:-} dir=$CACHE/src tar sha pinned
  mkdir -p "$dir"
  tar=$(find "$dir" -maxdepth 1 -name "${srcpkg}_${want}*.orig.tar.*" 2>/dev/null | sort | tail -1)
  if [ -z "$tar" ]; then
    source_index
    local dl
    dl=$(mktemp -d "$dir/.dl.XXXXXX")
    say "apt-get source --download-only $srcpkg ($R_SOURCE_SUITE)"
    # Only the upstream tarball is used (never Debian's patches): apt moves a
    # file into place only once its hash matches the signed Sources index, so
    # a present .orig.tar.* is a checked one even when the .dsc or the
    # .debian.tar.* could not be fetched (some mirrors serve the tarballs only).
    (cd "$dl" && apt-get "${APT_OPTS[@]}" source --download-only "$srcpkg" >"$dl/log" 2>&1) || true
    tar=$(find "$dl" -maxdepth 1 -name "${srcpkg}_*.orig.tar.*" | head -1)
    [ -n "$tar" ] || { tail -5 "$dl/log" >&2; rm -rf "$dl"; die "apt-get source $srcpkg brought no upstream tarball"; }
    case ${tar##*/} in "${srcpkg}_${want}"*) ;; *) rm -rf "$dl"; die "$R_SOURCE_SUITE has ${tar##*/}, not version $want of $srcpkg";; esac
    mv "$tar" "$dir/"
    tar=$dir/${tar##*/}
    rm -rf "$dl"
  fi
  sha=$(sha256sum "$tar" | cut -d' ' -f1)
  pinned=$(awk -v f="${tar##*/}" '$2 == f {print $1}' "$PINS")
  if [ -z "$pinned" ]; then
    die "${tar##*/} has no pinned sha256: check it, then add this line to scripts/r-sources.sha256:
$sha  ${tar##*/}"
  fi
  [ "$sha" = "$pinned" ] || { rm -f "$tar"; die "${tar##*/} has sha256 $sha, but $pinned is pinned (file removed)"; }
  printf '%s\n' "$tar"
}

# ---------------------------------------------------------------------------
STEP="R $R_VERSION source"
R_TAR=$(fetch_orig r-base "$R_VERSION")
R_SHA=$(sha256sum "$R_TAR" | cut -d' ' -f1)
R_KEY=$(printf '%s\n' "$RECIPE" "$R_SHA" "$R_CONFIGURE_FLAGS" "$R_BUILD_SUITE" | sha256sum | cut -c1-12)
# ---------------------------------------------------------------------------
# The build root: debootstrap + the build tools, once per suite.
STEP="build root ($R_BUILD_SUITE)"
ROOTFS=$CACHE/root-$R_BUILD_SUITE
if [ ! -e "$ROOTFS/.rlambda-ready" ]; then
  tmp=$CACHE/root-$R_BUILD_SUITE.tmp
  rm -rf "$tmp"
  say "debootstrap --variant=minbase $R_BUILD_SUITE from $R_BUILD_MIRROR"
  run_logged "$CACHE/root-$R_BUILD_SUITE.log" debootstrap --variant=minbase "$R_BUILD_SUITE" "$tmp" "$R_BUILD_MIRROR" \
    || die "debootstrap failed (mirror $R_BUILD_MIRROR reachable? log: $CACHE/root-$R_BUILD_SUITE.log)"
  STEP="build tools in the root"
  say "apt-get install $BUILD_DEPS"
  # shellcheck disable=SC2086 # a word list
  run_logged "$CACHE/root-$R_BUILD_SUITE.apt.log" in_root "$tmp" -- sh -c \
    "apt-get -o APT::Sandbox::User=root update && apt-get -o APT::Sandbox::User=root install -y --no-install-recommends $BUILD_DEPS && apt-get clean" \
    || die "apt-get in the $R_BUILD_SUITE root failed (log: $CACHE/root-$R_BUILD_SUITE.apt.log)"
  touch "$tmp/.rlambda-ready"
  rm -rf "$ROOTFS"
  mv "$tmp" "$ROOTFS"
fi
say "build root: $ROOTFS (glibc $(basename "$(readlink -f "$ROOTFS/lib/x86_64-linux-gnu/libc.so.6")" 2>/dev/null || echo '?'))"

R_CACHE=$CACHE/R-$R_VERSION-$R_KEY
if [ ! -e "$R_CACHE/R/lib/libR.so" ]; then
  STEP="R $R_VERSION build"
  tmp=$CACHE/.R-$R_VERSION-$R_KEY.tmp
  rm -rf "$tmp"
  mkdir -p "$tmp/work" "$tmp/opt"
  say "configure $R_CONFIGURE_FLAGS && make -j$R_BUILD_JOBS in the $R_BUILD_SUITE root (several minutes)"
  t0=$SECONDS
  run_logged "$CACHE/R-$R_VERSION-$R_KEY.log" in_root "$ROOTFS" --bind "$tmp/work" /build --ro-bind "$R_TAR" /src.tar.xz \
    --bind "$tmp/opt" /opt -- sh -ec "
      cd /build && tar xf /src.tar.xz && cd R-$R_VERSION
      ./configure --prefix=/opt/R $R_CONFIGURE_FLAGS
      make -j$R_BUILD_JOBS
      make install" \
    || { rm -rf "$tmp"; die "R's configure/make failed (log: $CACHE/R-$R_VERSION-$R_KEY.log)"; }
  STEP="R $R_VERSION install"
  [ -e "$tmp/opt/R/lib/R/lib/libR.so" ] || { rm -rf "$tmp"; die "make install left no lib/R/lib/libR.so"; }
  mkdir -p "$tmp/final"
  mv "$tmp/opt/R/lib/R" "$tmp/final/R"
  # Self-built (and Debian's) libR.so has no SONAME: R's own packages
  # (stats.so) link it by the name libR.so, and once rpy2 has dlopen()ed it by
  # path (ABI mode) the loader matches that name only against a SONAME.
  patchelf --set-soname libR.so "$tmp/final/R/lib/libR.so" || { rm -rf "$tmp"; die "patchelf --set-soname failed"; }
  printf 'R %s built from %s (sha256 %s)\nin Debian %s with: %s\n' "$R_VERSION" "${R_TAR##*/}" "$R_SHA" \
    "$R_BUILD_SUITE" "$R_CONFIGURE_FLAGS" >"$tmp/final/BUILDINFO"
  rm -rf "$R_CACHE"
  mv "$tmp/final" "$R_CACHE"
  rm -rf "$tmp"
  say "R $R_VERSION built in $((SECONDS - t0)) s"
fi
say "R $R_VERSION: $R_CACHE/R"

# ---------------------------------------------------------------------------
# Extra R packages, one cache entry each: build/cache/rpkg-<R key>-<name>-<sha>/<name>
BASE_R="base compiler datasets graphics grDevices grid methods parallel splines stats stats4 tcltk tools utils"
declare -A BUILT=()
RPKG_LINES=()
build_r_package() { # NAME: build R package NAME (and its dependencies) from Debian's r-cran-<name>
  local name=$1 lower srcpkg tar sha key entry deps dep tmp libs
  [ -n "${BUILT[$name]:-}" ] && return 0
  case " $BASE_R " in *" $name "*) return 0 ;; esac
  STEP="R package $name source"
  lower=$(printf '%s' "$name" | tr '[:upper:]' '[:lower:]')
  srcpkg=r-cran-$lower
  tar=$(fetch_orig "$srcpkg")
  # Its dependencies first (R must never find one missing at load time).
  deps=$(tar -xOf "$tar" "$name/DESCRIPTION" 2>/dev/null | awk '
      /^[A-Za-z@]+:/ {keep = ($1 == "Depends:" || $1 == "Imports:" || $1 == "LinkingTo:"); sub(/^[^:]+:/, "")}
      keep {print}' | tr ',' '\n' | sed 's/(.*//; s/[[:space:]]//g' | grep -v '^R$' | grep . || true)
  [ -n "$(tar -tf "$tar" "$name/DESCRIPTION" 2>/dev/null)" ] || die "$srcpkg's tarball has no $name/DESCRIPTION (R package name spelled as on CRAN?)"
  local entries=()
  for dep in $deps; do
    build_r_package "$dep"
    case " $BASE_R " in *" $dep "*) ;; *) entries+=("${BUILT[$dep]}") ;; esac
  done
  STEP="R package $name build"
  sha=$(sha256sum "$tar" | cut -d' ' -f1)
  key=$(printf '%s\n' "$R_KEY" "$sha" "${entries[@]}" | sha256sum | cut -c1-12)
  entry=$CACHE/rpkg-$name-$key
  if [ ! -d "$entry/$name" ]; then
    tmp=$CACHE/.rpkg-$name-$key.tmp
    rm -rf "$tmp"
    mkdir -p "$tmp/lib" "$tmp/deps"
    # The dependencies' cache entries, visible read-only in R_LIBS.
    libs=()
    for dep in "${entries[@]}"; do
      local d
      d=$(find "$dep" -mindepth 1 -maxdepth 1 -type d | head -1)
      mkdir -p "$tmp/deps/${d##*/}"  # the mount point (inside the read-only /deps)
      libs+=(--ro-bind "$d" "/deps/${d##*/}")
    done
    say "R CMD INSTALL ${tar##*/}"
    run_logged "$CACHE/rpkg-$name-$key.log" in_root "$ROOTFS" --ro-bind "$R_CACHE/R" /opt/R/lib/R \
      --ro-bind "$tmp/deps" /deps "${libs[@]}" --bind "$tmp/lib" /lib-out --ro-bind "$tar" "/src/${tar##*/}" -- \
      sh -ec "R_LIBS=/deps /opt/R/lib/R/bin/R CMD INSTALL --no-docs --no-html --no-help --strip -l /lib-out /src/${tar##*/}" \
      || { rm -rf "$tmp"; die "R CMD INSTALL $name failed (log: $CACHE/rpkg-$name-$key.log)"; }
    [ -d "$tmp/lib/$name" ] || { rm -rf "$tmp"; die "R CMD INSTALL left no $name"; }
    rm -rf "$entry"
    mkdir -p "$tmp/entry"
    mv "$tmp/lib/$name" "$tmp/entry/$name"
    mv "$tmp/entry" "$entry"
    rm -rf "$tmp"
  fi
  BUILT[$name]=$entry
  RPKG_LINES+=("rpkg $name $entry/$name")
}

for pkg in "$@"; do
  for p in $(printf '%s' "$pkg" | tr ',' ' '); do build_r_package "$p"; done
done
printf 'root %s\n' "$ROOTFS"
for line in "${RPKG_LINES[@]}"; do printf '%s\n' "$line"; done
printf '%s\n' "$R_CACHE/R"
exit 0
}
