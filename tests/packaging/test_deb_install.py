"""The .debs installed for real: `apt-get install ./*.deb` in a clean Debian 12 chroot, with
dependency resolution against the host's Debian mirror (docker.io, runc, Debian's typer...),
maintainer scripts run by dpkg, and policy-rc.d saying no to every service start."""

import hashlib
import json
import time
import warnings

from tests.packaging import support

STATE = "/var/lib/nvdocker-setup"
MARKER = STATE + "/nvdocker2-configured.json"
DAEMON_JSON = "/etc/docker/daemon.json"
REFRESH_UNITS = ("nvdocker-cdi-refresh.path", "nvdocker-cdi-refresh.service")
WANTS = "/etc/systemd/system/multi-user.target.wants/"

# An admin's daemon.json: 4-space indent, key order, a nested object, a unicode value, an
# existing runtime and an explicit default runtime, and no trailing newline.
ADMIN_DAEMON_JSON = (
    '{\n'
    '    "log-driver": "json-file",\n'
    '    "log-opts": {"max-size": "10m", "max-file": "3"},\n'
    '    "data-root": "/srv/docker",\n'
    '    "storage-driver": "overlay2",\n'
    '    "default-runtime": "runc",\n'
    '    "runtimes": {\n'
    '        "custom": {"path": "/usr/local/bin/custom-runtime", "runtimeArgs": ["--debug"]}\n'
    '    },\n'
    '    "labels": ["owner=ops-\u00e9quipe"],\n'
    '    "features": {"buildkit": true},\n'
    '    "live-restore": true\n'
    '}'
).encode()


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def backups(root):
    directory = root.host(STATE + "/backups")
    return sorted(p.name for p in directory.glob("*") if p.name != "manifest.json") if directory.is_dir() else []


def install_all(root, debs, *, env=None, recommends=True):
    paths = root.copy_in([debs[name] for name in support.PACKAGES], "/tmp/debs-" + debs["nvdocker2"].parent.name)
    started = time.monotonic()
    options = "" if recommends else "--no-install-recommends "
    done = root.apt(options + "install " + " ".join(paths), env=env)
    return done, time.monotonic() - started


def installed_version(root, package):
    done = root.sh("dpkg-query -W -f '${Status} ${Version}' " + package, check=False)
    return done.stdout.strip() if done.returncode == 0 else None


