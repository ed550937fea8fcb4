"""Host paths a GPU container gets are root's alone (issue #19): what an unprivileged user can
create under the driver root (a symlink or a directory in a sticky /tmp, a file in a directory they
can write) is left out and named, and the container path is the one asked for, never the resolved
one. The same rules hold at driver root `/` (tests/runtime/test_production_shape_e2e.py)."""

import contextlib
import os
import shutil
import subprocess

import pytest

from nvdocker_setup.driver.capabilities import ALL_CAPABILITIES
from nvdocker_setup.driver.discovery import discover, resolve_trusted
from nvdocker_setup.driver.edits import common_edits
from nvdocker_setup.driver.errors import GpuSetupError
from nvdocker_setup.driver.model import WRITABLE_MOUNT
from nvdocker_setup.runtime.config import MPS_PIPE_DIR_ENV, load
from tests.support.driver_root import build_driver_root, missing_tools

NOBODY = 65534

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="ownership checks need root to chown")


@pytest.fixture
def root(tmp_path):
    if missing_tools():
        pytest.skip("needs " + ", ".join(missing_tools()))
    built = build_driver_root(str(tmp_path / "root"))
    tmp = built.host("/tmp")
    os.makedirs(tmp, exist_ok=True)
    os.chmod(tmp, 0o1777)  # like the host's /tmp: sticky, world-writable
    return built


@contextlib.contextmanager
def nosuid_nodev(path):
    """``path`` as its own nosuid,nodev tmpfs (what an admin does for the MPS pipe directory)."""
    os.makedirs(path, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=755,nosuid,nodev,noexec,size=1m", "tmpfs", path], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", path], check=False)


def mounts(driver):
    return {m.container_path: m for m in common_edits(driver, ALL_CAPABILITIES, None).mounts}


def test_a_users_mps_symlink_to_a_host_path_is_left_out_and_named(root):
    secret = root.host("/etc/shadow-like")
    with open(secret, "w") as handle:
        handle.write("root:x:0:0\n")
    link = root.host("/tmp/nvidia-mps")
    os.symlink("/etc", link)
    os.lchown(link, NOBODY, NOBODY)
    driver = discover(root.path)
    found = mounts(driver)
    assert "/tmp/nvidia-mps" not in found and "/etc" not in found
    assert not any(m.host_path.startswith(root.host("/etc")) for m in found.values())
    assert any(note.startswith("/tmp/nvidia-mps:") and "uid 65534" in note for note in driver.refused), driver.refused


def test_a_users_real_mps_directory_is_never_mounted(root):
    directory = root.host("/tmp/nvidia-mps")
    os.mkdir(directory)
    os.chown(directory, NOBODY, NOBODY)
    driver = discover(root.path)
    assert "/tmp/nvidia-mps" not in mounts(driver)
    assert any("owned by uid 65534" in note for note in driver.refused)


def test_roots_mps_directory_is_mounted_writable_at_the_requested_path(root):
    real = root.host("/var/run/mps-pipes")
    os.symlink("/var/run/mps-pipes", root.host("/tmp/nvidia-mps"))  # root's link: followed
    with nosuid_nodev(real):
        driver = discover(root.path)
        found = mounts(driver)
    assert found["/tmp/nvidia-mps"].host_path == real
    assert found["/tmp/nvidia-mps"].options == list(WRITABLE_MOUNT)
    assert "/var/run/mps-pipes" not in found  # the container path is the requested one
    assert driver.refused == []


def test_an_mps_directory_where_a_container_could_leave_set_uid_files_is_not_shared(root):
    """Shared writable, the directory must be on a nosuid,nodev mount: else a container's root could
    leave a set-uid root program (or a device node) there that any host user then runs."""
    os.makedirs(root.host("/tmp/nvidia-mps"))  # root's, 0755, but on the test root's file system
    flags = os.statvfs(root.host("/tmp/nvidia-mps")).f_flag
    if flags & os.ST_NOSUID and flags & os.ST_NODEV:
        pytest.skip("the temp dir is on a nosuid,nodev mount here")
    driver = discover(root.path)
    assert "/tmp/nvidia-mps" not in mounts(driver)
    assert any(note.startswith("/tmp/nvidia-mps:") and "nosuid,nodev" in note for note in driver.refused), driver.refused


