"""Docker 26 (CDI) against the hook escape and oversized CDI requests (issue #9, items 1 and 2).

With ``features.cdi`` dockerd itself applies our CDI spec, hooks included, and runc runs the spec's
createContainer hook with the container's environment unless the hook entry has an ``env``. The
control shows it: the same spec with the hook's ``env`` removed lets an image's ``LD_PRELOAD`` run
its code on the host. And our runtime behind Docker 26, which can set OCI annotations
(``--annotation``), refuses a huge ``cdi.k8s.io/`` list quickly.
"""

import json
import os
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from nvdocker_setup.cli import output
from nvdocker_setup.cli.main import app
from tests.runtime import engine_api
from tests.runtime.test_hook_escape_e2e import compile_evil, import_image, tiny_rootfs
from tests.support.driver_root import simulated_driver_root_fixture
from tests.support.newer_docker import docker26, docker26_or_skip, sandbox26

pytestmark = pytest.mark.dockerd

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LIB_DIR = "/usr/lib/x86_64-linux-gnu"
NO_ENV_KIND = "nvidia.com/gpunoenv"


@pytest.fixture(scope="module")
def docker26_dir():
    return docker26_or_skip()


@pytest.fixture(scope="module")
def driver_root(tmp_path_factory):
    return simulated_driver_root_fixture(tmp_path_factory)


