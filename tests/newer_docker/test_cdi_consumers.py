"""Our CDI spec read by the real consumers admins run (issue #14): Debian 12's podman 4.3, Debian 13's
podman 5.4 and Docker 26.1, Debian forky's Docker 28.5 (CDI on by default), each unpacked from its
Debian package (tests/support/debian_engines.py, tests/support/newer_docker.py).

For every consumer: ``--device nvidia.com/gpu=0``, ``=all`` and ``=GPU-<uuid>`` against what
``cdi generate`` writes for the simulated 2-GPU driver root give exactly the right device nodes
(major:minor from ``ls -l /dev`` in the container) and driver libraries; and the cdiVersions each
one reads are the ones doctor's tables say (``cdi-docker-support``, ``cdi-podman-support``).
On the simulated MIG root (issue #11), one container asks for the MIG device ``nvidia.com/gpu=0:1``
and the IMEX channel ``nvidia.com/imex-channel=0`` at once, from the two files ``cdi generate``
writes, and gets exactly what our runtime gives for ``NVIDIA_VISIBLE_DEVICES=0:1``
``NVIDIA_IMEX_CHANNELS=0`` (tests/runtime/test_mig_e2e.py).
"""

import json
import os
import re
import shutil

import pytest
from typer.testing import CliRunner

from nvdocker_setup.cdi import spec as cdi_spec
from nvdocker_setup.cli import output
from nvdocker_setup.cli.main import app
from nvdocker_setup.doctor import cdi as doctor_cdi
from nvdocker_setup.doctor.parsers import version_tuple
from nvdocker_setup.driver import discover
from nvdocker_setup.runtime.config import RuntimeConfig
from tests.support import debian_engines
from tests.support.driver_root import (
    CAPS_MAJOR,
    CONTROL_NODES,
    IMEX_MAJOR,
    LIB_DIR,
    NVIDIA_MAJOR,
    simulated_driver_root_fixture,
    simulated_mig_root_fixture,
)
from tests.support.newer_docker import docker26, docker26_or_skip, sandbox26

pytestmark = pytest.mark.dockerd

CONSUMERS = ("podman-4.3", "podman-5.4", "docker-26.1", "docker-28.5")
UNRESOLVABLE = "unresolvable CDI devices"
PROBE = ("ls -l /dev; echo ---; env; echo ---; ls -a {lib} 2>&1; echo ---; cat /etc/ld.so.conf.d/00-nvdocker.conf 2>&1"
         .format(lib=LIB_DIR))


@pytest.fixture(scope="module")
def driver_root(tmp_path_factory):
    return simulated_driver_root_fixture(tmp_path_factory)


@pytest.fixture(scope="module")
def generated(tmp_path_factory, driver_root):
    """What `nvdocker-setup cdi generate` writes, as YAML (with our comment header) and as JSON."""
    out = tmp_path_factory.mktemp("generated")
    no_config = out / "no-runtime.conf"
    no_config.write_text("")
    texts = {}
    for name in ("nvdocker.yaml", "nvdocker.json"):
        output.reset_consoles()
        try:
            runner = CliRunner(mix_stderr=False)  # click < 8.2
        except TypeError:
            runner = CliRunner()
        result = runner.invoke(
            app, ["cdi", "generate", "--driver-root", driver_root.path, "--output", str(out / name), "--json"],
            env={"NVDOCKER_RUNTIME_CONFIG": str(no_config), "COLUMNS": "200", "NO_COLOR": "1"}, catch_exceptions=False,
        )
        assert result.exit_code == 0, result.stderr
        assert json.loads(result.stdout)["cdiVersion"] == "0.5.0"
        texts[name] = (out / name).read_bytes()
    assert texts["nvdocker.yaml"].startswith(b"# CDI spec") and b"# nvdocker-setup/driver-version: 550.54.14" in texts["nvdocker.yaml"]
    return texts


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory):
    """A static busybox, the whole container (no image store needed)."""
    busybox = shutil.which("busybox")
    if busybox is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true: busybox-static is not installed")
        pytest.skip("busybox-static is not installed")
    root = tmp_path_factory.mktemp("rootfs")
    os.makedirs(str(root / "bin"))
    shutil.copy(busybox, str(root / "bin" / "busybox"))
    for command in ("sh", "ls", "cat", "env", "echo", "true", "find", "stat"):
        os.symlink("busybox", str(root / "bin" / command))
    os.chmod(str(root), 0o755)
    return str(root)


