#!/usr/bin/env bash
# Build the C launcher of the OCI runtime: scripts/build-launcher.sh [OUTDIR]  (default: build/)
#
# It execs the real runtime for every call but `create`, which it hands to
#   $PYTHON -I -S $RUNTIME_SCRIPT
# PYTHON defaults to /usr/bin/python3 (the interpreter the packages use) and RUNTIME_SCRIPT to
# this checkout's nvdocker_setup/runtime/__main__.py; packages set it to the installed copy.
# Honours CC, CPPFLAGS, CFLAGS and LDFLAGS (distributions pass their hardening flags). STATIC=auto
# (default) links statically when libc.a is there, which saves the dynamic loader's ~0.3 ms per
# call; packages set STATIC=no, since a static glibc would miss libc security updates.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$repo/build}
python=${PYTHON:-/usr/bin/python3}
script=${RUNTIME_SCRIPT:-$repo/nvdocker_setup/runtime/__main__.py}
cc=${CC:-gcc}

c_string() {  # a C string literal for a -D define
  local s=${1//\\/\\\\}
  printf '"%s"' "${s//\"/\\\"}"
}

mkdir -p "$out"
target="$out/nvdocker-runtime"
tmp="$target.tmp.$$"
trap 'rm -f "$tmp"' EXIT
flags=(-std=gnu11 -O2 -Wall -Wextra -Werror
       -DNVDOCKER_PYTHON="$(c_string "$python")"
       -DNVDOCKER_RUNTIME_SCRIPT="$(c_string "$script")")
# shellcheck disable=SC2206 # the flag variables are word lists, as make passes them
user_flags=(${CPPFLAGS:-} ${CFLAGS:-})
# shellcheck disable=SC2206
link_flags=(${LDFLAGS:-})
build() { "$cc" "${flags[@]}" "${user_flags[@]}" "$@" -o "$tmp" "$repo/launcher/nvdocker-runtime.c" "${link_flags[@]}"; }
case "${STATIC:-auto}" in
  no) build ;;
  yes) build -static ;;
  auto) build -static 2>/dev/null || build ;;
  *) echo "build-launcher: STATIC must be auto, yes or no" >&2; exit 2 ;;
esac
chmod 0755 "$tmp"
mv -f "$tmp" "$target"
echo "$target"
