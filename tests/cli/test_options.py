"""Options (issue #13 items 3 and 4): closed sets are choices checked before anything runs, help
reads well on every typer version, completion works through the packaged scripts, click's own
usage errors look like ours, and nvidia-ctk's spelling maps onto install."""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from nvdocker_setup.adapters.service import MANAGERS
from nvdocker_setup.cli import options
from nvdocker_setup.engines.docker.apply_plan import APPLY_MODES
from nvdocker_setup.exit_status import ExitStatus

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VERBS = [("install",), ("uninstall",), ("show",), ("restore",), ("doctor",), ("backups", "list"),
         ("cdi", "generate"), ("cdi", "list"), ("runtime", "configure")]


def test_choices_are_the_sets_the_code_accepts():
    assert tuple(options.ApplyMode.values()) == APPLY_MODES
    assert tuple(options.ServiceManagerName.values()) == MANAGERS
    assert str(options.ApplyMode.none) == "none" and str(options.ServiceManagerName.systemd_user) == "systemd-user"


@pytest.mark.parametrize("verb", VERBS, ids=lambda v: " ".join(v))
def test_help_has_no_default_none_and_no_split_words(cli, verb):
    outcome = cli(*verb, "--help", env={"COLUMNS": "80"})
    assert outcome.exit_code == 0, outcome.stderr
    assert "[default: None]" not in outcome.stdout
    assert "Mode." not in outcome.stdout and "ServiceManagerName." not in outcome.stdout
    if verb in (("install",), ("uninstall",)):
        flat = " ".join(outcome.stdout.split())
        for value in APPLY_MODES + MANAGERS:
            assert re.search(r"(?<![\w-]){}(?![\w-])".format(re.escape(value)), outcome.stdout), value
        assert "[default: auto]" in flat
        assert "--allow-unsafe-runtime" in outcome.stdout or verb == ("uninstall",)


def test_no_install_completion_option(cli):
    outcome = cli("--help")
    assert outcome.exit_code == 0
    assert "--install-completion" not in outcome.stdout and "--show-completion" not in outcome.stdout


def test_config_help_says_what_the_verb_does_with_it(cli):
    for verb, word in (("install", "to edit"), ("show", "to read"), ("doctor", "to check")):
        flat = " ".join(cli(verb, "--help").stdout.split())
        assert "config file {}".format(word) in flat, verb


@pytest.mark.parametrize(
    "args",
    [
        ("install", "--service-manager", "openrc", "--apply", "none"),
        ("install", "--service-manager", "openrc", "--dry-run"),
        ("install", "--apply", "bogus", "--dry-run"),
        ("uninstall", "--apply", "Reload"),
        ("install", "--service-manager", "command", "--apply", "none"),
    ],
)
def test_bad_values_are_refused_before_anything_runs(cli, args):
    outcome = cli.install(*args[1:]) if args[0] == "install" else cli(*args)
    assert outcome.exit_code == ExitStatus.USAGE, outcome.stderr
    assert not cli.config.exists() and not cli.state_dir.exists()
    lines = outcome.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and lines[0].endswith("(usage)"), outcome.stderr
    assert lines[-1].startswith("hint: ")
    assert "Usage:" not in outcome.stderr and "╭" not in outcome.stderr  # not click's/typer's own box


def test_usage_error_without_json_is_text_and_with_json_is_an_object(cli):
    text = cli("install", "--bogus")
    assert text.exit_code == 2 and text.stdout == "" and "No such option" in text.stderr
    assert text.stderr.startswith("error: ") and "(usage)" in text.stderr
    data = cli("install", "--json", "--apply", "bogus")
    assert data.exit_code == 2 and data.json["ok"] is False and data.json["error"]["id"] == "usage"
    assert data.json["error"]["exit_code"] == 2 and "--apply" in data.json["error"]["message"]
    # after "--", "--json" is an argument (a backup name here), not the option: text, not JSON
    literal = cli("restore", "--", "--json")
    assert literal.exit_code != 0 and literal.stdout == "" and literal.stderr.startswith("error: ")


def test_no_such_command_is_a_usage_error(cli):
    outcome = cli("instal")
    assert outcome.exit_code == 2 and outcome.stderr.startswith("error: ")


def test_bare_group_still_prints_its_help(cli):
    outcome = cli("backups")
    assert outcome.exit_code in (0, 2) and "list" in outcome.stdout + outcome.stderr
    assert "error:" not in outcome.stderr


def test_force_and_allow_unsafe_runtime_are_separate(cli, tmp_path):
    missing = str(tmp_path / "bin" / "absent-runtime")
    cli.config.write_bytes(b'{"runtimes": {"kata": {"path": "/k"}}, "default-runtime": "kata"}')
    # --force replaces another default, but does not make a missing default runtime acceptable
    forced = cli("install", "--runtime-path", missing, "--default-runtime", "--force", "--json")
    assert forced.exit_code == ExitStatus.TRUST_CHECK_FAILED and forced.json["error"]["id"] == "runtime-missing"
    assert "--allow-unsafe-runtime" in forced.json["error"]["hint"]
    # --allow-unsafe-runtime accepts the binary, but does not take over kata's place
    unsafe = cli("install", "--runtime-path", missing, "--default-runtime", "--allow-unsafe-runtime", "--json")
    assert unsafe.exit_code == ExitStatus.CONFLICT
    both = cli("install", "--runtime-path", missing, "--default-runtime", "--allow-unsafe-runtime", "--force", "--json")
    assert both.exit_code == 0 and json.loads(cli.config.read_text())["default-runtime"] == "nvidia"


# -- nvidia-ctk's spelling --------------------------------------------------------------------------


