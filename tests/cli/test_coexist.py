"""Coexisting with what is already on the host: NVIDIA's own runtime entry (issue #14)."""

import json

import pytest

from nvdocker_setup.exit_status import ExitStatus

#: What `nvidia-ctk runtime configure --runtime=docker [--set-as-default]` writes.
CTK = {"runtimes": {"nvidia": {"args": [], "path": "nvidia-container-runtime"}}}


@pytest.mark.parametrize("default", [False, True], ids=["entry", "entry-and-default"])
def test_a_stock_nvidia_ctk_entry_is_a_conflict_and_nothing_is_written(cli, default):
    value = dict(CTK, **({"default-runtime": "nvidia"} if default else {}))
    original = json.dumps(value, indent=4).encode()
    cli.config.write_bytes(original)
    outcome = cli.install("--json")
    assert outcome.exit_code == ExitStatus.CONFLICT, outcome.stdout
    error = outcome.json["error"]
    assert error["id"] == "runtime-entry-foreign"
    assert '{"args": [], "path": "nvidia-container-runtime"}' in error["message"]
    assert "--runtime-name nvdocker" in error["hint"]
    assert cli.config.read_bytes() == original
    assert not (cli.state_dir / "backups" / "manifest.json").exists() or cli("backups", "list", "--json").json["backups"] == []

    beside = cli.install("--runtime-name", "nvdocker", "--json")
    assert beside.exit_code == 0, beside.stdout
    after = json.loads(cli.config.read_text())
    assert after["runtimes"]["nvidia"] == CTK["runtimes"]["nvidia"]
    assert after["runtimes"]["nvdocker"] == {"path": cli.runtime}
    assert after.get("default-runtime") == value.get("default-runtime")
    assert cli("uninstall", "--runtime-name", "nvdocker").exit_code == 0
    assert cli.config.read_bytes() == original


def test_force_replaces_it_and_uninstall_puts_it_back(cli):
    original = json.dumps(CTK).encode()
    cli.config.write_bytes(original)
    outcome = cli.install("--force", "--json")
    assert outcome.exit_code == 0
    assert any('"path": "nvidia-container-runtime"' in w for w in outcome.json["warnings"])
    assert cli("uninstall").exit_code == 0
    assert cli.config.read_bytes() == original


def test_a_pip_console_script_as_runtime_is_registered_with_a_warning(cli, tmp_path):
    script = tmp_path / "bin" / "nvdocker-runtime-pip"
    script.write_text("#!/usr/bin/python3\nimport sys\nfrom nvdocker_setup.runtime.main import main\nsys.exit(main())\n")
    script.chmod(0o755)
    outcome = cli("install", "--runtime-path", str(script), "--json")
    assert outcome.exit_code == 0, outcome.stdout
    assert any("Python script" in w and "C launcher" in w for w in outcome.json["warnings"])
    plain = cli.install("--runtime-name", "other", "--json")  # the C launcher stand-in: no such warning
    assert not any("Python script" in w for w in plain.json["warnings"])