class Outcome:
    def __init__(self, returncode: int, stdout: bytes, stderr: bytes) -> None:
        self.returncode = returncode
        self.stdout = stdout.decode("utf-8", "replace")
        self.stderr = stderr.decode("utf-8", "replace")


class PodmanConsumer:
    def __init__(self, engine, workdir: str, rootfs: str) -> None:
        folder = debian_engines.engine_or_skip(engine)
        conmon = os.path.join(debian_engines.engine_or_skip(debian_engines.PODMAN43), "usr", "bin", "conmon")
        self.podman = debian_engines.Podman(engine, folder, conmon, workdir)
        self.rootfs = rootfs
        said = debian_engines.engine_version(engine, folder)
        self.version = version_tuple(said.split("version", 1)[1])
        self.shown = "podman " + said.split("version", 1)[1].strip()
        self.max_cdi_version = doctor_cdi._max_cdi_version(self.version, doctor_cdi.PODMAN_MAX_CDI_VERSION)

    def run(self, spec: bytes, name: str, device, script: str = "true", more_specs=None) -> Outcome:
        done = self.podman.run(spec, name, self.rootfs, device, script, more_specs=more_specs)
        return Outcome(done.returncode, done.stdout, done.stderr)

    def close(self) -> None:
        pass


class DockerConsumer:
    def __init__(self, folder: str, workdir: str, cdi_dir: str, features: bool) -> None:
        self.folder = folder
        self.cdi_dir = cdi_dir
        config = {"cdi-spec-dirs": [cdi_dir]}
        if features:
            config["features"] = {"cdi": True}
        self.box = sandbox26(folder, workdir, json.dumps(config).encode())
        self.box.start()
        try:
            info = self.box.info()
            assert info.get("CDISpecDirs") == [cdi_dir], info.get("CDISpecDirs")  # CDI is on
            self.box.import_tiny_image()
        except BaseException:
            self.box.close()
            raise
        self.version = version_tuple(info["ServerVersion"])
        self.shown = "Docker " + info["ServerVersion"]
        self.max_cdi_version = doctor_cdi._max_cdi_version(self.version)

    def run(self, spec: bytes, name: str, device, script: str = "true", more_specs=None) -> Outcome:
        for old in os.listdir(self.cdi_dir):
            os.unlink(os.path.join(self.cdi_dir, old))
        for file_name, data in dict({name: spec}, **(more_specs or {})).items():
            path = os.path.join(self.cdi_dir, file_name)
            with open(path, "wb") as handle:
                handle.write(data)
            os.chmod(path, 0o644)
        devices = [device] if isinstance(device, str) else list(device)
        done = docker26(self.folder, self.box, "run", "--rm", "--network", "none",
                        *[flag for each in devices for flag in ("--device", each)], "tiny",
                        "sh", "-c", script, check=False, timeout=120)
        return Outcome(done.returncode, done.stdout, done.stderr)

    def close(self) -> None:
        self.box.close()


@pytest.fixture(scope="module", params=CONSUMERS)
def consumer(request, tmp_path_factory, rootfs):
    kind = request.param
    work = str(tmp_path_factory.mktemp(kind))
    if kind == "podman-4.3":
        made = PodmanConsumer(debian_engines.PODMAN43, work, rootfs)
    elif kind == "podman-5.4":
        made = PodmanConsumer(debian_engines.PODMAN54, work, rootfs)
    else:
        folder = docker26_or_skip() if kind == "docker-26.1" else debian_engines.engine_or_skip(debian_engines.DOCKER28)
        cdi_dir = os.path.join(work, "cdi")
        os.makedirs(cdi_dir, mode=0o755)
        # 26.1 reads CDI specs only with features.cdi; 28.2+ without it (on by default)
        made = DockerConsumer(folder, os.path.join(work, "d"), cdi_dir, features=(kind == "docker-26.1"))
    assert made.shown.split()[1].startswith(kind.split("-")[1] + "."), made.shown
    yield made
    made.close()


# -- what a container gets -------------------------------------------------------------------------


def char_devices(listing):
    """{name: (major, minor)} of the character devices in an `ls -l /dev` listing (busybox format)."""
    found = {}
    for line in listing.splitlines():
        match = re.match(r"^c\S*\s+\d+\s+\S+\s+\S+\s+(\d+),\s*(\d+)\s+.*\s(\S+)$", line)
        if match:
            found[match.group(3)] = (int(match.group(1)), int(match.group(2)))
    return found


def nvidia_devices(listing):
    return {name: numbers for name, numbers in char_devices(listing).items() if name.startswith("nvidia")}


