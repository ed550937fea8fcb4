# -*- coding: utf-8 -*-
# Copyright: 2026 nvdocker-setup contributors
"""Run nvdocker-setup with --json on the managed host and read its one JSON object.

The CLI is the engine: it locks, backs up, validates, writes atomically, applies to the running
daemon, verifies and rolls back. The modules only build its command line and translate its JSON
(docs/json.md of nvdocker-setup: an envelope with ``ok``; on failure an ``error`` object with a
stable ``id``, ``message``, ``details``, ``hint`` and ``exit_code``).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

#: The exit statuses of nvdocker-setup (README, "Exit codes") that say where the host is left.
EXIT_ROLLED_BACK = 10  # the daemon did not take the change; the previous file is back, the daemon healthy
EXIT_ROLLBACK_FAILED = 11  # the previous file is back, but the daemon did not come back on it
EXIT_INTERRUPTED = 130
#: Errors found before anything was written: the file was left as it was.
EXIT_NOTHING_WRITTEN = (2, 3, 4, 5, 6, 7, 8, 9)


def find_cli(module, cli_path):
    """The nvdocker-setup binary: ``cli_path`` when given, else the one on the host's PATH."""
    if cli_path:
        return cli_path
    found = module.get_bin_path("nvdocker-setup", required=False, opt_dirs=["/usr/sbin", "/usr/local/bin"])
    if not found:
        module.fail_json(
            msg="nvdocker-setup is not installed on this host (not on PATH)",
            error_id="cli-missing",
            hint="install the nvdocker-setup package (the nvdocker.gpu.setup role does), or set cli_path",
        )
    return found


def host_state_after_error(exit_code):
    """What an error leaves on the host: 'unchanged', 'rolled-back', 'rolled-back-daemon-down' or 'unknown'."""
    if exit_code == EXIT_ROLLED_BACK:
        return "rolled-back"
    if exit_code == EXIT_ROLLBACK_FAILED:
        return "rolled-back-daemon-down"
    if exit_code in EXIT_NOTHING_WRITTEN:
        return "unchanged"
    return "unknown"


def run_json(module, argv, environ_update=None):
    """Run the CLI; (rc, parsed object, stdout, stderr). A missing or unreadable object fails the task."""
    env = {"LC_ALL": "C.UTF-8", "LANG": "C.UTF-8", "NO_COLOR": "1"}
    env.update(environ_update or {})
    rc, stdout, stderr = module.run_command(argv, environ_update=env, check_rc=False)
    try:
        result = json.loads(stdout)
    except ValueError:
        result = None
    if not isinstance(result, dict) or "ok" not in result:
        module.fail_json(
            msg="nvdocker-setup did not print its JSON object (exit {0})".format(rc),
            error_id="no-json-output",
            cmd=argv,
            rc=rc,
            stdout=stdout,
            stderr=stderr,
        )
    return rc, result, stdout, stderr


def fail_with_error(module, result, rc, argv, **extra):
    """Fail the task with nvdocker-setup's error id, message, details and hint."""
    error = result.get("error") or {}
    exit_code = error.get("exit_code", rc)
    state = host_state_after_error(exit_code)
    message = error.get("message") or "nvdocker-setup failed (exit {0})".format(rc)
    module.fail_json(
        msg="{0} ({1})".format(message, error.get("id", "unknown")),
        error_id=error.get("id"),
        error_message=message,
        details=error.get("details") or [],
        hint=error.get("hint"),
        rc=exit_code,
        cmd=argv,
        host_state=state,
        rolled_back=state in ("rolled-back", "rolled-back-daemon-down"),
        config_restored=state in ("rolled-back", "rolled-back-daemon-down"),
        daemon_running=None if state in ("unknown", "unchanged") else state == "rolled-back",
        nvdocker=result,
        **extra
    )