@pytest.fixture(scope="module")
def launcher26(tmp_path_factory):
    out = tmp_path_factory.mktemp("launcher26")
    built = subprocess.run(["bash", os.path.join(REPO, "scripts/build-launcher.sh"), str(out)], env=dict(os.environ, PYTHON=sys.executable),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    assert built.returncode == 0, built.stderr
    return built.stdout.strip().splitlines()[-1]


def generate_spec(driver_root, spec_path):
    output.reset_consoles()
    try:
        runner = CliRunner(mix_stderr=False)  # click < 8.2
    except TypeError:
        runner = CliRunner()
    no_config = spec_path + ".runtime.conf"
    open(no_config, "w").close()
    result = runner.invoke(app, ["cdi", "generate", "--driver-root", driver_root.path, "--output", spec_path, "--json"],
                           env={"NVDOCKER_RUNTIME_CONFIG": no_config, "COLUMNS": "200", "NO_COLOR": "1"}, catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    with open(spec_path) as handle:
        return json.load(handle)


@pytest.fixture(scope="module")
def lab26(tmp_path_factory, docker26_dir, driver_root, launcher26):
    work = str(tmp_path_factory.mktemp("escape26"))
    os.chmod(work, 0o755)
    specs = os.path.join(work, "cdi")
    os.makedirs(specs, mode=0o755)
    spec = generate_spec(driver_root, os.path.join(specs, "nvdocker.json"))
    hooks = spec["containerEdits"]["hooks"]
    assert hooks and all(hook["env"] == ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"] for hook in hooks)
    # the control: the same spec as it was before issue #9, under another kind
    control = json.loads(json.dumps(spec))
    control["kind"] = NO_ENV_KIND
    for hook in control["containerEdits"]["hooks"]:
        del hook["env"]
    with open(os.path.join(specs, "control-no-env.json"), "w") as handle:
        json.dump(control, handle)
    marker = os.path.join(work, "marker")
    os.makedirs(marker, mode=0o777)
    os.chmod(marker, 0o777)
    runtime_conf = os.path.join(work, "runtime.conf")
    with open(runtime_conf, "w") as handle:
        handle.write("[runtime]\nruntimes = runc\n")
    daemon = {"features": {"cdi": True}, "cdi-spec-dirs": [specs], "runtimes": {"nvidia": {"path": launcher26}}}
    box = sandbox26(docker26_dir, os.path.join(work, "d"), json.dumps(daemon).encode(),
                    env={"NVDOCKER_DRIVER_ROOT": driver_root.path, "NVDOCKER_RUNTIME_CONFIG": runtime_conf})
    box.start()
    try:
        assert box.info()["ServerVersion"].startswith("26.")
        rootfs = tiny_rootfs(os.path.join(work, "image"))
        evil = compile_evil(rootfs, "cdi_ld_preload", marker)
        os.rename(evil, os.path.join(rootfs, "evil.so"))
        import_image(box, rootfs, "esc-cdi:latest", ["LD_PRELOAD=./evil.so"])
        box.import_tiny_image()
        yield box, marker, driver_root
    finally:
        box.close()


def run26(docker26_dir, box, *args, timeout=60.0):
    started = time.monotonic()
    done = docker26(docker26_dir, box, "run", "--rm", "--network", "none", *args, check=False, timeout=timeout)
    return done, time.monotonic() - started


@pytest.mark.parametrize("device", ["nvidia.com/gpu=0", "nvidia.com/gpu=all"])
def test_cdi_hook_never_runs_the_images_ld_preload(docker26_dir, lab26, device):
    box, marker, driver_root = lab26
    done, _ = run26(docker26_dir, box, "--device", device, "esc-cdi", "sh", "-c", "readlink {}/libcuda.so.1".format(LIB_DIR))
    assert os.listdir(marker) == [], "code from the image ran on the host"
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert done.stdout.decode().strip() == "libcuda.so." + driver_root.version  # the hook did run


def test_control_a_cdi_hook_without_env_lets_the_image_run_code_on_the_host(docker26_dir, lab26):
    """Proves the test above can fail: this is the spec `cdi generate` wrote before the fix."""
    box, marker, _ = lab26
    run26(docker26_dir, box, "--device", NO_ENV_KIND + "=0", "esc-cdi", "true")
    escaped = os.listdir(marker)
    for name in escaped:
        os.unlink(os.path.join(marker, name))
    assert escaped, "the payload did not run through a hook without env: the CDI escape test proves nothing"


def test_a_huge_cdi_annotation_list_is_refused_quickly(docker26_dir, lab26):
    box, _, _ = lab26
    flags = []
    for index in range(300):
        flags += ["--annotation", "cdi.k8s.io/req{}=nvidia.com/gpu=0".format(index)]
    done, took = run26(docker26_dir, box, "--runtime", "nvidia", *flags, "tiny", "true")
    stderr = done.stderr.decode(errors="replace")
    assert took < 10 and done.returncode != 0, (took, stderr)
    assert "the container has 300 cdi.k8s.io/ annotations; at most 64 are accepted" in stderr and len(stderr) < 4000


def test_a_one_mebibyte_cdi_annotation_is_refused_quickly(docker26_dir, lab26):
    box, _, _ = lab26
    value = ",".join(["nvidia.com/gpu=0"] * 65536)[: 1 << 20]
    container = engine_api.create_container(box.socket_path, {
        "Image": "tiny", "Cmd": ["true"],
        "HostConfig": {"Runtime": "nvidia", "NetworkMode": "none", "Annotations": {"cdi.k8s.io/big": value}},
    }, version="1.44")
    try:
        started = time.monotonic()
        done = docker26(docker26_dir, box, "start", "-a", container, check=False, timeout=60)
        took = time.monotonic() - started
        stderr = done.stderr.decode(errors="replace")
        assert took < 10 and done.returncode != 0, (took, stderr[:2000])
        assert "the annotation 'cdi.k8s.io/big' is {} characters long; at most 8192 are accepted".format(len(value)) in stderr
        assert len(stderr) < 4000
    finally:
        engine_api.remove_container(box.socket_path, container)


def test_annotations_requesting_a_gpu_still_work_through_our_runtime(docker26_dir, lab26):
    box, _, _ = lab26
    done, _ = run26(docker26_dir, box, "--runtime", "nvidia", "--annotation", "cdi.k8s.io/x=nvidia.com/gpu=1", "tiny", "ls", "/dev")
    assert done.returncode == 0 and "nvidia1" in done.stdout.decode().split(), done.stderr.decode(errors="replace")
