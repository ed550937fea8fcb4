"""The node agent's logic against a temp host root (no daemon: --service-manager none), its service
manager's argv, and the CLI verb."""

import json
import os
import subprocess
from pathlib import Path

import pytest

from nvdocker_setup import node_agent as agent
from nvdocker_setup.context import Context
from nvdocker_setup.errors import UsageError

DAEMON_JSON = b'{\n  "log-level": "warn",\n  "runtimes": {"other": {"path": "/usr/bin/other"}}\n}\n'
CONFIG_TOML = b'version = 2\n\n# the admin\'s comment\n[plugins."io.containerd.grpc.v1.cri".containerd]\n  snapshotter = "overlayfs"\n'


def _launcher(tmp_path: Path, install_dir: str = agent.DEFAULT_INSTALL_DIR) -> str:
    path = tmp_path / "image" / "nvdocker-runtime"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x7fELF fake launcher\0" + agent.runtime_script(install_dir).encode() + b"\0tail")
    path.chmod(0o755)
    return str(path)


def _options(tmp_path: Path, engine: str = "docker", **overrides) -> agent.AgentOptions:
    values = dict(
        engine=engine, host_root=str(tmp_path / "host"), launcher=_launcher(tmp_path),
        ready_file=str(tmp_path / "pod" / "ready"), service_manager="none",
    )
    values.update(overrides)
    return agent.AgentOptions(**values)


class Lines:
    def __init__(self):
        self.lines = []

    def write(self, text):
        self.lines.extend(line for line in text.splitlines() if line)

    def flush(self):
        pass

    def events(self):
        return [json.loads(line) for line in self.lines]


def _host(tmp_path: Path, engine: str = "docker") -> Path:
    host = tmp_path / "host"
    config = host / agent.DEFAULT_CONFIGS[engine].lstrip("/")
    config.parent.mkdir(parents=True)
    config.write_bytes(DAEMON_JSON if engine == "docker" else CONFIG_TOML)
    return config


def _tree(root: Path):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_paths_map_host_paths_below_the_host_root():
    paths = agent.HostPaths("/host")
    assert paths.pod("/etc/containerd/config.toml") == "/host/etc/containerd/config.toml"
    assert paths.pod("/usr/local/nvdocker/../nvdocker/bin") == "/host/usr/local/nvdocker/bin"
    assert agent.HostPaths("/").pod("/etc/docker/daemon.json") == "/etc/docker/daemon.json"
    with pytest.raises(UsageError):
        paths.pod("etc/docker")


def test_options_are_checked():
    for bad in (dict(engine="podman"), dict(service_manager="openrc"), dict(host_exec="ssh"),
                dict(service_manager="command"), dict(install_dir="usr/local"), dict(config="daemon.json")):
        with pytest.raises(UsageError):
            agent.AgentOptions(**bad).check()
    options = agent.AgentOptions()
    assert options.config_path == "/etc/containerd/config.toml"
    assert options.socket_path == "/run/containerd/containerd.sock"
    assert options.runtime_path == "/usr/local/nvdocker/bin/nvdocker-runtime"


def test_source_files_are_the_launcher_and_the_toolkit_modules(tmp_path):
    options = _options(tmp_path)
    files = agent.source_files(options)
    lib = "/usr/local/nvdocker/lib/nvdocker_setup/"
    assert files["/usr/local/nvdocker/bin/nvdocker-runtime"] == options.launcher
    for needed in ("__init__.py", "runtime/__main__.py", "runtime/main.py", "hook/__main__.py", "driver/model.py"):
        assert lib + needed in files
    assert not any("/cli/" in path or "__pycache__" in path or "/engines/" in path for path in files)


def test_a_launcher_built_for_another_install_dir_is_refused(tmp_path):
    options = _options(tmp_path, install_dir="/opt/gpu")
    with pytest.raises(UsageError) as raised:
        agent.check_launcher(options)
    assert raised.value.reference == "node-agent-launcher"
    agent.check_launcher(_options(tmp_path, install_dir="/opt/gpu", launcher=_launcher(tmp_path / "x", "/opt/gpu")))


def test_files_are_copied_once_and_undone_exactly(tmp_path):
    options = _options(tmp_path)
    host = tmp_path / "host"
    # a file of ours from an older version is already there: it is replaced, and comes back on undo
    old_init = host / "usr/local/nvdocker/lib/nvdocker_setup/__init__.py"
    old_init.parent.mkdir(parents=True)
    old_init.write_bytes(b"# older\n")
    before = _tree(host)
    ctx = Context(root=str(host), state_dir=str(host / "var/lib/nvdocker-setup"))
    files = agent.HostFiles(ctx, agent.HostPaths(str(host)))
    sources = agent.source_files(options)
    first = files.copy(sources)
    assert len(first.copied) == len(sources) and not first.unchanged
    runtime = host / "usr/local/nvdocker/bin/nvdocker-runtime"
    assert runtime.read_bytes() == Path(options.launcher).read_bytes()
    assert runtime.stat().st_mode & 0o7777 == 0o755
    assert (host / "usr/local/nvdocker/lib/nvdocker_setup/runtime/main.py").stat().st_mode & 0o7777 == 0o644
    if os.geteuid() == 0:
        assert runtime.stat().st_uid == 0 and runtime.stat().st_gid == 0
    mtimes = {p: p.stat().st_mtime_ns for p in host.rglob("*.py")}
    second = files.copy(sources)
    assert second.copied == [] and len(second.unchanged) == len(sources)
    assert {p: p.stat().st_mtime_ns for p in host.rglob("*.py")} == mtimes
    undone = files.undo()
    assert old_init.read_bytes() == b"# older\n"
    assert undone.restored == ["/usr/local/nvdocker/lib/nvdocker_setup/__init__.py"]
    state = host / "var/lib/nvdocker-setup"
    assert [p for p in _tree(host) if not p.startswith("var")] == before
    assert list(state.iterdir()) == []


