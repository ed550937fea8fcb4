"""Docker 26.1 for real (Debian 13's binaries, unpacked: tests/support/newer_docker.py).

This machine's dockerd 20.10 has neither ``dockerd --validate`` (23.0) nor CDI (25.0), so here the
validator, ``cdi generate`` and ``install --cdi`` meet a dockerd that has both.
"""

import json
import os
import re
import shlex
import stat

import pytest
from typer.testing import CliRunner

from nvdocker_setup import operations
from nvdocker_setup.adapters import dockerd
from nvdocker_setup.apply import ApplyOptions
from nvdocker_setup.cli import output
from nvdocker_setup.cli.main import app
from nvdocker_setup.context import Context
from nvdocker_setup.core.plan import InstallRequest
from nvdocker_setup.errors import ValidationFailed
from tests.support.driver_root import NVIDIA_MAJOR, simulated_driver_root_fixture
from tests.support.newer_docker import (
    EXPECTED_MAJOR,
    docker26,
    docker26_or_skip,
    dockerd_path,
    sandbox26,
    search_path,
)
from tests.support.sandbox import SandboxService

pytestmark = pytest.mark.dockerd

ADMIN = b'{\n  "log-level": "warn",\n  "labels": ["site=lab"]\n}\n'
NO_SUCH_OPTION = "the following directives don't match any configuration option"
BOTH_FLAG_AND_FILE = "the following directives are specified both as a flag and in the configuration file"
# Keys our schema knows (Docker 28+) that dockerd 26 does not: an admin's file for a newer engine.
NEWER_KEYS = {"bip6": "fd00:1::1/64", "allow-direct-routing": True, "ip-forward-no-drop": True,
              "host-gateway-ips": ["192.0.2.1"]}


@pytest.fixture(scope="module")
def docker26_dir():
    return docker26_or_skip()


@pytest.fixture(scope="module")
def driver_root(tmp_path_factory):
    return simulated_driver_root_fixture(tmp_path_factory)


@pytest.fixture(scope="module")
def cdi_dir(tmp_path_factory, driver_root):
    """A spec dir holding what `nvdocker-setup cdi generate` writes for the simulated 2-GPU root."""
    spec_dir = tmp_path_factory.mktemp("cdi")
    spec = spec_dir / "nvdocker.json"
    no_config = spec_dir.parent / "no-runtime.conf"
    no_config.write_text("")
    output.reset_consoles()
    try:
        runner = CliRunner(mix_stderr=False)  # click < 8.2
    except TypeError:
        runner = CliRunner()
    result = runner.invoke(
        app, ["cdi", "generate", "--driver-root", driver_root.path, "--output", str(spec), "--json"],
        env={"NVDOCKER_RUNTIME_CONFIG": str(no_config), "COLUMNS": "200", "NO_COLOR": "1"}, catch_exceptions=False,
    )
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert "nvidia.com/gpu=0" in report["devices"] and "nvidia.com/gpu=all" in report["devices"]
    os.chmod(str(spec_dir), 0o755)
    return str(spec_dir)


def ctx_for(tmp_path, docker26_dir, path=None, box=None, service=None):
    env = dict(os.environ, PATH=path or search_path(docker26_dir))
    if box is not None:
        env["DOCKER_HOST"] = box.docker_host
    return Context(
        env=env, state_dir=str(tmp_path / "state"), docker_socket=box.socket_path if box is not None else None,
        service=service,
    )


def admin_file(tmp_path, data=ADMIN):
    etc = tmp_path / "etc" / "docker"
    etc.mkdir(parents=True)
    config = etc / "daemon.json"
    config.write_bytes(data)
    return str(config)


def read(path):
    with open(path, "rb") as handle:
        return handle.read()


def char_devices(listing):
    """{name: (major, minor)} of the character devices in an `ls -l /dev` listing (busybox format)."""
    found = {}
    for line in listing.splitlines():
        match = re.match(r"^c\S*\s+\d+\s+\S+\s+\S+\s+(\d+),\s*(\d+)\s+.*\s(\S+)$", line)
        if match:
            found[match.group(3)] = (int(match.group(1)), int(match.group(2)))
    return found