def test_an_mps_path_that_is_a_file_or_a_hard_link_is_not_shared(root):
    secret = root.host("/etc/secret")
    with open(secret, "w") as handle:
        handle.write("root's\n")
    os.chmod(secret, 0o600)
    os.link(secret, root.host("/tmp/nvidia-mps"))  # a user's, where fs.protected_hardlinks = 0
    driver = discover(root.path)
    assert "/tmp/nvidia-mps" not in mounts(driver)
    assert any("hard link" in note for note in driver.refused), driver.refused
    os.unlink(root.host("/tmp/nvidia-mps"))
    shutil.copy2(secret, root.host("/tmp/nvidia-mps"))  # root's plain file
    driver = discover(root.path)
    assert "/tmp/nvidia-mps" not in mounts(driver)
    assert any("not a directory" in note for note in driver.refused), driver.refused


def test_an_ld_cache_a_user_could_write_is_refused(root, tmp_path):
    cache = root.host("/etc/ld.so.cache")
    user_copy = str(tmp_path / "user.cache")
    shutil.copy2(cache, user_copy)
    os.chown(user_copy, NOBODY, NOBODY)
    os.unlink(cache)
    os.symlink(user_copy, cache)  # absolute: resolved inside the root, so it names nothing there
    with pytest.raises(GpuSetupError, match="dynamic linker cache .* does not exist"):
        discover(root.path).libraries(["compute"])
    os.unlink(cache)
    shutil.copy2(user_copy, cache)  # the user's own file in the root
    os.chown(cache, NOBODY, NOBODY)
    with pytest.raises(GpuSetupError, match="owned by uid 65534"):
        discover(root.path).libraries(["compute"])


def test_a_world_writable_non_sticky_directory_on_the_way_is_refused(root):
    os.makedirs(root.host("/run/nvidia-fabricmanager"), exist_ok=True)
    open(root.host("/run/nvidia-fabricmanager/socket"), "w").close()
    os.chmod(root.host("/run/nvidia-fabricmanager"), 0o777)
    driver = discover(root.path)
    assert "/run/nvidia-fabricmanager/socket" not in mounts(driver)
    assert any("/run/nvidia-fabricmanager is writable by others" in note for note in driver.refused), driver.refused


def test_a_group_writable_binary_is_refused_and_the_rest_still_comes(root):
    os.chmod(root.host("/usr/bin/nvidia-smi"), 0o775)
    driver = discover(root.path)
    found = mounts(driver)
    assert "/usr/bin/nvidia-smi" not in found
    assert any(path.startswith("/usr/lib/x86_64-linux-gnu/libcuda.so.") for path in found)
    assert any("writable by its group" in note for note in driver.refused)


def test_a_library_link_a_user_owns_is_left_out(root):
    lib = root.host("/usr/lib/x86_64-linux-gnu")
    name = [n for n in os.listdir(lib) if n.startswith("libnvidia-ml.so.") and not os.path.islink(os.path.join(lib, n))][0]
    os.lchown(os.path.join(lib, "libnvidia-ml.so.1"), NOBODY, NOBODY)
    driver = discover(root.path)
    assert "/usr/lib/x86_64-linux-gnu/" + name not in mounts(driver)
    assert any(note.startswith("/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1:") for note in driver.refused)


def test_debian_alternatives_layout_gives_nvidia_smi_at_its_requested_path(root):
    """Debian's packaged driver: /usr/bin/nvidia-smi -> /etc/alternatives/nvidia--nvidia-smi ->
    /usr/lib/nvidia/current/nvidia-smi. The container gets it at /usr/bin/nvidia-smi (on PATH)."""
    current = root.host("/usr/lib/nvidia/current")
    os.makedirs(current)
    shutil.move(root.host("/usr/bin/nvidia-smi"), os.path.join(current, "nvidia-smi"))
    os.makedirs(root.host("/etc/alternatives"), exist_ok=True)
    os.symlink("/usr/lib/nvidia/current/nvidia-smi", root.host("/etc/alternatives/nvidia--nvidia-smi"))
    os.symlink("/etc/alternatives/nvidia--nvidia-smi", root.host("/usr/bin/nvidia-smi"))
    found = mounts(discover(root.path))
    assert found["/usr/bin/nvidia-smi"].host_path == os.path.join(current, "nvidia-smi")
    assert "/usr/lib/nvidia/current/nvidia-smi" not in found