def expected_devices(driver_root, gpus):
    nodes = {os.path.basename(path): numbers for path, numbers in CONTROL_NODES.items()}
    for gpu in gpus:
        nodes["nvidia{}".format(gpu.minor)] = (NVIDIA_MAJOR, gpu.minor)
    return nodes


def expected_libraries(driver_root):
    """The versioned driver libraries the spec mounts, and the links our hook makes: the SONAME
    links ldconfig makes and the host's own links the spec passes the hook (``libcuda.so``)."""
    from nvdocker_setup.cdi.spec import ALL_CAPABILITIES
    from nvdocker_setup.driver.edits import _library_links

    names = {os.path.basename(path) for path in driver_root.libraries.values()}
    links = {name for _target, _directory, name in _library_links(discover(driver_root.path), ALL_CAPABILITIES)}
    assert "libcuda.so" in links
    return names | set(driver_root.libraries) | links


def probe(consumer, spec, name, device):
    done = consumer.run(spec, name, device, PROBE)
    assert done.returncode == 0, "{} --device {}: {}".format(consumer.shown, device, done.stderr[-2000:])
    listing, environment, libraries, ld_conf = done.stdout.split("---\n")
    return listing, environment.splitlines(), set(libraries.split()) - {".", ".."}, ld_conf


@pytest.mark.parametrize("name", ["nvdocker.yaml", "nvdocker.json"])
def test_one_gpu_by_index_gets_its_node_and_the_driver(consumer, generated, driver_root, name):
    listing, environment, libraries, ld_conf = probe(consumer, generated[name], name, "nvidia.com/gpu=0")
    assert nvidia_devices(listing) == expected_devices(driver_root, driver_root.gpus[:1])
    assert "NVIDIA_VISIBLE_DEVICES=void" in environment
    assert libraries == expected_libraries(driver_root)
    # the spec's createContainer hook ran (our update-ldcache, with its own env) and wrote the conf
    assert [line for line in ld_conf.splitlines() if not line.startswith("#")] == [LIB_DIR]


def test_all_gpus(consumer, generated, driver_root):
    listing, _, libraries, _ = probe(consumer, generated["nvdocker.yaml"], "nvdocker.yaml", "nvidia.com/gpu=all")
    assert nvidia_devices(listing) == expected_devices(driver_root, driver_root.gpus)
    assert libraries == expected_libraries(driver_root)


def test_one_gpu_by_uuid(consumer, generated, driver_root):
    gpu1 = driver_root.gpus[1]
    listing, _, libraries, _ = probe(consumer, generated["nvdocker.yaml"], "nvdocker.yaml", "nvidia.com/gpu=" + gpu1.uuid)
    assert nvidia_devices(listing) == expected_devices(driver_root, [gpu1])
    assert libraries == expected_libraries(driver_root)


def test_an_unknown_device_is_refused(consumer, generated):
    done = consumer.run(generated["nvdocker.yaml"], "nvdocker.yaml", "nvidia.com/gpu=7")
    assert done.returncode != 0 and UNRESOLVABLE in done.stderr and "nvidia.com/gpu=7" in done.stderr


# -- MIG and IMEX (issue #11) ---------------------------------------------------------------------

#: Every character device under /dev, as "path major:minor" (busybox stat, hex numbers).
LIST_DEVICES = "find /dev -type c -exec stat -c '%n %t:%T' {} +"


@pytest.fixture(scope="module")
def mig_generated(tmp_path_factory):
    """The two files `cdi generate` writes for the MIG root: the GPUs' and the IMEX channels'."""
    mig_root = simulated_mig_root_fixture(tmp_path_factory)
    out = tmp_path_factory.mktemp("mig-generated")
    no_config = out / "no-runtime.conf"
    no_config.write_text("")
    output.reset_consoles()
    try:
        runner = CliRunner(mix_stderr=False)  # click < 8.2
    except TypeError:
        runner = CliRunner()
    spec_dir = out / "cdi"
    spec_dir.mkdir()
    result = runner.invoke(
        app, ["cdi", "generate", "--driver-root", mig_root.path, "--output", str(spec_dir / "nvdocker.yaml"), "--json"],
        env={"NVDOCKER_RUNTIME_CONFIG": str(no_config), "COLUMNS": "200", "NO_COLOR": "1"}, catch_exceptions=False,
    )
    assert result.exit_code == 0, result.stderr
    said = json.loads(result.stdout)
    assert {"nvidia.com/gpu=0:1", "nvidia.com/imex-channel=0"} <= set(said["devices"])
    assert said["imex_output"] == str(spec_dir / "nvdocker-imex-channel.yaml")
    return {name: (spec_dir / name).read_bytes() for name in sorted(os.listdir(str(spec_dir)))}


