"""Make the running daemon take a config change, verify it did, and roll back if not.

Two phases around the write (certbot's reverter, applied to a daemon):

1. the engine's ``decide`` before the file is written (Docker's in engines/docker/apply.py): which
   daemon, which service manager, reload or restart, and whether a restart may stop containers.
   Refusals happen here, with nothing written. It returns a :class:`Decision`.
2. :func:`execute` after the write, the same for every engine: reload or restart, then poll the
   daemon's API (dockerd's ``GET /info``, containerd's CRI ``Status``) until the intended
   runtime and default runtime show up. A reload that did not take falls back to a restart when
   allowed. On failure, SIGINT or SIGTERM, the caller's ``restore`` puts the old bytes back,
   ``reset-failed`` clears systemd's start limit, dockerd is restarted and checked again.

Time bounds (``--timeout T``; each Engine API call is bounded in total, see docker_api):

- the forward phase (reload, its verification, a fallback restart and its verification) ends
  ``T`` seconds after it started: every ``GET /info`` gets min(the API's own timeout, the time
  left), and a reload that may fall back to a restart waits at most ``T / 2`` (and at most
  ``reload_window``) so the restart keeps time of its own;
- the rollback's verification gets its own ``T`` after its restart (dockerd must restart on the
  old file, which takes as long as any restart).

A wait phase (the reload window, the restart, the rollback) makes at least one attempt with at
least :data:`MIN_ATTEMPT` seconds, even when a slow service command used up the phase's time, and
never sleeps past its deadline. So against a dockerd whose API hangs or trickles, the time
:func:`execute` spends waiting on the Engine API is at most ``2 * T + 3 * MIN_ATTEMPT`` (see
:func:`worst_case_api_wait`; with a quick service manager it is ``2 * T``, or ``T`` when the
rollback finds dockerd healthy). On top of that come the service manager's own commands (reload,
restart, reset-failed, reading its logs), each bounded by that manager's own timeout.
"""

import contextlib
import datetime
import signal
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Protocol

from nvdocker_setup.adapters.service import ServiceError, ServiceManager
from nvdocker_setup.engines.docker.apply_plan import healthy_problems
from nvdocker_setup.errors import NvdockerError
from nvdocker_setup.exit_status import ExitStatus

RELOAD_WINDOW = 10.0  # dockerd applies a reload within a second; longer means it was rejected
POLL_INTERVAL = 0.2
#: The least time the first /info of a wait phase gets, even when its phase's time is used up.
MIN_ATTEMPT = 1.0


class ApplyFailed(NvdockerError):
    """dockerd did not take the change; the old file is back and dockerd runs it."""

    reference = "apply-failed-rolled-back"
    exit_status = ExitStatus.APPLY_FAILED


class RollbackFailed(NvdockerError):
    """dockerd did not take the change and did not come back healthy on the old file either."""

    reference = "rollback-failed"
    exit_status = ExitStatus.ROLLBACK_FAILED


class Interrupted(BaseException):
    """SIGTERM during apply, handled like Ctrl-C: roll back, then exit."""


@dataclass
class ApplyOptions:
    mode: str = "auto"  # auto | reload | restart | none
    service_manager: str = "auto"
    #: With --service-manager command (or auto): how the admin restarts dockerd on this host.
    restart_command: Optional[str] = None
    timeout: float = 60.0
    assume_yes: bool = False
    #: How long a reload may take before we call it "did not take" (dockerd needs about a second).
    reload_window: float = RELOAD_WINDOW
    #: Asked before a restart that stops containers; None means "no terminal": refuse.
    confirm: Optional[Callable[[str], bool]] = None


class Reporter:
    """Progress display hooks; the CLI passes a rich spinner, tests the silent default."""

    @contextlib.contextmanager
    def waiting(self, message: str) -> Iterator[Callable[[str], None]]:
        yield lambda _text: None

    def step(self, message: str) -> None:
        pass


