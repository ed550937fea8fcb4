"""The check framework: a registry of independent checks, their results, and one runner.

A check is a function registered with :func:`check` under a stable kebab-case id and a group. It
receives the shared :class:`~nvdocker_setup.doctor.facts.Facts` and returns an :class:`Outcome`
built with :func:`ok`, :func:`warn`, :func:`fail` or :func:`skip`. It may also raise
:class:`SkipCheck` (a fact it needs is unavailable, and another check already says why).

An outcome may name its ``cause``: the check that reports the underlying problem (a skip's
"(see config-parse)" names it too, and is read as the cause). When that check failed, the result
*follows from* it (:meth:`DoctorReport.follows_from`), so one fault reads as one failure, and the
report's :meth:`~DoctorReport.verdict` names the first failure that follows from no other.

The runner never lets one check take the others down: an exception escaping a check becomes a
``fail`` result naming the exception, and the next check runs.
"""

import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

OK = "ok"
WARN = "warn"
FAIL = "fail"
SKIP = "skip"
STATUSES = (OK, WARN, FAIL, SKIP)

#: Groups (layers) in display order, each built on the ones before it: id -> heading.
GROUPS = {
    "driver": "driver",
    "runtime-binaries": "runtime binaries",
    "docker-config": "engine config",
    "docker-daemon": "docker daemon",
    "containerd-config": "containerd config",
    "containerd-daemon": "containerd daemon",
    "host": "host",
    "cdi": "CDI",
    "containers": "containers",
}
#: The engines (``doctor --engine``) doctor knows, and those a group's checks apply to by default:
#: Docker's groups to docker, containerd's to containerd, every other group to both.
ENGINES = ("docker", "containerd")
DEFAULT_ENGINE = "docker"
GROUP_ENGINES = {
    "docker-config": ("docker",),
    "docker-daemon": ("docker",),
    "containerd-config": ("containerd",),
    "containerd-daemon": ("containerd",),
}
#: A skip reason's pointer to the check that reports the underlying problem.
SEE_CHECK = re.compile(r"\(see ([a-z][a-z0-9]*(?:-[a-z0-9]+)+)\)")

#: The modules that register checks, imported on first use (each is one group).
CHECK_MODULES = ("driver", "runtime", "config", "daemon", "host", "cdi", "containerd", "containers")


class SkipCheck(Exception):
    """Raised inside a check: it does not apply here, or a fact it needs is missing (``reason``)."""

    def __init__(self, reason: str, cause: Optional[str] = None) -> None:
        super().__init__(reason)
        self.reason = reason
        #: The check that reports why (None: read from "(see <id>)" in the reason, if any).
        self.cause = cause


@dataclass(frozen=True)
class Outcome:
    """What a check function returns: a status, one detail line and, unless ok, the fix."""

    status: str
    detail: str
    hint: Optional[str] = None
    data: Dict[str, Any] = field(default_factory=dict)
    #: The check that reports the underlying problem, when this outcome is its consequence.
    cause: Optional[str] = None


def ok(detail: str, **data: Any) -> Outcome:
    return Outcome(OK, detail, None, data)


def warn(detail: str, hint: Optional[str] = None, *, cause: Optional[str] = None, **data: Any) -> Outcome:
    return Outcome(WARN, detail, hint, data, cause)


def fail(detail: str, hint: Optional[str] = None, *, cause: Optional[str] = None, **data: Any) -> Outcome:
    return Outcome(FAIL, detail, hint, data, cause)


def skip(reason: str, *, cause: Optional[str] = None, **data: Any) -> Outcome:
    return Outcome(SKIP, reason, None, data, cause)


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
    #: The engines whose doctor runs this check (the others do not list or run it).
    engines: Tuple[str, ...] = ENGINES


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
    #: The check that reports the underlying problem (see :class:`Outcome`), or None.
    cause: Optional[str] = None

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
            "cause": self.cause,
        }