def test_install_upgrade_remove_purge_keep_the_admins_daemon_json(chroot, debs, debs_v2, upgrade_version):
    root = chroot
    root.write(DAEMON_JSON, ADMIN_DAEMON_JSON)
    root.write("/etc/default/nvdocker2", 'NVDOCKER2_INSTALL_ARGS="--default-runtime"\n')

    done, seconds = install_all(root, debs)
    print("apt-get install ./*.deb (with docker.io, runc, python3...): {:.1f}s".format(seconds))
    assert installed_version(root, "docker.io").startswith("install ok installed"), "docker.io | docker-ce | moby-engine"
    assert installed_version(root, "runc").startswith("install ok installed")
    assert "nvdocker2: wrote /etc/docker/daemon.json" in done.stdout

    # merged: every admin key as it was, our entry added, the default switched as asked
    before = json.loads(ADMIN_DAEMON_JSON)
    after = json.loads(root.read(DAEMON_JSON))
    assert after["runtimes"]["nvidia"]["path"] == "/usr/bin/nvdocker-runtime"
    assert after["runtimes"]["custom"] == before["runtimes"]["custom"]
    assert after["default-runtime"] == "nvidia"
    for key in before:
        if key not in ("runtimes", "default-runtime"):
            assert after[key] == before[key], key
    assert root.read(DAEMON_JSON).startswith(b'{\n    "log-driver": "json-file",\n'), "edited in place, style kept"
    # a backup with the original bytes
    manifest = json.loads(root.read(STATE + "/backups/manifest.json"))
    original = [entry for entry in manifest if entry.get("sha256") == sha256(ADMIN_DAEMON_JSON)]
    assert original and root.read(original[0]["file"]) == ADMIN_DAEMON_JSON
    assert json.loads(root.read(MARKER))["config"] == DAEMON_JSON
    # no package owns anything under /etc/docker
    owners = root.sh("dpkg -S /etc/docker/daemon.json", check=False)
    assert owners.returncode != 0, owners.stdout
    for package in support.PACKAGES:
        listing = root.sh("dpkg -L " + package).stdout.split()
        assert not [path for path in listing if path.startswith("/etc/docker")], package
    # the hook under NVIDIA's name, at low priority
    if root.exists("/usr/bin/nvdocker-runtime-hook"):
        query = root.sh("update-alternatives --query nvidia-container-runtime-hook").stdout
        assert "Value: /usr/bin/nvdocker-runtime-hook" in query and "Priority: 10" in query

    _refresh_units_enabled(root)
    _runtime_runs(root)
    _doctor_agrees(root)

    # reinstall and upgrade: daemon.json and backups untouched
    merged, kept_backups = root.read(DAEMON_JSON), backups(root)
    root.apt("install --reinstall " + " ".join(root.copy_in([debs["nvdocker2"]], "/tmp/again")))
    assert root.read(DAEMON_JSON) == merged and backups(root) == kept_backups
    done, seconds = install_all(root, debs_v2)
    print("upgrade to {}: {:.1f}s".format(upgrade_version, seconds))
    for package in support.PACKAGES:
        assert installed_version(root, package) == "install ok installed " + upgrade_version
    assert root.read(DAEMON_JSON) == merged and backups(root) == kept_backups
    assert "upgrades leave it alone" in done.stdout

    # remove: the original bytes, records kept
    root.apt("remove nvdocker2")
    assert root.read(DAEMON_JSON) == ADMIN_DAEMON_JSON
    assert not root.exists(MARKER) and root.exists(STATE + "/state.json")
    assert installed_version(root, "nvdocker-setup").startswith("install ok installed")

    # install again, then purge: entry out, state gone, daemon.json kept
    root.apt("install " + " ".join(root.copy_in([debs_v2["nvdocker2"]], "/tmp/v2")))
    assert b'"nvidia"' in root.read(DAEMON_JSON)
    root.apt("purge nvdocker2")
    assert root.read(DAEMON_JSON) == ADMIN_DAEMON_JSON
    assert not root.exists(STATE)
    assert installed_version(root, "nvdocker2") is None


def _refresh_units_enabled(root):
    """dpkg ran deb-systemd-helper: the CDI refresh units are enabled the way `systemctl enable`
    does it (no systemd runs in the chroot), with the state that lets purge undo it."""
    for unit in REFRESH_UNITS:
        assert root.exists("/lib/systemd/system/" + unit)
        assert root.exists(WANTS + unit), unit + " is not enabled"
        assert root.sh("readlink " + WANTS + unit).stdout.strip() == "/lib/systemd/system/" + unit
        assert root.exists("/var/lib/systemd/deb-systemd-helper-enabled/{}.dsh-also".format(unit))


def _runtime_runs(root):
    """The installed shim passes calls to the packaged runc, and hands a GPU `create` to the
    installed Python runtime (which, with no driver here, fails the way containerd reads)."""
    assert "runc version" in root.sh("nvdocker-runtime --version").stdout
    root.write("/tmp/bundle/config.json", json.dumps({
        "ociVersion": "1.0.2", "root": {"path": "rootfs"},
        "process": {"args": ["sh"], "cwd": "/", "env": ["NVIDIA_VISIBLE_DEVICES=all"]},
    }))
    done = root.sh("cd /tmp/bundle && nvdocker-runtime --log /tmp/bundle/log.json --log-format json "
                   "create --bundle /tmp/bundle gpu-test", check=False)
    assert done.returncode != 0 and "Traceback" not in done.stdout, done.stdout
    last = json.loads(root.read("/tmp/bundle/log.json").decode().splitlines()[-1])
    assert last["level"] == "error" and last["msg"].startswith("nvdocker-runtime:"), last


