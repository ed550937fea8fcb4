"""The Ansible modules pass every option their hints name to the CLI (issue #22, item 6):
nvdocker.gpu.runtime's allow_unsafe_runtime, in_place, drop_in, drop_in_path; nvdocker.gpu.doctor's
engine, and a failed check is a warning when fail_on_problems is false. The modules run the way
Ansible runs them (their own file, arguments in a JSON file, the system python3 with Debian's
ansible-core); the CLI is a recorder that answers what nvdocker-setup would."""

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
COLLECTIONS = REPO / "ansible" / "collections"
MODULES = COLLECTIONS / "ansible_collections" / "nvdocker" / "gpu" / "plugins" / "modules"
SYSTEM_PYTHON = "/usr/bin/python3"


@pytest.fixture(autouse=True)
def ansible():
    done = subprocess.run([SYSTEM_PYTHON, "-c", "import ansible.module_utils.basic"], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
    if done.returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true: the system python3 has no ansible-core")
        pytest.skip("the system python3 has no ansible-core")


def recorder(tmp_path, answer):
    (tmp_path / "answer.json").write_text(json.dumps(answer))
    cli = tmp_path / "nvdocker-setup"
    cli.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > {}\ncat {}\n'.format(tmp_path / "argv", tmp_path / "answer.json"))
    cli.chmod(0o755)
    return str(cli)


def run_module(tmp_path, name, **params):
    args = tmp_path / "args.json"
    args.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": params}))
    done = subprocess.run([SYSTEM_PYTHON, str(MODULES / (name + ".py")), str(args)], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, env=dict(os.environ, PYTHONPATH=str(COLLECTIONS)), timeout=120)
    return json.loads(done.stdout), (tmp_path / "argv").read_text().splitlines()


def test_the_runtime_module_passes_the_options_its_hints_name(tmp_path):
    cli = recorder(tmp_path, {"ok": True, "changed": False, "would_change": False, "config": "/etc/containerd/config.toml"})
    result, argv = run_module(tmp_path, "runtime", cli_path=cli, engine="containerd", allow_unsafe_runtime=True,
                              in_place=True, drop_in_path="/etc/containerd/conf.d/99-nvdocker.toml")
    assert not result.get("failed"), result
    assert argv[0] == "install" and "--allow-unsafe-runtime" in argv and "--in-place" in argv and "--drop-in" in argv
    assert argv[argv.index("--drop-in-path") + 1] == "/etc/containerd/conf.d/99-nvdocker.toml"
    result, argv = run_module(tmp_path, "runtime", cli_path=cli, state="absent", in_place=True, drop_in=True)
    assert argv[0] == "uninstall" and "--in-place" in argv and "--drop-in" not in argv
    assert any("drop_in is ignored" in warning for warning in result.get("warnings", [])), result


def test_the_doctor_module_takes_the_engine_and_warns_about_failures_it_does_not_fail_on(tmp_path):
    answer = {"ok": False, "verdict": {"status": "blocked"}, "summary": {"fail": 1},
              "checks": [{"id": "ctd-handler", "status": "fail", "detail": "no handler nvidia",
                          "hint": "nvdocker-setup install --engine containerd"},
                         {"id": "driver-loaded", "status": "ok", "detail": "550.54.14"}]}
    cli = recorder(tmp_path, answer)
    result, argv = run_module(tmp_path, "doctor", cli_path=cli, engine="containerd", fail_on_problems=False)
    assert argv[argv.index("--engine") + 1] == "containerd"
    assert not result.get("failed") and result["failed_checks"] == ["ctd-handler"]
    assert any("ctd-handler failed: no handler nvidia" in warning for warning in result.get("warnings", [])), result
    failing, _ = run_module(tmp_path, "doctor", cli_path=cli, engine="containerd")
    assert failing.get("failed") and "ctd-handler" in failing["msg"]
