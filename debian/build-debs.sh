#!/bin/sh
# Build the Debian source and binary packages from the working tree into OUTDIR:
#   sh debian/build-debs.sh OUTDIR [VERSION]
# The tree is copied first (debian/export-tree.sh), so the build leaves the checkout clean and
# can run while others edit it. VERSION (e.g. 0.1.0+1) puts a new changelog entry on top in the copy:
# the upgrade tests build a second, higher set this way.
# dpkg-buildpackage runs with the system interpreter first on PATH: pybuild runs `python3.X`
# from PATH, and a pyenv or venv interpreter there lacks the build modules.
set -eu
out=$1
version=${2:-}
repo=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/nvdocker-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT
src=$work/nvdocker-setup

sh "$repo/debian/export-tree.sh" "$src"

if [ -n "$version" ]; then
  entry=$work/entry
  {
    printf 'nvdocker-setup (%s) unstable; urgency=medium\n\n' "$version"
    printf '  * Rebuild with a higher version (package upgrade tests).\n\n'
    sed -n 's/^ -- \(.*>\)  .*$/ -- \1/p' "$src/debian/changelog" | head -n 1 | tr -d '\n'
    printf '  %s\n\n' "$(date -u -R -d "@$(dpkg-parsechangelog -l "$src/debian/changelog" -S Timestamp)")"
  } > "$entry"
  cat "$entry" "$src/debian/changelog" > "$work/changelog"
  mv "$work/changelog" "$src/debian/changelog"
fi

cd "$src"
set -- HOME="$work" PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C.UTF-8
[ -z "${DEB_BUILD_OPTIONS:-}" ] || set -- "$@" "DEB_BUILD_OPTIONS=$DEB_BUILD_OPTIONS"
env -i "$@" dpkg-buildpackage -us -uc --build=full >"$work/build.log" 2>&1 || {
    tail -n 80 "$work/build.log" >&2
    echo "build-debs: dpkg-buildpackage failed (log above)" >&2
    exit 1
  }
cp "$work/build.log" "$out/"
for f in "$work"/*.deb "$work"/*.dsc "$work"/*.tar.* "$work"/*.changes "$work"/*.buildinfo; do
  [ -e "$f" ] && cp "$f" "$out/"
done
ls "$out"/*.deb
