"""Checks of the CDI specs for ``nvidia.com/gpu`` and of Docker's and podman's CDI support, read
and validated with :mod:`nvdocker_setup.cdi` (the code ``cdi generate`` writes them with)."""

import os
import re
import subprocess
from typing import Any, Dict, List, Optional, Tuple

from nvdocker_setup.doctor.checks import SkipCheck, check, fail, ok, skip, warn
from nvdocker_setup.doctor.facts import Facts

GROUP = "cdi"
DEFAULT_SPEC_DIRS = ("/etc/cdi", "/var/run/cdi")
SPEC_EXTENSIONS = (".json", ".yaml")
#: Docker's first release with CDI, and the first where it is on without features.cdi.
CDI_SINCE = (25, 0)
CDI_DEFAULT_ON_SINCE = (28, 2)
#: The newest cdiVersion each Docker release reads (its vendored CDI library), newest first.
#: Seen with the real engines (tests/newer_docker/test_cdi_consumers.py): 26.1.5 reads 0.5.0-0.7.0,
#: 28.5.2 reads 0.5.0-1.0.0 (a spec declaring 1.1.0 is refused: "invalid version").
MAX_CDI_VERSION = (((29, 2), "1.1.0"), ((28, 1), "1.0.0"), ((27, 4), "0.8.0"), ((26, 1), "0.7.0"), ((25, 0), "0.6.0"))
#: The newest cdiVersion podman reads, newest first, only releases tried for real (the CDI library
#: Debian built them with): Debian 12's 4.3.1 reads up to 0.5.0 and refuses a spec with annotations
#: even under 0.5.0; Debian 13's 5.4.2 reads 0.5.0-0.8.0. A release between two rows is taken to
#: read what the older row reads (a warning too many rather than a broken container).
PODMAN_MAX_CDI_VERSION = (((5, 4), "0.8.0"), ((4, 3), "0.5.0"))
#: Where podman reads CDI specs (it does not read dockerd's cdi-spec-dirs).
PODMAN_SPEC_DIRS = DEFAULT_SPEC_DIRS
GENERATE = "nvdocker-setup cdi generate"
_PODMAN_VERSION = re.compile(r"podman(?:\.real)? version v?(\d+(?:\.\d+)*)")


def spec_dirs(facts: Facts) -> Tuple[List[str], str]:
    """(directories the engine reads specs from, where that list comes from)."""
    if facts.engine_name == "containerd":
        return containerd_spec_dirs(facts)
    try:
        configured = facts.config().get("cdi-spec-dirs")
    except Exception:
        configured = None
    if isinstance(configured, list) and all(isinstance(item, str) for item in configured):
        return list(configured), "cdi-spec-dirs in daemon.json"
    return list(DEFAULT_SPEC_DIRS), "CDI's default directories"


def containerd_spec_dirs(facts: Facts) -> Tuple[List[str], str]:
    """(directories containerd's CRI reads specs from, where that list comes from)."""
    try:
        document = facts.ctd_document()
        configured = document.get(document.cdi_spec_dirs_path)
    except Exception:
        configured = None
    if isinstance(configured, list) and configured and all(isinstance(item, str) for item in configured):
        return list(configured), "cdi_spec_dirs in config.toml"
    return list(DEFAULT_SPEC_DIRS), "CDI's default directories"


class Spec:
    __slots__ = ("path", "directory", "value", "error", "header")

    def __init__(self, path: str, directory: str, value: Optional[Dict[str, Any]], error: Optional[str],
                 header: Optional[Dict[str, str]] = None) -> None:
        self.path = path
        self.directory = directory
        self.value = value
        self.error = error
        #: Our metadata from the YAML header (empty for JSON and foreign specs).
        self.header = header or {}

    @property
    def data(self) -> Dict[str, Any]:
        """The parsed spec ({} for one that could not be read: see ``error``)."""
        return self.value if self.value is not None else {}


def nvidia_specs(facts: Facts) -> List[Spec]:
    """Every spec file in dockerd's spec directories that is (or claims to be) for nvidia.com/gpu."""
    return specs_in(facts, spec_dirs(facts)[0])