def logging_dockerd(tmp_path, docker26_dir, extra_validate_flags=()):
    """A `dockerd` first on PATH that logs its argv, then execs dockerd 26; ``--validate`` runs also get
    ``extra_validate_flags``, as for a daemon whose command line carries them (what its unit passes)."""
    bindir = tmp_path / "wrap"
    bindir.mkdir()
    os.chmod(str(bindir), 0o755)
    log = tmp_path / "dockerd-argv.log"
    real = shlex.quote(dockerd_path(docker26_dir))
    extra = " ".join(shlex.quote(flag) for flag in extra_validate_flags)
    script = bindir / "dockerd"
    script.write_text(
        "#!/bin/sh\n"
        "printf '%s\\n' \"$*\" >> {log}\n"
        "case \" $* \" in *' --validate '*) exec {real} \"$@\" {extra} ;; esac\n"
        "exec {real} \"$@\"\n".format(log=shlex.quote(str(log)), real=real, extra=extra)
    )
    os.chmod(str(script), stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    return str(bindir) + os.pathsep + search_path(docker26_dir), log


def validate_calls(log):
    lines = log.read_text().splitlines() if log.exists() else []
    return [line.split() for line in lines if "--validate" in line.split()]


# -- dockerd --validate -------------------------------------------------------------------------------


def test_find_dockerd_reports_26_and_can_validate(docker26_dir):
    binary = dockerd.find_dockerd(Context(env={"PATH": search_path(docker26_dir)}))
    assert binary is not None and binary.path == dockerd_path(docker26_dir)
    assert binary.major == EXPECTED_MAJOR and binary.version.startswith("26.1.")
    assert binary.can_validate


def test_validate_config_good_and_bad(tmp_path, docker26_dir):
    ctx = Context(env={"PATH": search_path(docker26_dir)})
    good = tmp_path / "good.json"
    good.write_text(json.dumps({
        "log-level": "warn", "default-runtime": "nvidia", "runtimes": {"nvidia": {"path": "/usr/bin/nvdocker-runtime"}},
        "features": {"cdi": True}, "cdi-spec-dirs": ["/etc/cdi"],
    }))
    verdict = dockerd.validate_config(ctx, str(good))
    assert verdict.ran and verdict.ok, verdict.output
    assert verdict.binary is not None and verdict.binary.major == EXPECTED_MAJOR
    assert verdict.messages == ()

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"log-level": "warn", "not-a-docker-option": True}))
    verdict = dockerd.validate_config(ctx, str(bad))
    assert verdict.ran and not verdict.ok
    assert verdict.messages == (NO_SUCH_OPTION + ": not-a-docker-option",)
    assert "rejected the configuration: " + NO_SUCH_OPTION in verdict.reason

    wrong_type = tmp_path / "wrong-type.json"
    wrong_type.write_text(json.dumps({"features": {"cdi": "yes"}}))
    verdict = dockerd.validate_config(ctx, str(wrong_type))
    assert verdict.ran and not verdict.ok and "cannot unmarshal string" in verdict.messages[0]

    # flag/file conflicts are seen only with the daemon's own flags on the same command line
    assert dockerd.validate_config(ctx, str(good)).ok
    verdict = dockerd.validate_config(ctx, str(good), flags=["--default-runtime=runc"])
    assert not verdict.ok
    assert verdict.messages == (BOTH_FLAG_AND_FILE + ": default-runtime: (from flag: runc, from file: nvidia)",)


def test_install_runs_dockerd_validate_on_the_candidate(tmp_path, docker26_dir, runtime_binary):
    config = admin_file(tmp_path)
    path, log = logging_dockerd(tmp_path, docker26_dir)
    ctx = ctx_for(tmp_path, docker26_dir, path=path)
    result = operations.install(ctx, InstallRequest("nvidia", runtime_binary, set_default=True), config=config)
    assert result.changed
    calls = validate_calls(log)
    assert len(calls) == 1, log.read_text()
    candidate = calls[0][calls[0].index("--config-file") + 1]
    # the candidate, not the live file: a temp file next to it, gone once renamed into place
    assert candidate != config and os.path.dirname(candidate) == os.path.dirname(config)
    assert not os.path.exists(candidate) and sorted(os.listdir(os.path.dirname(config))) == ["daemon.json"]
    written = json.loads(read(config))
    assert written["runtimes"]["nvidia"] == {"path": runtime_binary} and written["default-runtime"] == "nvidia"
    assert dockerd.validate_config(Context(env={"PATH": search_path(docker26_dir)}), config).ok
    assert not [w for w in result.warnings if "dockerd" in w]


