#!/usr/bin/env bash
# The main job on a sandbox. As root: a private dockerd (Debian 12's, unpacked; its own socket,
# data root and daemon.json in a temp dir, no bridge, no iptables) gets the runtime through
# `install --default-runtime`, runs a container with it, and `uninstall` puts everything back.
# Without root (or when Debian's docker.io cannot be fetched): the same on a scratch daemon.json
# only, and it says so. Touches nothing outside the temp dir and the download cache
# /var/cache/nvdocker-tests; stops only the dockerd it started, by pid.
set -euo pipefail
CLI=${1:-nvdocker-setup}
REPO=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-$(dirname "$CLI")/python}
[ -x "$PYTHON" ] || PYTHON=python3
T=$(mktemp -d /tmp/nvdemo.XXXXXX)
export NVDOCKER_STATE_DIR="$T/state"
export NVDOCKER_DOCKER_CONFIG="$T/daemon.json"
export DOCKER_HOST="unix://$T/docker.sock"
sandbox() { PYTHONPATH="$REPO" "$PYTHON" -m tests.support.sandbox "$@" "$T"; }
ctd() { (cd "$REPO" && PYTHONPATH="$REPO" "$PYTHON" -m tests.support.containerd "$@"); }
cleanup() {
  sandbox stop >/dev/null 2>&1 || true
  [ -d "$T/ctd" ] && ctd close "$T/ctd" >/dev/null 2>&1 || true
  rm -rf "$T"
}
trap cleanup EXIT

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

mkdir -p "$T/bin"
RUNTIME="$T/bin/nvdocker-runtime"
cat > "$NVDOCKER_DOCKER_CONFIG" <<'JSON'
{
    "log-level": "warn",
    "log-opts": {"max-size": "10m", "max-file": "3"},
    "labels": ["site=lab-été", "rack=12"],
    "features": {"buildkit": true}
}
JSON
cp "$NVDOCKER_DOCKER_CONFIG" "$T/original.json"

# The private dockerd is Debian 12's docker.io (with its containerd and runc) unpacked under
# /var/cache/nvdocker-tests, never an installed package; the host's own Docker is not used.
HAVE_DOCKERD=0
if [ "$(id -u)" -eq 0 ] && ENGINE_PATH=$(PYTHONPATH="$REPO" "$PYTHON" -m tests.support.sandbox path); then
  HAVE_DOCKERD=1
  export PATH="$ENGINE_PATH:$PATH"
fi
export PATH="$PATH:/usr/sbin:/sbin"

GPU_DEMO=0
if [ "$HAVE_DOCKERD" = 1 ] && command -v gcc >/dev/null 2>&1 && command -v ldconfig >/dev/null 2>&1; then
  echo "Building the runtime launcher and a simulated 2-GPU NVIDIA driver root in $T/driver"
  PYTHON=/usr/bin/python3 bash "$REPO/scripts/build-launcher.sh" "$T/bin" >/dev/null
  PYTHONPATH="$REPO" "$PYTHON" -c "from tests.support.driver_root import build_driver_root; build_driver_root('$T/driver')"
  export NVDOCKER_DRIVER_ROOT="$T/driver"   # dockerd passes its environment on to the runtime
  GPU_DEMO=1
else
  # A stand-in for the runtime: it hands every call to runc.
  printf '#!/bin/sh\nexec runc "$@"\n' > "$RUNTIME"
  chmod 0755 "$RUNTIME"
fi

if [ "$HAVE_DOCKERD" = 1 ]; then
  echo "Starting a private dockerd in $T (no bridge, no iptables, socket $T/docker.sock)"
  sandbox start
  DOCKER="docker -H $DOCKER_HOST"
  # How this sandbox is restarted; on a real host --service-manager auto finds systemd or snap.
  APPLY=(--service-manager command --restart-command "PYTHONPATH='$REPO' '$PYTHON' -m tests.support.sandbox restart '$T'")
  R=$(mktemp -d "$T/rootfs.XXXX"); mkdir -p "$R/bin"; cp "$(command -v busybox || echo /bin/busybox)" "$R/bin/"
  for c in sh echo cat ls grep head; do ln -s busybox "$R/bin/$c"; done
  tar -C "$R" -c . | $DOCKER import - tiny:latest >/dev/null
else
  echo "dockerd is not available here (or not root): running the file-only demo on a scratch daemon.json"
  printf '#!/bin/sh\nexec runc "$@"\n' > "$RUNTIME"
  chmod 0755 "$RUNTIME"
  APPLY=(--apply none)
fi

step "nvdocker-setup install --default-runtime --dry-run"
"$CLI" install --runtime-path "$RUNTIME" --default-runtime --dry-run

step "nvdocker-setup install --default-runtime"
"$CLI" install --runtime-path "$RUNTIME" --default-runtime "${APPLY[@]}"

