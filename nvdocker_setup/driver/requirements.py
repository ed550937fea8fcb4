"""``NVIDIA_REQUIRE_*`` constraints, checked against the driver before a container starts.

Syntax (as libnvidia-container reads it): each variable is a space-separated list of
alternatives, any one of which may hold; an alternative is a comma-separated list of conditions
that must all hold; a condition is ``key op value`` with op one of ``>= <= != == = > <`` and key
one of ``cuda``, ``driver``, ``arch``, ``brand``. All variables must hold.

The CUDA version a driver supports is what ``cuDriverGetVersion`` reports; without loading
``libcuda`` (tens of ms and a large mapping, on every create) it comes from NVIDIA's published
table of the first driver of each CUDA release. ``brand`` and ``arch`` are each requested GPU's, from
its model name (:mod:`nvdocker_setup.driver.gpu_models`, NVML loaded by nobody): a condition on them
holds when it holds for every GPU the container gets; without a GPU (or for a model the tables do not
know, brand ``unknown``, no arch) it does not, and the message says why.
"""

from __future__ import annotations

from nvdocker_setup.driver.errors import GpuSetupError, quoted, shorten
from nvdocker_setup.driver.versions import version_tuple

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing costs the runtime ~5 ms
    from typing import Dict, List, Mapping, Optional, Sequence, Tuple

#: (first driver of the branch, CUDA version it reports), newest first (Linux, x86_64).
CUDA_BY_DRIVER: Tuple[Tuple[Tuple[int, ...], str], ...] = (
    ((580, 65, 6), "13.0"),
    ((575, 51, 3), "12.9"),
    ((570, 26), "12.8"),
    ((565, 57, 1), "12.7"),
    ((560, 28, 3), "12.6"),
    ((555, 42, 2), "12.5"),
    ((550, 54, 14), "12.4"),
    ((545, 23, 6), "12.3"),
    ((535, 54, 3), "12.2"),
    ((530, 30, 2), "12.1"),
    ((525, 60, 13), "12.0"),
    ((520, 61, 5), "11.8"),
    ((515, 43, 4), "11.7"),
    ((510, 39, 1), "11.6"),
    ((495, 29, 5), "11.5"),
    ((470, 42, 1), "11.4"),
    ((465, 19, 1), "11.3"),
    ((460, 27, 3), "11.2"),
    ((455, 23), "11.1"),
    ((450, 36, 6), "11.0"),
    ((440, 33), "10.2"),
    ((418, 39), "10.1"),
    ((410, 48), "10.0"),
    ((396, 26), "9.2"),
    ((390, 46), "9.1"),
    ((384, 81), "9.0"),
    ((375, 26), "8.0"),
)

_OPERATORS = (">=", "<=", "!=", "==", "=", ">", "<")
_KEYS = ("cuda", "driver", "arch", "brand")


def cuda_version_for_driver(driver_version: str) -> str:
    """The newest CUDA version ``driver_version`` supports, e.g. ``"550.54.14"`` -> ``"12.4"``."""
    wanted = version_tuple(driver_version)
    for first_driver, cuda in CUDA_BY_DRIVER:
        if wanted >= first_driver:
            return cuda
    return "0.0"


def requirement_values(env: Mapping[str, str]) -> List[Tuple[str, str]]:
    """``(name, value)`` of every ``NVIDIA_REQUIRE_*`` variable to check (Jetpack ones excluded)."""
    return sorted(
        (name, value)
        for name, value in env.items()
        if name.startswith("NVIDIA_REQUIRE_") and not name.startswith("NVIDIA_REQUIRE_JETPACK") and value.strip()
    )


def _split_condition(condition: str) -> Tuple[str, str, str]:
    for operator in _OPERATORS:
        key, sep, value = condition.partition(operator)
        if sep and key.strip() and value.strip():
            return key.strip().lower(), operator, value.strip()
    raise GpuSetupError(
        "cannot read the requirement {}".format(quoted(condition)),
        hint="write conditions like cuda>=12.4 or driver>=535, or set NVIDIA_DISABLE_REQUIRE=1",
    )


def _compare(actual: Tuple[int, ...], operator: str, wanted: Tuple[int, ...]) -> bool:
    width = max(len(actual), len(wanted))
    left = actual + (0,) * (width - len(actual))
    right = wanted + (0,) * (width - len(wanted))
    if operator == ">=":
        return left >= right
    if operator == "<=":
        return left <= right
    if operator == ">":
        return left > right
    if operator == "<":
        return left < right
    if operator == "!=":
        return left != right
    return left == right


