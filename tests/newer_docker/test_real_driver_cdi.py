"""NVIDIA's real driver files (Debian 12's 535.261.03 packages, tests/support/real_driver.py) through
CDI, on both layouts a host has (Debian's alternatives links into ``nvidia/current``; NVIDIA's ``.run``
installer's), read by every real consumer admins run: Docker 26.1 (``features.cdi``) and 28.5 (CDI on
by default) on a private dockerd with ``cdi-spec-dirs``, podman 4.3 and 5.4 (the spec in the private
``/run/cdi`` of tests/support/debian_engines.py's ``Podman``). Issue #20; the same proofs
tests/runtime/test_real_driver_e2e.py makes through our runtime.

``nvdocker-setup cdi generate`` runs in-process with ``NVDOCKER_DRIVER_ROOT=<layout root>`` and an empty
runtime.conf (no ``--driver-root``), as tests/newer_docker/test_cdi_consumers.py does. Each consumer then
runs ONE Debian 12 container per layout (the cached debootstrap minbase tree: imported as an image
into each dockerd, a fresh unpacked copy as podman's ``--rootfs``) with ``--device nvidia.com/gpu=all``
and one shell script; every test below reads that container's output:

- ``nvidia-smi`` is found on PATH at ``/usr/bin/nvidia-smi`` and the real binary says it cannot talk to
  the driver (exit 9): it ran and found ``libnvidia-ml.so.1`` (no GPU, no kernel module here);
- a small program ``dlopen``s ``libcuda.so.1`` and calls ``cuInit(0)``: an error code, no crash;
- the container's ``ldconfig -p`` lists ``libcuda.so.1`` and ``libnvidia-ml.so.1`` (the spec's
  createContainer hook ran), ``libcuda.so.1`` leads to the real ``libcuda.so.535.261.03``;
- both GPUs' device nodes and the control nodes are there;
- ``/usr/bin/nvidia-smi`` is a bind mount of that layout's real file (mountinfo's source path): the
  consumer read the spec of this layout, not the one before it.

Every consumer covers both layouts (4 x 2 containers). podman 4.3 returns about 20 s after each
container exits (tests/support/debian_engines.py), so its two containers run side by side, each
podman with a state dir of its own.
"""

import json
import os
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from typing import Dict

import pytest
from typer.testing import CliRunner

from nvdocker_setup.cdi import spec as cdi_spec
from nvdocker_setup.cli import output
from nvdocker_setup.cli.main import app
from tests.support import debian_engines
from tests.support.newer_docker import docker26, docker26_or_skip, sandbox26
from tests.support.real_driver import VERSION, real_driver_or_skip

pytestmark = pytest.mark.dockerd

CONSUMERS = ("docker-26.1", "docker-28.5", "podman-4.3", "podman-5.4")
LAYOUTS = ("debian", "run")
IMAGE = "bookworm:real-driver"
LIB_DIR = "/usr/lib/x86_64-linux-gnu"
# the same program as tests/runtime/test_real_driver_e2e.py's
CUINIT = r"""
#include <dlfcn.h>
#include <stdio.h>
int main(void) {
    void *cuda = dlopen("libcuda.so.1", RTLD_NOW);
    if (!cuda) { printf("dlopen failed: %s\n", dlerror()); return 2; }
    int (*cu_init)(unsigned int) = (int (*)(unsigned int))dlsym(cuda, "cuInit");
    if (!cu_init) { printf("no cuInit\n"); return 3; }
    printf("cuInit=%d\n", cu_init(0));
    return 0;
}
"""
#: One container, every check; sections split by "---" lines.
SCRIPT = (
    "echo smi-path=$(command -v nvidia-smi); nvidia-smi; echo smi-rc=$?; echo ---; "
    "/cuinit; echo cuinit-rc=$?; echo ---; "
    "ldconfig -p; echo ---; "
    "readlink -f {lib}/libcuda.so.1; echo ---; "
    "stat -c '%n %t:%T' /dev/nvidia*; echo ---; "
    "grep ' /usr/bin/nvidia-smi ' /proc/self/mountinfo"
).format(lib=LIB_DIR)
#: name -> (major, minor) of the nodes ``nvidia.com/gpu=all`` gives (tests/support/driver_root.py's 2 GPUs).
EXPECTED_NODES = {"/dev/nvidiactl": (195, 255), "/dev/nvidia0": (195, 0), "/dev/nvidia1": (195, 1)}


