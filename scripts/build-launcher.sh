#!/usr/bin/env bash
# Build the C launcher of the OCI runtime: scripts/build-launcher.sh [OUTDIR]  (default: build/)
#
# It execs the real runtime for every call but `create`, which it hands to
#   $PYTHON -I -S $RUNTIME_SCRIPT
# and, started as "nvdocker-ldcache", it is the runtime's ld cache hook (launcher/ldcache-hook.c),
# handing what it does not do itself to $PYTHON -I -S $HOOK_SCRIPT.
# PYTHON defaults to /usr/bin/python3 (the interpreter the packages use), RUNTIME_SCRIPT to this
# checkout's nvdocker_setup/runtime/__main__.py and HOOK_SCRIPT to the hook/__main__.py next to
# it; packages set them to the installed copies.
# Honours CC, CPPFLAGS, CFLAGS and LDFLAGS (distributions pass their hardening flags). STATIC=auto
# (default) links statically when libc.a is there, which saves the dynamic loader's ~0.3 ms per
# call; packages set STATIC=no, since a static glibc would miss libc security updates.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$repo/build}
python=${PYTHON:-/usr/bin/python3}
script=${RUNTIME_SCRIPT:-$repo/nvdocker_setup/runtime/__main__.py}
hook_script=${HOOK_SCRIPT:-$(dirname "$(dirname "$script")")/hook/__main__.py}
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
       -DNVDOCKER_RUNTIME_SCRIPT="$(c_string "$script")"
       -DNVDOCKER_HOOK_SCRIPT="$(c_string "$hook_script")")
# shellcheck disable=SC2206 # the flag variables are word lists, as make passes them
user_flags=(${CPPFLAGS:-} ${CFLAGS:-})
# shellcheck disable=SC2206
link_flags=(${LDFLAGS:-})
build() {
  "$cc" "${flags[@]}" "${user_flags[@]}" "$@" -o "$tmp" "$repo/launcher/nvdocker-runtime.c" "$repo/launcher/ldcache-hook.c" \
    "${link_flags[@]}"
}
case "${STATIC:-auto}" in
  no) build ;;
  yes) build -static ;;
  auto) build -static 2>/dev/null || build ;;
  *) echo "build-launcher: STATIC must be auto, yes or no" >&2; exit 2 ;;
esac
chmod 0755 "$tmp"
mv -f "$tmp" "$target"
echo "$target"
