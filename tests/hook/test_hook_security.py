"""The hook against hostile input (issue #9, items 1 and 7): the host root, links and odd files in
the rootfs, malformed state on stdin, and the environment of what it starts."""

import json
import os
import shutil
import stat
import subprocess
import sys

import pytest

from nvdocker_setup.driver.errors import GpuSetupError
from nvdocker_setup.hook import main as hook_main

LIB_DIR = "/usr/lib/x86_64-linux-gnu"
SAFE_PATH = "PATH=/usr/sbin:/usr/bin:/sbin:/bin"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(hook_main.__file__))))


def assert_clean_failure(done, fragment):
    assert done.returncode == 1, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr and fragment in done.stderr, done.stderr
    assert len(done.stderr.splitlines()) == 1 and len(done.stderr) < 2500


@pytest.fixture
def never_touch(monkeypatch):
    """The hook must refuse before writing a conf file or running ldconfig (these would act on the
    host if the refusal regressed, so they are replaced by failures here)."""
    def forbidden(*args, **kwargs):
        raise AssertionError("the hook went on with the host root: {!r}".format(args))

    monkeypatch.setattr(hook_main, "write_ld_conf_in", forbidden)
    monkeypatch.setattr(hook_main, "run", forbidden)


# -- the host root is never a container root -------------------------------------------------------


@pytest.mark.parametrize("kind", ["slash", "dot_dot", "symlink", "trailing"])
def test_update_ldcache_refuses_the_host_root(never_touch, tmp_path, kind):
    rootfs = {"slash": "/", "dot_dot": "/usr/..", "trailing": "//", "symlink": str(tmp_path / "to-root")}[kind]
    if kind == "symlink":
        os.symlink("/", rootfs)
    with pytest.raises(GpuSetupError, match="host's root directory"):
        hook_main.update_ldcache(["--rootfs", rootfs, "--folder", LIB_DIR], None)


def test_update_ldcache_refuses_a_bind_mount_of_the_host_root(never_touch, tmp_path):
    target = tmp_path / "mnt"
    target.mkdir()
    if subprocess.run(["mount", "--bind", "/", str(target)], stderr=subprocess.DEVNULL).returncode != 0:
        pytest.skip("cannot bind-mount here (needs root)")
    try:
        with pytest.raises(GpuSetupError, match="host's root directory"):
            hook_main.update_ldcache(["--rootfs", str(target), "--folder", LIB_DIR], None)
    finally:
        subprocess.run(["umount", "-l", str(target)])


def test_update_ldcache_refuses_root_path_slash_from_the_state(never_touch, tmp_path):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps({"root": {"path": "/"}}))
    state = json.dumps({"ociVersion": "1.0.2", "id": "c1", "status": "creating", "pid": 1, "bundle": str(bundle)})
    import io

    with pytest.raises(GpuSetupError, match="host's root directory"):
        hook_main.update_ldcache(["--folder", LIB_DIR], io.StringIO(state))


@pytest.mark.parametrize("rootfs, fragment", [("relative/rootfs", "absolute"), ("/nonexistent/rootfs", "cannot use")])
def test_update_ldcache_refuses_relative_or_missing_roots(never_touch, rootfs, fragment):
    with pytest.raises(GpuSetupError, match=fragment):
        hook_main.update_ldcache(["--rootfs", rootfs, "--folder", LIB_DIR], None)


def test_relative_ldconfig_is_refused(never_touch, tmp_path):
    with pytest.raises(GpuSetupError, match="--ldconfig must be an absolute path"):
        hook_main.update_ldcache(["--rootfs", str(tmp_path), "--ldconfig", "ldconfig", "--folder", LIB_DIR], None)


def test_the_hook_works_from_slash_whatever_its_working_directory(tmp_path):
    code = ("import sys, os; sys.path.insert(0, {!r}); from nvdocker_setup.hook.main import main; "
            "main(['poststart']); print(os.getcwd())").format(REPO)
    done = subprocess.run([sys.executable, "-I", "-S", "-c", code], cwd=str(tmp_path), stdout=subprocess.PIPE,
            universal_newlines=True, check=True)
    assert done.stdout.strip() == "/"


# -- links and odd files in the rootfs -----------------------------------------------------------------


def conf_dir(root):
    directory = root / "etc" / "ld.so.conf.d"
    directory.mkdir(parents=True)
    return directory


