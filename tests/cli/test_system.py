"""`nvdocker-setup system create-dev-char-symlinks` and `create-device-nodes --control-devices` on a
copy of the simulated driver root (real mknod nodes): links with udev's relative targets, nodes with
the numbers /proc/devices gives, idempotent runs, dry runs that write nothing, conflicts reported
and left alone, and no symlink below the root followed out of it."""

import os
import stat

import pytest

from nvdocker_setup.exit_status import ExitStatus
from tests.doctor.simhost import clone_tree
from tests.support.driver_root import NVIDIA_MAJOR, UVM_MAJOR, simulated_driver_root_fixture

CAPS_MAJOR = 237
PROC_DEVICES = ("Character devices:\n  1 mem\n{} nvidia-frontend\n{} nvidia-uvm\n{} nvidia-caps\n\n"
                "Block devices:\n  8 sd\n").format(NVIDIA_MAJOR, UVM_MAJOR, CAPS_MAJOR)
LINKS = {
    "195:0": "../nvidia0", "195:1": "../nvidia1", "195:254": "../nvidia-modeset", "195:255": "../nvidiactl",
    "510:0": "../nvidia-uvm", "510:1": "../nvidia-uvm-tools", "237:1": "../nvidia-caps/nvidia-cap1",
}


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return simulated_driver_root_fixture(tmp_path_factory)


@pytest.fixture
def root(tmp_path, template):
    """A private copy of the driver root with a MIG capability node and a /proc/devices."""
    path = str(tmp_path / "root")
    clone_tree(template.path, path)
    os.makedirs(os.path.join(path, "dev/nvidia-caps"))
    os.mknod(os.path.join(path, "dev/nvidia-caps/nvidia-cap1"), stat.S_IFCHR | 0o444, os.makedev(CAPS_MAJOR, 1))
    write(path, "proc/devices", PROC_DEVICES)
    return path


def write(root, relative, text):
    path = os.path.join(root, relative)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        handle.write(text)


def snapshot(path):
    """Every path under ``path`` with its type, mode, device number and link target (no following)."""
    seen = {}
    for directory, dirs, files in os.walk(path):
        for name in dirs + files:
            full = os.path.join(directory, name)
            info = os.lstat(full)
            seen[os.path.relpath(full, path)] = (
                stat.S_IFMT(info.st_mode), stat.S_IMODE(info.st_mode), info.st_rdev, info.st_ino,
                os.readlink(full) if stat.S_ISLNK(info.st_mode) else None,
            )
    return seen


def links(cli, root, *args):
    return cli("system", "create-dev-char-symlinks", "--driver-root", root, *args)


def nodes(cli, root, *args):
    return cli("system", "create-device-nodes", "--control-devices", "--driver-root", root, *args)


def test_links_are_made_with_udev_relative_targets(cli, root):
    made = links(cli, root)
    assert made.exit_code == 0, (made.stdout, made.stderr)
    char = os.path.join(root, "dev/char")
    assert sorted(os.listdir(char)) == sorted(LINKS)
    for name, target in LINKS.items():
        assert os.readlink(os.path.join(char, name)) == target
        node = os.stat(os.path.join(char, name))  # the link reaches the node with its number
        assert stat.S_ISCHR(node.st_mode) and "{}:{}".format(os.major(node.st_rdev), os.minor(node.st_rdev)) == name
    assert "made 7 links" in made.stdout


def test_a_second_run_changes_nothing_and_says_so(cli, root):
    assert links(cli, root).exit_code == 0
    before = snapshot(os.path.join(root, "dev"))
    again = links(cli, root)
    assert again.exit_code == 0 and "nothing to do" in again.stdout and "created" not in again.stdout
    document = links(cli, root, "--json").json
    assert document["changed"] is False and document["would_change"] is False
    assert {entry["status"] for entry in document["entries"]} == {"present"}
    assert snapshot(os.path.join(root, "dev")) == before
    dry = links(cli, root, "--dry-run")
    assert dry.exit_code == 0 and "nothing to do" in dry.stdout