@dataclass
class ApplyReport:
    method: str
    reason: str
    service: Optional[str] = None
    docker_socket: Optional[str] = None
    verified: bool = False
    fallback: Optional[str] = None
    seconds: Optional[float] = None
    notes: List[str] = field(default_factory=list)

    def to_dict(self) -> Dict[str, Any]:
        return dict(self.__dict__)


class Probe(Protocol):
    """A running daemon's API, asked for its live configuration: dockerd's ``GET /info``,
    containerd's CRI ``Status``. ``info`` raises DaemonUnreachable when it gets no answer."""

    timeout: float

    def info(self, timeout: Optional[float] = None) -> Dict[str, Any]: ...


class Check(Protocol):
    def mismatches(self, info: Dict[str, Any]) -> List[str]: ...


@dataclass
class Decision:
    """An engine's answer to "how does the running daemon take this change" (see Engine.decide)."""

    report: ApplyReport
    expectation: Check
    api: Optional[Probe] = None
    service: Optional[ServiceManager] = None
    restart_allowed: bool = False
    options: ApplyOptions = field(default_factory=ApplyOptions)
    #: What the probe must show after a rollback: the daemon answers and is sane.
    healthy: Callable[[Dict[str, Any]], List[str]] = healthy_problems
    #: Names for messages: the daemon and its config file.
    daemon: str = "dockerd"
    config_name: str = "daemon.json"
    #: Why the chosen method cannot take the change, when the engine knows it beforehand (a forced
    #: reload of a removed default): the failure's hint then says the fix instead of "see its log".
    known_cause: Optional[str] = None


def worst_case_api_wait(timeout: float) -> float:
    """The most seconds :func:`execute` waits on the Engine API with ``--timeout timeout``: the
    forward phase and the rollback's verification, ``timeout`` each, plus one floored attempt per
    wait phase (service manager commands come on top, see the module docstring)."""
    return 2 * timeout + 3 * MIN_ATTEMPT


def _wait(api: Probe, deadline: float, check: Callable[[Dict[str, Any]], List[str]], update: Callable[[str], None],
          daemon: str = "dockerd") -> List[str]:
    """Poll the daemon's API until ``check`` returns no problems or ``deadline`` (monotonic) has passed;
    the last problems otherwise. Each call gets min(the API's timeout, the time left); the first
    one at least :data:`MIN_ATTEMPT`, so a phase is never decided without asking dockerd."""
    start = time.monotonic()
    problems = ["{} did not answer".format(daemon)]
    first = True
    while True:
        left = deadline - time.monotonic()
        if first:
            left = max(left, MIN_ATTEMPT)
        elif left <= 0:
            return problems
        first = False
        try:
            problems = check(api.info(timeout=min(api.timeout, left)))
        except NvdockerError as exc:  # unreachable, or an answer that makes no sense: not verified
            problems = [exc.message]
        if not problems:
            return []
        left = deadline - time.monotonic()
        if left <= 0:
            return problems
        update("{:.1f}s".format(time.monotonic() - start))
        time.sleep(min(POLL_INTERVAL, left))


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    def handler(signum, frame):
        raise Interrupted()

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: nothing to install
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def execute(decision: Decision, restore: Callable[[], None], reporter: Optional[Reporter] = None) -> ApplyReport:
    """Apply, verify, and on any failure roll back and raise."""
    report = decision.report
    if report.method == "none":
        return report
    reporter = reporter or Reporter()
    api, service, options = decision.api, decision.service, decision.options
    assert api is not None and service is not None
    started = time.monotonic()
    since = datetime.datetime.now(datetime.timezone.utc)
    check = decision.expectation.mismatches
    try:
        with _sigterm_as_interrupt():
            deadline = started + options.timeout  # the whole forward phase, fallback included
            if report.method == "reload":
                reporter.step("reloading {} ({})".format(decision.daemon, service.describe()))
                service.reload()
                # leave a fallback restart half of --timeout of its own
                window = min(options.reload_window, options.timeout / 2 if decision.restart_allowed else options.timeout)
                with reporter.waiting("waiting for {} to load the new {}".format(decision.daemon, decision.config_name)) as update:
                    problems = _wait(api, min(time.monotonic() + window, deadline), check, update, decision.daemon)
                if problems and decision.restart_allowed:
                    report.fallback = "restart"
                    report.notes.append("the reload did not take ({}); restarting".format("; ".join(problems)))
                    problems = _restart_and_wait(decision, deadline, check, reporter)
            else:
                problems = _restart_and_wait(decision, deadline, check, reporter)
            if problems:
                raise _Unverified(problems)
    except (_Unverified, ServiceError, Interrupted, KeyboardInterrupt) as failure:
        _roll_back(decision, restore, failure, since, reporter)
        raise AssertionError("unreachable") from failure  # _roll_back always raises
    report.verified = True
    report.seconds = round(time.monotonic() - started, 3)
    return report


