#!/usr/bin/env bash
# The nvdocker.gpu collection's quality gates: ansible-lint (production profile) and ansible-test
# sanity, the latter with Debian 12's ansible-core 2.14 (/usr/bin/ansible-test) and the current one
# from PyPI (in the ansible-lint venv). Everything lives under the test cache:
#   $CACHE/ansible-lint-venv     ansible-lint (and with it a current ansible-core) from PyPI, at the
#                                versions of constraints/ansible-lint.txt
#   $CACHE/ansible-test-home     HOME for ansible-test: its per-test venvs and pip bootstrap
# ansible-test downloads a get-pip script from a host that this network cannot reach; the stand-in
# scripts/ansible-test-get-pip.py (ensurepip, then pip from the package index) takes its place.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
collection=$repo/ansible/collections/ansible_collections/nvdocker/gpu
cache=${NVDOCKER_TEST_CACHE:-/var/cache/nvdocker-tests}
venv=$cache/ansible-lint-venv
home=$cache/ansible-test-home

# pinned (constraints/ansible-lint.txt): the venv is made again when the pins change
pins=$(sha256sum "$repo/constraints/ansible-lint.txt" | cut -c1-16)
if [ ! -x "$venv/bin/ansible-lint" ] || [ "$(cat "$venv/.pins" 2>/dev/null)" != "$pins" ]; then
  rm -rf "$venv"
  /usr/bin/python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -c "$repo/constraints/ansible-lint.txt" ansible-lint
  echo "$pins" > "$venv/.pins"
fi
mkdir -p "$home/.ansible/test/cache"
for version in 21_3_1 24_2 25_3; do
  cp "$repo/scripts/ansible-test-get-pip.py" "$home/.ansible/test/cache/get_pip_$version.py"
done

cd "$collection"
echo "== ansible-lint $("$venv/bin/ansible-lint" --nocolor --version 2>/dev/null | head -n1)"
ANSIBLE_COLLECTIONS_PATH=$repo/ansible/collections PATH=$venv/bin:$PATH "$venv/bin/ansible-lint" --nocolor

run_sanity() {  # ansible-test BINARY
  rm -rf tests/output
  echo "== $1 sanity ($("$1" --version))"
  HOME=$home PATH=$(dirname "$1"):/usr/sbin:/usr/bin:/sbin:/bin "$1" sanity --python 3.11 --requirements \
    > "$home/sanity.log" 2>&1 || { grep -v '^Requirement already' "$home/sanity.log" | tail -n 60; exit 1; }
  grep -E '^(Running sanity test|ERROR|WARNING: Skipping)' "$home/sanity.log" || true
  rm -rf tests/output
}
if [ -x /usr/bin/ansible-test ]; then
  run_sanity /usr/bin/ansible-test
else
  echo "ansible-quality: /usr/bin/ansible-test missing (Debian's ansible-core; make deps installs it)" >&2
  exit 1
fi
run_sanity "$venv/bin/ansible-test"
echo "ansible-quality: ok"