def test_dry_run_lists_the_links_and_writes_nothing(cli, root):
    before = snapshot(root)
    dry = links(cli, root, "--dry-run")
    assert dry.exit_code == 0, dry.stderr
    assert "would-create /dev/char/195:0 -> ../nvidia0" in dry.stdout and "7 links to make" in dry.stdout
    assert snapshot(root) == before
    assert not os.path.lexists(os.path.join(root, "dev/char"))
    document = links(cli, root, "--dry-run", "--json").json
    assert document["dry_run"] is True and document["would_change"] is True and document["changed"] is False
    assert snapshot(root) == before


def test_a_planted_dev_char_symlink_is_not_followed_out_of_the_root(cli, root, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_bytes(b"host file\n")
    before = snapshot(str(outside))
    os.symlink(str(outside), os.path.join(root, "dev/char"))
    for args in ((), ("--force",), ("--json",)):
        refused = links(cli, root, *args)
        assert refused.exit_code == ExitStatus.TRUST_CHECK_FAILED, (refused.stdout, refused.stderr)
    assert links(cli, root, "--json").json["error"]["id"] == "unsafe-path"
    assert snapshot(str(outside)) == before and (outside / "keep").read_bytes() == b"host file\n"
    assert os.readlink(os.path.join(root, "dev/char")) == str(outside)
    # also an absolute-looking target inside the root's own tree: a relative one to the outside
    os.unlink(os.path.join(root, "dev/char"))
    os.symlink(os.path.relpath(str(outside), os.path.join(root, "dev")), os.path.join(root, "dev/char"))
    assert links(cli, root).exit_code == ExitStatus.TRUST_CHECK_FAILED
    assert snapshot(str(outside)) == before


def test_a_planted_dev_symlink_is_not_followed_either(cli, root, tmp_path, template):
    """<root>/dev itself a link to another tree of nodes: neither scanned nor written."""
    elsewhere = str(tmp_path / "elsewhere")
    os.rename(os.path.join(root, "dev"), elsewhere)
    os.symlink(elsewhere, os.path.join(root, "dev"))
    before = snapshot(elsewhere)
    assert links(cli, root).exit_code == ExitStatus.TRUST_CHECK_FAILED
    write(root, "proc/devices", PROC_DEVICES)
    os.unlink(os.path.join(elsewhere, "nvidiactl"))
    before = snapshot(elsewhere)
    assert nodes(cli, root).exit_code == ExitStatus.TRUST_CHECK_FAILED
    assert snapshot(elsewhere) == before


def test_a_wrong_link_or_a_file_is_reported_and_left_alone(cli, root):
    char = os.path.join(root, "dev/char")
    os.makedirs(char)
    os.symlink("../nvidia1", os.path.join(char, "195:0"))
    write(root, "dev/char/195:1", "not a link\n")
    refused = links(cli, root)
    assert refused.exit_code == ExitStatus.CONFLICT
    assert "/dev/char/195:0 -> ../nvidia1 does not reach the node" in refused.stdout
    assert "/dev/char/195:1 is a regular file" in refused.stdout
    assert os.readlink(os.path.join(char, "195:0")) == "../nvidia1"
    assert open(os.path.join(char, "195:1")).read() == "not a link\n"
    assert os.readlink(os.path.join(char, "195:255")) == "../nvidiactl"  # the others are still made
    document = links(cli, root, "--json")
    assert document.exit_code == ExitStatus.CONFLICT and document.json["ok"] is False
    statuses = {entry["path"]: entry["status"] for entry in document.json["entries"]}
    assert statuses["/dev/char/195:0"] == statuses["/dev/char/195:1"] == "conflict"
    # --force replaces the wrong link, never the file
    dry = links(cli, root, "--force", "--dry-run")
    assert "would-replace /dev/char/195:0" in dry.stdout and os.readlink(os.path.join(char, "195:0")) == "../nvidia1"
    forced = links(cli, root, "--force")
    assert forced.exit_code == ExitStatus.CONFLICT
    assert os.readlink(os.path.join(char, "195:0")) == "../nvidia0"
    assert open(os.path.join(char, "195:1")).read() == "not a link\n"
    assert not [name for name in os.listdir(char) if name.startswith(".")]


def test_an_existing_absolute_link_to_the_node_counts_as_present(cli, root):
    char = os.path.join(root, "dev/char")
    os.makedirs(char)
    os.symlink("/dev/nvidia0", os.path.join(char, "195:0"))  # nvidia-ctk's spelling, inside the root
    document = links(cli, root, "--json").json
    entry = next(item for item in document["entries"] if item["path"] == "/dev/char/195:0")
    assert entry["status"] == "present" and entry["target"] == "/dev/nvidia0"
    assert os.readlink(os.path.join(char, "195:0")) == "/dev/nvidia0"


def test_a_node_whose_major_is_stale_gets_no_link(cli, root):
    write(root, "proc/devices", PROC_DEVICES.replace("{} nvidia-uvm".format(UVM_MAJOR), "511 nvidia-uvm"))
    outcome = links(cli, root)
    assert outcome.exit_code == ExitStatus.CONFLICT
    assert "mismatch /dev/char/510:0" in outcome.stdout and "major 511" in outcome.stdout
    assert not os.path.lexists(os.path.join(root, "dev/char/510:0"))
    assert os.readlink(os.path.join(root, "dev/char/195:0")) == "../nvidia0"


def test_dev_char_path_inside_the_root(cli, root):
    assert links(cli, root, "--dev-char-path", "/run/char").exit_code == 0
    assert os.readlink(os.path.join(root, "run/char/195:0")) == "../../dev/nvidia0"
    assert os.stat(os.path.join(root, "run/char/195:0")).st_rdev == os.makedev(NVIDIA_MAJOR, 0)
    assert links(cli, root, "--dev-char-path", "/dev/../etc").exit_code == ExitStatus.TRUST_CHECK_FAILED


def test_no_nvidia_node_is_an_error(cli, tmp_path):
    empty = tmp_path / "empty"
    (empty / "dev").mkdir(parents=True)
    outcome = links(cli, str(empty), "--json")
    assert outcome.exit_code == ExitStatus.NOT_FOUND and outcome.json["error"]["id"] == "gpu-driver"


# -- create-device-nodes --control-devices ------------------------------------------------------


def test_missing_control_nodes_are_made_0666_root_with_proc_devices_numbers(cli, root):
    for name in ("nvidiactl", "nvidia-modeset", "nvidia-uvm", "nvidia-uvm-tools"):
        os.unlink(os.path.join(root, "dev", name))
    write(root, "proc/devices", PROC_DEVICES.replace("{} nvidia-uvm".format(UVM_MAJOR), "508 nvidia-uvm"))
    old = os.umask(0o077)
    try:
        made = nodes(cli, root)
    finally:
        os.umask(old)
    assert made.exit_code == 0, (made.stdout, made.stderr)
    expected = {"nvidiactl": (195, 255), "nvidia-modeset": (195, 254), "nvidia-uvm": (508, 0), "nvidia-uvm-tools": (508, 1)}
    for name, (major, minor) in expected.items():
        info = os.lstat(os.path.join(root, "dev", name))
        assert stat.S_ISCHR(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o666
        assert (os.major(info.st_rdev), os.minor(info.st_rdev)) == (major, minor)
        assert (info.st_uid, info.st_gid) == (0, 0)
    before = snapshot(os.path.join(root, "dev"))
    again = nodes(cli, root, "--json")
    assert again.exit_code == 0 and again.json["changed"] is False and again.json["would_change"] is False
    assert "nothing to do" in nodes(cli, root).stdout
    assert snapshot(os.path.join(root, "dev")) == before


def test_device_nodes_dry_run_writes_nothing(cli, root):
    os.unlink(os.path.join(root, "dev/nvidiactl"))
    before = snapshot(root)
    dry = nodes(cli, root, "--dry-run")
    assert dry.exit_code == 0 and "would-create /dev/nvidiactl (195:255)" in dry.stdout
    assert snapshot(root) == before


def test_device_nodes_need_the_driver_in_proc_devices(cli, root):
    os.unlink(os.path.join(root, "dev/nvidiactl"))
    write(root, "proc/devices", "Character devices:\n  1 mem\n\nBlock devices:\n  8 sd\n")
    outcome = nodes(cli, root, "--json")
    assert outcome.exit_code == ExitStatus.NOT_FOUND and outcome.json["error"]["id"] == "gpu-driver"
    assert not os.path.lexists(os.path.join(root, "dev/nvidiactl"))
    # nvidia loaded but not nvidia-uvm: the uvm nodes are skipped, not guessed
    write(root, "proc/devices", "Character devices:\n195 nvidia-frontend\n")
    for name in ("nvidia-uvm", "nvidia-uvm-tools"):
        os.unlink(os.path.join(root, "dev", name))
    document = nodes(cli, root, "--json").json
    statuses = {entry["path"]: entry["status"] for entry in document["entries"]}
    assert statuses == {"/dev/nvidiactl": "created", "/dev/nvidia-modeset": "present",
                        "/dev/nvidia-uvm": "skipped", "/dev/nvidia-uvm-tools": "skipped"}
    assert not os.path.lexists(os.path.join(root, "dev/nvidia-uvm"))


def test_a_wrong_existing_node_is_reported_not_replaced(cli, root):
    os.unlink(os.path.join(root, "dev/nvidiactl"))
    os.mknod(os.path.join(root, "dev/nvidiactl"), stat.S_IFCHR | 0o600, os.makedev(NVIDIA_MAJOR, 7))
    os.unlink(os.path.join(root, "dev/nvidia-modeset"))
    os.symlink("/etc/passwd", os.path.join(root, "dev/nvidia-modeset"))
    outcome = nodes(cli, root)
    assert outcome.exit_code == ExitStatus.CONFLICT
    assert "/dev/nvidiactl is the character device 195:7, not 195:255" in outcome.stdout
    assert "/dev/nvidia-modeset is a symlink" in outcome.stdout
    assert os.lstat(os.path.join(root, "dev/nvidiactl")).st_rdev == os.makedev(NVIDIA_MAJOR, 7)
    assert os.readlink(os.path.join(root, "dev/nvidia-modeset")) == "/etc/passwd"


def test_create_device_nodes_wants_control_devices(cli, root):
    outcome = cli("system", "create-device-nodes", "--driver-root", root, "--json")
    assert outcome.exit_code == ExitStatus.USAGE and "--control-devices" in outcome.json["error"]["message"]


def test_the_udev_rule_runs_commands_that_exist(cli, root):
    """Every command the udev rule runs parses and works on a driver root (a renamed option fails here)."""
    import re
    import shlex

    rule = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                        "udev", "71-nvdocker-dev-char.rules")
    commands = set()
    for script in re.findall(r"RUN\+=\"/bin/sh -c '([^']*)'\"", open(rule).read()):
        commands.update(part.strip() for part in script.split(";"))
    assert len(commands) == 2
    for command in sorted(commands):
        argv = shlex.split(command)
        assert argv[0] == "/usr/bin/nvdocker-setup"
        outcome = cli(*argv[1:], "--driver-root", root)
        assert outcome.exit_code == 0, (command, outcome.stdout, outcome.stderr)
    assert os.readlink(os.path.join(root, "dev/char/195:255")) == "../nvidiactl"