def test_a_mig_device_and_an_imex_channel_in_one_container(consumer, mig_generated):
    """The MIG device's parent GPU node and its two capability nodes, channel0 of the IMEX channels,
    the control nodes, and nothing of GPU 1 or of channel1: the devices our runtime gives."""
    assert sorted(mig_generated) == ["nvdocker-imex-channel.yaml", "nvdocker.yaml"]
    done = consumer.run(mig_generated["nvdocker.yaml"], "nvdocker.yaml", ["nvidia.com/gpu=0:1", "nvidia.com/imex-channel=0"],
                        LIST_DEVICES, more_specs={"nvdocker-imex-channel.yaml": mig_generated["nvdocker-imex-channel.yaml"]})
    assert done.returncode == 0, "{}: {}".format(consumer.shown, done.stderr[-2000:])
    found = {}
    for line in done.stdout.splitlines():
        path, _, numbers = line.rpartition(" ")
        if path.startswith("/dev/nvidia"):
            major, minor = numbers.split(":")
            found[path] = (int(major, 16), int(minor, 16))
    expected = dict(CONTROL_NODES)
    expected.update({
        "/dev/nvidia0": (NVIDIA_MAJOR, 0),
        "/dev/nvidia-caps/nvidia-cap21": (CAPS_MAJOR, 21),
        "/dev/nvidia-caps/nvidia-cap22": (CAPS_MAJOR, 22),
        "/dev/nvidia-caps-imex-channels/channel0": (IMEX_MAJOR, 0),
    })
    assert found == expected, consumer.shown


# -- which cdiVersion each one reads --------------------------------------------------------------------


def _spec_text(driver_root, version, annotations=None):
    driver = discover(driver_root.path)
    spec = cdi_spec.generate(driver, RuntimeConfig().hook_command(), cdi_version=version)
    if annotations is not None:
        spec["annotations"] = annotations
        spec["cdiVersion"] = version  # as declared, even when the annotations need more
    return cdi_spec.render(spec, as_json=False, meta=cdi_spec.metadata(driver))


@pytest.mark.parametrize("version", [v for v in cdi_spec.CDI_VERSIONS if cdi_spec.version_key(v) >= (0, 5, 0)])
def test_the_cdi_versions_each_consumer_reads_are_doctors(consumer, driver_root, version):
    """A consumer reads a spec iff doctor's table says its release reads that cdiVersion."""
    done = consumer.run(_spec_text(driver_root, version), "nvdocker.yaml", "nvidia.com/gpu=0", "ls -l /dev")
    readable = cdi_spec.version_key(version) <= cdi_spec.version_key(consumer.max_cdi_version)
    if readable:
        assert done.returncode == 0, "{} refused cdiVersion {}: {}".format(consumer.shown, version, done.stderr[-600:])
        assert nvidia_devices(done.stdout)["nvidia0"] == (NVIDIA_MAJOR, 0)
    else:
        assert done.returncode != 0, "{} read cdiVersion {}, above doctor's {}".format(
            consumer.shown, version, consumer.max_cdi_version)
        assert UNRESOLVABLE in done.stderr


@pytest.mark.parametrize("declared", ["0.5.0", "0.6.0"])
def test_a_spec_with_annotations_as_older_releases_wrote(consumer, driver_root, declared):
    """Our previous releases wrote annotations (0.6.0): podman 4.3 refuses that spec whatever version
    it declares; the others refuse it only when it declares less than the annotations need. doctor's
    effective version (declared, or more when the fields need more) predicts both."""
    meta = cdi_spec.metadata(discover(driver_root.path))
    text = _spec_text(driver_root, declared, annotations=meta)
    done = consumer.run(text, "nvdocker.yaml", "nvidia.com/gpu=0")
    needed = doctor_cdi.effective_version(cdi_spec.parse(text, "x"))
    assert needed == "0.6.0"
    within_consumer = cdi_spec.version_key(needed) <= cdi_spec.version_key(consumer.max_cdi_version)
    declares_enough = declared == needed
    if within_consumer and declares_enough:
        assert done.returncode == 0, "{}: {}".format(consumer.shown, done.stderr[-600:])
    else:
        assert done.returncode != 0 and UNRESOLVABLE in done.stderr, consumer.shown