def imex_specs(facts: Facts) -> List[Spec]:
    """The readable specs of kind nvidia.com/imex-channel (``cdi generate`` writes one beside the
    GPUs' spec, ``<stem>-imex-channel.<ext>``, when the driver has IMEX channels) in the engine's
    spec directories."""
    from nvdocker_setup.cdi.spec import IMEX_KIND

    return specs_in(facts, spec_dirs(facts)[0], kind=IMEX_KIND)


def specs_in(facts: Facts, dirs: List[str], kind: Optional[str] = None) -> List[Spec]:
    """Every spec file in ``dirs`` that is (or claims to be) for nvidia.com/gpu (or of ``kind``:
    then only the readable ones)."""

    def compute():
        from nvdocker_setup.cdi import spec as cdi_spec
        from nvdocker_setup.driver import GpuSetupError

        wanted = kind or cdi_spec.KIND

        found: List[Spec] = []
        for directory in dirs:
            host_dir = facts.host_file(directory)
            try:
                names = sorted(os.listdir(host_dir))
            except OSError:
                continue
            for name in names:
                if not name.endswith(SPEC_EXTENSIONS):
                    continue
                shown = os.path.join(directory, name)
                try:
                    value, header = cdi_spec.load_document(os.path.join(host_dir, name))
                except GpuSetupError as error:
                    if "nvidia" in name.lower() and kind is None:
                        found.append(Spec(shown, directory, None, error.message))
                    continue
                except Exception as exc:  # a YAML or decoding error of whatever parser read it
                    if "nvidia" in name.lower() and kind is None:
                        found.append(Spec(shown, directory, None, "not valid JSON or YAML: {}".format(exc)))
                    continue
                if value.get("kind") == wanted:
                    found.append(Spec(shown, directory, value, None, header))
        return found

    return facts.memo("cdi-specs:" + (kind + ":" if kind else "") + "\0".join(dirs), compute)


def _cdi_feature(facts: Facts) -> Optional[bool]:
    if facts.engine_name != "docker":
        return None
    try:
        features = facts.config().get("features")
    except Exception:
        return None
    if isinstance(features, dict) and isinstance(features.get("cdi"), bool):
        return features["cdi"]
    return None


def _device_names(spec: Spec) -> List[str]:
    return [str(device.get("name")) for device in (spec.value or {}).get("devices") or () if isinstance(device, dict)]


@check("cdi-spec", GROUP, "the CDI spec for nvidia.com/gpu is present and valid")
def cdi_spec_check(facts: Facts):
    from nvdocker_setup.cdi import validate

    specs = nvidia_specs(facts)
    imex = imex_specs(facts)
    dirs, source = spec_dirs(facts)
    if not specs:
        if _cdi_feature(facts) is True:
            return warn(
                "features.cdi is on but no spec for nvidia.com/gpu is in {} ({}): `docker run --device "
                "nvidia.com/gpu=all` fails with \"unresolvable CDI devices\"".format(", ".join(dirs), source),
                "`{}`".format(GENERATE),
            )
        return skip("no CDI spec for nvidia.com/gpu in {}: CDI is not in use (`{}` creates one)".format(
            ", ".join(dirs), GENERATE))
    broken: List[str] = []
    for spec in specs:
        if spec.error is not None:
            broken.append("{}: {}".format(spec.path, spec.error))
            continue
        problems = validate.problems(spec.data) + validate.schema_problems(spec.data)
        if not spec.data.get("devices"):
            problems.insert(0, "invalid spec, no devices")
        broken.extend("{}: {}".format(spec.path, problem) for problem in problems)
    for spec in imex:  # the IMEX channels' spec beside it: valid too
        broken.extend("{}: {}".format(spec.path, problem) for problem in
                      validate.problems(spec.data) + validate.schema_problems(spec.data))
    by_dir: Dict[Tuple[str, str], Dict[str, str]] = {}
    for spec in specs + imex:
        kind = str(spec.data.get("kind"))
        for name in _device_names(spec):
            other = by_dir.setdefault((kind, spec.directory), {}).get(name)
            if other is not None and other != spec.path:
                broken.append("device {}={} is in both {} and {}: CDI drops it (\"conflicting "
                              "device\")".format(kind, name, other, spec.path))
            by_dir[(kind, spec.directory)][name] = spec.path
    if broken:
        more = " (+{} more, see --json)".format(len(broken) - 1) if len(broken) > 1 else ""
        return fail(broken[0] + more, "regenerate it: `{}` (and remove other nvidia.com/gpu specs in the same "
                    "directory)".format(GENERATE), problems=broken)
    shown = "; ".join("{} ({} devices, cdiVersion {})".format(spec.path, len(_device_names(spec)),
                                                             spec.data.get("cdiVersion")) for spec in specs)
    if imex:
        shown += "; IMEX channels: " + "; ".join("{} ({} channels, cdiVersion {})".format(
            spec.path, len(_device_names(spec)), spec.data.get("cdiVersion")) for spec in imex)
    return ok(shown, specs=[spec.path for spec in specs + imex])


