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