# -- nvidia-ctk's generate options and modes (issue #23) ----------------------------------------------------


def _generate(tmp_path_factory, root, *options):
    out = tmp_path_factory.mktemp("options")
    no_config = out / "no-runtime.conf"
    no_config.write_text("")
    output.reset_consoles()
    try:
        runner = CliRunner(mix_stderr=False)  # click < 8.2
    except TypeError:
        runner = CliRunner()
    result = runner.invoke(app, ["cdi", "generate", "--driver-root", root, "--output", str(out / "spec.yaml")] + list(options),
                           env={"NVDOCKER_RUNTIME_CONFIG": str(no_config), "COLUMNS": "200", "NO_COLOR": "1"},
                           catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    return (out / "spec.yaml").read_bytes()


def _devices_in(done):
    found = {}
    for line in done.stdout.splitlines():
        path, _, numbers = line.rpartition(" ")
        if path.startswith("/dev/nvidia"):
            major, minor = numbers.split(":")
            found[path] = (int(major, 16), int(minor, 16))
    return found


@pytest.fixture(scope="module")
def option_specs(tmp_path_factory):
    import stat

    from tests.support.driver_root import driver_root_or_skip

    mig_root = simulated_mig_root_fixture(tmp_path_factory)
    switch_root = driver_root_or_skip(str(tmp_path_factory.mktemp("nvswitch-root") / "root"))
    for name, minor in (("nvidia-nvswitchctl", 255), ("nvidia-nvswitch0", 0)):
        os.mknod(os.path.join(switch_root.path, "dev", name), stat.S_IFCHR | 0o666, os.makedev(NVSWITCH_MAJOR, minor))
    return {
        "nvswitch": _generate(tmp_path_factory, switch_root.path, "--mode", "nvswitch"),
        "named": _generate(tmp_path_factory, mig_root.path, "--device-name-strategy", "type-index", "--no-all-device",
                           "--vendor", "example.com", "--class", "accel"),
        "management": _generate(tmp_path_factory, mig_root.path, "--mode", "management"),
    }


def test_another_kind_and_type_index_names_are_what_consumers_resolve(consumer, option_specs):
    """`--vendor example.com --class accel --device-name-strategy type-index --no-all-device`:
    example.com/accel=gpu1 is GPU 1 and the control nodes, and there is no =all."""
    done = consumer.run(option_specs["named"], "spec.yaml", "example.com/accel=gpu1", LIST_DEVICES)
    assert done.returncode == 0, "{}: {}".format(consumer.shown, done.stderr[-2000:])
    expected = dict(CONTROL_NODES)
    expected["/dev/nvidia1"] = (NVIDIA_MAJOR, 1)
    assert _devices_in(done) == expected, consumer.shown
    refused = consumer.run(option_specs["named"], "spec.yaml", "example.com/accel=all")
    assert refused.returncode != 0 and UNRESOLVABLE in refused.stderr


NVSWITCH_MAJOR = 241


def test_an_opt_in_devices_spec_gives_its_nodes(consumer, option_specs):
    """--mode nvswitch: kind nvidia.com/nvswitch, one all device with the NVSwitch nodes only."""
    done = consumer.run(option_specs["nvswitch"], "spec.yaml", "nvidia.com/nvswitch=all", LIST_DEVICES)
    assert done.returncode == 0, "{}: {}".format(consumer.shown, done.stderr[-2000:])
    assert _devices_in(done) == {"/dev/nvidia-nvswitchctl": (NVSWITCH_MAJOR, 255), "/dev/nvidia-nvswitch0": (NVSWITCH_MAJOR, 0)}


def test_a_management_spec_gives_every_nvidia_node(consumer, option_specs):
    """--mode management: one all device with both GPUs, every MIG capability node and every IMEX
    channel, for a monitoring agent."""
    done = consumer.run(option_specs["management"], "spec.yaml", "nvidia.com/gpu=all", LIST_DEVICES)
    assert done.returncode == 0, "{}: {}".format(consumer.shown, done.stderr[-2000:])
    found = _devices_in(done)
    assert {"/dev/nvidia0", "/dev/nvidia1", "/dev/nvidiactl"} <= set(found)
    assert {"/dev/nvidia-caps/nvidia-cap21", "/dev/nvidia-caps/nvidia-cap22"} <= set(found)
    assert {"/dev/nvidia-caps-imex-channels/channel0", "/dev/nvidia-caps-imex-channels/channel1"} <= set(found)
