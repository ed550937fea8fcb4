"""Never take a running dockerd down, with Docker 26.1's own ``dockerd --validate`` (given the running
daemon's flags) as a judge of the new file and of the file a rollback would restore (issue #19, item 6)."""

import os

import pytest

from nvdocker_setup import operations
from nvdocker_setup.apply import ApplyOptions
from nvdocker_setup.context import Context
from nvdocker_setup.core.plan import InstallRequest
from nvdocker_setup.errors import WouldNotStart
from tests.support.newer_docker import docker26_or_skip, sandbox26, search_path
from tests.support.sandbox import SandboxService

pytestmark = pytest.mark.dockerd

GOOD = b'{\n  "log-level": "warn",\n  "labels": ["site=lab"]\n}\n'
NO_SUCH_OPTION = "the following directives don't match any configuration option"
BOTH = "the following directives are specified both as a flag and in the configuration file"


@pytest.fixture(scope="module")
def docker26_dir():
    return docker26_or_skip()


@pytest.fixture
def box26(tmp_path, docker26_dir):
    box = sandbox26(docker26_dir, str(tmp_path / "d"), GOOD)
    box.start()
    yield box
    box.close()


def _ctx(tmp_path, docker26_dir, box):
    return Context(state_dir=str(tmp_path / "state"), docker_socket=box.socket_path, service=SandboxService(box),
                   env=dict(os.environ, PATH=search_path(docker26_dir), DOCKER_HOST=box.docker_host))


def _read(path):
    with open(path, "rb") as handle:
        return handle.read()


@pytest.mark.parametrize("added,dockerd_says,hint_start", [
    (b'"not-a-docker-key": true', NO_SUCH_OPTION + ": not-a-docker-key", 'remove "not-a-docker-key" from '),
    (b'"hosts": ["unix:///tmp/nvd-never26.sock"]', BOTH, "remove 'hosts' from "),
], ids=["unknown-key", "hosts-and-H"])
def test_dockerd_26_validate_judges_the_rollback_file(tmp_path, docker26_dir, box26, runtime_binary, added,
                                                      dockerd_says, hint_start):
    changed = GOOD.replace(b'"log-level"', added + b',\n  "log-level"')
    with open(box26.config_path, "wb") as handle:
        handle.write(changed)
    pid = box26.pid
    ctx = _ctx(tmp_path, docker26_dir, box26)
    with pytest.raises(WouldNotStart) as caught:
        operations.install(ctx, InstallRequest(runtime_name="nvidia", runtime_path=runtime_binary, enable_cdi=True),
                           config=box26.config_path, apply_options=ApplyOptions(timeout=30))
    error = caught.value
    assert error.reference == "daemon-would-not-start" and int(error.exit_status) == 4
    # dockerd 26's own words (not only our schema's), for the file a rollback restores
    assert any("what a rollback restores" in line and dockerd_says in line for line in error.details), error.details
    assert error.hint.startswith(hint_start + box26.config_path)
    assert ctx.service.calls == [] and _read(box26.config_path) == changed
    assert box26.pid == pid and box26.ping()


def test_a_good_file_still_restarts_dockerd_26(tmp_path, docker26_dir, box26, runtime_binary):
    """The judgement lets a startable file through: --validate with the running flags accepts it."""
    ctx = _ctx(tmp_path, docker26_dir, box26)
    pid = box26.pid
    result = operations.install(ctx, InstallRequest(runtime_name="nvidia", runtime_path=runtime_binary, enable_cdi=True),
                                config=box26.config_path, apply_options=ApplyOptions(timeout=60))
    assert result.apply.method == "restart" and result.apply.verified and box26.pid != pid
    assert "nvidia" in box26.info()["Runtimes"]
