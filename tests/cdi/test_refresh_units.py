"""The CDI refresh units (systemd/nvdocker-cdi-refresh.{service,path}, udev/71-nvdocker-cdi-refresh.rules):
`systemd-analyze verify` accepts them, they name each other, and the service's ExecStart, run as it
is written against a simulated driver root, writes the spec, keeps it (same mtime) when nothing
changed, and rewrites it atomically after a driver upgrade.

`systemd-analyze` comes from Debian's systemd package (scripts/install-deps.sh installs it); a
missing one is a skip on a developer machine and a failure in CI (CI=true). No unit is loaded into
the host's systemd: `--root` points verify at a scratch tree."""

import configparser
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from nvdocker_setup.cdi import spec as cdi_spec
from tests.support import systemd_units
from tests.support.driver_root import DRIVER_VERSION, driver_root_or_skip, upgrade_driver_root

REPO = Path(__file__).resolve().parents[2]
UNITS = REPO / "systemd"
SERVICE = "nvdocker-cdi-refresh.service"
PATH_UNIT = "nvdocker-cdi-refresh.path"
RULE = REPO / "udev" / "71-nvdocker-cdi-refresh.rules"
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def unit(name):
    parser = configparser.ConfigParser(strict=False, interpolation=None,
                                       dict_type=_MultiDict, empty_lines_in_values=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(str(UNITS / name))
    return parser


class _MultiDict(dict):
    """Repeated keys (PathChanged=, ConditionPathExists=) kept as newline-joined values."""

    def __setitem__(self, key, value):
        if key in self and isinstance(value, list) and isinstance(self[key], list):
            self[key].extend(value)
        else:
            super().__setitem__(key, value)


def values(parser, section, key):
    return parser.get(section, key).split("\n")


def test_systemd_analyze_verify_accepts_the_units(tmp_path):
    root = tmp_path / "root"
    units = root / "lib/systemd/system"
    units.mkdir(parents=True)
    for name in (SERVICE, PATH_UNIT):
        shutil.copy(str(UNITS / name), str(units / name))
    command = root / "usr/bin/nvdocker-setup"  # verify checks that ExecStart's program is there
    command.parent.mkdir(parents=True)
    command.write_text("#!/bin/sh\n")
    command.chmod(0o755)
    shell = root / "bin/sh"  # ExecCondition's; every host has one, the scratch root does not
    shell.parent.mkdir(parents=True)
    shell.write_text("#!/bin/sh\n")
    shell.chmod(0o755)
    done = systemd_units.verify(root, ["lib/systemd/system/" + PATH_UNIT, "lib/systemd/system/" + SERVICE])
    assert done.returncode == 0 and not done.stdout.strip(), done.stdout
    # and it does catch a broken unit: a specifier PathChanged= does not know
    (units / "broken.path").write_text("[Path]\nPathChanged=/lib/modules/%Q/modules.dep\nUnit={}\n".format(SERVICE))
    done = systemd_units.verify(root, ["lib/systemd/system/broken.path"])
    assert done.returncode != 0 and "%Q" in done.stdout, done.stdout
    # and the program ExecStart names must be there
    command.unlink()
    done = systemd_units.verify(root, ["lib/systemd/system/" + SERVICE])
    assert "/usr/bin/nvdocker-setup is not executable" in done.stdout, done.stdout


def test_the_units_and_the_rule_name_each_other():
    service, path = unit(SERVICE), unit(PATH_UNIT)
    assert service.get("Service", "Type") == "oneshot"
    assert path.get("Path", "Unit") == SERVICE
    assert path.get("Install", "WantedBy") == service.get("Install", "WantedBy") == "multi-user.target"
    # no driver, no run: a triggering condition (|) for the NVIDIA module and one for WSL2
    conditions = values(service, "Unit", "ConditionPathExists")
    assert conditions == ["|/proc/driver/nvidia/version", "|/dev/dxg"]
    watched = values(path, "Path", "PathChanged")
    assert "/lib/modules/%v/modules.dep" in watched
    assert not [p for p in watched if p.startswith("/proc/")], "inotify sees nothing under /proc"
    assert {"/usr/lib/x86_64-linux-gnu/libcuda.so.1", "/usr/lib64/libnvidia-ml.so.1"} <= set(watched)
    rules = [line for line in RULE.read_text().splitlines() if line and not line.startswith("#")]
    assert rules and all('TAG+="systemd"' in line and 'ENV{SYSTEMD_WANTS}+="' + SERVICE + '"' in line
                         for line in rules)
    assert 'ACTION=="add", SUBSYSTEM=="module", KERNEL=="nvidia|' in rules[0]
    # the service writes only where its sandbox lets it: the runtime directory
    argv = shlex.split(service.get("Service", "ExecStart"))
    output = argv[argv.index("--output") + 1]
    assert output == "/var/run/cdi/nvdocker.yaml"
    assert service.get("Service", "RuntimeDirectory") == "cdi"
    assert service.get("Service", "RuntimeDirectoryPreserve") == "yes"
    assert service.get("Service", "ProtectSystem") == "strict"
    for key in ("PrivateDevices", "DevicePolicy", "DeviceAllow", "ProtectClock"):
        assert not service.has_option("Service", key), key + " would hide the GPU device nodes from discovery"


def test_the_service_is_sandboxed(tmp_path):
    """Root, but: writes only its runtime directory, no network, no module loading, no new
    privileges, four file capabilities; systemd's own exposure score stays "OK" (at most 2.5 of 10,
    1.9 now). What stays open is what discovery needs: the host's /dev and /proc/driver."""
    service = unit(SERVICE)
    expected = {
        "ProtectSystem": "strict", "ProtectHome": "read-only", "PrivateTmp": "yes", "PrivateNetwork": "yes",
        "NoNewPrivileges": "yes", "ProtectKernelModules": "yes", "ProtectKernelTunables": "yes",
        "RestrictSUIDSGID": "yes", "RestrictNamespaces": "yes", "SystemCallArchitectures": "native",
        "RestrictAddressFamilies": "AF_UNIX",
        "CapabilityBoundingSet": "CAP_CHOWN CAP_DAC_OVERRIDE CAP_DAC_READ_SEARCH CAP_FOWNER",
    }
    assert {key: service.get("Service", key, fallback=None) for key in expected} == expected
    root = tmp_path / "root"
    (root / "lib/systemd/system").mkdir(parents=True)
    shutil.copy(str(UNITS / SERVICE), str(root / "lib/systemd/system" / SERVICE))
    done = systemd_units.security(root, "lib/systemd/system/" + SERVICE, threshold=25)
    assert done.returncode == 0, done.stdout
    assert "Overall exposure level for {}: ".format(SERVICE) in done.stdout


def exec_start(output, driver_root, tmp_path):
    """The service's ExecStart as written, with this checkout's CLI for /usr/bin/nvdocker-setup
    and the spec under ``output`` instead of /var/run/cdi."""
    argv = shlex.split(unit(SERVICE).get("Service", "ExecStart"))
    assert argv[0] == "/usr/bin/nvdocker-setup"
    at = argv.index("--output") + 1
    argv[at] = str(output)
    absent = tmp_path / "no-runtime.conf"
    absent.write_text("")
    env = {"PATH": os.environ.get("PATH", SYSTEM_PATH), "LC_ALL": "C.UTF-8", "HOME": str(tmp_path),
           "PYTHONPATH": str(REPO), "NVDOCKER_RUNTIME_CONFIG": str(absent),
           "NVDOCKER_DRIVER_ROOT": driver_root.path, "NO_COLOR": "1", "COLUMNS": "200"}
    done = subprocess.run([sys.executable, "-m", "nvdocker_setup"] + argv[1:], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_the_service_command_refreshes_the_spec_after_a_driver_upgrade(tmp_path):
    driver = driver_root_or_skip(str(tmp_path / "driver"))
    spec_path = tmp_path / "run/cdi/nvdocker.yaml"  # the directory does not exist yet

    out = exec_start(spec_path, driver, tmp_path)
    assert out.startswith("wrote {}".format(spec_path)), out
    spec, header = cdi_spec.load_document(str(spec_path))
    assert header[cdi_spec.DRIVER_VERSION_ANNOTATION] == DRIVER_VERSION
    assert oct(os.stat(str(spec_path)).st_mode & 0o777) == oct(0o644)
    first = os.stat(str(spec_path))
    first_bytes = spec_path.read_bytes()

    # the path unit or the udev rule fires again with nothing changed: not a byte written
    os.utime(str(spec_path), ns=(first.st_atime_ns, first.st_mtime_ns - 10**9))  # an mtime a rewrite would change
    kept = os.stat(str(spec_path))
    out = exec_start(spec_path, driver, tmp_path)
    assert out.startswith("no change: {}".format(spec_path)), out
    again = os.stat(str(spec_path))
    assert (again.st_ino, again.st_mtime_ns) == (kept.st_ino, kept.st_mtime_ns)

    # a driver upgrade: new version file, libraries and links; the spec is replaced by a rename
    upgraded = upgrade_driver_root(driver, "550.90.07")
    out = exec_start(spec_path, upgraded, tmp_path)
    assert out.startswith("wrote {}".format(spec_path)), out
    replaced = os.stat(str(spec_path))
    assert replaced.st_ino != first.st_ino, "written to a temp file and renamed over the old spec"
    spec, header = cdi_spec.load_document(str(spec_path))
    assert header[cdi_spec.DRIVER_VERSION_ANNOTATION] == "550.90.07"
    text = spec_path.read_text()
    assert "libcuda.so.550.90.07" in text and "libcuda.so.{}".format(DRIVER_VERSION) not in text
    assert spec_path.read_bytes() != first_bytes
    assert sorted(os.listdir(str(spec_path.parent))) == ["nvdocker.yaml"], "no temp file left behind"

    out = exec_start(spec_path, upgraded, tmp_path)
    assert out.startswith("no change:"), out
    assert os.stat(str(spec_path)).st_mtime_ns == replaced.st_mtime_ns


# -- modules, control nodes and the admin's settings first (issue #23, item 4) -------------------------------


def service_command(key):
    """ExecStartPre/ExecCondition as written: the program's argv without systemd's prefixes."""
    value = unit(SERVICE).get("Service", key)
    argv = shlex.split(value)
    argv[0] = argv[0].lstrip("-+!@:")
    return argv


def environment_file(path):
    """KEY=VALUE lines as systemd's EnvironmentFile= reads them (comments and blanks skipped)."""
    found = {}
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";")):
            key, _, value = line.partition("=")
            found[key.strip()] = value.strip().strip('"')
    return found


