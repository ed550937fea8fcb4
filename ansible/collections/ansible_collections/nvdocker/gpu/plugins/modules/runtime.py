#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: 2026 nvdocker-setup contributors

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: runtime
short_description: Add or remove the GPU runtime in Docker's daemon.json or containerd's config.toml
version_added: "0.1.0"
description:
  - Runs C(nvdocker-setup install) or C(nvdocker-setup uninstall) with C(--json) on the managed host.
  - nvdocker-setup edits only the members it changes (every other byte of the file stays), takes a
    backup, validates the result, writes it atomically, applies it to the running daemon (reload or
    restart), verifies it through the daemon's API and restores the previous file if the daemon does
    not take it.
  - C(changed) is nvdocker-setup's own result, so a second run on a configured host reports no change
    and writes nothing.
  - In check mode the module runs C(--dry-run), reports whether a real run would change the file, and
    writes nothing. With C(--diff) it shows nvdocker-setup's unified diff of the file.
  - With I(state=absent) and I(apply=auto), nvdocker-setup's own decision restarts dockerd when a
    reload cannot forget what was removed (dockerd keeps a removed C(default-runtime) or runtime
    until it restarts; otherwise C(docker run) keeps using a runtime that may be gone), and reloads
    it when a reload is enough. I(restarted) and I(reloaded) say which happened. A restart that would
    stop running containers (live-restore off) needs I(allow_container_restart); without it the task
    fails before anything is written.
  - A change the daemon refused fails the task with nvdocker-setup's error id, message and hint; the
    return values say whether the host is back on its previous file (I(host_state), I(rolled_back)).
author:
  - nvdocker-setup contributors (@nvdocker-setup)
requirements:
  - nvdocker-setup on the managed host (the C(nvdocker-setup) package; the C(nvdocker.gpu.setup) role installs it)