def test_a_symlinked_conf_file_is_replaced_and_its_target_untouched(tmp_path):
    host_file = tmp_path / "host-file"
    host_file.write_text("host\n")
    directory = conf_dir(tmp_path / "root")
    os.symlink(str(host_file), str(directory / "00-nvdocker.conf"))
    assert hook_main.write_ld_conf_in(str(tmp_path / "root"), [LIB_DIR]) is True
    assert host_file.read_text() == "host\n"
    conf = directory / "00-nvdocker.conf"
    assert not conf.is_symlink() and conf.read_text().splitlines()[1:] == [LIB_DIR]


def test_a_fifo_at_the_conf_name_neither_blocks_nor_stays(run_hook, tmp_path):
    directory = conf_dir(tmp_path / "root")
    os.mkfifo(str(directory / "00-nvdocker.conf"))
    # as a process with a timeout: opening a FIFO for writing would block forever
    done = run_hook(["update-ldcache", "--ldconfig", "/bin/true", "--rootfs", str(tmp_path / "root"), "--folder", LIB_DIR], timeout=20)
    assert done.returncode == 0, done.stderr
    assert stat.S_ISREG(os.lstat(str(directory / "00-nvdocker.conf")).st_mode)


def test_a_device_node_at_the_conf_name_is_replaced_unopened(tmp_path):
    directory = conf_dir(tmp_path / "root")
    try:
        os.mknod(str(directory / "00-nvdocker.conf"), stat.S_IFCHR | 0o600, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("mknod needs root")
    assert hook_main.write_ld_conf_in(str(tmp_path / "root"), [LIB_DIR]) is True
    assert stat.S_ISREG(os.lstat(str(directory / "00-nvdocker.conf")).st_mode)


def test_a_directory_at_the_conf_name_is_left_alone(tmp_path):
    directory = conf_dir(tmp_path / "root")
    (directory / "00-nvdocker.conf").mkdir()
    (directory / "00-nvdocker.conf" / "keep").write_text("x")
    assert hook_main.write_ld_conf_in(str(tmp_path / "root"), [LIB_DIR]) is False
    assert os.listdir(str(directory)) == ["00-nvdocker.conf"]
    assert (directory / "00-nvdocker.conf" / "keep").read_text() == "x"


def test_a_planted_temp_name_is_not_followed(tmp_path):
    host_file = tmp_path / "host-file"
    host_file.write_text("host\n")
    directory = conf_dir(tmp_path / "root")
    os.symlink(str(host_file), str(directory / ".00-nvdocker.conf.{}.tmp".format(os.getpid())))
    assert hook_main.write_ld_conf_in(str(tmp_path / "root"), [LIB_DIR]) is True
    assert host_file.read_text() == "host\n"
    assert sorted(os.listdir(str(directory))) == ["00-nvdocker.conf"]


@pytest.mark.parametrize("what", ["etc", "ld.so.conf.d"])
@pytest.mark.parametrize("kind", ["symlink", "file"])
def test_odd_directories_on_the_way_are_left_alone(tmp_path, what, kind):
    outside = tmp_path / "host-dir"
    (outside / "ld.so.conf.d").mkdir(parents=True)
    root = tmp_path / "root"
    parent = root if what == "etc" else root / "etc"
    parent.mkdir(parents=True)
    if kind == "symlink":
        os.symlink(str(outside if what == "etc" else outside / "ld.so.conf.d"), str(parent / what))
    else:
        (parent / what).write_text("a file\n")
    assert hook_main.write_ld_conf_in(str(root), [LIB_DIR]) is False
    assert os.listdir(str(outside / "ld.so.conf.d")) == []


# -- malformed state and spec: one line, status 1, never a traceback --------------------------------------


def state_with(bundle_dir, changes=None):
    state = {"ociVersion": "1.0.2", "id": "c1", "status": "creating", "pid": 42, "bundle": str(bundle_dir)}
    state.update(changes or {})
    return json.dumps(state)


@pytest.fixture
def bundle(tmp_path):
    directory = tmp_path / "bundle"
    (directory / "rootfs").mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps({"root": {"path": "rootfs"}, "process": {"env": ["NVIDIA_VISIBLE_DEVICES=all"]}}))
    return directory


