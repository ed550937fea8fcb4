"""How a running dockerd takes a daemon.json change: reload (SIGHUP) or restart, through which
service manager, verified with ``GET /info``. Everything that can refuse happens here, before
anything is written; :func:`nvdocker_setup.apply.execute` carries the decision out."""

from typing import Any, Dict

from nvdocker_setup.adapters.docker_api import DockerAPI, DockerUnreachable, default_socket
from nvdocker_setup.adapters.gpu_hook import hook_appeared_after_start
from nvdocker_setup.adapters.service import detect
from nvdocker_setup.apply import ApplyOptions, ApplyReport, Decision
from nvdocker_setup.context import Context
from nvdocker_setup.engines.docker.apply_plan import Expectation, choose_method, containers_stopped_by_restart
from nvdocker_setup.errors import Conflict


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
        # A fallback restart may be needed if the reload does not take; ask only then.
        decision.restart_allowed = options.mode == "auto" and service.can_restart and (stopped == 0 or options.assume_yes)
        decision.report.notes.extend([] if stopped == 0 else ["{} running container(s) keep running".format(stopped)])
    return decision