if [ "$HAVE_DOCKERD" = 1 ]; then
  step "docker info --format 'runtimes: {{range \$k, \$v := .Runtimes}}{{\$k}} {{end}}| default: {{.DefaultRuntime}}'"
  $DOCKER info --format 'runtimes: {{range $k, $v := .Runtimes}}{{$k}} {{end}}| default: {{.DefaultRuntime}}'
  step "docker run --rm --network none tiny echo 'hello from a container started by the nvidia runtime'"
  $DOCKER run --rm --network none tiny echo 'hello from a container started by the nvidia runtime'
  if [ "$GPU_DEMO" = 1 ]; then
    step "docker run --rm --network none -e NVIDIA_VISIBLE_DEVICES=all tiny sh -c 'ls -l /dev/nvidia*; nvidia-smi -L'"
    $DOCKER run --rm --network none -e NVIDIA_VISIBLE_DEVICES=all tiny sh -c 'ls -l /dev/nvidia*; nvidia-smi -L'
    step "docker run --rm --network none -e NVIDIA_VISIBLE_DEVICES=1 tiny sh -c 'ls /dev | grep nvidia'"
    $DOCKER run --rm --network none -e NVIDIA_VISIBLE_DEVICES=1 tiny sh -c 'ls /dev | grep nvidia'
    step "docker run --rm --network none -e NVIDIA_VISIBLE_DEVICES=7 tiny true   # a GPU that does not exist"
    $DOCKER run --rm --network none -e NVIDIA_VISIBLE_DEVICES=7 tiny true 2>&1 | grep -v '^Run .docker run --help' || true
    step "nvdocker-setup doctor --check driver-gpus --check driver-device-nodes --check daemon-runtime-loaded"
    "$CLI" doctor --check driver-gpus --check driver-device-nodes --check daemon-runtime-loaded || true
  fi
fi

step "nvdocker-setup show"
"$CLI" show

step "nvdocker-setup install --default-runtime   # again: nothing to do"
"$CLI" install --runtime-path "$RUNTIME" --default-runtime "${APPLY[@]}"

step "nvdocker-setup backups list"
"$CLI" backups list

step "nvdocker-setup uninstall"
"$CLI" uninstall "${APPLY[@]}"

if [ "$HAVE_DOCKERD" = 1 ]; then
  step "docker info --format 'runtimes: ... | default: {{.DefaultRuntime}}'"
  $DOCKER info --format 'runtimes: {{range $k, $v := .Runtimes}}{{$k}} {{end}}| default: {{.DefaultRuntime}}'
fi

step "cmp original.json daemon.json"
if cmp "$T/original.json" "$NVDOCKER_DOCKER_CONFIG"; then
  echo "identical: install followed by uninstall gave back the original bytes"
else
  echo "DIFFERENT: uninstall did not restore the original bytes" >&2
  exit 1
fi

# The same job on containerd (--engine containerd): a private containerd 1.6 (Debian 12's, from the
# same unpacked docker.io) whose config.toml has kubeadm's SystemdCgroup; restarted through a stand-in
# systemctl, verified through its CRI API.
if [ "$GPU_DEMO" = 1 ]; then
  echo
  echo "Starting a private containerd 1.6 in $T/ctd (its own root, state and sockets there)"
  eval "$(ctd create "$T/ctd" 1.6 <<'TOML'

# kubeadm's setting: runc with the systemd cgroup driver
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
    SystemdCgroup = true
TOML
)"
  CTD_CONFIG="$T/ctd/config.toml"
  cp "$CTD_CONFIG" "$T/original.toml"
  # containerd's shim runs the handler with containerd's environment: this wrapper adds the driver root.
  printf '#!/bin/sh\nexport NVDOCKER_DRIVER_ROOT=%s\nexec %s "$@"\n' "$T/driver" "$RUNTIME" > "$T/bin/nvidia-ctd"
  chmod 0755 "$T/bin/nvidia-ctd"
  ctd_cli() { PATH="$BIN:$PATH" NVDOCKER_CONTAINERD_BINARY="$CONTAINERD" "$CLI" "$@" --engine containerd --config "$CTD_CONFIG"; }

  step "nvdocker-setup install --engine containerd   # config.toml, restart, verify in CRI Status"
  ctd_cli install --runtime-path "$T/bin/nvidia-ctd" --service-manager systemd

  step "nvdocker-setup show --engine containerd"
  ctd_cli show

  step "ctr run --runc-binary <the handler's BinaryName> --env NVIDIA_VISIBLE_DEVICES=all tiny sh -c 'ls /dev | grep nvidia'"
  "$CTR" --address "$SOCKET" run --rm --runc-binary "$T/bin/nvidia-ctd" --env NVIDIA_VISIBLE_DEVICES=all \
    docker.io/library/tiny:latest gpu sh -c 'ls /dev | grep nvidia'

  step "nvdocker-setup install --engine containerd   # again: nothing to do, no restart"
  ctd_cli install --runtime-path "$T/bin/nvidia-ctd" --service-manager systemd

  step "nvdocker-setup uninstall --engine containerd"
  ctd_cli uninstall --service-manager systemd

  step "cmp original.toml config.toml"
  if cmp "$T/original.toml" "$CTD_CONFIG"; then
    echo "identical: install followed by uninstall gave back the original bytes"
  else
    echo "DIFFERENT: uninstall did not restore the original bytes" >&2
    exit 1
  fi
fi