def _doctor_agrees(root):
    """`nvdocker-setup doctor` finds nothing wrong with the file the package wrote."""
    if root.sh("nvdocker-setup doctor --help", check=False).returncode != 0:
        # only this check is left out; the rest of the lifecycle test goes on
        warnings.warn("doctor check skipped: `nvdocker-setup doctor --help` failed (no doctor verb in this build)",
                      stacklevel=1)
        return
    done = root.sh("nvdocker-setup doctor --json", check=False)
    assert "Traceback" not in done.stdout, done.stdout
    report = json.loads(done.stdout[done.stdout.index("{"):])
    checks = {check["id"]: check for check in report["checks"]}
    config_checks = {cid: c["status"] for cid, c in checks.items() if cid.startswith("config-")}
    assert config_checks, "doctor has no daemon.json checks"
    assert not [cid for cid, status in config_checks.items() if status not in ("ok", "skip", "warn")], config_checks
    assert not [cid for cid, status in config_checks.items() if status == "fail"], config_checks
    for cid in ("runtime-binary", "config-runtime-entry"):
        if cid in checks:
            assert checks[cid]["status"] == "ok", checks[cid]


def test_no_daemon_json_opt_outs_failures_and_reload(chroot, debs):
    root = chroot
    nvdocker2 = root.copy_in([debs["nvdocker2"]], "/tmp/nv2")[0]

    # opted out in /etc/default/nvdocker2: nothing written, not even a directory
    root.write("/etc/default/nvdocker2", "NVDOCKER2_CONFIGURE=no\n")
    # (without Recommends, which halves the time: the first test installs them the admin's way)
    done, _ = install_all(root, debs, recommends=False)
    assert "NVDOCKER2_CONFIGURE=no in /etc/default/nvdocker2: daemon.json left alone" in done.stdout
    assert not root.exists(DAEMON_JSON) and not root.exists(MARKER)
    root.apt("remove nvdocker2")
    assert not root.exists(DAEMON_JSON)

    # opted out in the environment, which wins over the file
    root.write("/etc/default/nvdocker2", "NVDOCKER2_CONFIGURE=yes\n")
    done = root.apt("install " + nvdocker2, env={"NVDOCKER2_CONFIGURE": "no"})
    assert "NVDOCKER2_CONFIGURE=no in the environment" in done.stdout
    assert not root.exists(DAEMON_JSON)
    root.apt("remove nvdocker2")

    # not opted out, no daemon.json: created with our entry; removal leaves none behind
    root.sh("rm -f /etc/default/nvdocker2")
    root.apt("install " + nvdocker2)
    assert json.loads(root.read(DAEMON_JSON)) == {"runtimes": {"nvidia": {"path": "/usr/bin/nvdocker-runtime"}}}
    root.apt("remove nvdocker2")
    assert not root.exists(DAEMON_JSON)

    # a daemon.json the tool cannot read: the transaction succeeds, the file is untouched
    broken = b'{"log-level": "warn",}\n'
    root.write(DAEMON_JSON, broken)
    done = root.apt("install " + nvdocker2)
    assert "could not add the GPU runtime" in done.stdout and "nvdocker-setup install" in done.stdout
    assert root.read(DAEMON_JSON) == broken and not root.exists(MARKER)
    assert installed_version(root, "nvdocker2").startswith("install ok installed")
    root.apt("remove nvdocker2")
    assert root.read(DAEMON_JSON) == broken

    # NVIDIA's own entry (what `nvidia-ctk runtime configure --set-as-default` writes): never taken
    # over; ours goes beside it, the default stays NVIDIA's, and removal gives the bytes back
    ctk = b'{\n    "default-runtime": "nvidia",\n    "runtimes": {\n        "nvidia": {\n            "args": [],\n' \
          b'            "path": "nvidia-container-runtime"\n        }\n    }\n}'
    root.write(DAEMON_JSON, ctk)
    done = root.apt("install " + nvdocker2)
    assert "installing the GPU runtime beside it as runtimes.nvdocker" in done.stdout, done.stdout
    after = json.loads(root.read(DAEMON_JSON))
    assert after["runtimes"]["nvidia"] == {"args": [], "path": "nvidia-container-runtime"}
    assert after["runtimes"]["nvdocker"] == {"path": "/usr/bin/nvdocker-runtime"}
    assert after["default-runtime"] == "nvidia"
    root.apt("remove nvdocker2")
    assert root.read(DAEMON_JSON) == ctk

    # a running dockerd under systemd: reloaded through deb-systemd-invoke, which asks
    # policy-rc.d; never restarted. (A fake systemctl in /usr/sbin, ahead of the real one on
    # apt's DPkg::Path, says docker is active.)
    root.write(DAEMON_JSON, b'{"log-level": "warn"}\n')
    root.sh("mkdir -p /run/systemd/system")
    root.write("/usr/sbin/systemctl",
               '#!/bin/sh\necho "$*" >> /var/log/fake-systemctl.log\n'
               'case "$*" in *is-active*) exit 0 ;; *) exit 0 ;; esac\n', mode=0o755)
    done = root.apt("install " + nvdocker2)
    assert "policy-rc.d returned 101, not running 'reload docker.service'" in done.stdout
    assert "dockerd was not reloaded (policy-rc.d forbids" in done.stdout
    log = root.read("/var/log/fake-systemctl.log").decode()
    assert "is-active docker.service" in log and "reload" not in log
    root.apt("remove nvdocker2")
    root.write("/usr/sbin/policy-rc.d", "#!/bin/sh\nexit 0\n", mode=0o755)
    root.sh(": > /var/log/fake-systemctl.log")
    done = root.apt("install " + nvdocker2)
    log = root.read("/var/log/fake-systemctl.log").decode()
    assert "reload docker.service" in log, done.stdout
    assert "asked dockerd to reload its configuration" in done.stdout
    assert "restart" not in log and "start docker" not in log and "stop" not in log, log

    # the spec the refresh service keeps in /run/cdi names our hook: it goes with the package, a
    # foreign one (NVIDIA's) stays
    root.write("/run/cdi/nvdocker.yaml", "# CDI spec for the NVIDIA GPUs, written by nvdocker-setup cdi generate (driver x).\n"
               'cdiVersion: "0.5.0"\n')
    root.write("/run/cdi/nvidia.yaml", 'cdiVersion: "0.5.0"\n')

    # removing the whole stack at once: nvdocker2's prerm still finds the CLI
    root.apt("remove nvdocker-toolkit nvdocker-setup nvdocker2")
    assert not root.exists("/run/cdi/nvdocker.yaml") and root.exists("/run/cdi/nvidia.yaml")
    assert root.read(DAEMON_JSON) == b'{"log-level": "warn"}\n'
    assert not (installed_version(root, "nvdocker-toolkit") or "").startswith("install ok installed")
    assert not root.exists("/usr/bin/nvidia-container-runtime-hook")

    # the CDI refresh units: removed with the package; enabled state kept until purge (as
    # conffiles are), then gone with deb-systemd-helper's records of it
    for unit in REFRESH_UNITS:
        assert not root.exists("/lib/systemd/system/" + unit)
        assert root.exists(WANTS + unit)
    root.apt("purge nvdocker-setup")
    for unit in REFRESH_UNITS:
        assert not root.exists(WANTS + unit)
        assert not root.exists("/var/lib/systemd/deb-systemd-helper-enabled/{}.dsh-also".format(unit))
    assert not root.sh("ls /etc/systemd/system/multi-user.target.wants 2>/dev/null | grep nvdocker", check=False).stdout