def test_an_untrusted_driver_root_gives_nothing(root):
    os.chmod(root.path, 0o777)
    try:
        found, problem = resolve_trusted(root.path, "/usr/bin/nvidia-smi")
        assert found is None and problem is not None and "driver root" in problem
    finally:
        os.chmod(root.path, 0o755)


def test_the_mps_pipe_directory_comes_from_the_admin(root, tmp_path):
    conf = tmp_path / "runtime.conf"
    conf.write_text("[runtime]\nmps-pipe-directory = /var/run/mps\n")
    assert load({"NVDOCKER_RUNTIME_CONFIG": str(conf)}).mps_pipe_dir == "/var/run/mps"
    assert load({"NVDOCKER_RUNTIME_CONFIG": str(conf), MPS_PIPE_DIR_ENV: "/srv/mps"}).mps_pipe_dir == "/srv/mps"
    for bad in ("relative/dir", "/a/../etc", "/", "/a//b", "/a/./b"):
        with pytest.raises(GpuSetupError, match="MPS pipe directory"):
            load({"NVDOCKER_RUNTIME_CONFIG": str(conf), MPS_PIPE_DIR_ENV: bad})
    os.makedirs(root.host("/tmp/nvidia-mps"))  # root's, but not the one the admin named
    with nosuid_nodev(root.host("/var/run/mps")):
        found = mounts(discover(root.path, "/var/run/mps"))
    assert "/var/run/mps" in found and found["/var/run/mps"].options == list(WRITABLE_MOUNT)
    assert "/tmp/nvidia-mps" not in found


def test_a_device_node_is_given_only_as_roots_own_node(root):
    """A symlink at a node's name (it could name any device: a disk) or a node a user owns is no
    GPU node: the GPU is refused with the fix, the control node is left out and named."""
    os.unlink(root.host("/dev/nvidia1"))
    os.symlink("/dev/null", root.host("/dev/nvidia1"))
    os.chown(root.host("/dev/nvidia-uvm"), NOBODY, NOBODY)
    driver = discover(root.path)
    with pytest.raises(GpuSetupError, match="GPU 1 has no device node /dev/nvidia1"):
        driver.gpu_device_node(driver.gpus[1])
    assert driver.gpu_device_node(driver.gpus[0]).path == "/dev/nvidia0"
    controls = [node.path for node in driver.control_device_nodes()]
    assert "/dev/nvidiactl" in controls and "/dev/nvidia-uvm" not in controls
    assert any(note.startswith("/dev/nvidia-uvm:") and "uid 65534" in note for note in driver.refused), driver.refused


def test_runtime_settings_a_user_could_write_are_refused(tmp_path):
    conf = tmp_path / "runtime.conf"
    conf.write_text("[runtime]\nmps-pipe-directory = /home/user/mps\n")
    os.chmod(str(conf), 0o644)
    assert load({"NVDOCKER_RUNTIME_CONFIG": str(conf)}).mps_pipe_dir == "/home/user/mps"
    os.chmod(str(conf), 0o666)
    with pytest.raises(GpuSetupError, match="is not root's alone"):
        load({"NVDOCKER_RUNTIME_CONFIG": str(conf)})
    os.chmod(str(conf), 0o644)
    os.chown(str(conf), NOBODY, NOBODY)
    with pytest.raises(GpuSetupError, match="owned by uid 65534"):
        load({"NVDOCKER_RUNTIME_CONFIG": str(conf)})
    os.chown(str(conf), 0, 0)
    os.chmod(str(tmp_path), 0o777)
    try:
        with pytest.raises(GpuSetupError, match="writable by others"):
            load({"NVDOCKER_RUNTIME_CONFIG": str(conf)})
    finally:
        os.chmod(str(tmp_path), 0o755)