def test_the_service_loads_the_admins_settings_and_creates_the_control_nodes_first():
    service = unit(SERVICE)
    assert service.get("Service", "EnvironmentFile") == "-/etc/nvdocker/cdi-refresh.env"
    pre = service.get("Service", "ExecStartPre")
    assert pre.startswith("-+/usr/bin/nvdocker-setup system create-device-nodes --control-devices")
    # the shipped settings file only documents: every line a comment
    shipped = (UNITS / "cdi-refresh.env").read_text().splitlines()
    assert shipped and all(not line.strip() or line.startswith("#") for line in shipped)
    assert "#NVDOCKER_LOAD_KMODS=true" in shipped


def test_exec_condition_runs_only_with_a_driver_or_when_the_admin_loads_the_modules():
    """The exact ExecCondition on this host: without a loaded driver or WSL2 it skips the unit,
    unless NVDOCKER_LOAD_KMODS=true."""
    argv = service_command("ExecCondition")
    present = os.path.exists("/proc/driver/nvidia/version") or os.path.exists("/dev/dxg")
    plain = subprocess.run(argv, env={"PATH": SYSTEM_PATH})
    assert plain.returncode == (0 if present else 1)
    loading = subprocess.run(argv, env={"PATH": SYSTEM_PATH, "NVDOCKER_LOAD_KMODS": "true"})
    assert loading.returncode == 0