def test_candidate_dockerd_26_rejects_is_refused_with_nothing_written(tmp_path, docker26_dir, runtime_binary):
    # dockerd started with --default-runtime=runc refuses default-runtime in daemon.json; dockerd 26
    # says so for the candidate only (the admin's file has no default-runtime)
    config = admin_file(tmp_path)
    path, log = logging_dockerd(tmp_path, docker26_dir, extra_validate_flags=["--default-runtime=runc"])
    ctx = ctx_for(tmp_path, docker26_dir, path=path)
    with pytest.raises(ValidationFailed) as caught:
        operations.install(ctx, InstallRequest("nvidia", runtime_binary, set_default=True), config=config)
    error = caught.value
    assert error.reference == "dockerd-validate-failed" and "nothing was written" in error.message
    assert any(BOTH_FLAG_AND_FILE + ": default-runtime" in line for line in error.details), error.details
    assert read(config) == ADMIN and sorted(os.listdir(os.path.dirname(config))) == ["daemon.json"]
    assert operations.show(ctx, config=config).installed_by_us is False
    assert len(validate_calls(log)) == 2  # the candidate, then the live file (which dockerd accepts)
    # without --default-runtime the same daemon takes it
    result = operations.install(ctx, InstallRequest("nvidia", runtime_binary), config=config)
    assert result.changed and "default-runtime" not in json.loads(read(config))


def test_a_file_dockerd_26_already_rejects_is_not_blamed_on_us(tmp_path, docker26_dir, runtime_binary):
    # bip6 is a Docker 28 key: our schema accepts it, dockerd 26 does not know it
    original = json.dumps({"log-level": "warn", "bip6": NEWER_KEYS["bip6"]}, indent=2).encode() + b"\n"
    config = admin_file(tmp_path, original)
    ctx = ctx_for(tmp_path, docker26_dir)
    assert dockerd.validate_config(ctx, config).messages == (NO_SUCH_OPTION + ": bip6",)
    result = operations.install(ctx, InstallRequest("nvidia", runtime_binary), config=config)
    assert result.changed
    [warning] = [w for w in result.warnings if "dockerd --validate" in w]
    assert "rejects the current" in warning and NO_SUCH_OPTION + ": bip6" in warning
    written = json.loads(read(config))
    assert written["bip6"] == NEWER_KEYS["bip6"] and written["runtimes"]["nvidia"] == {"path": runtime_binary}


def test_several_keys_dockerd_26_already_rejects_are_not_blamed_on_us(tmp_path, docker26_dir, runtime_binary):
    original = json.dumps(dict(NEWER_KEYS, **{"log-level": "warn"}), indent=2).encode() + b"\n"
    for attempt in range(8):  # each try is refused with odds 3 in 4 while the bug is there
        base = tmp_path / str(attempt)
        base.mkdir()
        config = admin_file(base, original)
        result = operations.install(ctx_for(base, docker26_dir), InstallRequest("nvidia", runtime_binary), config=config)
        assert result.changed and any("rejects the current" in w for w in result.warnings)


# -- CDI ------------------------------------------------------------------------------------------------


