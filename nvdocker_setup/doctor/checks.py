"""The check framework: a registry of independent checks, their results, and one runner.

A check is a function registered with :func:`check` under a stable kebab-case id and a group. It
receives the shared :class:`~nvdocker_setup.doctor.facts.Facts` and returns an :class:`Outcome`
built with :func:`ok`, :func:`warn`, :func:`fail` or :func:`skip`. It may also raise
:class:`SkipCheck` (a fact it needs is unavailable, and another check already says why).

The runner never lets one check take the others down: an exception escaping a check becomes a
``fail`` result naming the exception, and the next check runs.
"""

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

OK = "ok"
WARN = "warn"
FAIL = "fail"
SKIP = "skip"
STATUSES = (OK, WARN, FAIL, SKIP)

#: Groups in display order: id -> heading.
GROUPS = {
    "driver": "driver",
    "runtime-binaries": "runtime binaries",
    "docker-config": "docker config",
    "docker-daemon": "docker daemon",
    "host": "host",
    "cdi": "cdi",
    "containers": "containers",
}

#: The modules that register checks, imported on first use (each is one group).
CHECK_MODULES = ("driver", "runtime", "config", "daemon", "host", "cdi", "containers")


class SkipCheck(Exception):
    """Raised inside a check: it does not apply here, or a fact it needs is missing (``reason``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Outcome:
    """What a check function returns: a status, one detail line and, unless ok, the fix."""

    status: str
    detail: str
    hint: Optional[str] = None
    data: Dict[str, Any] = field(default_factory=dict)


def ok(detail: str, **data: Any) -> Outcome:
    return Outcome(OK, detail, None, data)


def warn(detail: str, hint: Optional[str] = None, **data: Any) -> Outcome:
    return Outcome(WARN, detail, hint, data)


def fail(detail: str, hint: Optional[str] = None, **data: Any) -> Outcome:
    return Outcome(FAIL, detail, hint, data)


def skip(reason: str, **data: Any) -> Outcome:
    return Outcome(SKIP, reason, None, data)


@dataclass(frozen=True)
class Check:
    id: str
    group: str
    title: str
    func: Callable[[Any], Outcome]
    #: Opt-in checks (the container smoke test) run only when asked for.
    opt_in: bool = False
    #: How to ask for an opt-in check, shown in its skip reason.
    opt_in_flag: str = ""


@dataclass(frozen=True)
class CheckResult:
    id: str
    group: str
    title: str
    status: str
    detail: str
    hint: Optional[str] = None
    data: Dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> Dict[str, Any]:
        return {
            "id": self.id,
            "group": self.group,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "hint": self.hint,
            "data": self.data,
            "seconds": round(self.seconds, 4),
        }


@dataclass
class DoctorReport:
    results: List[CheckResult]

    def counts(self) -> Dict[str, int]:
        counts = {status: 0 for status in STATUSES}
        for result in self.results:
            counts[result.status] += 1
        return counts

    @property
    def failed(self) -> bool:
        return any(result.status == FAIL for result in self.results)

    def by_id(self, check_id: str) -> CheckResult:
        for result in self.results:
            if result.id == check_id:
                return result
        raise KeyError(check_id)

    def to_dict(self) -> Dict[str, Any]:
        counts = self.counts()
        return {
            "ok": not self.failed,
            "summary": dict(counts, total=len(self.results)),
            "checks": [result.to_dict() for result in self.results],
        }


_REGISTRY: Dict[str, Check] = {}
_loaded = False


def check(check_id: str, group: str, title: str, *, opt_in: bool = False, opt_in_flag: str = "") -> Callable:
    """Register the decorated function as check ``check_id`` (kebab-case, unique) in ``group``."""
    if group not in GROUPS:
        raise ValueError("unknown check group {!r}".format(group))
    if not check_id or check_id != check_id.lower() or " " in check_id or "_" in check_id:
        raise ValueError("check ids are kebab-case: {!r}".format(check_id))

    def register(func: Callable[[Any], Outcome]) -> Callable[[Any], Outcome]:
        if check_id in _REGISTRY:
            raise ValueError("check id {!r} registered twice".format(check_id))
        _REGISTRY[check_id] = Check(check_id, group, title, func, opt_in, opt_in_flag)
        return func

    return register


def load_all() -> None:
    """Import every check module so that its checks register (once)."""
    global _loaded
    if _loaded:
        return
    import importlib

    for name in CHECK_MODULES:
        importlib.import_module("nvdocker_setup.doctor." + name)
    _loaded = True


def all_checks() -> List[Check]:
    """Every registered check, grouped in :data:`GROUPS` order, in registration order within a group."""
    load_all()
    order = list(GROUPS)
    registered = list(_REGISTRY.values())
    return sorted(registered, key=lambda item: (order.index(item.group), registered.index(item)))


def check_ids() -> List[str]:
    return [item.id for item in all_checks()]


def select(only: Optional[Sequence[str]] = None) -> List[Check]:
    """The checks to run: all of them, or those named in ``only`` (unknown ids: ``KeyError``)."""
    checks = all_checks()
    if not only:
        return checks
    known = {item.id: item for item in checks}
    unknown = [name for name in only if name not in known]
    if unknown:
        raise KeyError(", ".join(unknown))
    wanted = set(only)
    return [item for item in checks if item.id in wanted]


def run_one(item: Check, facts: Any, explicit: bool = False) -> CheckResult:
    """Run one check; whatever happens inside it becomes a result."""
    started = time.monotonic()
    if item.opt_in and not explicit and not facts.opted_in(item.id):
        outcome = skip("opt-in check: run with {}".format(item.opt_in_flag or "--check " + item.id))
    else:
        try:
            outcome = item.func(facts)
            if not isinstance(outcome, Outcome):
                raise TypeError("check returned {!r} instead of an Outcome".format(type(outcome).__name__))
        except SkipCheck as skipped:
            outcome = skip(skipped.reason)
        except Exception as exc:  # one broken check must not hide the others
            import traceback

            outcome = fail(
                "the check itself crashed: {}: {}".format(type(exc).__name__, exc),
                "this is a bug in nvdocker-setup's doctor; report it with the traceback (doctor --json shows it)",
                error=type(exc).__name__,
                traceback=traceback.format_exc(),
            )
    return CheckResult(
        id=item.id,
        group=item.group,
        title=item.title,
        status=outcome.status,
        detail=outcome.detail,
        hint=outcome.hint,
        data=dict(outcome.data),
        seconds=time.monotonic() - started,
    )


def run_checks(facts: Any, only: Optional[Iterable[str]] = None) -> DoctorReport:
    """Run the selected checks in order against one set of facts."""
    names = list(only or ())
    return DoctorReport([run_one(item, facts, explicit=bool(names)) for item in select(names)])
