"""nvdocker-runtime-hook: the ld cache hook against real ldconfig, and the --gpus prestart hook."""

import json
import os
import shutil
import sys

import pytest

from nvdocker_setup.driver import ldcache
from nvdocker_setup.hook.main import nvidia_cli_argv, split_command

LIB_DIR = "/usr/lib/x86_64-linux-gnu"


@pytest.fixture
def rootfs(tmp_path, driver_root):
    """A container root with the driver's libraries where the runtime would have mounted them
    (copied: the hook only cares that the files are there)."""
    root = tmp_path / "bundle" / "rootfs"
    lib = root / LIB_DIR.lstrip("/")
    lib.mkdir(parents=True)
    (root / "bin").mkdir()
    for container_path in driver_root.libraries.values():
        shutil.copy2(driver_root.host(container_path), str(lib))
    with open(str(tmp_path / "bundle" / "config.json"), "w") as handle:
        json.dump({"ociVersion": "1.0.2", "root": {"path": "rootfs"}, "process": {"env": []}}, handle)
    return root


def check_indexed(root):
    entries = {e.name: e.path for e in ldcache.read(str(root / "etc/ld.so.cache"))}
    assert entries["libcuda.so.1"] == LIB_DIR + "/libcuda.so.1"
    assert os.readlink(str(root / LIB_DIR.lstrip("/") / "libcuda.so.1")) == "libcuda.so.550.54.14"


def test_update_ldcache_with_rootfs_from_the_runtime(run_hook, rootfs):
    done = run_hook(["update-ldcache", "--ldconfig", "/sbin/ldconfig", "--rootfs", str(rootfs), "--folder", LIB_DIR])
    assert done.returncode == 0, done.stderr
    conf = (rootfs / "etc/ld.so.conf.d/00-nvdocker.conf").read_text()
    assert conf.splitlines()[1:] == [LIB_DIR]
    check_indexed(rootfs)


def test_update_ldcache_with_the_state_on_stdin_as_from_cdi(run_hook, rootfs):
    state = json.dumps({"ociVersion": "1.0.2", "id": "c1", "status": "creating", "pid": 1, "bundle": str(rootfs.parent)})
    done = run_hook(["update-ldcache", "--folder=" + LIB_DIR], stdin=state)
    assert done.returncode == 0, done.stderr
    check_indexed(rootfs)


def test_a_symlinked_conf_dir_is_never_followed_out_of_the_container(run_hook, rootfs, tmp_path):
    outside = tmp_path / "host-etc"
    outside.mkdir()
    (rootfs / "etc").mkdir()
    os.symlink(str(outside), str(rootfs / "etc/ld.so.conf.d"))
    done = run_hook(["update-ldcache", "--rootfs", str(rootfs), "--folder", LIB_DIR])
    assert done.returncode == 0, done.stderr
    assert os.listdir(str(outside)) == []
    check_indexed(rootfs)


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--ldconfig", "/bin/false", "--folder", LIB_DIR], "failed with status 1"),
        (["--folder", "relative/lib"], "absolute"),
        (["--folder", "/usr/../../etc"], "absolute"),
        (["--bogus", "x"], "unexpected argument"),
        (["--folder"], "needs a value"),
    ],
)
def test_update_ldcache_failures_exit_1_with_a_message(run_hook, rootfs, args, fragment):
    done = run_hook(["update-ldcache", "--rootfs", str(rootfs)] + args)
    assert done.returncode == 1 and fragment in done.stderr, done.stderr


def test_bad_state_on_stdin(run_hook):
    done = run_hook(["update-ldcache", "--folder", LIB_DIR], stdin="not json")
    assert done.returncode == 1 and "not JSON" in done.stderr


@pytest.mark.parametrize("args, status", [(["poststart"], 0), (["-debug", "poststop"], 0), (["bogus"], 2), ([], 2)])
def test_other_commands(run_hook, args, status):
    assert run_hook(args).returncode == status


def test_split_command_skips_nvidias_flags():
    assert split_command(["-config", "/etc/x.toml", "-debug", "prestart"]) == ("prestart", [])
    assert split_command(["update-ldcache", "--folder", "/x"]) == ("update-ldcache", ["--folder", "/x"])


# -- prestart, as nvidia-container-runtime-hook under a runtime that is not ours ---------------------

def gpu_bundle(tmp_path, env):
    bundle = tmp_path / "gpu-bundle"
    (bundle / "rootfs").mkdir(parents=True)
    with open(str(bundle / "config.json"), "w") as handle:
        json.dump({"ociVersion": "1.0.2", "root": {"path": "rootfs"}, "process": {"env": env}}, handle)
    return json.dumps({"ociVersion": "1.0.2", "id": "c1", "status": "creating", "pid": 4242, "bundle": str(bundle)}), bundle


def isolated_env(tmp_path, path):
    missing = str(tmp_path / "absent.conf")
    open(missing, "w").close()
    return {"PATH": path, "NVDOCKER_RUNTIME_CONFIG": missing}


