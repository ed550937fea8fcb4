"""`dockerd --version` / `dockerd --validate` against fake dockerd scripts (and the real one)."""

import os
import shutil
import subprocess
from pathlib import Path
from typing import Dict

import pytest

from nvdocker_setup.adapters.dockerd import (
    DockerdBinary,
    DockerdValidation,
    clean_messages,
    find_dockerd,
    parse_version,
    validate_config,
)
from nvdocker_setup.context import Context


def _fake_dockerd(
    tmp_path: Path, version: str = "26.1.5+dfsg1", validate: str = 'echo "configuration OK" >&2'
) -> Context:
    """A PATH holding only a fake dockerd; ``validate`` is the shell for a --validate call.

    The fake records its arguments in ``args.txt`` so tests can see what was asked.
    """
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    script = bindir / "dockerd"
    script.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = "--version" ]; then echo "Docker version {v}, build 5d6db84"; exit 0; fi\n'
        'printf "%s\\n" "$@" > "{args}"\n'
        "{validate}\n".format(v=version, args=tmp_path / "args.txt", validate=validate)
    )
    script.chmod(0o755)
    env: Dict[str, str] = {"PATH": str(bindir)}
    return Context(env=env, root=str(tmp_path), euid=0)


def _config(tmp_path: Path) -> str:
    path = tmp_path / "daemon.json"
    path.write_text("{}\n")
    return str(path)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Docker version 26.1.5+dfsg1, build a72d7cd", ("26.1.5+dfsg1", 26, 1)),
        ("Docker version 20.10.24+dfsg1, build 5d6db84\n", ("20.10.24+dfsg1", 20, 10)),
        ("Docker version v29.0.0-rc.1, build x", ("29.0.0-rc.1", 29, 0)),
        ("Docker version 23.0.0", ("23.0.0", 23, 0)),
        ("Docker version dev, build unknown", None),
        ("", None),
    ],
)
def test_parse_version(text: str, expected) -> None:
    assert parse_version(text) == expected


def test_can_validate_threshold() -> None:
    assert not DockerdBinary("/d", "20.10.24", 20, 10).can_validate
    assert not DockerdBinary("/d", "22.06.0-beta", 22, 6).can_validate
    assert DockerdBinary("/d", "23.0.0", 23, 0).can_validate
    assert DockerdBinary("/d", "26.1.5", 26, 1).can_validate


def test_find_dockerd_26(tmp_path: Path) -> None:
    ctx = _fake_dockerd(tmp_path)
    found = find_dockerd(ctx)
    assert found == DockerdBinary(str(tmp_path / "bin" / "dockerd"), "26.1.5+dfsg1", 26, 1)
    assert found is not None and found.can_validate


def test_find_dockerd_20_10(tmp_path: Path) -> None:
    found = find_dockerd(_fake_dockerd(tmp_path, version="20.10.24+dfsg1"))
    assert found is not None
    assert (found.version, found.major, found.minor) == ("20.10.24+dfsg1", 20, 10)
    assert not found.can_validate


