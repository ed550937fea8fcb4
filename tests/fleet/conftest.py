"""Fixtures of the fleet tests (``make test-fleet``): the Ansible collection against several hosts.

Like the packaging tests, they build our .debs and take a few minutes, so a plain ``pytest`` run
of the whole suite leaves them out (deselected, not skipped); they run when asked for by path or
marker: ``pytest tests/fleet`` or ``pytest -m fleet``. A missing prerequisite (root, the private
dockerd, Debian's ``ansible`` package, the PyPI venv) is a skip on a developer machine and a failure
under CI=true.
"""

import os
import shutil
from pathlib import Path

import pytest

from tests.fleet import support
from tests.packaging import support as pkg
from tests.support import sandbox as sandbox_support
from tests.support.optin import mark_and_deselect

HERE = Path(__file__).resolve().parent
HOSTS = ("h1", "h2", "h3")
#: h2's dockerd is started with --default-runtime on its command line (a unit file's ExecStart, say):
#: it refuses a daemon.json that sets default-runtime too ("specified both as a flag and in the
#: configuration file"), on reload and on start alike.
HOST_FLAGS = {"h2": ("--default-runtime", "runc")}
#: The flavours of Ansible that drive the fleet: Debian 12's package and the current PyPI release.
FLAVORS = ("debian", "pypi")


def pytest_configure(config):
    config.addinivalue_line("markers", "fleet: the Ansible collection against several hosts (make test-fleet)")


def pytest_collection_modifyitems(config, items):
    mark_and_deselect(config, items, HERE, "fleet")


def admin_daemon_json(name: str) -> bytes:
    """Each host's own daemon.json: different bytes, styles and keys, no trailing newline on h2."""
    if name == "h1":
        return b'{\n    "log-level": "info",\n    "labels": ["fleet=h1", "owner=ops-\xc3\xa9quipe"],\n    "live-restore": true\n}\n'
    if name == "h2":
        return b'{"log-driver": "json-file", "log-opts": {"max-size": "10m"}}'
    return b'{\n\t"labels": ["fleet=h3"],\n\t"runtimes": {\n\t\t"custom": {"path": "/usr/sbin/runc"}\n\t}\n}\n'


@pytest.fixture(scope="session")
def fleet_debs(tmp_path_factory):
    """Our three .debs, built once for the session by the project's packaging (debian/build-debs.sh)."""
    support.need(os.geteuid() == 0, "needs root (a private dockerd, privileged host containers, chroot)")
    missing = [name for name in ("dpkg-buildpackage", "dh", "fakeroot", "gcc", "debootstrap")
               if shutil.which(name, path=pkg.SYSTEM_PATH) is None]
    support.need(not missing, "missing tools: {} (make deps installs them)".format(", ".join(missing)))
    debs = pkg.build_debs(tmp_path_factory.mktemp("fleet-debs"))
    return [debs[name] for name in pkg.PACKAGES]


@pytest.fixture(scope="session")
def fleet_engine(tmp_path_factory, fleet_debs):
    """The private dockerd the hosts run on, with the host image imported (built once, cached)."""
    dockerd = sandbox_support.dockerd_or_skip()
    cache = pkg.cache_dir()
    pristine = pkg.pristine_tarball(cache)
    rootfs = support.host_rootfs(cache, pristine, fleet_debs, tmp_path_factory.mktemp("fleet-image"))
    engine = sandbox_support.DockerdSandbox(str(tmp_path_factory.mktemp("fleet-dockerd")), dockerd=dockerd)
    engine.start()
    try:
        with open(str(rootfs), "rb") as handle:
            engine.docker("import", "-", "nvdocker-fleet-host:latest", input=handle.read(), timeout=600)
        yield engine
    finally:
        engine.close()


def _ansible(flavor: str, workdir: Path, engine) -> support.Ansible:
    if flavor == "debian":
        support.need(os.path.exists(support.DEBIAN_ANSIBLE),
                     "Debian 12's ansible package is not installed (make deps installs it)")
        playbook, extra_path = support.DEBIAN_ANSIBLE, []
    else:
        venv = support.pypi_ansible(pkg.cache_dir())
        playbook, extra_path = str(venv / "bin" / "ansible-playbook"), [str(venv / "bin")]
    config = workdir / "ansible.cfg"
    config.write_text("[defaults]\n")
    env = {
        "PATH": os.pathsep.join(extra_path + sandbox_support.engine_bin_dirs() + [pkg.SYSTEM_PATH]),
        "HOME": str(workdir),
        "LC_ALL": "C.UTF-8",
        "ANSIBLE_CONFIG": str(config),
        "ANSIBLE_HOME": str(workdir / "ansible-home"),
        "ANSIBLE_LOCAL_TEMP": str(workdir / "ansible-tmp"),
        "ANSIBLE_COLLECTIONS_PATH": str(support.COLLECTIONS),
        "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
        "ANSIBLE_FORKS": "5",
        "DOCKER_CONFIG": str(workdir / "docker-cli"),
    }
    ansible = support.Ansible(flavor, playbook, env, workdir)
    version = pkg.run([playbook, "--version"], env=env).stdout.splitlines()[0]
    ansible.version = version
    print("fleet: {} ({})".format(flavor, version))
    return ansible


@pytest.fixture(scope="module", params=FLAVORS)
def fleet(request, tmp_path_factory, fleet_engine, fleet_debs):
    """Three fresh hosts and one Ansible flavour; shared by the scenarios of a module, in order."""
    workdir = tmp_path_factory.mktemp("fleet-" + request.param)
    ansible = _ansible(request.param, workdir, fleet_engine)
    originals = {name: admin_daemon_json(name) for name in HOSTS}
    prefix = "nvfleet-{}-{}".format(request.param, os.getpid())
    hosts = support.start_hosts(fleet_engine, "nvdocker-fleet-host:latest", prefix, originals, HOST_FLAGS)
    try:
        ansible.write_inventory(hosts, fleet_engine.docker_host)
        yield Fleet(ansible, {host.name: host for host in hosts}, originals, fleet_debs)
    finally:
        support.remove_hosts(fleet_engine, hosts)


class Fleet:
    def __init__(self, ansible, hosts, originals, debs) -> None:
        self.ansible = ansible
        self.hosts = hosts
        self.originals = originals
        self.debs = debs
        self.memo = {}  # what one scenario leaves for the next