@pytest.mark.parametrize("command", ["update-ldcache", "prestart"])
@pytest.mark.parametrize(
    "changes, fragment",
    [
        ({"pid": "abc"}, "pid is not a process id"),
        ({"pid": {}}, "pid is not a process id"),
        ({"pid": True}, "pid is not a process id"),
        ({"pid": -1}, "pid is not a process id"),
        ({"pid": 1.5}, "pid is not a process id"),
        ({"bundle": {"path": "/x"}}, "bundle is not a string"),
        ({"bundle": ["/x"]}, "bundle is not a string"),
        ({"bundle": "relative/bundle"}, "not an absolute path"),
        ({"annotations": ["a"]}, "annotations is not a JSON object"),
        ({"id": {"a": 1}}, "id is not a string"),
    ],
    ids=lambda value: json.dumps(value) if isinstance(value, dict) else None,
)
def test_malformed_state_is_a_clean_error(run_hook, bundle, tmp_path, command, changes, fragment):
    args = [command] if command == "prestart" else [command, "--ldconfig", "/bin/true", "--folder", LIB_DIR]
    done = run_hook(args, stdin=state_with(bundle, changes), env={"PATH": str(tmp_path), "NVDOCKER_RUNTIME_CONFIG": os.devnull})
    assert_clean_failure(done, fragment)


@pytest.mark.parametrize("stdin, fragment", [
    ("[" * 200000 + "]" * 200000, "nested too deeply"),
    ('{"a":' * 200000, "nested too deeply"),
    ("[1, 2]", "not a JSON object"),
    ("\xff\xfe", "not JSON"),
    ("", "not JSON"),
], ids=["deep_array", "deep_object", "array", "not_utf8", "empty"])
def test_state_that_is_not_a_state_is_a_clean_error(run_hook, stdin, fragment):
    done = run_hook(["update-ldcache", "--folder", LIB_DIR], stdin=stdin)
    assert_clean_failure(done, fragment)


@pytest.mark.parametrize("spec", [
    {"root": "rootfs"},
    {"root": {"path": {"a": 1}}},
    {"root": {"path": "rootfs"}, "process": {"env": {"NVIDIA_VISIBLE_DEVICES": "all"}, "args": {"a": 1}}},
    {"root": {"path": "rootfs"}, "process": ["x"]},
    ["not", "an", "object"],
    "deep",
], ids=["root_string", "path_object", "env_and_args_objects", "process_list", "array", "deep"])
@pytest.mark.parametrize("command", ["update-ldcache", "prestart"])
def test_malformed_spec_is_a_clean_error_or_no_request(run_hook, bundle, tmp_path, spec, command):
    text = "[" * 200000 + "]" * 200000 if spec == "deep" else json.dumps(spec)
    (bundle / "config.json").write_text(text)
    args = [command] if command == "prestart" else [command, "--ldconfig", "/bin/true", "--folder", LIB_DIR]
    done = run_hook(args, stdin=state_with(bundle), env={"PATH": str(tmp_path), "NVDOCKER_RUNTIME_CONFIG": os.devnull})
    assert "Traceback" not in done.stderr and done.returncode in (0, 1), done.stderr
    if done.returncode == 1:
        assert len(done.stderr.splitlines()) == 1


def test_an_oversized_request_in_prestart_is_refused_briefly(run_hook, bundle, tmp_path):
    (bundle / "config.json").write_text(json.dumps({"root": {"path": "rootfs"},
            "process": {"env": ["NVIDIA_VISIBLE_DEVICES=" + "0," * 50000]}}))
    done = run_hook(["prestart"], stdin=state_with(bundle), env={"PATH": str(tmp_path), "NVDOCKER_RUNTIME_CONFIG": os.devnull})
    assert_clean_failure(done, "NVIDIA_VISIBLE_DEVICES is 100000 characters long; at most 8192 are accepted")


# -- what the prestart hook starts ---------------------------------------------------------------------------


def recording_cli(directory, record):
    cli = directory / "nvidia-container-cli"
    directory.mkdir(exist_ok=True)
    cli.write_text("#!{}\nimport json, os, sys\n"
                   "json.dump({{'argv': sys.argv, 'env': dict(os.environ), 'cwd': os.getcwd()}}, open({!r}, 'w'))\n".format(
        sys.executable, str(record)))
    os.chmod(str(cli), 0o755)
    return cli


def test_prestart_execs_nvidia_container_cli_with_a_clean_env_by_absolute_path(run_hook, bundle, tmp_path):
    record = tmp_path / "record.json"
    cli = recording_cli(tmp_path / "bin", record)
    env = {"PATH": str(cli.parent), "NVDOCKER_RUNTIME_CONFIG": os.devnull, "LD_PRELOAD": "", "SECRET": "x", "PYTHONPATH": "/x"}
    done = run_hook(["prestart"], stdin=state_with(bundle), env=env, cwd=str(bundle / "rootfs"))
    assert done.returncode == 0, done.stderr
    seen = json.loads(record.read_text())
    assert seen["argv"][0] == str(cli) and os.path.isabs(seen["argv"][0])
    # the interpreter running the recorder may add LC_CTYPE (PEP 538); nothing of ours or the caller's
    assert {k: v for k, v in seen["env"].items() if k != "LC_CTYPE"} == {"PATH": SAFE_PATH.split("=", 1)[1]}
    assert seen["cwd"] == "/"