def _hooks(value: Dict[str, Any]) -> List[Any]:
    edits = [value.get("containerEdits") or {}] + [
        device.get("containerEdits") or {} for device in value.get("devices") or () if isinstance(device, dict)]
    return [hook for edit in edits if isinstance(edit, dict) for hook in edit.get("hooks") or ()]


def hook_problems(value: Dict[str, Any]) -> List[str]:
    """Hooks that a container could steer: runc starts a hook without ``env`` with the container's
    environment, so the host's loader honours the image's LD_PRELOAD (CVE-2025-23266's class)."""
    problems = []
    for hook in _hooks(value):
        if not isinstance(hook, dict):
            continue
        shown = "{} hook {}".format(hook.get("hookName", "?"), hook.get("path"))
        if not isinstance(hook.get("path"), str) or not hook["path"].startswith("/"):
            problems.append("{} has no absolute path".format(shown))
        if not hook.get("env"):
            problems.append("{} has no env, so it starts with the container's environment (an image's "
                            "LD_PRELOAD runs on the host as root)".format(shown))
    return problems


@check("cdi-hooks-env", GROUP, "the CDI spec's hooks cannot be steered by a container")
def cdi_hooks_env(facts: Facts):
    from nvdocker_setup.cdi.spec import is_ours

    specs = [spec for spec in nvidia_specs(facts) if spec.value is not None]
    if not specs:
        raise SkipCheck("no readable CDI spec for nvidia.com/gpu (see cdi-spec)")
    ours: List[str] = []
    foreign: List[str] = []
    for spec in specs:
        found = ["{}: {}".format(spec.path, problem) for problem in hook_problems(spec.data)]
        # the generator is in our YAML header (annotations in specs from older releases)
        (ours if is_ours(spec.data, spec.header) else foreign).extend(found)
    if ours:
        return fail(ours[0] + (" (+{} more)".format(len(ours) - 1) if len(ours) > 1 else ""),
                    "written by an older nvdocker-setup; regenerate it now: `{}`".format(GENERATE), problems=ours)
    if foreign:
        return warn(foreign[0] + (" (+{} more)".format(len(foreign) - 1) if len(foreign) > 1 else ""),
                    "update the tool that wrote it, or replace it: `{}`".format(GENERATE), problems=foreign)
    hooks = sum(len(_hooks(spec.data)) for spec in specs)
    return ok("{} hook(s), each with an absolute path and its own env".format(hooks))


def recorded_driver_version(value: Dict[str, Any], header: Optional[Dict[str, str]] = None) -> Optional[str]:
    """The driver version a spec was made for: our header (or older specs' annotation), else the
    libcuda/libnvidia-ml it mounts (JSON specs, other tools' specs)."""
    from nvdocker_setup.cdi.spec import recorded_driver_version as recorded

    return recorded(value, header)


def _stale_imex(facts: Facts, driver) -> List[str]:
    """The IMEX specs (kind nvidia.com/imex-channel) that no longer fit the driver: another driver
    version recorded, or other channels than the driver root has nodes for."""
    from nvdocker_setup.cdi.spec import imex_staleness

    found = []
    for spec in imex_specs(facts):
        reason = imex_staleness(spec.data, spec.header, driver)
        if reason is not None:
            found.append("{} (IMEX channels): {}".format(spec.path, reason))
    return found


