#!/usr/bin/env bash
# The main job on a sandbox: a scratch daemon.json full of an admin's settings in a temp dir,
# merged, shown, re-run (no-op), undone, and compared byte for byte with the original.
# Touches nothing outside the temp dir.
set -euo pipefail
CLI=${1:-nvdocker-setup}
T=$(mktemp -d /tmp/nvdocker-demo.XXXXXX)
trap 'rm -rf "$T"' EXIT
export NVDOCKER_STATE_DIR="$T/state"
export NVDOCKER_DOCKER_CONFIG="$T/etc/docker/daemon.json"

mkdir -p "$T/etc/docker" "$T/bin"
# A stand-in for the runtime shim (the real one ships in nvdocker-toolkit), root-owned like a packaged binary.
printf '#!/bin/sh\nexec runc "$@"\n' > "$T/bin/nvdocker-runtime"
chmod 0755 "$T/bin/nvdocker-runtime"
cat > "$NVDOCKER_DOCKER_CONFIG" <<'JSON'
{
    "log-driver": "json-file",
    "log-opts": {"max-size": "10m", "max-file": "3"},
    "labels": ["site=lab-été", "rack=12"],
    "registry-mirrors": ["https://mirror.example.internal"],
    "runtimes": {
        "kata": {"path": "/usr/bin/kata-runtime"}
    },
    "features": {"buildkit": true}
}
JSON
cp "$NVDOCKER_DOCKER_CONFIG" "$T/original.json"

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

step "nvdocker-setup install --default-runtime --cdi --dry-run"
"$CLI" install --runtime-path "$T/bin/nvdocker-runtime" --default-runtime --cdi --dry-run

step "nvdocker-setup install --default-runtime --cdi"
"$CLI" install --runtime-path "$T/bin/nvdocker-runtime" --default-runtime --cdi

step "nvdocker-setup show"
"$CLI" show

step "nvdocker-setup install --default-runtime --cdi   # again: nothing to do"
"$CLI" install --runtime-path "$T/bin/nvdocker-runtime" --default-runtime --cdi

step "nvdocker-setup backups list"
"$CLI" backups list

step "nvdocker-setup uninstall"
"$CLI" uninstall

step "cmp original.json daemon.json"
if cmp "$T/original.json" "$NVDOCKER_DOCKER_CONFIG"; then
  echo "identical: install followed by uninstall gave back the original bytes"
else
  echo "DIFFERENT: uninstall did not restore the original bytes" >&2
  exit 1
fi