class _Unverified(Exception):
    def __init__(self, problems: List[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def _restart_and_wait(decision: Decision, deadline: float, check, reporter: Reporter) -> List[str]:
    api, service, daemon = decision.api, decision.service, decision.daemon
    assert api is not None and service is not None
    reporter.step("restarting {} ({})".format(daemon, service.describe()))
    service.restart()
    with reporter.waiting("waiting for {} to come back".format(daemon)) as update:
        return _wait(api, deadline, check, update, daemon)


def _logs_where(service) -> str:
    """Where the daemon's messages are, for a hint (a service manager may be any object with logs_hint)."""
    where = getattr(service, "logs_where", None)
    return where() if callable(where) else "`{}`".format(service.logs_hint())


def _roll_back(decision: Decision, restore: Callable[[], None], failure: BaseException, since, reporter: Reporter) -> None:
    api, service, options = decision.api, decision.service, decision.options
    daemon, config_name = decision.daemon, decision.config_name
    assert api is not None and service is not None
    interrupted = isinstance(failure, (Interrupted, KeyboardInterrupt))
    what = "interrupted" if interrupted else (getattr(failure, "message", None) or str(failure))
    details = ["cause: " + what]
    logs = service.recent_logs(since)
    details.extend("{}: {}".format(daemon, line) for line in logs[-12:])
    reporter.step("rolling back: restoring the previous {}".format(config_name))
    rollback_problems: List[str] = []
    try:
        restore()
        service.reset_failed()
        if service.can_restart:
            service.restart()
        else:
            service.reload()
        # its own --timeout after the restart: bounded like the forward phase (module docstring)
        with reporter.waiting("waiting for {} on the previous {}".format(daemon, config_name)) as update:
            rollback_problems = _wait(api, time.monotonic() + options.timeout, decision.healthy, update, daemon)
    except (NvdockerError, OSError) as exc:
        rollback_problems = [getattr(exc, "message", None) or str(exc)]
    if rollback_problems:
        raise RollbackFailed(
            "{} did not take the change ({}) and did not come back on the previous {} either".format(daemon, what, config_name),
            details=details + ["rollback: " + p for p in rollback_problems],
            hint="{} may be down: check {} and start it; the previous file is restored".format(daemon, _logs_where(service)),
        )
    if interrupted:
        error = ApplyFailed(
            "interrupted while applying; rolled back to the previous {} and {} is healthy".format(config_name, daemon),
            details=details,
            reference="interrupted-rolled-back",
        )
        error.exit_status = ExitStatus.INTERRUPTED
        raise error
    raise ApplyFailed(
        "{} did not take the change; rolled back to the previous {} and {} is healthy".format(daemon, config_name, daemon),
        details=details + ["rollback: {} answers with the previous configuration".format(daemon)],
        hint="{}: run it again with --apply auto (or --apply restart)".format(decision.known_cause)
        if decision.known_cause else "see {} for {}'s own messages".format(_logs_where(service), daemon),
    )