def test_find_dockerd_absent(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    ctx = Context(env={"PATH": str(tmp_path / "empty")}, root=str(tmp_path), euid=0)
    assert find_dockerd(ctx) is None


def test_find_dockerd_unparsable_or_failing(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "dockerd"
    script.write_text("#!/bin/sh\necho 'Docker version dev'\n")
    script.chmod(0o755)
    ctx = Context(env={"PATH": str(bindir)}, root=str(tmp_path), euid=0)
    assert find_dockerd(ctx) is None
    script.write_text("#!/bin/sh\necho 'Docker version 26.1.5, build x'\nexit 2\n")
    assert find_dockerd(ctx) is None


def test_validate_ok(tmp_path: Path) -> None:
    ctx = _fake_dockerd(tmp_path)
    config = _config(tmp_path)
    result = validate_config(ctx, config)
    assert result.ran and result.ok
    assert result.binary is not None and result.binary.major == 26
    assert result.output == "configuration OK"
    assert result.messages == ()
    args = (tmp_path / "args.txt").read_text().splitlines()
    assert args == ["--validate", "--config-file", config]


def test_validate_passes_extra_flags(tmp_path: Path) -> None:
    ctx = _fake_dockerd(tmp_path)
    config = _config(tmp_path)
    validate_config(ctx, config, flags=["-H", "fd://"])
    args = (tmp_path / "args.txt").read_text().splitlines()
    assert args == ["--validate", "--config-file", config, "-H", "fd://"]


def test_validate_failing_with_dockerd_message(tmp_path: Path) -> None:
    config = str(tmp_path / "daemon.json")
    ctx = _fake_dockerd(
        tmp_path,
        validate=(
            "echo \"unable to configure the Docker daemon with file $3: the following directives "
            "don't match any configuration option: unknown-option\" >&2\nexit 1"
        ),
    )
    (tmp_path / "daemon.json").write_text('{"unknown-option": 1}')
    result = validate_config(ctx, config)
    assert result.ran and not result.ok
    assert result.output.startswith("unable to configure the Docker daemon with file " + config)
    assert result.messages == (
        "the following directives don't match any configuration option: unknown-option",
    )
    assert "unknown-option" in result.reason and "26.1.5+dfsg1" in result.reason


def test_validate_failing_without_known_prefix(tmp_path: Path) -> None:
    ctx = _fake_dockerd(tmp_path, validate="echo 'boom' >&2\necho 'more' \nexit 3")
    result = validate_config(ctx, _config(tmp_path))
    assert result.ran and not result.ok
    assert result.messages == ("boom", "more")


def test_validate_failing_silently(tmp_path: Path) -> None:
    ctx = _fake_dockerd(tmp_path, validate="exit 1")
    result = validate_config(ctx, _config(tmp_path))
    assert result.ran and not result.ok and result.messages == ()
    assert "exit status 1" in result.reason


def test_validate_hanging_past_timeout(tmp_path: Path) -> None:
    sleep = shutil.which("sleep")
    assert sleep is not None
    ctx = _fake_dockerd(tmp_path, validate="echo started >&2\nexec {} 30".format(sleep))
    result = validate_config(ctx, _config(tmp_path), timeout=0.5)
    assert result.ran and not result.ok
    assert result.reason == "dockerd --validate did not finish within 0.5 s"


def test_validate_timeout_from_injected_run(tmp_path: Path) -> None:
    binary = DockerdBinary("/usr/bin/dockerd", "27.0.1", 27, 0)

    def hangs(argv, timeout=None, env=None):
        raise subprocess.TimeoutExpired(argv, timeout, output=b"partial", stderr=None)

    ctx = Context(env={"PATH": ""}, root=str(tmp_path), euid=0, run=hangs)
    result = validate_config(ctx, "/x.json", timeout=2, binary=binary)
    assert (result.ran, result.ok, result.output) == (True, False, "partial")


def test_validate_unrunnable_binary(tmp_path: Path) -> None:
    binary = DockerdBinary(str(tmp_path / "vanished"), "27.0.1", 27, 0)
    ctx = Context(env={"PATH": ""}, root=str(tmp_path), euid=0)
    result = validate_config(ctx, "/x.json", binary=binary)
    assert not result.ran and not result.ok and "could not run" in result.reason


def test_validate_too_old(tmp_path: Path) -> None:
    ctx = _fake_dockerd(tmp_path, version="20.10.24+dfsg1", validate="exit 99")
    result = validate_config(ctx, _config(tmp_path))
    assert not result.ran and not result.ok
    assert result.reason == "dockerd 20.10 has no --validate (needs 23.0+)"
    assert result.binary is not None and result.binary.version == "20.10.24+dfsg1"
    assert not (tmp_path / "args.txt").exists()


def test_validate_absent(tmp_path: Path) -> None:
    ctx = Context(env={"PATH": str(tmp_path)}, root=str(tmp_path), euid=0)
    assert validate_config(ctx, "/x.json") == DockerdValidation(
        False, False, None, "", "dockerd not found on PATH"
    )


def test_validate_unparsable_version(tmp_path: Path) -> None:
    ctx = _fake_dockerd(tmp_path, version="dev")
    result = validate_config(ctx, _config(tmp_path))
    assert not result.ran and "could not read the version" in result.reason


def test_clean_messages_with_other_path() -> None:
    output = (
        "unable to configure the Docker daemon with file /etc/docker/daemon.json: "
        "invalid character 'x' looking for beginning of value\n\nconfiguration OK\n"
    )
    assert clean_messages(output, "/tmp/other.json") == (
        "invalid character 'x' looking for beginning of value",
    )


@pytest.mark.dockerd
@pytest.mark.parametrize("release", ["20.10", "26.1"])
def test_real_dockerd_on_real_path(tmp_path: Path, release: str) -> None:
    """The real dockerd, found on PATH as on a host: Debian 12's 20.10 (no --validate) and 26.1
    (--validate), both unpacked in the test cache by the test support (never a host install)."""
    from tests.support.newer_docker import docker26_or_skip
    from tests.support.sandbox import dockerd_or_skip

    if release == "20.10":
        sbin = os.path.dirname(dockerd_or_skip())
    else:
        sbin = os.path.join(docker26_or_skip(), "usr", "sbin")
    real = os.path.join(sbin, "dockerd")
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([sbin, env.get("PATH", os.defpath)])
    ctx = Context(env=env)
    found = find_dockerd(ctx)
    assert found is not None
    assert os.path.realpath(found.path) == os.path.realpath(real)
    assert "{}.{}".format(found.major, found.minor) == release
    assert found.can_validate == ((found.major, found.minor) >= (23, 0))
    result = validate_config(ctx, _config(tmp_path), binary=found)
    if found.can_validate:
        assert result.ran and result.ok, result.output
    else:
        # Debian bookworm ships 20.10.24: no --validate, and we must not try it.
        assert not result.ran
        assert result.reason == "dockerd {}.{} has no --validate (needs 23.0+)".format(
            found.major, found.minor
        )
