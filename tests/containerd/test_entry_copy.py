"""Our handler copies the default handler's runtime-level fields (not only its options), and a version 1
file is refused on containerd 2.x (issue #10 item 3)."""

import os

import pytest

from nvdocker_setup import operations
from nvdocker_setup.context import Context
from nvdocker_setup.core.plan import InstallRequest
from nvdocker_setup.engines.containerd import binary
from nvdocker_setup.engines.containerd import plan as cplan
from nvdocker_setup.engines.containerd.config import ContainerdDocument
from nvdocker_setup.engines.containerd.engine import ContainerdEngine
from nvdocker_setup.errors import Conflict
from tests.containerd.corpus_support import corpus_bytes

PATH = "/usr/bin/nvdocker-runtime"


def test_runtime_level_fields_are_copied_but_not_the_shim_and_v1_ones():
    document = ContainerdDocument.parse(corpus_bytes("default-1.7.toml"), "config.toml")
    runc = cplan.runtime_entry(document.value, "runc")
    entry = cplan.make_entry(document, InstallRequest("nvidia", PATH))
    assert entry["sandbox_mode"] == "podsandbox" and entry["base_runtime_spec"] == ""
    assert entry["privileged_without_host_devices"] is False and entry["pod_annotations"] == []
    for key in ("runtime_path", "runtime_root", "runtime_engine"):
        assert key in runc and key not in entry
    assert entry["runtime_type"] == "io.containerd.runc.v2"
    assert entry["options"] == dict(runc["options"], BinaryName=PATH)
    copied = {k: v for k, v in runc.items() if k not in cplan.NOT_COPIED}
    assert {k: v for k, v in entry.items()} == dict(copied, runtime_type="io.containerd.runc.v2",
                                                     options=entry["options"])


def test_a_custom_default_handler_is_the_source():
    text = (b'version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd]\ndefault_runtime_name = "crun"\n'
            b'[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.crun]\nruntime_type = "io.containerd.runc.v2"\n'
            b'runtime_path = "/opt/shim"\nbase_runtime_spec = "/etc/spec.json"\n'
            b'[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.crun.options]\nBinaryName = "/usr/bin/crun"\n'
            b'SystemdCgroup = true\n')
    document = ContainerdDocument.parse(text, "config.toml")
    entry = cplan.make_entry(document, InstallRequest("nvidia", PATH))
    assert entry == {"runtime_type": "io.containerd.runc.v2", "base_runtime_spec": "/etc/spec.json",
                     "options": {"BinaryName": PATH, "SystemdCgroup": True}}


def test_a_kata_default_is_not_copied():
    text = (b'version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd]\ndefault_runtime_name = "kata"\n'
            b'[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kata]\nruntime_type = "io.containerd.kata.v2"\n'
            b'privileged_without_host_devices = true\n'
            b'[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]\nruntime_type = "io.containerd.runc.v2"\n'
            b'[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]\nSystemdCgroup = true\n')
    entry = cplan.make_entry(ContainerdDocument.parse(text, "config.toml"), InstallRequest("nvidia", PATH))
    assert entry == {"runtime_type": "io.containerd.runc.v2", "options": {"BinaryName": PATH, "SystemdCgroup": True}}


@pytest.mark.parametrize("version,refused", [((2, 1, 9), True), ((2, 0, 0), True), ((1, 7, 24), False),
                                             ((1, 6, 20), False), (None, False)])
def test_a_version_1_file_is_refused_on_containerd_2(tmp_path, version, refused):
    config = tmp_path / "config.toml"
    config.write_bytes(corpus_bytes("v1-noversion.toml"))
    ctx = Context(env={"PATH": "/usr/bin:/bin"}, state_dir=str(tmp_path / "state"), euid=os.geteuid())
    engine = ContainerdEngine()
    engine._installed = (ctx, binary.Installed(None, version))
    request = InstallRequest("nvidia", PATH, allow_unsafe_runtime=True)
    if refused:
        with pytest.raises(Conflict) as caught:
            operations.install(ctx, request, config=str(config), engine=engine)
        assert caught.value.reference == "containerd-config-v1-on-2"
        assert "version 2" in (caught.value.hint or "")
        assert config.read_bytes() == corpus_bytes("v1-noversion.toml")
        assert not (tmp_path / "state" / "backups").exists() or not os.listdir(tmp_path / "state" / "backups")
    else:
        result = operations.install(ctx, request, config=str(config), engine=engine)
        assert result.changed


def test_an_empty_file_on_containerd_2_is_not_version_1(tmp_path):
    config = tmp_path / "config.toml"
    config.write_bytes(b"")
    ctx = Context(env={"PATH": "/usr/bin:/bin"}, state_dir=str(tmp_path / "state"), euid=os.geteuid())
    engine = ContainerdEngine()
    engine._installed = (ctx, binary.Installed(None, (2, 1, 9)))
    result = operations.install(ctx, InstallRequest("nvidia", PATH, allow_unsafe_runtime=True), config=str(config),
                                engine=engine)
    assert result.changed and config.read_bytes().startswith(b"version = 3")