options:
  state:
    description:
      - C(present) adds the runtime (C(nvdocker-setup install)); C(absent) removes what install added and
        gives back the previous entry and default runtime, or the original bytes of the file when nobody
        else changed it since (C(nvdocker-setup uninstall)).
    type: str
    choices: [present, absent]
    default: present
  engine:
    description:
      - Whose configuration to edit. C(docker) edits the daemon.json the running dockerd reads;
        C(containerd) edits containerd's config.toml.
    type: str
    choices: [docker, containerd]
    default: docker
  runtime_name:
    description:
      - The key under C(runtimes) (Docker) or the runtime handler (containerd).
      - When another tool (NVIDIA's C(nvidia-ctk)) owns C(nvidia), use another name such as C(nvdocker),
        or I(force).
    type: str
    default: nvidia
  runtime_path:
    description:
      - Absolute path of the runtime binary. Default is C(nvdocker-runtime) on the host's PATH, else
        C(/usr/bin/nvdocker-runtime).
      - Only with I(state=present).
    type: path
  runtime_args:
    description:
      - Arguments for the runtime, written as C(runtimeArgs). Only with I(state=present).
    type: list
    elements: str
    default: []
  default_runtime:
    description:
      - Make the runtime the engine's default runtime. C(false) leaves the current default alone.
      - Only with I(state=present).
    type: bool
    default: false
  cdi:
    description:
      - Set C(features.cdi=true) (Docker), keeping the other feature flags. Only with I(state=present).
    type: bool
    default: false
  apply:
    description:
      - How the running daemon takes the change.
      - C(auto) reloads when every changed key can be reloaded and restarts otherwise; C(reload) and
        C(restart) force one; C(none) only writes the file (the daemon reads it at its next start).
    type: str
    choices: [auto, reload, restart, none]
    default: auto
  config:
    description:
      - The configuration file to edit. Default is the file the running daemon reads, found the way
        C(nvdocker-setup show) explains.
    type: path
  state_dir:
    description:
      - Where nvdocker-setup keeps its install records and backups (default C(/var/lib/nvdocker-setup)).
    type: path
  force:
    description:
      - With I(state=present), replace another default runtime than C(runc) or another tool's entry of the
        same name. With I(state=absent), remove the entry even if its path changed since install.
    type: bool
    default: false
  allow_container_restart:
    description:
      - Allow a restart of dockerd that stops running containers (live-restore off). Without it such a
        change is refused before anything is written.
    type: bool
    default: false
  service_manager:
    description:
      - How the daemon runs on the host. C(auto) picks systemd where it runs, the snap for the snap's
        daemon.json, else C(signal) (SIGHUP to the daemon's pid; it cannot restart).
      - C(command) restarts with I(restart_command).
    type: str
    choices: [auto, systemd, systemd-user, snap, signal, command]
    default: auto
  restart_command:
    description:
      - The command that restarts the daemon with I(service_manager=command), for example
        C(rc-service docker restart).
    type: str
  timeout:
    description:
      - Seconds to wait for the daemon to verify the change (a rollback gets as long again).
    type: float
    default: 60
  lock_timeout:
    description:
      - Seconds to wait for another nvdocker-setup run on the host to finish.
    type: float
    default: 10
  allow_unsafe_runtime:
    description:
      - Accept a runtime binary that is missing (also with I(default_runtime)), that a non-root user could
        replace, or that one could create (C(--allow-unsafe-runtime)). Only with I(state=present).
    type: bool
    default: false
  in_place:
    description:
      - Rewrite the configuration file in place when it cannot be replaced atomically (a bind-mounted
        daemon.json; C(--in-place)).
    type: bool
    default: false
  drop_in:
    description:
      - containerd 2.1+, I(state=present) - write the handler to a drop-in file that config.toml imports
        (C(conf.d/99-nvdocker.toml) beside it) instead of editing config.toml (C(--drop-in)).
    type: bool
    default: false
  drop_in_path:
    description:
      - The drop-in file (implies I(drop_in)).
    type: path
  cli_path:
    description:
      - Path of the nvdocker-setup binary on the host. Default is C(nvdocker-setup) on the host's PATH.
    type: path
attributes:
  check_mode:
    support: full
    description: Runs C(nvdocker-setup --dry-run); nothing is written and no daemon is touched.
  diff_mode:
    support: full
    description: Shows nvdocker-setup's unified diff of the configuration file.
notes:
  - Needs root on the managed host (C(become)).
  - A rolling update with C(serial) and C(max_fail_percentage=0) stops at the first host whose daemon
    refuses the change; that host is back on its previous file. See the role's README.
seealso:
  - module: nvdocker.gpu.doctor
"""

EXAMPLES = r"""
- name: Add the GPU runtime to dockerd and make it the default
  nvdocker.gpu.runtime:
    default_runtime: true
  become: true

- name: Beside NVIDIA's own entry, under another name
  nvdocker.gpu.runtime:
    runtime_name: nvdocker

- name: Configure containerd's CRI plugin (a Kubernetes node)
  nvdocker.gpu.runtime:
    engine: containerd

- name: Only write the file; the daemon picks it up at its next start
  nvdocker.gpu.runtime:
    apply: none

- name: Take it out again (the original bytes come back when nobody else edited the file)
  nvdocker.gpu.runtime:
    state: absent
"""

RETURN = r"""
config:
  description: The configuration file acted on.
  returned: success
  type: str
  sample: /etc/docker/daemon.json
config_rule:
  description: Which rule chose the file (option, env, running-dockerd, default ...).
  returned: success
  type: str
  sample: running-dockerd
would_change:
  description: A real run writes the file. In check mode, whether the diff is not empty.
  returned: success
  type: bool
backup:
  description: The backup taken before the write; null when nothing was written or the file did not exist.
  returned: success
  type: str
  sample: /var/lib/nvdocker-setup/backups/20260101T000000.000000Z-0001
diff_text:
  description: nvdocker-setup's unified diff of the change, empty when there is none.
  returned: success
  type: str
changes:
  description: What was (or would be) changed, one line each.
  returned: success
  type: list
  elements: str
apply:
  description:
    - What happened to the running daemon (C(method) none, reload or restart; C(reason); C(verified)
      through the daemon's API; C(fallback); C(seconds); C(notes)). Null in check mode.
  returned: success
  type: dict
  sample: {"method": "reload", "reason": "runtimes changed", "verified": true, "notes": []}
nvdocker:
  description: nvdocker-setup's whole JSON object (docs/json.md), success or error.
  returned: always
  type: dict
error_id:
  description: nvdocker-setup's stable error id (for example C(apply-failed-rolled-back), C(runtime-entry-foreign)).
  returned: failure
  type: str
  sample: apply-failed-rolled-back
error_message:
  description: nvdocker-setup's error message.
  returned: failure
  type: str
details:
  description: The error's details (the daemon's own error lines, the rollback's result).
  returned: failure
  type: list
  elements: str
hint:
  description: What to do about the error.
  returned: failure
  type: str
host_state:
  description:
    - Where a failed run left the host. C(unchanged) (refused before anything was written),
      C(rolled-back) (the daemon refused the change; the previous file is back and the daemon answers
      on it), C(rolled-back-daemon-down) (the previous file is back but the daemon did not come back),
      C(unknown) (an unexpected error).
  returned: failure
  type: str
  sample: rolled-back
rolled_back:
  description: The change was written, refused by the daemon, and the previous file restored.
  returned: failure
  type: bool
config_restored:
  description: The configuration file has its previous bytes again (after a rollback).
  returned: failure
  type: bool
daemon_running:
  description: After a rollback, whether the daemon answers on the previous file; null when no rollback happened.
  returned: failure
  type: bool
restarted:
  description: nvdocker-setup restarted the daemon (its own decision with I(apply=auto), or a reload that did
    not take and fell back to a restart). False in check mode.
  returned: success
  type: bool
reloaded:
  description: nvdocker-setup reloaded the daemon and did not restart it. False in check mode.
  returned: success
  type: bool
restart_needed:
  description:
    - The file changed but the running daemon was left on its previous configuration, which only a restart
      changes (I(apply=none), or no service manager that can restart it); the task warns with the command.
  returned: success
  type: bool
rc:
  description: nvdocker-setup's exit status (README, "Exit codes").
  returned: failure
  type: int
  sample: 10
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.nvdocker.gpu.plugins.module_utils.cli import fail_with_error, find_cli, run_json


def build_argv(cli, params, check_mode):
    present = params["state"] == "present"
    argv = [cli, "install" if present else "uninstall", "--json",
            "--engine", params["engine"], "--runtime-name", params["runtime_name"],
            "--apply", params["apply"], "--service-manager", params["service_manager"],
            "--timeout", str(params["timeout"]), "--lock-timeout", str(params["lock_timeout"])]
    if present:
        if params["runtime_path"]:
            argv += ["--runtime-path", params["runtime_path"]]
        for arg in params["runtime_args"]:
            argv += ["--runtime-arg", arg]
        if params["default_runtime"]:
            argv.append("--default-runtime")
        if params["cdi"]:
            argv.append("--cdi")
        if params["allow_unsafe_runtime"]:
            argv.append("--allow-unsafe-runtime")
        if params["drop_in"] or params["drop_in_path"]:
            argv.append("--drop-in")
        if params["drop_in_path"]:
            argv += ["--drop-in-path", params["drop_in_path"]]
    if params["in_place"]:
        argv.append("--in-place")
    if params["force"]:
        argv.append("--force")
    if params["allow_container_restart"]:
        argv.append("--yes")
    if params["config"]:
        argv += ["--config", params["config"]]
    if params["state_dir"]:
        argv += ["--state-dir", params["state_dir"]]
    if params["restart_command"]:
        argv += ["--restart-command", params["restart_command"]]
    if check_mode:
        argv.append("--dry-run")
    return argv


def daemon_action(params, apply_report, wrote):
    """(restarted, reloaded, restart_needed) from nvdocker-setup's apply report (docs/json.md).

    The decision is the CLI's (engines/docker/apply_plan.choose_method with --apply auto); this only
    reads what it did. restart_needed: the file was written and the daemon was not made to take it,
    either because the CLI says it must be restarted and could not, or because of apply=none with
    state=absent (a removed runtime or default stays in a running dockerd until it restarts).
    """
    method = apply_report.get("method")
    restarted = method == "restart" or apply_report.get("fallback") == "restart"
    reloaded = method == "reload" and not restarted
    notes = apply_report.get("notes") or []
    could_not = any("must be restarted" in note for note in notes)
    unreachable = "not reachable" in (apply_report.get("reason") or "")
    restart_needed = bool(wrote and method == "none" and not unreachable
                          and (could_not or (params["apply"] == "none" and params["state"] == "absent")))
    return restarted, reloaded, restart_needed


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", default="present", choices=["present", "absent"]),
            engine=dict(type="str", default="docker", choices=["docker", "containerd"]),
            runtime_name=dict(type="str", default="nvidia"),
            runtime_path=dict(type="path"),
            runtime_args=dict(type="list", elements="str", default=[]),
            default_runtime=dict(type="bool", default=False),
            cdi=dict(type="bool", default=False),
            apply=dict(type="str", default="auto", choices=["auto", "reload", "restart", "none"]),
            config=dict(type="path"),
            state_dir=dict(type="path"),
            force=dict(type="bool", default=False),
            allow_container_restart=dict(type="bool", default=False),
            service_manager=dict(type="str", default="auto",
                                 choices=["auto", "systemd", "systemd-user", "snap", "signal", "command"]),
            restart_command=dict(type="str"),
            timeout=dict(type="float", default=60),
            lock_timeout=dict(type="float", default=10),
            allow_unsafe_runtime=dict(type="bool", default=False),
            in_place=dict(type="bool", default=False),
            drop_in=dict(type="bool", default=False),
            drop_in_path=dict(type="path"),
            cli_path=dict(type="path"),
        ),
        required_if=[("service_manager", "command", ["restart_command"])],
        supports_check_mode=True,
    )
    params = module.params
    if params["state"] == "absent":
        for name in ("runtime_path", "runtime_args", "default_runtime", "cdi", "allow_unsafe_runtime", "drop_in",
                     "drop_in_path"):
            if params[name]:
                module.warn("{0} is ignored with state=absent".format(name))
    cli = find_cli(module, params["cli_path"])
    argv = build_argv(cli, params, module.check_mode)
    rc, result, dummy_stdout, dummy_stderr = run_json(module, argv)
    if not result.get("ok"):
        fail_with_error(module, result, rc, argv)

    for warning in result.get("warnings") or []:
        module.warn(warning)
    apply_report = result.get("apply") or {}
    for note in apply_report.get("notes") or []:
        if "restart" in note and "yourself" in note:
            module.warn(note)

    would_change = bool(result.get("would_change"))
    changed = would_change if module.check_mode else bool(result.get("changed"))
    restarted, reloaded, restart_needed = daemon_action(params, apply_report, changed and not module.check_mode)
    if restart_needed and params["state"] == "absent" and params["apply"] == "none":
        module.warn("apply=none: the running {0} keeps the removed runtime {1!r} (and, if it was the default, its "
                    "default runtime) until it restarts: restart it (systemctl restart {2})".format(
                        "containerd" if params["engine"] == "containerd" else "dockerd", params["runtime_name"],
                        "containerd" if params["engine"] == "containerd" else "docker"))
    diff_text = result.get("diff") or ""
    returned = dict(
        changed=changed,
        config=result.get("config"),
        config_rule=result.get("config_rule"),
        would_change=would_change,
        backup=result.get("backup"),
        diff_text=diff_text,
        changes=result.get("changes") or [],
        apply=result.get("apply"),
        restarted=restarted,
        reloaded=reloaded,
        restart_needed=restart_needed,
        nvdocker=result,
    )
    if module._diff and diff_text:
        returned["diff"] = dict(prepared=diff_text)
    module.exit_json(**returned)


if __name__ == "__main__":
    main()
