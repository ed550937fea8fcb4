"""`make test` / `make demo` never install a package on a host that runs Docker from another
source, and never install docker.io, containerd or runc anywhere (issue #14): scripts/install-deps.sh
against fake dpkg-query, apt-get and dockerd on PATH, which record what they are asked."""

import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "install-deps.sh")


def _fake(bin_dir, name, body):
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)


@pytest.fixture
def host(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("install-deps.sh installs only as root")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "apt.log"
    installed = tmp_path / "installed"
    installed.write_text("")
    # dpkg-query -W: "installed" for the names listed in the file; -S: the owner from owners.txt
    _fake(bin_dir, "dpkg-query",
          'if [ "$1" = "-S" ]; then line=$(grep -s "^$2:" {0}/owners.txt) || exit 1; echo "${{line##*:}}: $2"; exit 0; fi\n'
          'for a; do last=$a; done\ngrep -qx "$last" {1} && printf "install ok installed" || exit 1'.format(tmp_path, installed))
    _fake(bin_dir, "apt-get", 'echo "$*" >> {}'.format(log))
    return tmp_path, bin_dir, log, installed


def _run(tmp_path, bin_dir, *args):
    env = {"PATH": "{}:/usr/bin:/bin".format(bin_dir), "HOME": str(tmp_path)}
    return subprocess.run(["bash", SCRIPT, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=60)


def test_a_plain_host_gets_the_tool_packages_and_never_docker(host):
    tmp_path, bin_dir, log, _ = host
    done = _run(tmp_path, bin_dir, "--auto")
    assert done.returncode == 0, done.stderr
    calls = log.read_text()
    assert "install" in calls and "busybox-static" in calls and "python3-typer" in calls
    for engine in ("docker.io", "containerd", "runc", "docker-ce"):
        assert " {} ".format(engine) not in " {} ".format(calls.replace("\n", " ")), engine


@pytest.mark.parametrize("foreign", ["docker-ce", "containerd.io", "moby-engine", "unowned-dockerd"])
def test_a_host_with_docker_from_another_source_gets_nothing_installed(host, foreign):
    tmp_path, bin_dir, log, installed = host
    if foreign == "unowned-dockerd":
        _fake(bin_dir, "dockerd", "exit 0")  # e.g. a static dockerd from download.docker.com
    else:
        installed.write_text(foreign + "\n")
    done = _run(tmp_path, bin_dir, "--auto")
    assert done.returncode == 1
    assert not log.exists(), log.read_text()
    assert "runs Docker from another source" in done.stderr and "make deps" in done.stderr
    assert "busybox-static" in done.stderr  # says what is missing
    # `make deps` is the explicit way: it installs the tool packages, still never docker.io
    explicit = _run(tmp_path, bin_dir)
    assert explicit.returncode == 0 and "docker.io" not in log.read_text()


def test_a_dockerd_of_debians_docker_io_is_not_foreign(host):
    tmp_path, bin_dir, log, _ = host
    _fake(bin_dir, "dockerd", "exit 0")
    (tmp_path / "owners.txt").write_text("{}:docker.io\n".format(bin_dir / "dockerd"))
    done = _run(tmp_path, bin_dir, "--auto")
    assert done.returncode == 0, done.stderr
    assert "install" in log.read_text()


def test_nothing_missing_means_nothing_to_do(host):
    tmp_path, bin_dir, log, installed = host
    packages = subprocess.run(["bash", "-c", 'source <(sed -n "/^packages=(/,/)/p" {}); printf "%s\\n" "${{packages[@]}}"'.format(SCRIPT)],
                              stdout=subprocess.PIPE, universal_newlines=True, check=True).stdout
    installed.write_text(packages + "docker-ce\n")
    done = _run(tmp_path, bin_dir, "--auto")
    assert done.returncode == 0 and not log.exists()