@check("cdi-driver-version", GROUP, "the CDI spec matches the running driver")
def cdi_driver_version(facts: Facts):
    specs = [spec for spec in nvidia_specs(facts) if spec.value is not None]
    if not specs:
        raise SkipCheck("no readable CDI spec for nvidia.com/gpu (see cdi-spec)")
    driver = facts.require_driver()
    stale: List[str] = []
    unknown: List[str] = []
    for spec in specs:
        recorded = recorded_driver_version(spec.data, spec.header)
        if recorded is None:
            unknown.append(spec.path)
        elif recorded != driver.version:
            stale.append("{} was made for driver {}".format(spec.path, recorded))
    stale_imex = _stale_imex(facts, driver)
    if stale:
        return fail(
            "{}, the running driver is {}: its library mounts point at files that no longer exist, so "
            "containers fail to start{}".format("; ".join(stale), driver.version,
                                                "; " + "; ".join(stale_imex) if stale_imex else ""),
            "regenerate it after every driver upgrade: `{}`".format(GENERATE),
            stale=stale + stale_imex,
        )
    if stale_imex:
        return fail("{}: containers asking for a channel it lists that is gone fail to start, and a new one is not "
                    "in it".format("; ".join(stale_imex)),
                    "regenerate it (the GPUs' and the IMEX channels' specs together): `{}`".format(GENERATE),
                    stale=stale_imex)
    if unknown:
        return warn("cannot tell which driver {} was made for".format(", ".join(unknown)),
                    "regenerate it so that it records the driver: `{}`".format(GENERATE))
    imex = imex_specs(facts)
    return ok("made for driver {}, the running one{}".format(
        driver.version, "; the IMEX channels' spec lists the host's channels" if imex else ""))


def _max_cdi_version(version: Tuple[int, ...], table=MAX_CDI_VERSION) -> Optional[str]:
    for since, highest in table:
        if version[:2] >= since:
            return highest
    return None


def effective_version(value: Dict[str, Any]) -> Optional[str]:
    """What a reader must know to parse the spec: its cdiVersion, or more when it uses newer
    fields than it declares (a reader's library parses strictly and refuses unknown fields)."""
    from nvdocker_setup.cdi.spec import CDI_VERSIONS, minimum_version, version_key

    declared = value.get("cdiVersion")
    if not isinstance(declared, str) or declared.lstrip("v") not in CDI_VERSIONS:
        return None
    required = minimum_version(value)
    return max(declared.lstrip("v"), required, key=version_key)


def _too_new(specs: List[Spec], highest: Optional[str]) -> List[Tuple[Spec, str]]:
    from nvdocker_setup.cdi.spec import version_key

    found = []
    for spec in specs:
        needed = effective_version(spec.value) if spec.value is not None else None
        if highest and needed and version_key(needed) > version_key(highest):
            found.append((spec, needed))
    return found


def _declares(spec: Spec, needed: str) -> str:
    declared = str(spec.data.get("cdiVersion")).lstrip("v")
    if declared == needed:
        return "declares cdiVersion {}".format(declared)
    return "declares cdiVersion {} but uses fields of {}".format(declared, needed)


