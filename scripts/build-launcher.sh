#!/usr/bin/env bash
# Build the C launcher of the OCI runtime: scripts/build-launcher.sh [OUTDIR]  (default: build/)
#
# It execs the real runtime for every call but `create`, which it hands to
#   $PYTHON -I -S $RUNTIME_SCRIPT
# PYTHON defaults to /usr/bin/python3 (the interpreter the packages use) and RUNTIME_SCRIPT to
# this checkout's nvdocker_setup/runtime/__main__.py; packages set it to the installed copy.
# Linked statically when libc.a is there (saves the dynamic loader's ~0.3 ms per call).
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
if ! "$cc" "${flags[@]}" -static -o "$tmp" "$repo/launcher/nvdocker-runtime.c" 2>/dev/null; then
  "$cc" "${flags[@]}" -o "$tmp" "$repo/launcher/nvdocker-runtime.c"
fi
chmod 0755 "$tmp"
mv -f "$tmp" "$target"
echo "$target"