def test_exec_start_pre_then_exec_start_with_the_admins_settings_on_a_simulated_root(tmp_path):
    """A host that booted without its control nodes and an env file that names devices by
    type-index: ExecStartPre makes the nodes, ExecStart writes the spec as the settings say."""
    driver = driver_root_or_skip(str(tmp_path / "driver"))
    for name in ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset"):
        os.unlink(os.path.join(driver.path, "dev", name))
    with open(os.path.join(driver.path, "proc/devices"), "w") as handle:
        handle.write("Character devices:\n195 nvidia-frontend\n508 nvidia-uvm\n\nBlock devices:\n  8 sd\n")
    env_file = tmp_path / "cdi-refresh.env"
    env_file.write_text("# the admin's\nNVDOCKER_CDI_DEVICE_NAME_STRATEGY=type-index\nNVDOCKER_CDI_NO_ALL_DEVICE=true\n")
    env = {"PATH": os.environ.get("PATH", SYSTEM_PATH), "LC_ALL": "C.UTF-8", "HOME": str(tmp_path),
           "PYTHONPATH": str(REPO), "NO_COLOR": "1", "COLUMNS": "200"}
    env.update(environment_file(env_file))
    pre = service_command("ExecStartPre")
    done = subprocess.run([sys.executable, "-m", "nvdocker_setup"] + pre[1:] + ["--driver-root", driver.path], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert os.path.exists(os.path.join(driver.path, "dev/nvidiactl"))
    spec_path = tmp_path / "run/cdi/nvdocker.yaml"
    argv = shlex.split(unit(SERVICE).get("Service", "ExecStart"))
    argv[argv.index("--output") + 1] = str(spec_path)
    absent = tmp_path / "no-runtime.conf"
    absent.write_text("")
    env.update({"NVDOCKER_RUNTIME_CONFIG": str(absent), "NVDOCKER_DRIVER_ROOT": driver.path})
    done = subprocess.run([sys.executable, "-m", "nvdocker_setup"] + argv[1:], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    spec = cdi_spec.load(str(spec_path))
    assert [device["name"] for device in spec["devices"]] == ["gpu0", "gpu1"]
    assert "/dev/nvidiactl" in [node["path"] for node in spec["containerEdits"]["deviceNodes"]]


def test_load_kernel_modules_runs_the_hosts_modprobe_before_the_nodes(tmp_path):
    """NVDOCKER_LOAD_KMODS=true (the env file's switch): modprobe -a nvidia nvidia-uvm
    nvidia-modeset by absolute path with a clean environment, then the nodes. Run in a private
    mount namespace whose /usr/sbin holds only a recorder named modprobe; this host has no NVIDIA module, so the
    node step then fails saying so (the refresh service ignores that step's failure)."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        if os.environ.get("CI") == "true":
            raise AssertionError("CI=true: this test needs root and unshare")
        return
    record = tmp_path / "modprobe.args"
    fake = tmp_path / "modprobe"
    fake.write_text("#!/bin/sh\necho \"$@\" > {}\nenv | sort >> {}\n".format(record, record))
    fake.chmod(0o755)
    env = {"PATH": SYSTEM_PATH, "PYTHONPATH": str(REPO), "LC_ALL": "C.UTF-8", "NVDOCKER_LOAD_KMODS": "true", "SECRET": "x"}
    done = subprocess.run(
        # a root-owned tmpfs over /usr/sbin (this machine may have no kmod at all) with the recorder in it
        ["unshare", "-m", "--propagation", "private", "sh", "-c",
         'mount -t tmpfs -o mode=0755 nvdocker-test /usr/sbin && cp "$0" /usr/sbin/modprobe && exec "$@"',
         str(fake), sys.executable, "-m", "nvdocker_setup", "system", "create-device-nodes", "--control-devices"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=120)
    lines = record.read_text().splitlines()
    assert lines[0] == "-a nvidia nvidia-uvm nvidia-modeset", lines
    assert not [line for line in lines[1:] if line.startswith("SECRET=")], "modprobe gets a clean environment"
    if not os.path.exists("/proc/driver/nvidia/version"):
        assert done.returncode != 0 and "NVIDIA driver is not loaded" in done.stderr, done.stderr
    refused = subprocess.run([sys.executable, "-m", "nvdocker_setup", "system", "create-device-nodes", "--control-devices",
                              "--driver-root", str(tmp_path)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             universal_newlines=True, timeout=60)
    assert refused.returncode != 0 and "needs the driver root /" in refused.stderr, refused.stderr