@check("cdi-docker-support", GROUP, "dockerd reads the CDI spec", engines=("docker",))
def cdi_docker_support(facts: Facts):
    specs = [spec for spec in nvidia_specs(facts) if spec.value is not None]
    feature = _cdi_feature(facts)
    if not specs and feature is not True:
        return skip("CDI is not in use (no nvidia.com/gpu spec, features.cdi not set)")
    info = facts.require_info()
    version = facts.server_version()
    if not version:
        return skip("dockerd did not report its version")
    shown = ".".join(map(str, version))
    if version[:2] < CDI_SINCE:
        return warn(
            "Docker {} has no CDI (it came in 25.0): `--device nvidia.com/gpu=...` does not work; use --runtime={} "
            "or --gpus".format(shown, facts.runtime_name),
            "upgrade Docker to 25.0 or later to use CDI",
        )
    if version[:2] < CDI_DEFAULT_ON_SINCE and feature is not True:
        return warn("Docker {} reads CDI specs only with features.cdi = true, which daemon.json does not set".format(shown),
                    "`nvdocker-setup install --cdi`, then {}".format(facts.service_command("restart")))
    if feature is False:
        return warn("features.cdi is false in daemon.json, so Docker {} ignores the CDI spec".format(shown),
                    "`nvdocker-setup install --cdi`, then {}".format(facts.service_command("restart")))
    dirs = info.get("CDISpecDirs")
    if isinstance(dirs, list):
        wanted = {spec.directory for spec in specs}
        if not dirs:
            return fail("dockerd reports no CDI spec directories: it has not loaded features.cdi",
                        "{} (CDI is only set up at start)".format(facts.service_command("restart")))
        outside = sorted(directory for directory in wanted if directory not in dirs)
        if outside:
            return warn("the spec is in {}, but dockerd reads {}".format(", ".join(outside), ", ".join(dirs)),
                        "write it into one of dockerd's directories: `{} --output {}/nvdocker.yaml`".format(GENERATE, dirs[0]))
    highest = _max_cdi_version(version)
    too_new = _too_new(specs, highest)
    if too_new:
        spec, needed = too_new[0]
        return fail("{} {}, but Docker {} reads up to {}".format(spec.path, _declares(spec, needed), shown, highest),
                    "regenerate it (`{}` writes the lowest version that can express it)".format(GENERATE))
    return ok("Docker {} reads CDI specs{}".format(shown, " (features.cdi = true)" if feature else ""))


def podman_version(facts: Facts) -> Tuple[Optional[str], Tuple[int, ...], str]:
    """(podman's path, its version, why it is unknown) from ``podman --version`` on doctor's PATH."""

    def compute():
        from nvdocker_setup.doctor.parsers import version_tuple

        path = facts.ctx.which("podman")
        if path is None:
            return None, (), "podman is not installed (not on PATH)"
        try:
            result = facts.ctx.run([path, "--version"], timeout=facts.options.command_timeout, env=dict(facts.ctx.env))
        except (OSError, subprocess.SubprocessError) as error:
            return path, (), "`{} --version` failed: {}".format(path, error)
        match = _PODMAN_VERSION.search(result.stdout or "")
        if result.returncode != 0 or match is None:
            said = ((result.stderr or "") + (result.stdout or "")).strip().splitlines()
            return path, (), "`{} --version` said {!r} (exit {})".format(path, said[-1] if said else "", result.returncode)
        return path, version_tuple(match.group(1)), ""

    return facts.memo("podman-version", compute)


@check("cdi-podman-support", GROUP, "podman reads the CDI spec", engines=("docker",))
def cdi_podman_support(facts: Facts):
    from nvdocker_setup.cdi.spec import version_key

    specs = [spec for spec in specs_in(facts, list(PODMAN_SPEC_DIRS)) if spec.value is not None]
    if not specs:
        raise SkipCheck("no readable CDI spec for nvidia.com/gpu in {} (where podman reads them)".format(
            ", ".join(PODMAN_SPEC_DIRS)))
    path, version, why = podman_version(facts)
    if path is None:
        return skip(why)
    if not version:
        return skip(why)
    shown = ".".join(map(str, version))
    highest = _max_cdi_version(version, PODMAN_MAX_CDI_VERSION)
    if highest is None:
        return skip("podman {} is older than the releases whose CDI support is known here (4.3 and later)".format(shown))
    too_new = _too_new(specs, highest)
    if too_new:
        spec, needed = too_new[0]
        return warn(
            "{} {}, but podman {} reads up to {}: `podman run --device nvidia.com/gpu=...` fails with "
            "\"unresolvable CDI devices\"".format(spec.path, _declares(spec, needed), shown, highest),
            "regenerate it (`{}` writes the lowest version that can express it, 0.5.0)".format(GENERATE),
            specs=[item.path for item, _ in too_new],
        )
    return ok("podman {} reads cdiVersion up to {}; the spec needs {}".format(
        shown, highest, max((effective_version(spec.data) or "0.3.0" for spec in specs), key=version_key)))
