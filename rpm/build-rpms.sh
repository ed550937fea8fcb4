#!/bin/sh
# Build the RPMs (nvdocker2, nvdocker-setup, nvdocker-toolkit) and the SRPM into OUTDIR:
#   sh rpm/build-rpms.sh OUTDIR [VERSION]
# from a copy of the working tree (debian/export-tree.sh), with rpmbuild's _topdir in a temp
# dir. On Debian, rpmbuild cannot see build dependencies installed with apt, so it runs with
# --nodeps there (the spec's fallbacks stand in for the missing Fedora macros).
set -eu
out=$1
repo=$(cd "$(dirname "$0")/.." && pwd)
version=${2:-$(sed -n 's/^%{!?pkg_version: %global pkg_version \(.*\)}$/\1/p' "$repo/rpm/nvdocker2.spec")}
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/nvdocker-rpm.XXXXXX")
trap 'rm -rf "$work"' EXIT
top=$work/top
mkdir -p "$top/SOURCES" "$top/SPECS"
sh "$repo/debian/export-tree.sh" "$work/nvdocker-setup-$version"
tar -C "$work" -czf "$top/SOURCES/nvdocker-setup-$version.tar.gz" "nvdocker-setup-$version"
cp "$repo/rpm/nvdocker2.spec" "$top/SPECS/"
nodeps=
[ -e /etc/debian_version ] && nodeps=--nodeps
env -i HOME="$work" PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C.UTF-8 \
  rpmbuild -ba $nodeps --define "_topdir $top" --define "pkg_version $version" \
    "$top/SPECS/nvdocker2.spec" >"$work/build.log" 2>&1 || {
  tail -n 80 "$work/build.log" >&2
  echo "build-rpms: rpmbuild failed (log above)" >&2
  exit 1
}
cp "$work/build.log" "$out/rpmbuild.log"
find "$top/RPMS" "$top/SRPMS" -name '*.rpm' -exec cp {} "$out/" \;
ls "$out"/*.rpm