class Facts:
    """What conditions are checked against: the driver's version, its CUDA version and the
    (brand, arch) of each GPU the container gets."""

    __slots__ = ("driver_version", "cuda_version", "gpus")

    def __init__(self, driver_version: str, cuda_version: str,
                 gpus: Sequence[Tuple[str, Optional[str]]] = ()) -> None:
        self.driver_version = driver_version
        self.cuda_version = cuda_version
        self.gpus = tuple(gpus)


def condition_holds(condition: str, facts: Facts) -> Tuple[bool, Optional[str]]:
    """Whether one ``key op value`` holds, and why not when it cannot be told."""
    key, operator, value = _split_condition(condition)
    if key not in _KEYS:
        raise GpuSetupError(
            "unknown requirement key {} in {}".format(quoted(key, 60), quoted(condition)), hint="keys are cuda, driver, arch, brand"
        )
    if key == "brand":
        return _per_gpu(condition, operator, facts, lambda brand, _arch: _compare_text(brand, operator, value.lower()))
    if key == "arch":
        wanted_arch = version_tuple(value)
        if not wanted_arch:
            raise GpuSetupError("{} is not an architecture in {}".format(quoted(value, 60), quoted(condition)))
        return _per_gpu(condition, operator, facts,
                        lambda _brand, arch: arch is not None and _compare(version_tuple(arch), operator, wanted_arch))
    actual = facts.cuda_version if key == "cuda" else facts.driver_version
    wanted = version_tuple(value)
    if not wanted:
        raise GpuSetupError("{} is not a version in {}".format(quoted(value, 60), quoted(condition)))
    return _compare(version_tuple(actual), operator, wanted), None


def _compare_text(actual: str, operator: str, wanted: str) -> bool:
    if operator in ("=", "=="):
        return actual == wanted
    if operator == "!=":
        return actual != wanted
    raise GpuSetupError("brand compares with =, == or != only, not {}".format(operator),
                        hint="write brand=tesla (the brand names of CUDA images)")


def _per_gpu(condition: str, operator: str, facts: Facts, holds) -> Tuple[bool, Optional[str]]:
    if not facts.gpus:
        return False, "no GPU to check {} against".format(condition.split(operator, 1)[0].strip())
    if all(holds(brand, arch) for brand, arch in facts.gpus):
        return True, None
    shown = ", ".join("brand {} arch {}".format(brand, arch or "unknown") for brand, arch in facts.gpus[:4])
    return False, "the GPUs are {}".format(shown)


def check(env: Mapping[str, str], facts: Facts) -> None:
    """Raise a :class:`GpuSetupError` naming the first ``NVIDIA_REQUIRE_*`` the driver does not meet.

    A driver whose version is unknown (WSL2: no file is named after it, and reading it means
    loading NVML) is not checked: every ``cuda>=`` would fail, which would refuse every CUDA image.
    ``doctor`` says so (driver-kernel-module)."""
    if not version_tuple(facts.driver_version):
        return
    for name, value in requirement_values(env):
        notes: Dict[str, str] = {}
        satisfied = False
        for alternative in value.split():
            results = []
            for condition in alternative.split(","):
                if not condition:
                    continue
                holds, note = condition_holds(condition, facts)
                if note:
                    notes[condition] = note
                results.append(holds)
            if results and all(results):
                satisfied = True
                break
        if not satisfied:
            extra = "; ".join("{}: {}".format(quoted(k, 60), v) for k, v in sorted(notes.items())[:4])
            raise GpuSetupError(
                "unsatisfied requirement {}={}: the driver is {} (CUDA {}){}".format(
                    shorten(name, 80), quoted(value), facts.driver_version, facts.cuda_version, " ({})".format(extra) if extra else ""
                ),
                hint="update the driver, use an image for an older CUDA, or set NVIDIA_DISABLE_REQUIRE=1 to skip the check",
            )


def disabled(env: Mapping[str, str]) -> bool:
    """``NVIDIA_DISABLE_REQUIRE`` as Go's strconv.ParseBool reads it (true, 1, t, TRUE...)."""
    return env.get("NVIDIA_DISABLE_REQUIRE", "").strip() in ("1", "t", "T", "TRUE", "true", "True")
