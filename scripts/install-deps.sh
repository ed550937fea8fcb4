#!/usr/bin/env bash
# Install the Debian packages the tests and the demo need, when we are root and they are missing.
# As a non-root developer, print what is missing instead (the Debian-library test run is then skipped).
set -euo pipefail
packages=(python3-venv python3-pip python3-typer python3-rich python3-jsonschema python3-pytest
          python3-hypothesis docker.io busybox-static
          debhelper dh-python pybuild-plugin-pyproject python3-all python3-setuptools python3-installer
          dpkg-dev fakeroot gcc libc6-dev lintian debootstrap rpm man-db bash-completion zsh)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: not root; missing Debian packages: ${missing[*]}" >&2
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# docker.io's postinst tries to start the service; without systemd as PID 1 that is a no-op.
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
