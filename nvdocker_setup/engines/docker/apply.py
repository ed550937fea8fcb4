"""How a running dockerd takes a daemon.json change: reload (SIGHUP) or restart, through which
service manager, verified with ``GET /info``. Everything that can refuse happens here, before
anything is written; :func:`nvdocker_setup.apply.execute` carries the decision out."""

from typing import Any, Dict, List, Optional, Sequence, Tuple

from nvdocker_setup.adapters.docker_api import DockerAPI, DockerUnreachable, default_socket
from nvdocker_setup.adapters.gpu_hook import hook_appeared_after_start
from nvdocker_setup.adapters.service import detect
from nvdocker_setup.apply import ApplyOptions, ApplyReport, Decision
from nvdocker_setup.context import Context
from nvdocker_setup.engines.docker.apply_plan import Expectation, choose_method, containers_stopped_by_restart
from nvdocker_setup.errors import Conflict, WouldNotStart


def _ask_to_stop(options: ApplyOptions, stopped: int, why: str) -> bool:
    if stopped == 0 or options.assume_yes:
        return True
    question = "Restarting dockerd ({}) will stop {} running container{} (live-restore is off). Continue?".format(
        why, stopped, "" if stopped == 1 else "s"
    )
    return bool(options.confirm and options.confirm(question))


def decide(
    ctx: Context,
    options: ApplyOptions,
    *,
    config_rule: str,
    runtime_name: str,
    before: Dict[str, Any],
    after: Dict[str, Any],
    check_hook: bool = False,
    config_path: str = "daemon.json",
    before_data: Optional[bytes] = None,
    after_data: Optional[bytes] = None,
) -> Decision:
    """Everything that can refuse, before anything is written."""
    expectation = Expectation.from_config(after, runtime_name)
    if options.mode == "none":
        return Decision(ApplyReport("none", "--apply none: dockerd reads the file at its next start"), expectation, options=options)
    socket_path = ctx.docker_socket or default_socket(ctx.env, rootless=config_rule == "rootless", euid=ctx.euid)
    api = DockerAPI(socket_path)
    try:
        info = api.info()
    except DockerUnreachable:
        report = ApplyReport(
            "none",
            "dockerd is not reachable at {}; it will read the new file when it starts".format(socket_path),
            docker_socket=socket_path,
        )
        return Decision(report, expectation, options=options)
    service = ctx.service or detect(ctx, options.service_manager, config_rule, socket_path, options.restart_command)
    hook = check_hook and hook_appeared_after_start(ctx, service.main_pid())
    method, reason = choose_method(options.mode, before, after, hook)
    if method == "none" and options.mode == "auto":
        behind = expectation.mismatches(info)
        if behind:  # the file is right but dockerd runs something else
            method, reason = "reload", "dockerd has not loaded daemon.json yet ({})".format("; ".join(behind))
    report = ApplyReport(method, reason, service=service.describe(), docker_socket=socket_path)
    if method in ("reload", "restart") and (method == "reload" or service.can_restart):
        refuse_unstartable(ctx, socket_path, service, config_path, [
            ("the new {}".format(config_path), after_data, after),
            ("the current {} (what a rollback restores)".format(config_path), before_data, before),
        ], report.notes)
    stopped = containers_stopped_by_restart(info)
    decision = Decision(report, expectation, api, service, options=options)
    if method == "restart":
        if not service.can_restart:
            report.method = "none"
            report.notes.append(
                "dockerd must be restarted for this change ({}), and no service manager can do it here: "
                "restart dockerd yourself, then run `nvdocker-setup show`".format(reason)
            )
            return decision
        if not _ask_to_stop(options, stopped, reason):
            raise Conflict(
                "a restart would stop {} running container{}; nothing was written".format(stopped, "" if stopped == 1 else "s"),
                reference="restart-would-stop-containers",
                hint="pass --yes to accept, --apply none to restart later yourself, or enable live-restore",
            )
        decision.restart_allowed = True
    elif method == "reload":
        if options.mode == "reload":  # forced: say beforehand when a reload cannot take this change
            needed, why = choose_method("auto", before, after, hook)
            if needed == "restart":
                decision.known_cause = "a reload cannot take this change ({})".format(why)
                report.notes.append(decision.known_cause + "; use --apply auto or --apply restart")
        # A fallback restart may be needed if the reload does not take; ask only then.
        decision.restart_allowed = options.mode == "auto" and service.can_restart and (stopped == 0 or options.assume_yes)
        decision.report.notes.extend([] if stopped == 0 else ["{} running container(s) keep running".format(stopped)])
    return decision



def refuse_unstartable(ctx: Context, socket_path: str, service: Any, config_path: str,
                       files: Sequence[Tuple[str, Optional[bytes], Any]], notes: List[str]) -> None:
    """Raise WouldNotStart, before anything is written, when dockerd could not start again on the new
    file or on the file a rollback restores (``files``: the new one first). A reload is judged too:
    dockerd checks the file the same way on SIGHUP and refuses all of it, so it would never take, and
    ``--apply auto`` would fall back to a restart."""
    from nvdocker_setup.engines.docker.startable import judge

    verdicts = judge(ctx, files, socket_path, service)
    for verdict in verdicts:
        notes.extend(note for note in verdict.notes if note not in notes)
    bad = [verdict for verdict in verdicts if verdict.blockers]
    if not bad:
        return
    # the file a rollback restores first: when it is unloadable, it is the cause, and the new one inherits it
    worst = bad[-1]
    rollback_bad = worst is verdicts[-1] and len(verdicts) > 1
    named = [b for b in worst.blockers if b.code != "dockerd-validate"] or worst.blockers
    first = named[0]
    details: List[str] = []
    for verdict in bad:
        details.extend("{}: {}{}".format(verdict.label, b.reason, "" if b.key in ("$", "") or b.key in b.reason
                                         else " ({})".format(b.key)) for b in verdict.blockers)
    if rollback_bad:
        message = ("dockerd could not start again on {} ({}): applying could take the running dockerd down; "
                   "nothing was written".format(config_path, _subject(first)))
    else:
        message = ("dockerd would not start with the new {} ({}): applying could take the running dockerd down; "
                   "nothing was written".format(config_path, _subject(first)))
    raise WouldNotStart(message, details=details, hint=first.fix(config_path))


def _subject(blocker: Any) -> str:
    if blocker.code == "flag-conflict":
        return "{!r} is also given as {} on its command line".format(blocker.key, blocker.flag)
    if blocker.code == "unknown-key" and not blocker.key.startswith("$"):
        return "{!r} is not a dockerd option".format(blocker.key)
    if blocker.key and blocker.key != "$":
        return "{}: {}".format(blocker.key, blocker.reason)
    return blocker.reason