class Lab:
    def __init__(self, work: str, driver, cuinit: str, specs: Dict[str, bytes], tarball: str) -> None:
        self.work = work
        self.driver = driver
        self.cuinit = cuinit
        self.specs = specs  # layout -> the spec `cdi generate` wrote for it
        self.tarball = tarball  # the Debian 12 minbase tree


def generate(work: str, root: str, name: str) -> bytes:
    """`nvdocker-setup cdi generate` with NVDOCKER_DRIVER_ROOT and an empty runtime.conf."""
    no_config = os.path.join(work, "no-runtime.conf")
    open(no_config, "w").close()
    target = os.path.join(work, name)
    output.reset_consoles()
    try:
        runner = CliRunner(mix_stderr=False)  # click < 8.2
    except TypeError:
        runner = CliRunner()
    result = runner.invoke(
        app, ["cdi", "generate", "--output", target, "--json"],
        env={"NVDOCKER_RUNTIME_CONFIG": no_config, "NVDOCKER_DRIVER_ROOT": root, "COLUMNS": "200", "NO_COLOR": "1"},
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.stderr
    said = json.loads(result.stdout)
    assert said["driver_version"] == VERSION and "nvidia.com/gpu=all" in said["devices"], said
    with open(target, "rb") as handle:
        return handle.read()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    driver = real_driver_or_skip()
    from tests.packaging.support import cache_dir, pristine_tarball

    work = str(tmp_path_factory.mktemp("real-driver-cdi"))
    os.chmod(work, 0o755)
    cuinit = os.path.join(work, "cuinit")
    with open(cuinit + ".c", "w") as handle:
        handle.write(CUINIT)
    subprocess.run(["gcc", "-O2", "-o", cuinit, cuinit + ".c", "-ldl"], check=True)
    specs = {layout: generate(work, getattr(driver, layout), "nvdocker-{}.yaml".format(layout)) for layout in LAYOUTS}
    return Lab(work, driver, cuinit, specs, str(pristine_tarball(cache_dir())))


class Outcome:
    def __init__(self, done: subprocess.CompletedProcess) -> None:
        self.returncode = done.returncode
        self.stdout = done.stdout.decode("utf-8", "replace")
        self.stderr = done.stderr.decode("utf-8", "replace")

    def sections(self):
        parts = self.stdout.split("---\n")
        assert self.returncode == 0 and len(parts) == 6, (self.returncode, self.stdout[-3000:], self.stderr[-3000:])
        return parts


class DockerConsumer:
    def __init__(self, kind: str, folder: str, work: str, lab: Lab) -> None:
        self.folder = folder
        self.lab = lab
        self.cdi_dir = os.path.join(work, "cdi")
        os.makedirs(self.cdi_dir, mode=0o755)
        config = {"cdi-spec-dirs": [self.cdi_dir]}
        if kind == "docker-26.1":  # 26.1 reads CDI specs only with features.cdi; 28.2+ without it
            config["features"] = {"cdi": True}
        self.box = sandbox26(folder, os.path.join(work, "d"), json.dumps(config).encode())
        self.box.start()
        try:
            info = self.box.info()
            assert info.get("CDISpecDirs") == [self.cdi_dir], info.get("CDISpecDirs")  # CDI is on
            self.shown = "Docker " + info["ServerVersion"]
            with open(lab.tarball, "rb") as handle:
                docker26(folder, self.box, "import", "-", IMAGE, input=handle.read(), timeout=600)
        except BaseException:
            self.box.close()
            raise

    def run_all(self) -> Dict[str, Outcome]:
        outcomes = {}
        for layout in LAYOUTS:
            for old in os.listdir(self.cdi_dir):
                os.unlink(os.path.join(self.cdi_dir, old))
            path = os.path.join(self.cdi_dir, "nvdocker.yaml")
            with open(path, "wb") as handle:
                handle.write(self.lab.specs[layout])
            os.chmod(path, 0o644)
            outcomes[layout] = Outcome(docker26(
                self.folder, self.box, "run", "--rm", "--network", "none", "--device", "nvidia.com/gpu=all",
                "-v", "{}:/cuinit:ro".format(self.lab.cuinit), IMAGE, "sh", "-c", SCRIPT, check=False, timeout=180))
        return outcomes

    def close(self) -> None:
        self.box.close()


class PodmanConsumer:
    def __init__(self, engine, work: str, lab: Lab) -> None:
        self.engine = engine
        self.folder = debian_engines.engine_or_skip(engine)
        self.conmon = os.path.join(debian_engines.engine_or_skip(debian_engines.PODMAN43), "usr", "bin", "conmon")
        # podman refuses a runroot longer than 50 characters: state in a short dir of our own
        self.work = tempfile.mkdtemp(prefix="nvd-rdc.", dir="/tmp")
        os.chmod(self.work, 0o755)
        self.lab = lab
        said = debian_engines.engine_version(engine, self.folder)
        self.shown = "podman " + said.split("version", 1)[1].strip()

    def _run(self, layout: str) -> Outcome:
        # a fresh Debian 12 tree per container: podman runs in it and the hook writes its ld cache there
        rootfs = os.path.join(self.work, "rootfs-" + layout)
        os.makedirs(rootfs)
        os.chmod(rootfs, 0o755)
        subprocess.run(["tar", "-C", rootfs, "--numeric-owner", "-xf", self.lab.tarball], check=True)
        shutil.copy2(self.lab.cuinit, os.path.join(rootfs, "cuinit"))
        podman = debian_engines.Podman(self.engine, self.folder, self.conmon, os.path.join(self.work, "podman-" + layout))
        try:
            return Outcome(podman.run(self.lab.specs[layout], "nvdocker.yaml", rootfs, "nvidia.com/gpu=all", SCRIPT,
                                      timeout=180))
        finally:
            shutil.rmtree(rootfs, ignore_errors=True)

    def run_all(self) -> Dict[str, Outcome]:
        # each podman has its own --root/--runroot/--tmpdir and private /run: the two run side by side
        with ThreadPoolExecutor(max_workers=len(LAYOUTS)) as pool:
            futures = {layout: pool.submit(self._run, layout) for layout in LAYOUTS}
            return {layout: future.result() for layout, future in futures.items()}

    def close(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)


@pytest.fixture(scope="module", params=CONSUMERS)
def consumer(request, tmp_path_factory, lab):
    """The consumer and what its container printed for each layout (run once, read by every test)."""
    kind = request.param
    work = str(tmp_path_factory.mktemp(kind))
    os.chmod(work, 0o755)
    if kind == "podman-4.3":
        made = PodmanConsumer(debian_engines.PODMAN43, work, lab)
    elif kind == "podman-5.4":
        made = PodmanConsumer(debian_engines.PODMAN54, work, lab)
    else:
        folder = docker26_or_skip() if kind == "docker-26.1" else debian_engines.engine_or_skip(debian_engines.DOCKER28)
        made = DockerConsumer(kind, folder, work, lab)
    try:
        assert made.shown.split()[1].startswith(kind.split("-")[1] + "."), made.shown
        made.outcomes = made.run_all()
        yield made
    finally:
        made.close()


def test_the_spec_is_the_layouts_real_driver(lab):
    """What the consumers read: the layout's real files, the real version, every GPU."""
    for layout in LAYOUTS:
        root = getattr(lab.driver, layout)
        meta = cdi_spec.header_metadata(lab.specs[layout])
        assert meta.get(cdi_spec.DRIVER_VERSION_ANNOTATION) == VERSION, (layout, meta)
        assert meta.get(cdi_spec.DRIVER_ROOT_ANNOTATION) == root, (layout, meta)
        spec = cdi_spec.parse(lab.specs[layout], "nvdocker-{}.yaml".format(layout))
        assert {"0", "1", "all"} <= {device["name"] for device in spec["devices"]}
        mounts = {m["containerPath"]: m["hostPath"] for m in spec["containerEdits"].get("mounts", [])}
        smi = "usr/lib/nvidia/current/nvidia-smi" if layout == "debian" else "usr/bin/nvidia-smi"
        assert mounts.get("/usr/bin/nvidia-smi") == os.path.join(root, smi), layout  # the alternatives link resolved in the root
        lib = LIB_DIR.lstrip("/") + ("/nvidia/current" if layout == "debian" else "")
        libcuda = "{}/libcuda.so.{}".format(LIB_DIR, VERSION)
        assert mounts.get(libcuda) == os.path.join(root, lib, "libcuda.so." + VERSION), (layout, mounts.get(libcuda))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_real_nvidia_smi_is_on_path_and_finds_nvml(consumer, layout):
    smi = consumer.outcomes[layout].sections()[0]
    lines = smi.splitlines()
    assert lines[0] == "smi-path=/usr/bin/nvidia-smi", (consumer.shown, smi)
    assert "couldn't communicate with the NVIDIA driver" in smi and lines[-1] == "smi-rc=9", (consumer.shown, smi)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_real_libcuda_loads_and_cuinit_returns(consumer, layout):
    out = consumer.outcomes[layout].sections()[1]
    lines = out.splitlines()
    assert lines[-1] == "cuinit-rc=0", (consumer.shown, out)
    assert lines[0].startswith("cuInit=") and lines[0] != "cuInit=0", (consumer.shown, out)  # no GPU: an error code


@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_containers_ld_cache_lists_libcuda_and_nvml(consumer, layout):
    sections = consumer.outcomes[layout].sections()
    cache = {}
    for line in sections[2].splitlines():
        if "=>" in line:
            cache.setdefault(line.split()[0], line.rsplit("=>", 1)[1].strip())
    for soname in ("libcuda.so.1", "libnvidia-ml.so.1"):
        assert cache.get(soname) == "{}/{}".format(LIB_DIR, soname), (consumer.shown, soname, sorted(
            name for name in cache if "nvidia" in name or "cuda" in name))
    assert sections[3].strip() == "{}/libcuda.so.{}".format(LIB_DIR, VERSION), (consumer.shown, sections[3])


@pytest.mark.parametrize("layout", LAYOUTS)
def test_both_gpus_and_the_control_node(consumer, layout):
    nodes = {}
    for line in consumer.outcomes[layout].sections()[4].splitlines():
        path, _, numbers = line.rpartition(" ")
        major, minor = numbers.split(":")
        nodes[path] = (int(major, 16), int(minor, 16))
    for path, numbers in EXPECTED_NODES.items():
        assert nodes.get(path) == numbers, (consumer.shown, path, nodes)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_nvidia_smi_is_the_layouts_real_binary(consumer, lab, layout):
    """mountinfo's root field is the bind mount's source path on the host's filesystem."""
    smi = "usr/lib/nvidia/current/nvidia-smi" if layout == "debian" else "usr/bin/nvidia-smi"
    expected = os.path.realpath(os.path.join(getattr(lab.driver, layout), smi))
    mounts = [line.split() for line in consumer.outcomes[layout].sections()[5].splitlines()]
    assert [fields[3] for fields in mounts if fields[4] == "/usr/bin/nvidia-smi"] == [expected], (consumer.shown, mounts)
