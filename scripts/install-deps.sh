#!/usr/bin/env bash
# The Debian packages the tests and the demo need: compilers, packaging tools, Debian's Python
# libraries, a static busybox, systemd's tools (systemd-analyze and systemctl --root for the unit
# tests). Never docker.io, containerd or runc: the private dockerd of the tests and the demo is
# Debian 12's docker.io unpacked under /var/cache/nvdocker-tests (tests/support/newer_docker.py),
# so the host's own Docker is never installed, replaced or removed.
#
#   install-deps.sh           install what is missing (root), as `make deps` does
#   install-deps.sh --auto    the same from `make test` / `make demo`, except on a host that runs
#                             Docker from another source (docker-ce, moby-engine, containerd.io, a
#                             dockerd no Debian package owns): there it installs nothing, says what
#                             is missing and exits 1 when something is
#
# As a non-root developer it prints what is missing instead (the Debian-library run is then skipped).
set -euo pipefail
auto=0
[ "${1:-}" = "--auto" ] && auto=1
packages=(python3-venv python3-pip python3-typer python3-rich python3-jsonschema python3-tomlkit python3-grpcio python3-pytest
          python3-hypothesis busybox-static
          debhelper dh-python pybuild-plugin-pyproject python3-all python3-setuptools python3-installer
          dpkg-dev fakeroot gcc libc6-dev lintian debootstrap rpm man-db bash-completion zsh systemd ansible)

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

missing=()
for pkg in "${packages[@]}"; do
  installed "$pkg" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: not root; missing Debian packages: ${missing[*]}" >&2
  exit 0
fi

# Docker from another source on this host?
foreign=()
for pkg in docker-ce moby-engine containerd.io docker-ee; do
  installed "$pkg" && foreign+=("package $pkg")
done
dockerd=$(command -v dockerd 2>/dev/null || true)
if [ -n "$dockerd" ]; then
  owner=$(dpkg-query -S "$(readlink -f "$dockerd")" 2>/dev/null | cut -d: -f1 || true)
  [ "$owner" = "docker.io" ] || foreign+=("$dockerd (${owner:-owned by no Debian package})")
fi
if [ "$auto" = 1 ] && [ ${#foreign[@]} -gt 0 ]; then
  echo "install-deps: this host runs Docker from another source: ${foreign[*]}" >&2
  echo "install-deps: so \`make test\` and \`make demo\` install nothing here. Missing Debian packages:" >&2
  echo "  ${missing[*]}" >&2
  echo "install-deps: install them with \`make deps\` (these packages only: never docker.io, containerd" >&2
  echo "  or runc; the tests unpack Debian's Docker under /var/cache/nvdocker-tests instead)" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
