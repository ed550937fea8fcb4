"""Drop-in mode end to end on real containerd 1.6, 1.7 (refused: they replace imported plugin tables) and 2.1
(merged): install --drop-in -> CRI Status shows the handler, `config dump` unchanged apart from it; a second
install writes and restarts nothing; uninstall gives config.toml's bytes back and removes the drop-in; a
failed apply rolls back both files."""

import os
import sys

import pytest

from tests.containerd.test_engine_e2e import executable, node  # noqa: F401,F811 (the module fixture)

pytestmark = pytest.mark.containerd


def _dump(node):  # noqa: F811
    import tomlkit

    value = tomlkit.parse(node.daemon.config_dump()).unwrap()
    value.pop("imports", None)
    return value


def _install(node, *extra):  # noqa: F811
    daemon = node.daemon
    return node.cli("install", "--engine", "containerd", "--config", daemon.config_path, "--drop-in",
                    "--runtime-path", node.wrapper, "--service-manager", "systemd", "--timeout", "30", *extra)


def test_drop_in_install_reinstall_uninstall(node):  # noqa: F811
    daemon = node.daemon
    original = open(daemon.config_path, "rb").read()
    drop_in = os.path.join(os.path.dirname(daemon.config_path), "conf.d", "99-nvdocker.toml")
    before = _dump(node)
    code, data = _install(node)
    if daemon.release.name in ("1.6", "1.7"):
        assert code != 0 and data["error"]["id"] == "containerd-drop-in-replaces-tables", data
        assert open(daemon.config_path, "rb").read() == original and not os.path.exists(drop_in)
        return
    assert code == 0, data
    assert data["files"] == [drop_in, daemon.config_path] and set(data["backups"]) == set(data["files"])
    assert data["apply"]["verified"] is True, data["apply"]
    live = node.handlers()
    assert live["nvidia"]["binary_name"] == node.wrapper and "runc" in live
    after = _dump(node)
    after["plugins"]["io.containerd.cri.v1.runtime"]["containerd"]["runtimes"].pop("nvidia")
    assert after == before
    restarts = node.restarts()
    code, again = _install(node)
    assert code == 0 and again["changed"] is False and again["files"] == [], again
    assert node.restarts() == restarts
    code, undone = node.cli("uninstall", "--engine", "containerd", "--config", daemon.config_path,
                            "--service-manager", "systemd", "--timeout", "30")
    assert code == 0, undone
    assert undone["files"] == [daemon.config_path, drop_in], undone
    assert open(daemon.config_path, "rb").read() == original
    assert not os.path.exists(drop_in) and not os.path.exists(os.path.dirname(drop_in))
    assert "nvidia" not in node.handlers()


def test_drop_in_failed_apply_rolls_back_both(node):  # noqa: F811
    daemon = node.daemon
    if daemon.release.name != "2.1":
        pytest.skip("drop-ins are refused before containerd 2.1")
    original = open(daemon.config_path, "rb").read()
    drop_in = os.path.join(os.path.dirname(daemon.config_path), "conf.d", "99-nvdocker.toml")
    count = os.path.join(node.work, "dropin-restart-count")
    script = executable(os.path.join(node.work, "flaky-restart-dropin"), (
        "#!/bin/sh\nn=$(cat {count} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {count}\n"
        "if [ $n -eq 1 ]; then exec {python} -m tests.support.containerd stop {dir}; fi\n"
        "exec {python} -m tests.support.containerd start {dir}\n"
    ).format(count=count, python=sys.executable, dir=daemon.workdir))
    code, data = node.cli("install", "--engine", "containerd", "--config", daemon.config_path, "--drop-in",
                          "--runtime-path", node.wrapper, "--service-manager", "command",
                          "--restart-command", script, "--timeout", "5")
    assert code == 10, data
    assert open(daemon.config_path, "rb").read() == original
    assert not os.path.exists(drop_in)
    assert daemon.is_running() and "nvidia" not in node.handlers()