def test_prestart_ignores_relative_path_entries(run_hook, bundle, tmp_path):
    record = tmp_path / "record.json"
    recording_cli(bundle / "rootfs", record)  # ./nvidia-container-cli, from a working directory
    done = run_hook(["prestart"], stdin=state_with(bundle), env={"PATH": ".:",
            "NVDOCKER_RUNTIME_CONFIG": os.devnull}, cwd=str(bundle / "rootfs"))
    assert not record.exists()
    if done.returncode != 0:  # no real nvidia-container-cli on this machine: the fix hint
        assert "--default-runtime" in done.stderr


def test_find_nvidia_cli_takes_absolute_directories_only(tmp_path, monkeypatch):
    cli = recording_cli(tmp_path / "bin", tmp_path / "r.json")
    monkeypatch.chdir(str(tmp_path))
    monkeypatch.setattr(hook_main, "_CLI_SEARCH", ())
    assert hook_main.find_nvidia_cli({"PATH": "bin:.:"}) is None
    assert hook_main.find_nvidia_cli({"PATH": "bin:" + str(cli.parent)}) == str(cli)


def test_ldconfig_runs_with_an_explicit_env(run_hook, tmp_path):
    record = tmp_path / "env.txt"
    fake = tmp_path / "ldconfig"
    fake.write_text("#!/bin/sh\nenv > {}\n".format(record))
    os.chmod(str(fake), 0o755)
    root = tmp_path / "root"
    root.mkdir()
    done = run_hook(["update-ldcache", "--ldconfig", str(fake), "--rootfs", str(root), "--folder", LIB_DIR],
                    env={"PATH": "/nonexistent", "LD_PRELOAD": "/nonexistent.so", "SECRET": "1"})
    assert done.returncode == 0, done.stderr
    names = {line.split("=", 1)[0] for line in record.read_text().splitlines()}
    assert "LD_PRELOAD" not in names and "SECRET" not in names
    assert SAFE_PATH in record.read_text().splitlines()


# -- the same, as whole processes, for both implementations (the C hook has no in-process seam) ----


def run_ldcache(run_hook, root, ldconfig="/bin/true", timeout=20):
    return run_hook(["update-ldcache", "--ldconfig", ldconfig, "--rootfs", str(root), "--folder", LIB_DIR], timeout=timeout)


def test_process_a_symlinked_conf_file_is_replaced_and_its_target_untouched(run_hook, tmp_path):
    host_file = tmp_path / "host-file"
    host_file.write_text("host\n")
    directory = conf_dir(tmp_path / "root")
    os.symlink(str(host_file), str(directory / "00-nvdocker.conf"))
    done = run_ldcache(run_hook, tmp_path / "root")
    assert done.returncode == 0, done.stderr
    assert host_file.read_text() == "host\n"
    conf = directory / "00-nvdocker.conf"
    assert not conf.is_symlink() and conf.read_text().splitlines() == [
        "# written by nvdocker-runtime-hook for the NVIDIA driver libraries", LIB_DIR]


def test_process_a_device_node_at_the_conf_name_is_replaced_unopened(run_hook, tmp_path):
    directory = conf_dir(tmp_path / "root")
    os.mknod(str(directory / "00-nvdocker.conf"), stat.S_IFCHR | 0o600, os.makedev(1, 3))
    done = run_ldcache(run_hook, tmp_path / "root")
    assert done.returncode == 0, done.stderr
    assert stat.S_ISREG(os.lstat(str(directory / "00-nvdocker.conf")).st_mode)


def test_process_a_directory_at_the_conf_name_is_left_alone(run_hook, tmp_path):
    directory = conf_dir(tmp_path / "root")
    (directory / "00-nvdocker.conf").mkdir()
    (directory / "00-nvdocker.conf" / "keep").write_text("x")
    done = run_ldcache(run_hook, tmp_path / "root")
    assert done.returncode == 0, done.stderr
    assert os.listdir(str(directory)) == ["00-nvdocker.conf"]
    assert (directory / "00-nvdocker.conf" / "keep").read_text() == "x"