def test_cdi_devices_from_our_spec_on_dockerd_26(tmp_path, docker26_dir, cdi_dir, driver_root):
    box = sandbox26(docker26_dir, str(tmp_path / "d"),
                    json.dumps({"features": {"cdi": True}, "cdi-spec-dirs": [cdi_dir]}).encode())
    try:
        box.start()
        assert box.info()["ServerVersion"].startswith("26.1.")
        assert json.loads(docker26(docker26_dir, box, "info", "--format", "{{json .CDISpecDirs}}").stdout) == [cdi_dir]
        box.import_tiny_image()

        def run(device, script):
            return docker26(docker26_dir, box, "run", "--rm", "--network", "none", "--device", device,
                            "tiny", "sh", "-c", script).stdout.decode()

        one = run("nvidia.com/gpu=0", "ls -l /dev; echo ---; env; echo ---; cat /etc/ld.so.conf.d/00-nvdocker.conf; "
                                      "echo ---; ls /usr/lib/x86_64-linux-gnu")
        listing, environment, ld_conf, libraries = one.split("---\n")
        devices = char_devices(listing)
        assert devices["nvidia0"] == (NVIDIA_MAJOR, 0) and devices["nvidiactl"] == (NVIDIA_MAJOR, 255)
        assert "nvidia1" not in devices
        assert "NVIDIA_VISIBLE_DEVICES=void" in environment.splitlines()
        # the spec's mounts, and its createContainer hook: our update-ldcache wrote the conf and ran
        # ldconfig -r on the container, which made the SONAME links
        assert [line for line in ld_conf.splitlines() if not line.startswith("#")] == ["/usr/lib/x86_64-linux-gnu"]
        assert {"libcuda.so.{}".format(driver_root.version), "libcuda.so.1"} <= set(libraries.split())

        devices = char_devices(run("nvidia.com/gpu=all", "ls -l /dev"))
        assert devices["nvidia0"] == (NVIDIA_MAJOR, 0) and devices["nvidia1"] == (NVIDIA_MAJOR, 1)
        assert devices["nvidiactl"] == (NVIDIA_MAJOR, 255)

        devices = char_devices(run("nvidia.com/gpu=" + driver_root.gpus[1].uuid, "ls -l /dev"))
        assert devices["nvidia1"] == (NVIDIA_MAJOR, 1) and "nvidia0" not in devices

        unknown = docker26(docker26_dir, box, "run", "--rm", "--network", "none", "--device", "nvidia.com/gpu=7",
                           "tiny", "true", check=False)
        assert unknown.returncode != 0 and b"nvidia.com/gpu=7" in unknown.stderr
    finally:
        box.close()


def test_install_cdi_restarts_dockerd_26_into_cdi(tmp_path, docker26_dir, cdi_dir, runtime_binary):
    admin = json.dumps({"log-level": "warn", "cdi-spec-dirs": [cdi_dir]}, indent=2).encode() + b"\n"
    box = sandbox26(docker26_dir, str(tmp_path / "d"), admin)
    try:
        box.start()
        assert not box.info().get("CDISpecDirs")  # CDI is off until features.cdi
        service = SandboxService(box)
        ctx = ctx_for(tmp_path, docker26_dir, box=box, service=service)
        pid_before = box.pid
        result = operations.install(ctx, InstallRequest("nvidia", runtime_binary, enable_cdi=True),
                                    config=box.config_path, apply_options=ApplyOptions())
        assert result.apply.method == "restart" and "features.cdi" in result.apply.reason
        assert result.apply.verified and service.calls == ["restart"] and box.pid != pid_before
        assert not [w for w in result.warnings if "dockerd" in w]  # dockerd 26 validated the candidate
        info = box.info()
        assert info["CDISpecDirs"] == [cdi_dir] and info["Runtimes"]["nvidia"]["path"] == runtime_binary
        box.import_tiny_image()
        listing = docker26(docker26_dir, box, "run", "--rm", "--network", "none", "--device", "nvidia.com/gpu=0",
                           "tiny", "ls", "-l", "/dev").stdout.decode()
        assert char_devices(listing)["nvidia0"] == (NVIDIA_MAJOR, 0)

        result = operations.uninstall(ctx, "nvidia", config=box.config_path, apply_options=ApplyOptions())
        assert result.apply.method == "restart" and result.apply.verified
        assert read(box.config_path) == admin
        info = box.info()
        assert not info.get("CDISpecDirs") and "nvidia" not in info["Runtimes"]
    finally:
        box.close()
