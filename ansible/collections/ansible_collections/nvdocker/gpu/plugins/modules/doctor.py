#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: 2026 nvdocker-setup contributors

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: doctor
short_description: Diagnose the GPU container setup of a host with nvdocker-setup doctor
version_added: "0.1.0"
description:
  - Runs C(nvdocker-setup doctor --json) on the managed host and returns its verdict, its summary and
    every check (id, group, status C(ok), C(warn), C(fail) or C(skip), detail, hint with the fix).
  - The checks cover the NVIDIA driver, the runtime binaries, the engine's configuration file, the
    running daemon, SELinux and the CDI spec.
  - The task fails when a check failed, unless I(fail_on_problems=false).
  - The results are also set as the fact C(nvdocker_doctor) unless I(set_facts=false).
  - The module only reads; it never changes the host.
author:
  - nvdocker-setup contributors (@nvdocker-setup)
requirements:
  - nvdocker-setup on the managed host
options:
  checks:
    description:
      - Run only these checks (C(nvdocker-setup doctor --list) on a host shows the ids). Default is every
        check except the opt-in ones.
    type: list
    elements: str
    default: []
  runtime_name:
    description:
      - The runtime entry to check.
    type: str
    default: nvidia
  engine:
    description:
      - Whose configuration and daemon to check. C(auto) is the engine whose daemon runs on the host.
    type: str
    choices: [docker, containerd, auto]
    default: docker
  config:
    description:
      - The engine's configuration file to check. Default is the file the running daemon reads.
    type: path
  driver_root:
    description:
      - Where the NVIDIA driver is, laid out like C(/) (a driver installed in a container).
    type: path
  state_dir:
    description:
      - nvdocker-setup's state directory (default C(/var/lib/nvdocker-setup)).
    type: path
  smoke:
    description:
      - Also run a small container with the runtime and look for the GPUs (needs I(smoke_image) on the host's dockerd).
    type: bool
    default: false
  smoke_image:
    description:
      - The image for I(smoke), already present on the host's dockerd.
    type: str
  fail_on_problems:
    description:
      - Fail the task when a check failed. Warnings never fail it. With C(false), each failed check is
        an Ansible warning (shown in the play's output) instead.
    type: bool
    default: true
  set_facts:
    description:
      - Also return the result as the host fact C(nvdocker_doctor).
    type: bool
    default: true
  cli_path:
    description:
      - Path of the nvdocker-setup binary on the host. Default is C(nvdocker-setup) on the host's PATH.
    type: path
attributes:
  check_mode:
    support: full
    description: The doctor only reads, so it runs in check mode too.
  diff_mode:
    support: none
    description: The doctor changes nothing, so there is no diff.
seealso:
  - module: nvdocker.gpu.runtime
"""

EXAMPLES = r"""
- name: Diagnose the host; fail when something blocks GPU containers
  nvdocker.gpu.doctor:
  become: true

- name: Only the daemon.json and dockerd checks, never failing
  nvdocker.gpu.doctor:
    checks: [config-parse, config-runtime-entry, daemon-reachable, daemon-runtime-loaded]
    fail_on_problems: false
  register: doctor

- name: The containerd checks on a Kubernetes node
  nvdocker.gpu.doctor:
    engine: containerd
  become: true

- name: Show the fixes
  ansible.builtin.debug:
    msg: "{{ doctor.checks | selectattr('status', 'equalto', 'fail') | map(attribute='hint') | list }}"
"""

RETURN = r"""
ok:
  description: No check failed.
  returned: success
  type: bool
verdict:
  description:
    - The one-line verdict. C(status) is C(ready), C(warnings) or C(blocked); C(group), C(check) and
      C(detail) name the first failure that follows from no other.
  returned: success
  type: dict
  sample: {"status": "ready", "group": null, "check": null, "detail": null, "warnings": 0, "failures": 0, "consequences": 0}
summary:
  description: How many checks had each status (C(ok), C(warn), C(fail), C(skip), C(total)).
  returned: success
  type: dict
  sample: {"ok": 12, "warn": 1, "fail": 0, "skip": 3, "total": 16}
checks:
  description: Every check that ran, with C(id), C(group), C(title), C(status), C(detail), C(hint), C(data), C(cause), C(follows_from).
  returned: success
  type: list
  elements: dict
failed_checks:
  description: The ids of the checks that failed.
  returned: success
  type: list
  elements: str
warned_checks:
  description: The ids of the checks that warned.
  returned: success
  type: list
  elements: str
ansible_facts:
  description: With I(set_facts), C(nvdocker_doctor) holding I(verdict), I(summary) and I(checks).
  returned: success
  type: dict
nvdocker:
  description: nvdocker-setup's whole JSON object (docs/json.md).
  returned: always
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.nvdocker.gpu.plugins.module_utils.cli import fail_with_error, find_cli, run_json

EXIT_CHECK_FAILED = 12


def main():
    module = AnsibleModule(
        argument_spec=dict(
            checks=dict(type="list", elements="str", default=[]),
            runtime_name=dict(type="str", default="nvidia"),
            engine=dict(type="str", default="docker", choices=["docker", "containerd", "auto"]),
            config=dict(type="path"),
            driver_root=dict(type="path"),
            state_dir=dict(type="path"),
            smoke=dict(type="bool", default=False),
            smoke_image=dict(type="str"),
            fail_on_problems=dict(type="bool", default=True),
            set_facts=dict(type="bool", default=True),
            cli_path=dict(type="path"),
        ),
        supports_check_mode=True,
    )
    params = module.params
    cli = find_cli(module, params["cli_path"])
    argv = [cli, "doctor", "--json", "--runtime-name", params["runtime_name"], "--engine", params["engine"]]
    for check in params["checks"]:
        argv += ["--check", check]
    for option in ("config", "driver_root", "state_dir", "smoke_image"):
        if params[option]:
            argv += ["--" + option.replace("_", "-"), params[option]]
    if params["smoke"]:
        argv.append("--smoke")
    rc, result, dummy_stdout, dummy_stderr = run_json(module, argv)
    if "error" in result:  # doctor itself could not run (a usage error, an unknown check id ...)
        fail_with_error(module, result, rc, argv)

    checks = result.get("checks") or []
    failed = [check["id"] for check in checks if check.get("status") == "fail"]
    warned = [check["id"] for check in checks if check.get("status") == "warn"]
    returned = dict(
        changed=False,
        ok=bool(result.get("ok")),
        verdict=result.get("verdict"),
        summary=result.get("summary"),
        checks=checks,
        failed_checks=failed,
        warned_checks=warned,
        nvdocker=result,
    )
    if params["set_facts"]:
        returned["ansible_facts"] = dict(
            nvdocker_doctor=dict(verdict=result.get("verdict"), summary=result.get("summary"), checks=checks)
        )
    if failed and params["fail_on_problems"]:
        first = [check for check in checks if check.get("status") == "fail"][0]
        module.fail_json(
            msg="nvdocker-setup doctor: {0} check(s) failed, first {1}: {2}".format(
                len(failed), first.get("id"), first.get("detail")),
            rc=rc if rc else EXIT_CHECK_FAILED,
            hint=first.get("hint"),
            **returned
        )
    for check in checks:  # not failing the task: the failures are still in the play's output
        if check.get("status") == "fail":
            module.warn("nvdocker-setup doctor: {0} failed: {1} (fix: {2})".format(
                check.get("id"), check.get("detail"), check.get("hint") or "see its hint"))
    module.exit_json(**returned)


if __name__ == "__main__":
    main()