@dataclass(frozen=True)
class Verdict:
    """The one line that says whether GPU containers can work, and where they are blocked first."""

    #: ``ready`` (nothing failed or warned), ``warnings`` (works, with warnings) or ``blocked``.
    status: str
    #: The layer (group) of the first failure, its check, and how many failures follow from others.
    group: Optional[str] = None
    check: Optional[str] = None
    detail: Optional[str] = None
    warnings: int = 0
    failures: int = 0
    consequences: int = 0

    def to_dict(self) -> Dict[str, Any]:
        return {"status": self.status, "group": self.group, "check": self.check, "detail": self.detail,
                "warnings": self.warnings, "failures": self.failures, "consequences": self.consequences}


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

    def follows_from(self, result: CheckResult) -> Optional[CheckResult]:
        """The failed check ``result`` is a consequence of (following causes to the first one), or
        None: it names no cause, or its cause did not run here or did not fail."""
        known = {item.id: item for item in self.results}
        seen = {result.id}
        found: Optional[CheckResult] = None
        current = result
        while current.cause and current.cause in known and current.cause not in seen:
            seen.add(current.cause)
            current = known[current.cause]
            if current.status == FAIL:
                found = current
        return found

    def first_failure(self) -> Optional[CheckResult]:
        """The first failed check, in layer order, that follows from no other failure."""
        failed = [result for result in self.results if result.status == FAIL]
        for result in failed:
            if self.follows_from(result) is None:
                return result
        return failed[0] if failed else None

    def verdict(self) -> Verdict:
        counts = self.counts()
        consequences = sum(1 for result in self.results if result.status == FAIL and self.follows_from(result))
        first = self.first_failure()
        if first is not None:
            return Verdict("blocked", first.group, first.id, first.detail, counts[WARN], counts[FAIL], consequences)
        if counts[WARN]:
            warned = next(result for result in self.results if result.status == WARN)
            return Verdict("warnings", warned.group, warned.id, warned.detail, counts[WARN])
        return Verdict("ready")

    def to_dict(self) -> Dict[str, Any]:
        counts = self.counts()
        checks = []
        for result in self.results:
            item = result.to_dict()
            root = self.follows_from(result)
            item["follows_from"] = root.id if root is not None else None
            checks.append(item)
        return {
            "ok": not self.failed,
            "verdict": self.verdict().to_dict(),
            "summary": dict(counts, total=len(self.results)),
            "checks": checks,
        }


_REGISTRY: Dict[str, Check] = {}
_loaded = False


def check(check_id: str, group: str, title: str, *, opt_in: bool = False, opt_in_flag: str = "",
          engines: Optional[Sequence[str]] = None) -> Callable:
    """Register the decorated function as check ``check_id`` (kebab-case, unique) in ``group``, run
    for ``engines`` (default: the group's, :data:`GROUP_ENGINES`, else every engine)."""
    applies = tuple(engines) if engines is not None else GROUP_ENGINES.get(group, ENGINES)
    if not applies or set(applies) - set(ENGINES):
        raise ValueError("unknown engines {!r} for check {!r}".format(applies, check_id))
    if group not in GROUPS:
        raise ValueError("unknown check group {!r}".format(group))
    if not check_id or check_id != check_id.lower() or " " in check_id or "_" in check_id:
        raise ValueError("check ids are kebab-case: {!r}".format(check_id))

    def register(func: Callable[[Any], Outcome]) -> Callable[[Any], Outcome]:
        if check_id in _REGISTRY:
            raise ValueError("check id {!r} registered twice".format(check_id))
        _REGISTRY[check_id] = Check(check_id, group, title, func, opt_in, opt_in_flag, applies)
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


def all_checks(engine: Optional[str] = DEFAULT_ENGINE) -> List[Check]:
    """Every registered check of ``engine``'s doctor (None: of every engine), grouped in
    :data:`GROUPS` order, in registration order within a group."""
    load_all()
    order = list(GROUPS)
    registered = list(_REGISTRY.values())
    chosen = [item for item in registered if engine is None or engine in item.engines]
    return sorted(chosen, key=lambda item: (order.index(item.group), registered.index(item)))


class NotForEngine(KeyError):
    """``--check`` named checks that exist, but not for this engine."""


def select(only: Optional[Sequence[str]] = None, engine: Optional[str] = DEFAULT_ENGINE) -> List[Check]:
    """The checks to run: all of ``engine``'s, or those named in ``only`` (unknown ids: ``KeyError``;
    ids of another engine's checks: :class:`NotForEngine`)."""
    checks = all_checks(engine)
    if not only:
        return checks
    known = {item.id: item for item in checks}
    unknown = [name for name in only if name not in known]
    if unknown:
        other = {item.id: item for item in all_checks(None)}
        if all(name in other for name in unknown):
            raise NotForEngine(", ".join(unknown))
        raise KeyError(", ".join(name for name in unknown if name not in other))
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
            outcome = skip(skipped.reason, cause=skipped.cause)
        except Exception as exc:  # one broken check must not hide the others
            import traceback

            outcome = fail(
                "the check itself crashed: {}: {}".format(type(exc).__name__, exc),
                "this is a bug in nvdocker-setup's doctor; report it with the traceback (doctor --json shows it)",
                error=type(exc).__name__,
                traceback=traceback.format_exc(),
            )
    cause = outcome.cause
    if cause is None and outcome.status != OK:
        pointer = SEE_CHECK.search(outcome.detail or "")
        if pointer is not None and pointer.group(1) in _REGISTRY and pointer.group(1) != item.id:
            cause = pointer.group(1)
    return CheckResult(
        id=item.id,
        group=item.group,
        title=item.title,
        status=outcome.status,
        detail=outcome.detail,
        hint=outcome.hint,
        data=dict(outcome.data),
        seconds=time.monotonic() - started,
        cause=cause,
    )


def run_checks(facts: Any, only: Optional[Iterable[str]] = None) -> DoctorReport:
    """Run the selected checks in order against one set of facts."""
    names = list(only or ())
    engine = getattr(facts, "engine_name", DEFAULT_ENGINE)
    return DoctorReport([run_one(item, facts, explicit=bool(names)) for item in select(names, engine)])
