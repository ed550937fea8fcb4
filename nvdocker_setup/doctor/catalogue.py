"""The failure modes users hit with GPU containers on Docker (the catalogue in the project's
reference notes, nvidia-toolkit.md section 5) and the doctor check that detects each one.

:data:`CATALOGUE` maps a stable catalogue id to :class:`Detected` (the check ids) or
:class:`Undetectable` (why no check can see it). Tests keep it complete: every id is covered or
explained, every check id exists, and ``docs/doctor.md`` lists every row.
"""

from dataclasses import dataclass
from typing import Dict, Tuple, Union


@dataclass(frozen=True)
class Detected:
    checks: Tuple[str, ...]
    #: Limits of the detection, if any.
    note: str = ""


@dataclass(frozen=True)
class Undetectable:
    why: str


@dataclass(frozen=True)
class FailureMode:
    number: int
    id: str
    symptom: str
    fix: str
    how: Union[Detected, Undetectable]


FAILURE_MODES: Tuple[FailureMode, ...] = (
    FailureMode(1, "daemon-json-replaced-by-package", "existing daemon.json replaced by a package (nvidia-docker2)",
                "merge the lost settings back from the .dpkg-old/.rpmsave copy or a backup",
                Detected(("config-packaging-leftovers", "config-install-record"))),
    FailureMode(2, "daemon-json-package-conflict", "dpkg/zypper file conflict on /etc/docker/daemon.json",
                "remove the other package that owns the file",
                Detected(("config-package-owner",))),
    FailureMode(3, "daemon-json-purged", "`apt purge` deleted daemon.json",
                "remove (never purge) the owning package; restore a backup",
                Detected(("config-package-owner", "config-install-record"),
                         "before a purge: the file is package-owned; after it: the runtime nvdocker-setup installed is gone")),
    FailureMode(4, "gpus-no-device-driver", "could not select device driver \"\" with capabilities: [[gpu]]",
                "install the hook, restart dockerd, `docker context use default`",
                Detected(("gpu-hook-on-path", "gpu-hook-registered", "daemon-cli-context"))),
    FailureMode(5, "unknown-runtime-name", "unknown or invalid runtime name: nvidia",
                "edit the file dockerd really reads, fix the JSON, reload or restart",
                Detected(("config-location", "config-runtime-entry", "daemon-runtime-loaded"))),
    FailureMode(6, "default-runtime-missing-binary", "every container fails: exec: \"nvidia-container-runtime\": "
                "executable file not found", "install the runtime or make runc the default again",
                Detected(("config-default-runtime", "runtime-binary"))),
    FailureMode(7, "gpu-missing-kubernetes-build", "no GPU in Kubernetes pods or `docker build`",
                "make the runtime the default; use the legacy builder for GPU builds",
                Detected(("config-default-runtime", "daemon-default-runtime"),
                         "reported in the detail, not flagged: runc as default is a valid choice, and BuildKit "
                         "ignoring runtimes is by design")),
    FailureMode(8, "nvml-unknown-error-after-daemon-reload", "Failed to initialize NVML: Unknown Error after "
                "`systemctl daemon-reload`", "nvdocker-setup system create-dev-char-symlinks (and its udev rule "
                "71-nvdocker-dev-char.rules), or the cgroupfs driver, or CDI", Detected(("driver-dev-char-links",))),
    FailureMode(9, "rootless-device-cgroups", "rootless: devices.allow: permission denied / "
                "bpf_prog_query(BPF_CGROUP_DEVICE) failed", "no-cgroups = true, the user's daemon.json, "
                "systemctl --user restart docker, or CDI", Detected(("daemon-rootless",))),
    FailureMode(10, "cgroup-v2-old-libnvidia-container", "cgroup subsystem devices not found",
                "upgrade libnvidia-container to 1.8.0+", Detected(("daemon-cgroup",))),
    FailureMode(11, "selinux-insufficient-permissions", "Failed to initialize NVML: Insufficient Permissions",
                "--security-opt label=disable, relabel the nodes, or a policy module", Detected(("host-selinux",))),
    FailureMode(12, "load-library-libnvidia-ml", "load library failed: libnvidia-ml.so.1",
                "install the driver libraries and run ldconfig; fix `root` in config.toml",
                Detected(("driver-libraries", "toolkit-config"))),
    FailureMode(13, "cuda-requirement-unsatisfied", "requirement error: unsatisfied condition: cuda>=X",
                "a newer driver, an older image, or NVIDIA_DISABLE_REQUIRE=true",
                Undetectable("the requirement is the image's NVIDIA_REQUIRE_CUDA, known only when a container of that "
                             "image starts; doctor prints the CUDA version the driver supports (driver-kernel-module) "
                             "to compare with")),
    FailureMode(14, "hook-not-in-path", "exec: \"nvidia-container-runtime-hook\": executable file not found in $PATH",
                "install the hook where dockerd's PATH finds it", Detected(("gpu-hook-on-path", "runtime-hook-binary"))),
    FailureMode(15, "dockerd-refuses-config", "dockerd does not start after an edit (EOF, invalid character, "
                "directives don't match, flag and file conflict)", "fix the JSON, the key or the duplicate definition",
                Detected(("config-parse", "config-schema", "config-flag-conflicts", "config-dockerd-validate"))),
    FailureMode(16, "reload-did-not-take", "runtime configured but still unknown after a reload",
                "restart instead of reload", Detected(("daemon-runtime-loaded", "daemon-default-runtime"))),
    FailureMode(17, "device-nodes-missing-at-boot", "restart=always GPU containers fail after reboot: "
                "/dev/nvidia-uvm-tools: no such file", "create the nodes at boot (nvidia-persistenced, nvidia-modprobe)",
                Detected(("driver-device-nodes", "driver-kernel-module"),
                         "doctor sees the nodes as they are now, not as they were when dockerd started at boot")),
    FailureMode(18, "hook-direct-invocation-refused", "invoking the NVIDIA Container Runtime Hook directly ... is "
                "not supported", "--runtime=nvidia, or mode = \"legacy\"",
                Detected(("toolkit-config",),
                         "explicit cdi/csv/jit-cdi modes and Tegra hosts only: what `auto` resolves to on other hosts "
                         "depends on the installed toolkit's version")),
)

#: catalogue id -> how doctor covers it.
CATALOGUE: Dict[str, Union[Detected, Undetectable]] = {mode.id: mode.how for mode in FAILURE_MODES}
