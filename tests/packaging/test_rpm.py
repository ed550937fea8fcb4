"""The RPMs: built here with Debian's rpmbuild (the spec's fallbacks stand in for Fedora's
macros), inspected with `rpm -qp`, and installed with `rpm --root DIR --nodeps` into a scratch
root so that their scriptlets run for real.

The scratch root is a copy of the pristine Debian 12 chroot plus Debian's python3-typer, -rich
and -jsonschema (installed with apt inside it): rpm runs the scriptlets chrooted into DIR, so DIR
needs /bin/sh and a Python with the CLI's libraries, which --nodeps cannot pull in. The RPMs
built on Debian put the Python package where that interpreter looks (the spec's sitelib
fallback), so the scriptlets run the packaged CLI, not the build tree's."""

import json
import re

import pytest

from tests.packaging import support
from tests.packaging.support import run

DAEMON_JSON = "/etc/docker/daemon.json"
MARKER = "/var/lib/nvdocker-setup/nvdocker2-configured.json"
ADMIN = b'{\n  "log-level": "warn",\n  "default-runtime": "runc",\n  "insecure-registries": ["registry.local:5000"]\n}\n'


def query(rpm, *args):
    return run(["rpm", "-qp"] + list(args) + [rpm], env=support.system_env()).stdout


def scriptlets(rpm):
    """{'postinstall': body, ...} from `rpm -qp --scripts`."""
    found, name = {}, None
    for line in query(rpm, "--scripts").splitlines():
        match = re.match(r"^(\w+) scriptlet \(using (\S+)\):$", line)
        if match:
            name = match.group(1)
            found[name] = ""
        elif name:
            found[name] += line + "\n"
    return found


def test_file_lists(rpms):
    toolkit = query(rpms["nvdocker-toolkit"], "-l").split()
    setup = query(rpms["nvdocker-setup"], "-l").split()
    nvdocker2 = query(rpms["nvdocker2"], "-l").split()
    sitelibs = {path.split("/nvdocker_setup/")[0] for path in toolkit if "/nvdocker_setup/" in path}
    assert len(sitelibs) == 1
    package = sitelibs.pop() + "/nvdocker_setup/"
    assert package + "__init__.py" in toolkit
    assert {package + name + "/__init__.py" for name in ("runtime", "hook", "driver")} <= set(toolkit)
    assert "/usr/bin/nvdocker-runtime" in toolkit and "/usr/bin/nvdocker-setup" not in toolkit
    assert not [path for path in toolkit if path.startswith(package + "cli")]
    assert package + "cli/main.py" in setup and package + "operations.py" in setup
    assert not [path for path in setup if path.startswith((package + "runtime", package + "hook"))]
    assert "/usr/bin/nvdocker-setup" in setup
    assert [path for path in setup if path.startswith("/usr/share/man/man8/nvdocker-setup.8")]
    assert "/usr/share/bash-completion/completions/nvdocker-setup" in setup
    assert "/usr/libexec/nvdocker2/docker-config" in nvdocker2
    for files in (toolkit, setup, nvdocker2):
        assert not [path for path in files if path.startswith("/etc/docker")]
    assert query(rpms["nvdocker2"], "--configfiles").split() == ["/etc/sysconfig/nvdocker2"]
    flags = query(rpms["nvdocker2"], "--qf", "[%{FILEFLAGS:fflags} %{FILENAMES}\n]")
    assert re.search(r"^cn /etc/sysconfig/nvdocker2$", flags, re.M), "%config(noreplace)"
    assert query(rpms["nvdocker-setup"], "--qf", "%{ARCH}") == "noarch"


def test_requires(rpms):
    version = query(rpms["nvdocker2"], "--qf", "%{VERSION}-%{RELEASE}")
    toolkit = query(rpms["nvdocker-toolkit"], "--requires").splitlines()
    setup = query(rpms["nvdocker-setup"], "--requires").splitlines()
    nvdocker2 = query(rpms["nvdocker2"], "--requires").splitlines()
    assert "python3 >= 3.9" in toolkit and "(runc or crun)" in toolkit
    assert not [req for req in toolkit if req.startswith(("python3-typer", "python3-rich", "python3-jsonschema"))]
    for req in ("python3-typer >= 0.7", "python3-rich", "python3-jsonschema", "python3-tomlkit", "python3-grpcio",
                "nvdocker-toolkit = " + version):
        assert req in setup, setup
    assert "(docker-ce or moby-engine or docker)" in nvdocker2
    assert "nvdocker-setup = " + version in nvdocker2


def test_scriptlets_are_guarded_by_the_instance_count(rpms):
    nvdocker2 = scriptlets(rpms["nvdocker2"])
    assert re.match(r'if \[ "\$1" -eq 1 \]; then\n\s+/usr/libexec/nvdocker2/docker-config .* configure', nvdocker2["postinstall"])
    assert re.match(r'if \[ "\$1" -eq 0 \]; then\n\s+/usr/libexec/nvdocker2/docker-config .* unconfigure', nvdocker2["preuninstall"])
    assert "postuninstall" not in nvdocker2, "erase keeps the records and backups; nothing to run"
    toolkit = scriptlets(rpms["nvdocker-toolkit"])
    assert re.match(r'if \[ "\$1" -eq 0 \]; then\n\s+update-alternatives --remove', toolkit["postuninstall"])
    for body in list(nvdocker2.values()) + list(toolkit.values()):
        assert "/etc/docker" not in body and "restart" not in body