def test_runtime_configure_maps_onto_install(cli):
    cli.config.write_bytes(b'{"log-driver": "json-file"}\n')
    done = cli("runtime", "configure", "--runtime=docker", "--set-as-default", "--cdi.enabled",
               "--config", str(cli.config), "--nvidia-runtime-path", cli.runtime, "--json")
    assert done.exit_code == 0, done.stdout
    written = json.loads(cli.config.read_text())
    assert written["runtimes"]["nvidia"] == {"path": cli.runtime}  # no "args" key, as nvidia-ctk writes
    assert written["default-runtime"] == "nvidia" and written["features"] == {"cdi": True}
    assert done.json["backup"] and done.json["action"] == "install"
    assert cli("uninstall").exit_code == 0
    assert cli.config.read_bytes() == b'{"log-driver": "json-file"}\n'


def test_runtime_configure_dry_run_writes_nothing(cli):
    done = cli("runtime", "configure", "--dry-run", "--runtime-path", cli.runtime)
    assert done.exit_code == 0 and "+" in done.stdout and not cli.config.exists()


@pytest.mark.parametrize("engine, words", [("crio", ["not supported"])])
def test_runtime_configure_other_engines_are_usage_errors(cli, engine, words):
    outcome = cli("runtime", "configure", "--runtime", engine)
    assert outcome.exit_code == ExitStatus.USAGE and outcome.stderr.startswith("error: ")
    for word in words:
        assert word in outcome.stderr
    assert not cli.config.exists()


def test_runtime_configure_refuses_to_take_over_nvidia_ctk_entry(cli):
    ctk = b'{"runtimes": {"nvidia": {"args": [], "path": "nvidia-container-runtime"}}}'
    cli.config.write_bytes(ctk)
    outcome = cli("runtime", "configure", "--runtime-path", cli.runtime, "--json")
    assert outcome.exit_code == ExitStatus.CONFLICT and outcome.json["error"]["id"] == "runtime-entry-foreign"
    assert cli.config.read_bytes() == ctk


def test_install_accepts_nvidia_ctk_flags_hidden(cli):
    assert "--set-as-default" not in cli("install", "--help").stdout
    done = cli.install("--set-as-default", "--cdi.enabled", "--json")
    assert done.exit_code == 0, done.stdout
    written = json.loads(cli.config.read_text())
    assert written["default-runtime"] == "nvidia" and written["features"] == {"cdi": True}


# -- completion through the packaged bash script ------------------------------------------------------


@pytest.fixture
def complete(tmp_path):
    if not shutil.which("bash"):
        pytest.skip("bash is not installed")
    bindir = tmp_path / "completion-bin"
    bindir.mkdir()
    wrapper = bindir / "nvdocker-setup"
    wrapper.write_text("#!/bin/sh\nexec {} -m nvdocker_setup \"$@\"\n".format(sys.executable))
    wrapper.chmod(0o755)
    script = os.path.join(REPO, "completions", "bash", "nvdocker-setup")

    def run(*words, env=None):
        line = ". {}; COMP_WORDS=({}); COMP_CWORD={}; _nvdocker_setup nvdocker-setup; printf '%s\\n' \"${{COMPREPLY[@]}}\"".format(
            script, " ".join("'{}'".format(w) for w in words), len(words) - 1)
        environ = dict(os.environ, PATH="{}:{}".format(bindir, os.environ.get("PATH", "")), PYTHONPATH=REPO)
        environ.update(env or {})
        done = subprocess.run(["bash", "-c", line], env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    return run


def test_completion_of_choices_and_check_ids(complete):
    assert complete("nvdocker-setup", "install", "--apply", "") == list(APPLY_MODES)
    assert complete("nvdocker-setup", "uninstall", "--service-manager", "sys") == ["systemd", "systemd-user"]
    checks = complete("nvdocker-setup", "doctor", "--check", "config-")
    assert "config-parse" in checks and all(c.startswith("config-") for c in checks)
    assert complete("nvdocker-setup", "runtime", "configure", "--runtime", "") == ["docker", "containerd", "crio"]
    assert "--allow-unsafe-runtime" in complete("nvdocker-setup", "install", "--allow")


def test_completion_of_backup_names(cli, complete, tmp_path):
    cli.config.write_bytes(b"{}")
    assert cli.install().exit_code == 0
    names = [p.name[:-5] for p in (cli.state_dir / "backups").glob("*.json") if p.name != "manifest.json"]
    assert len(names) == 1
    env = {"NVDOCKER_STATE_DIR": str(cli.state_dir)}
    assert complete("nvdocker-setup", "restore", "", env=env) == names
    assert complete("nvdocker-setup", "restore", "--state-dir", str(cli.state_dir), "") == names
    assert complete("nvdocker-setup", "restore", "zzz", env=env) == []
    # a state dir that may not be trusted completes nothing, and says nothing
    os.chmod(str(cli.state_dir), 0o777)
    assert complete("nvdocker-setup", "restore", "", env=env) == []
    assert complete("nvdocker-setup", "restore", "", env={"NVDOCKER_STATE_DIR": str(tmp_path / "absent")}) == []


def test_zsh_protocol_completes_values():
    """completions/zsh/_nvdocker-setup evals what this prints (typer's zsh protocol)."""
    env = dict(os.environ, PYTHONPATH=REPO, _NVDOCKER_SETUP_COMPLETE="complete_zsh",
               _TYPER_COMPLETE_ARGS="nvdocker-setup uninstall --service-manager ")
    done = subprocess.run([sys.executable, "-m", "nvdocker_setup"], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=60)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert done.stdout.startswith("_arguments") and '"systemd-user"' in done.stdout and '"command"' in done.stdout