@pytest.mark.parametrize("engine", ["docker", "containerd"])
def test_setup_and_teardown_against_a_host_root(tmp_path, engine):
    config = _host(tmp_path, engine)
    original = config.read_bytes()
    options = _options(tmp_path, engine)
    host = tmp_path / "host"
    out = Lines()
    node = agent.NodeAgent(options, agent.Log(True, out))
    assert node.ctx.state_dir == str(host / "var/lib/nvdocker-setup")
    result = node.setup()
    assert result.changed
    written = config.read_bytes()
    assert b"/usr/local/nvdocker/bin/nvdocker-runtime" in written  # the host's path, not the pod's
    assert str(host).encode() not in written
    assert json.loads(Path(options.ready_file).read_text())["runtime_path"] == options.runtime_path
    assert [e["event"] for e in out.events()] == ["files", "install", "ready"]
    for line in out.lines:  # compact JSON, one object per line (what log shippers read)
        assert line == json.dumps(json.loads(line), sort_keys=True, separators=(",", ":"), ensure_ascii=False), line

    again = agent.NodeAgent(options, agent.Log(True, out)).setup()  # a restarted pod: nothing to do
    assert not again.changed and config.read_bytes() == written
    assert out.events()[-3]["copied"] == []

    undone = node.teardown()
    assert undone is not None and undone.changed
    assert config.read_bytes() == original
    assert not os.path.exists(options.ready_file)
    assert not (host / "usr/local/nvdocker").exists()
    assert out.events()[-1]["event"] == "files" and out.events()[-1]["removed"]


def test_teardown_leaves_an_entry_that_is_not_ours(tmp_path):
    config = _host(tmp_path, "docker")
    theirs = b'{"runtimes": {"nvidia": {"path": "/usr/bin/nvidia-container-runtime"}}}\n'
    config.write_bytes(theirs)
    out = Lines()
    node = agent.NodeAgent(_options(tmp_path), agent.Log(False, out))
    assert node.teardown() is None
    assert config.read_bytes() == theirs
    assert "nothing to undo" in out.lines[0]


def test_host_systemd_runs_systemctl_in_the_hosts_namespaces(tmp_path):
    calls = []

    def run(argv, timeout=30.0, env=None):
        calls.append(list(argv))
        return subprocess.CompletedProcess(argv, 0, "", "")

    options = _options(tmp_path, "containerd", service_manager="systemd", host_pid=4242, systemctl="/x/systemctl")
    ctx = Context(root=str(tmp_path), run=run)
    service = agent.make_service(ctx, options)
    assert isinstance(service, agent.HostSystemdService)
    service.restart()
    assert calls[-1] == ["nsenter", "-t", "4242", "-m", "-u", "-i", "-n", "-p", "--", "/x/systemctl", "restart",
                         "containerd.service"]
    chroot = agent.make_service(ctx, _options(tmp_path, "docker", service_manager="systemd", host_exec="chroot"))
    chroot.reload()
    assert calls[-1] == ["chroot", str(tmp_path / "host"), "systemctl", "reload", "docker.service"]


def test_context_maps_the_socket_and_state(tmp_path):
    options = _options(tmp_path, "containerd", socket="/run/containerd/c.sock")
    ctx = agent.make_context(options, env={})
    assert ctx.containerd_socket == str(tmp_path / "host/run/containerd/c.sock")
    assert ctx.docker_socket is None and ctx.root == str(tmp_path / "host")
    assert agent.make_context(_options(tmp_path, "docker"), env={}).docker_socket == str(tmp_path / "host/var/run/docker.sock")


def test_cli_reports_a_usage_error_as_json(tmp_path):
    from typer.testing import CliRunner

    from nvdocker_setup.cli.main import app

    result = CliRunner().invoke(app, ["node-agent", "--json", "--engine", "podman", "--host-root", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert json.loads(result.output)["error"]["id"] == "usage"


def test_node_agent_errors_are_one_json_line_and_other_verbs_stay_indented(tmp_path):
    """A pod's log is read line by line (issue #22): the agent's error object is one line; the next
    verb in the same process prints its indented JSON as before."""
    from typer.testing import CliRunner

    from nvdocker_setup.cli.main import app

    runner = CliRunner()
    result = runner.invoke(app, ["node-agent", "--json", "--host-root", str(tmp_path), "--launcher",
                                 str(tmp_path / "missing"), "--service-manager", "none"])
    assert result.exit_code == 2, result.output
    lines = result.output.splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["error"]["id"] == "usage", result.output
    other = runner.invoke(app, ["show", "--json", "--config", str(tmp_path / "daemon.json")])
    assert other.output.startswith("{\n  "), other.output