def test_process_a_planted_temp_name_is_not_followed(run_hook, tmp_path):
    """In a new pid namespace the hook is pid 1, so the image knows its temp name in advance."""
    host_file = tmp_path / "host-file"
    host_file.write_text("host\n")
    directory = conf_dir(tmp_path / "root")
    os.symlink(str(host_file), str(directory / ".00-nvdocker.conf.1.tmp"))
    command = run_hook.command(["update-ldcache", "--ldconfig", "/bin/true", "--rootfs", str(tmp_path / "root"),
                                "--folder", LIB_DIR])
    done = subprocess.run([shutil.which("unshare"), "-p", "-f"] + command, env={}, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert host_file.read_text() == "host\n"
    assert sorted(os.listdir(str(directory))) == ["00-nvdocker.conf"]


@pytest.mark.parametrize("what", ["etc", "ld.so.conf.d"])
@pytest.mark.parametrize("kind", ["symlink", "file"])
def test_process_odd_directories_on_the_way_are_left_alone(run_hook, tmp_path, what, kind):
    outside = tmp_path / "host-dir"
    (outside / "ld.so.conf.d").mkdir(parents=True)
    root = tmp_path / "root"
    parent = root if what == "etc" else root / "etc"
    parent.mkdir(parents=True)
    if kind == "symlink":
        os.symlink(str(outside if what == "etc" else outside / "ld.so.conf.d"), str(parent / what))
    else:
        (parent / what).write_text("a file\n")
    done = run_ldcache(run_hook, root)
    assert done.returncode == 0, done.stderr
    assert os.listdir(str(outside / "ld.so.conf.d")) == []


@pytest.mark.parametrize("kind", ["slash", "dot_dot", "symlink", "trailing", "bind_mount"])
def test_process_the_host_root_is_refused_before_anything_is_written_or_run(run_hook, tmp_path, kind):
    """In a private mount namespace with a tmpfs over the host's /etc/ld.so.conf.d: a regression
    would write there (and run the recording ldconfig), not on this machine."""
    rootfs = {"slash": "/", "dot_dot": "/usr/..", "trailing": "//", "symlink": str(tmp_path / "to-root"),
              "bind_mount": str(tmp_path / "mnt")}[kind]
    if kind == "symlink":
        os.symlink("/", rootfs)
    marker = tmp_path / "ldconfig-ran"
    fake = tmp_path / "ldconfig"
    fake.write_text("#!/bin/sh\ntouch {}\n".format(marker))
    os.chmod(str(fake), 0o755)
    setup = 'mount -t tmpfs tmpfs /etc/ld.so.conf.d && '
    if kind == "bind_mount":
        os.mkdir(rootfs)
        setup += 'mount --bind / "$0" && '
    command = run_hook.command(["update-ldcache", "--ldconfig", str(fake), "--rootfs", rootfs, "--folder", LIB_DIR])
    done = subprocess.run([shutil.which("unshare"), "-m", "--propagation", "private", "/bin/sh", "-c",
                           setup + 'exec "$@"; echo; ls -A /etc/ld.so.conf.d', rootfs] + command,
                          env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=30)
    assert_clean_failure(done, "host's root directory")
    assert not marker.exists()


def test_process_ldconfig_starts_in_slash_whatever_the_hook_was_started_in(run_hook, tmp_path):
    record = tmp_path / "cwd.txt"
    fake = tmp_path / "ldconfig"
    fake.write_text("#!/bin/sh\npwd > {}\n".format(record))
    os.chmod(str(fake), 0o755)
    root = tmp_path / "root"
    root.mkdir()
    done = run_hook(["update-ldcache", "--ldconfig", str(fake), "--rootfs", str(root), "--folder", LIB_DIR], cwd=str(root))
    assert done.returncode == 0, done.stderr
    assert record.read_text().strip() == "/"


def test_the_python_hooks_ldconfig_has_a_deadline_too(monkeypatch):
    import time

    monkeypatch.setattr(hook_main, "DEADLINE_S", 1.0)
    started = time.monotonic()
    with pytest.raises(GpuSetupError, match="did not finish within 1 s and was killed"):
        hook_main.run(["/bin/sleep", "30"])
    assert time.monotonic() - started < 10


def test_an_images_proc_symlink_is_not_followed_by_the_procfs_backstop(run_hook, tmp_path):
    """The image's /proc -> /proc (a host path once the hook looks it up from outside the chroot) is
    no procfs of the container's: the backstop looks at the link itself (O_PATH|O_NOFOLLOW), so the
    hook neither refuses the image nor looks up a host path it chose (the second attacker review)."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    os.symlink("/proc", str(root / "proc"))
    done = run_hook(["update-ldcache", "--ldconfig", "/bin/true", "--rootfs", str(root), "--folder", LIB_DIR])
    assert done.returncode == 0, done.stderr