def test_prestart_without_a_request_does_nothing(run_hook, tmp_path):
    state, _ = gpu_bundle(tmp_path, ["NVIDIA_VISIBLE_DEVICES=void"])
    assert run_hook(["prestart"], stdin=state, env=isolated_env(tmp_path, "/nonexistent")).returncode == 0


def test_prestart_without_nvidia_container_cli_says_how_to_fix_it(run_hook, tmp_path):
    if shutil.which("nvidia-container-cli", path="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"):
        pytest.skip("NVIDIA's nvidia-container-cli is installed here")
    state, _ = gpu_bundle(tmp_path, ["NVIDIA_VISIBLE_DEVICES=all"])
    done = run_hook(["prestart"], stdin=state, env=isolated_env(tmp_path, str(tmp_path)))
    assert done.returncode == 1
    assert "nvdocker-setup install --default-runtime" in done.stderr and "--runtime=nvidia" in done.stderr


def test_prestart_delegates_to_nvidia_container_cli(run_hook, tmp_path):
    record = tmp_path / "cli-argv.json"
    cli = tmp_path / "bin" / "nvidia-container-cli"
    cli.parent.mkdir()
    cli.write_text("#!{}\nimport json, sys\njson.dump(sys.argv, open({!r}, 'w'))\n".format(sys.executable, str(record)))
    os.chmod(str(cli), 0o755)
    state, bundle = gpu_bundle(tmp_path, ["NVIDIA_VISIBLE_DEVICES=0,1", "NVIDIA_DRIVER_CAPABILITIES=utility",
            "NVIDIA_REQUIRE_CUDA=cuda>=12.0"])
    done = run_hook(["prestart"], stdin=state, env=isolated_env(tmp_path, str(cli.parent)))
    assert done.returncode == 0, done.stderr
    argv = json.loads(record.read_text())
    assert argv[1:] == [
        "--load-kmods", "configure", "--ldconfig=@" + argv[3].split("@", 1)[1], "--device=0,1", "--utility",
        "--require=cuda>=12.0", "--pid=4242", str(bundle / "rootfs"),
    ]


def test_prestart_hands_mig_and_imex_requests_to_nvidia_container_cli(run_hook, tmp_path):
    """As NVIDIA's hook: MIG devices, IMEX channels and (privileged) MIG access go on as flags."""
    record = tmp_path / "cli-argv.json"
    cli = tmp_path / "bin" / "nvidia-container-cli"
    cli.parent.mkdir()
    cli.write_text("#!{}\nimport json, sys\njson.dump(sys.argv, open({!r}, 'w'))\n".format(sys.executable, str(record)))
    os.chmod(str(cli), 0o755)
    state, _ = gpu_bundle(tmp_path, ["NVIDIA_VISIBLE_DEVICES=0:1", "NVIDIA_IMEX_CHANNELS=0"])
    done = run_hook(["prestart"], stdin=state, env=isolated_env(tmp_path, str(cli.parent)))
    assert done.returncode == 0, done.stderr
    argv = json.loads(record.read_text())
    assert "--device=0:1" in argv and "--imex-channel=0" in argv


def test_prestart_refuses_mig_access_in_an_unprivileged_container(run_hook, tmp_path):
    record = tmp_path / "cli-argv.json"
    cli = tmp_path / "bin" / "nvidia-container-cli"
    cli.parent.mkdir()
    cli.write_text("#!{}\nimport json, sys\njson.dump(sys.argv, open({!r}, 'w'))\n".format(sys.executable, str(record)))
    os.chmod(str(cli), 0o755)
    state, _ = gpu_bundle(tmp_path, ["NVIDIA_VISIBLE_DEVICES=0", "NVIDIA_MIG_CONFIG_DEVICES=all"])
    done = run_hook(["prestart"], stdin=state, env=isolated_env(tmp_path, str(cli.parent)))
    assert done.returncode == 1 and "only a privileged container" in done.stderr, done.stderr
    assert not record.exists()


def test_nvidia_cli_argv_with_a_driver_root_and_disabled_requirements():
    spec = {"process": {"env": ["NVIDIA_VISIBLE_DEVICES=none", "NVIDIA_REQUIRE_CUDA=cuda>=99", "NVIDIA_DISABLE_REQUIRE=1"]}}
    argv = nvidia_cli_argv("/usr/bin/nvidia-container-cli", spec, 7, "/r", "/run/nvidia/driver", "/sbin/ldconfig")
    assert argv == [
        "/usr/bin/nvidia-container-cli", "--root=/run/nvidia/driver", "--load-kmods", "configure", "--ldconfig=@/sbin/ldconfig",
        "--compute", "--utility", "--pid=7", "/r",
    ]
    assert nvidia_cli_argv("cli", {"process": {"env": []}}, 7, "/r", "/", "/sbin/ldconfig") is None
