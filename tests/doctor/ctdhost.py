"""containerd on the simulated host: a config.toml under its root, and the facts doctor cannot read
from a file (the installed containerd's version, the CRI Status answer) injected into Facts."""

import json
from typing import Any, Dict, Optional, Tuple

from nvdocker_setup.doctor.facts import DoctorOptions, Facts
from nvdocker_setup.engines.containerd import cri
from nvdocker_setup.engines.containerd.binary import Installed
from tests.doctor.simhost import RUNTIME

CTD_CONFIG = "/etc/containerd/config.toml"
V2 = 'plugins."io.containerd.grpc.v1.cri"'
V3 = 'plugins."io.containerd.cri.v1.runtime"'


def config_text(version: int = 2, systemd: bool = True, ours: Optional[bool] = True, binary: str = RUNTIME,
                extra: str = "", ours_systemd: Optional[bool] = None) -> str:
    """A kubeadm-like config.toml: runc with SystemdCgroup, and (``ours``) our handler."""
    plugin = V3 if version == 3 else (V2 if version == 2 else "plugins.cri")
    head = "version = {}\n".format(version) if version != 1 else ""
    text = head + extra + (
        "\n[{p}.containerd]\n  default_runtime_name = \"runc\"\n"
        "\n[{p}.containerd.runtimes.runc]\n  runtime_type = \"io.containerd.runc.v2\"\n"
        "\n[{p}.containerd.runtimes.runc.options]\n  SystemdCgroup = {s}\n"
    ).format(p=plugin, s=str(systemd).lower())
    if ours:
        text += (
            "\n[{p}.containerd.runtimes.nvidia]\n  runtime_type = \"io.containerd.runc.v2\"\n"
            "\n[{p}.containerd.runtimes.nvidia.options]\n  BinaryName = \"{b}\"\n  SystemdCgroup = {s}\n"
        ).format(p=plugin, b=binary, s=str(systemd if ours_systemd is None else ours_systemd).lower())
    return text


def live_status(runtimes: Optional[Dict[str, Any]] = None, enable_cdi: bool = False, ready: bool = True,
                spec_dirs=("/etc/cdi", "/var/run/cdi")) -> cri.CriStatus:
    """What CRI Status (verbose) says: ``runtimes`` is {handler: BinaryName}."""
    handlers = {"runc": {"runtimeType": "io.containerd.runc.v2", "options": {"SystemdCgroup": True}}}
    for name, binary in (runtimes if runtimes is not None else {"nvidia": RUNTIME}).items():
        handlers[name] = {"runtimeType": "io.containerd.runc.v2", "options": {"BinaryName": binary}}
    config = {"containerd": {"defaultRuntimeName": "runc", "runtimes": handlers}, "enableCDI": enable_cdi,
              "cdiSpecDirs": list(spec_dirs)}
    conditions = [cri.RuntimeCondition("RuntimeReady", ready, "" if ready else "Broken", ""),
                  cri.RuntimeCondition("NetworkReady", False, "NetworkPluginNotReady", "cni config not initialized")]
    return cri.CriStatus.build(conditions, {"config": json.dumps(config)})


def ctd_facts(host, text: Optional[str] = None, version: Optional[Tuple[int, int, int]] = (1, 7, 24),
              status: Any = None, **options: Any) -> Facts:
    """Facts of ``doctor --engine containerd`` on the simulated host. ``status``: a CriStatus, an
    exception CRI Status raises, or None (containerd's socket does not exist)."""
    if text is not None:
        host.write(CTD_CONFIG, text)
    facts = Facts(host.ctx(), DoctorOptions(engine="containerd", **options))
    facts._memo["ctd-installed"] = (True, Installed("/usr/bin/containerd" if version else None, version))
    if status is None:
        status = cri.CriUnreachable("containerd's socket /run/containerd/containerd.sock does not exist")
    facts._memo["cri-status"] = (not isinstance(status, Exception), status)
    return facts
