"""How a running containerd takes a config.toml change: it has no reload, so a restart through its
service manager (running containers survive it: their shims keep running), verified through the
CRI API (``RuntimeService/Status`` with ``verbose``: the live CRI config, with every handler)."""

import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from nvdocker_setup.adapters.service import (
    CommandService,
    ServiceManager,
    SignalService,
    SystemdService,
    pid_lookup,
)
from nvdocker_setup.apply import ApplyOptions, ApplyReport, Decision
from nvdocker_setup.context import Context
from nvdocker_setup.engines.containerd import cri
from nvdocker_setup.engines.containerd.locate import DEFAULT_SOCKET, SYSTEMD_UNIT
from nvdocker_setup.errors import UsageError

#: One CRI Status call (containerd answers in milliseconds; the CRI plugin may take seconds at start).
STATUS_TIMEOUT = 5.0


class CriProbe:
    """:class:`nvdocker_setup.apply.Probe` for containerd: the live CRI config as plain data."""

    def __init__(self, socket_path: str, timeout: float = STATUS_TIMEOUT) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def info(self, timeout: Optional[float] = None) -> Dict[str, Any]:
        status = cri.status(self.socket_path, self.timeout if timeout is None else timeout)
        return {
            "runtimes": status.runtimes(),
            "default_runtime_name": status.default_runtime_name,
            "enable_cdi": status.enable_cdi,
            "problems": status.problems(),
        }


@dataclass(frozen=True)
class Expectation:
    """What the live CRI config must show once containerd runs the new file."""

    runtime_name: str
    binary_name: Optional[str]  # None: the handler must be gone
    default_runtime: Optional[str]  # None: whatever it is, as long as it exists

    def mismatches(self, info: Dict[str, Any]) -> List[str]:
        problems = list(info.get("problems") or [])
        runtimes = info.get("runtimes") or {}
        live = runtimes.get(self.runtime_name)
        if self.binary_name is None:
            if live is not None:
                problems.append("handler {!r} is still in the live CRI config".format(self.runtime_name))
        elif live is None:
            problems.append("handler {!r} is not in the live CRI config".format(self.runtime_name))
        elif live.get("binary_name") != self.binary_name:
            problems.append("handler {!r} runs {!r}, expected {!r}".format(
                self.runtime_name, live.get("binary_name"), self.binary_name))
        if self.default_runtime is not None and info.get("default_runtime_name") != self.default_runtime:
            problems.append("the default handler is {!r}, expected {!r}".format(
                info.get("default_runtime_name"), self.default_runtime))
        return problems


def healthy_problems(info: Dict[str, Any]) -> List[str]:
    """After a rollback: the CRI runtime is ready and its default handler exists."""
    problems = list(info.get("problems") or [])
    default = info.get("default_runtime_name")
    if default and default not in (info.get("runtimes") or {}):
        problems.append("the default handler {!r} is not configured".format(default))
    return problems


def socket_of(value: Dict[str, Any]) -> str:
    """The gRPC socket a config makes containerd listen on."""
    grpc = value.get("grpc")
    address = grpc.get("address") if isinstance(grpc, dict) else None
    if isinstance(address, str) and address:
        return address[len("unix://"):] if address.startswith("unix://") else address
    return DEFAULT_SOCKET


def detect_service(ctx: Context, requested: str, probe: CriProbe, restart_command: Optional[str]) -> ServiceManager:
    if requested in ("snap", "systemd-user"):
        raise UsageError("--service-manager {} runs dockerd, not containerd".format(requested),
                         hint="use systemd, command (--restart-command) or signal")
    if requested == "command" and not restart_command:
        raise UsageError("--service-manager command needs --restart-command")
    lookup = pid_lookup(ctx, probe.socket_path, [], comm="containerd")
    choice = requested
    if requested == "auto":
        has_systemd = os.path.isdir(ctx.host_path("/run/systemd/system")) and ctx.which("systemctl") is not None
        choice = "command" if restart_command else ("systemd" if has_systemd else "signal")
    if choice == "systemd":
        return SystemdService(ctx, unit=SYSTEMD_UNIT)
    if choice == "command":
        return CommandService(ctx, lookup, restart_command or "")
    return SignalService(ctx, lookup)


def decide(
    ctx: Context, options: ApplyOptions, runtime_name: str, before: Dict[str, Any], after: Dict[str, Any],
    expected_binary: Optional[str], expected_default: Optional[str],
) -> Decision:
    expectation = Expectation(runtime_name, expected_binary, expected_default)

    def decision(report: ApplyReport, probe: Optional[CriProbe] = None,
                 service: Optional[ServiceManager] = None) -> Decision:
        return Decision(report, expectation, api=probe, service=service, options=options, healthy=healthy_problems,
                        daemon="containerd", config_name="config.toml")

    if options.mode == "none":
        return decision(ApplyReport("none", "--apply none: containerd reads the file at its next start"))
    if options.mode == "reload":
        raise UsageError("containerd has no reload: it reads config.toml only at start",
                         hint="use --apply restart (running containers keep running) or --apply auto",
                         reference="containerd-no-reload")
    socket_path = ctx.containerd_socket or socket_of(after)
    probe = CriProbe(socket_path)
    try:
        info = probe.info()
    except cri.CriUnreachable:
        report = ApplyReport("none", "containerd is not reachable at {}; it will read the new file when it starts".format(
            socket_path), docker_socket=socket_path)
        return decision(report)
    service = ctx.service or detect_service(ctx, options.service_manager, probe, options.restart_command)
    if options.mode == "restart":
        method, reason = "restart", "--apply restart"
    elif before != after:
        method, reason = "restart", "containerd reads config.toml only at start (running containers keep running)"
    else:
        behind = expectation.mismatches(info)
        if behind:
            method, reason = "restart", "containerd has not loaded config.toml yet ({})".format("; ".join(behind))
        else:
            method, reason = "none", "containerd's configuration is unchanged"
    report = ApplyReport(method, reason, service=service.describe(), docker_socket=socket_path)
    chosen = decision(report, probe, service)
    if method == "restart":
        if not service.can_restart:
            report.method = "none"
            report.notes.append(
                "containerd must be restarted for this change, and no service manager can do it here: restart "
                "containerd yourself (running containers keep running), then run `nvdocker-setup show --engine containerd`"
            )
            return chosen
        chosen.restart_allowed = True
        report.notes.append("running containers keep running: their shims outlive a containerd restart")
    return chosen