@pytest.fixture
def scratch_root(chroot):
    """A root for `rpm --root`: the Debian chroot plus the CLI's Python libraries."""
    chroot.apt("install --no-install-recommends python3-typer python3-rich python3-jsonschema")
    run(["rpm", "--root", chroot.path, "--initdb"])
    return chroot


REFRESH_UNITS = ("nvdocker-cdi-refresh.path", "nvdocker-cdi-refresh.service")


def _systemctl(root, *args):
    """The host's systemctl on the scratch root (offline: it only edits files under --root)."""
    support.need_tools("systemctl")
    return run(["systemctl", "--root", root.path] + list(args), env=support.system_env())


def _refresh_units_follow_their_presets(root):
    """The scratch root has no systemctl, so %systemd_post's `preset` did nothing there; run it
    with the host's against that root: the shipped preset enables both units."""
    for unit in REFRESH_UNITS:
        assert root.exists("/usr/lib/systemd/system/" + unit)
    _systemctl(root, "preset", *REFRESH_UNITS)
    for unit in REFRESH_UNITS:
        link = root.host("/etc/systemd/system/multi-user.target.wants/" + unit)
        # (the root has a merged /usr: /lib/systemd/system is the same directory)
        assert link.is_symlink() and str(link.readlink()) in ("/usr/lib/systemd/system/" + unit,
                                                              "/lib/systemd/system/" + unit)


def rpm_root(root, *args, env=None):
    environment = support.system_env(**(env or {}))
    return run(["rpm", "--root", root.path, "--nodeps"] + list(args), env=environment)


def test_scriptlets_merge_then_remove_the_entry_in_a_scratch_root(scratch_root, rpms, rpms_v2):
    root = scratch_root
    root.write(DAEMON_JSON, ADMIN)
    packages = [rpms[name] for name in support.PACKAGES]

    done = rpm_root(root, "-i", *packages)
    assert "nvdocker2: wrote /etc/docker/daemon.json" in done.stdout, done.stdout
    merged = json.loads(root.read(DAEMON_JSON))
    assert merged["runtimes"]["nvidia"]["path"] == "/usr/bin/nvdocker-runtime"
    assert {k: v for k, v in merged.items() if k != "runtimes"} == json.loads(ADMIN)
    assert json.loads(root.read(MARKER))["config"] == DAEMON_JSON
    assert root.exists("/etc/sysconfig/nvdocker2")
    if root.exists("/usr/bin/nvdocker-runtime-hook"):
        assert root.sh("readlink -f /usr/bin/nvidia-container-runtime-hook").stdout.strip() == "/usr/bin/nvdocker-runtime-hook"

    _refresh_units_follow_their_presets(root)

    # an upgrade ($1 = 2 in %post, 1 in the old %preun) leaves daemon.json alone
    merged_bytes = root.read(DAEMON_JSON)
    rpm_root(root, "-U", *[rpms_v2[name] for name in support.PACKAGES])
    version = query(rpms_v2["nvdocker2"], "--qf", "%{VERSION}")
    assert run(["rpm", "--root", root.path, "-q", "--qf", "%{VERSION}", "nvdocker2"]).stdout == version
    assert root.read(DAEMON_JSON) == merged_bytes

    # erase ($1 = 0): the exact original bytes; the alternative goes with the toolkit
    _systemctl(root, "disable", *REFRESH_UNITS)  # what %preun runs where systemd is there
    rpm_root(root, "-e", "nvdocker2", "nvdocker-setup", "nvdocker-toolkit")
    for unit in REFRESH_UNITS:
        assert not root.exists("/usr/lib/systemd/system/" + unit)
        assert not root.exists("/etc/systemd/system/multi-user.target.wants/" + unit)
    assert root.read(DAEMON_JSON) == ADMIN
    assert not root.exists(MARKER) and not root.exists("/usr/bin/nvidia-container-runtime-hook")

    # opted out in /etc/sysconfig/nvdocker2 made before installing: kept (noreplace), honoured
    root.write("/etc/sysconfig/nvdocker2", "NVDOCKER2_CONFIGURE=no\n")
    done = rpm_root(root, "-i", *packages)
    assert "NVDOCKER2_CONFIGURE=no in /etc/sysconfig/nvdocker2" in done.stdout, done.stdout
    assert root.read("/etc/sysconfig/nvdocker2") == b"NVDOCKER2_CONFIGURE=no\n"
    assert root.exists("/etc/sysconfig/nvdocker2.rpmnew")
    assert root.read(DAEMON_JSON) == ADMIN
    rpm_root(root, "-e", "nvdocker2")
    assert root.read(DAEMON_JSON) == ADMIN

    # opted out in the environment of rpm
    root.sh("rm -f /etc/sysconfig/nvdocker2 /etc/sysconfig/nvdocker2.rpmnew")
    done = rpm_root(root, "-i", rpms["nvdocker2"], env={"NVDOCKER2_CONFIGURE": "no"})
    assert "NVDOCKER2_CONFIGURE=no in the environment" in done.stdout, done.stdout
    assert root.read(DAEMON_JSON) == ADMIN
