"""A kill at any step of install or uninstall leaves something uninstall undoes exactly.

The install record is durable before daemon.json changes (and dropped only after uninstall's
change landed), so every crash window ends with the original bytes after one more uninstall
(issue #9, item 4). Each case runs the real code in a child process that SIGKILLs itself.
"""

import os
import random
import signal
import subprocess
import sys
import time

import pytest

from nvdocker_setup.adapters.files import REMOVE_STEPS, STEPS

CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "crash_child.py")
ORIGINAL = b'{\n    "data-root": "/srv/docker",\n    "log-opts": {"max-size": "10m"}\n}\n'

PRIVATE = ["{}:{}".format(when, kind) for kind in ("copy", "manifest", "state") for when in ("before", "after")]
INSTALL_POINTS = PRIVATE + ["config:" + step for step in STEPS]
UNINSTALL_POINTS = PRIVATE + ["config:" + step for step in STEPS]
#: Steps that a first install onto a missing file cannot reach (no copy: nothing to back up).
NO_COPY = {"before:copy", "after:copy"}


def _child(cli, verb, kill_at, *extra):
    return subprocess.run(
        [sys.executable, CHILD, str(cli.state_dir), str(cli.config), cli.runtime, verb, kill_at] + list(extra),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60,
    )


def _killed(cli, verb, kill_at, *extra):
    child = _child(cli, verb, kill_at, *extra)
    assert child.returncode == -signal.SIGKILL, (kill_at, child.returncode, child.stderr.decode(errors="replace"))


def _undo_is_exact(cli, original):
    outcome = cli("uninstall", "--json")
    assert outcome.exit_code == 0, outcome.stdout + outcome.stderr
    if original is None:
        assert not cli.config.exists(), cli.config.read_bytes()
    else:
        assert cli.config.read_bytes() == original
    assert cli("show", "--json").json["installed_by_us"] is False
    leftovers = [n for n in os.listdir(str(cli.config.parent)) if n != "daemon.json"]
    assert leftovers == []


@pytest.mark.parametrize("kill_at", INSTALL_POINTS)
def test_killed_install_is_undone_exactly(cli, kill_at):
    cli.config.write_bytes(ORIGINAL)
    _killed(cli, "install", kill_at)
    _undo_is_exact(cli, ORIGINAL)


@pytest.mark.parametrize("kill_at", [p for p in INSTALL_POINTS if p not in NO_COPY])
def test_killed_install_onto_a_missing_file_is_undone_exactly(cli, kill_at):
    _killed(cli, "install", kill_at)
    _undo_is_exact(cli, None)


@pytest.mark.parametrize("kill_at", INSTALL_POINTS)
def test_killed_second_install_is_undone_exactly(cli, kill_at):
    cli.config.write_bytes(ORIGINAL)
    assert cli.install().exit_code == 0
    _killed(cli, "install", kill_at, "--cdi")
    _undo_is_exact(cli, ORIGINAL)


@pytest.mark.parametrize("kill_at", INSTALL_POINTS)
def test_killed_install_then_rerun_then_uninstall(cli, kill_at):
    cli.config.write_bytes(ORIGINAL)
    _killed(cli, "install", kill_at)
    rerun = cli.install("--json")
    assert rerun.exit_code == 0, rerun.stdout + rerun.stderr
    assert b"nvidia" in cli.config.read_bytes()
    _undo_is_exact(cli, ORIGINAL)


@pytest.mark.parametrize("kill_at", UNINSTALL_POINTS)
def test_killed_uninstall_is_finished_by_the_next_one(cli, kill_at):
    cli.config.write_bytes(ORIGINAL)
    cli.config.write_bytes(ORIGINAL)
    assert cli.install().exit_code == 0
    cli.install("--cdi")
    # A hand edit after install: uninstall takes the plan path (remove ours), not the exact bytes.
    edited = cli.config.read_bytes().replace(b"10m", b"20m")
    cli.config.write_bytes(edited)
    _killed(cli, "uninstall", kill_at)
    outcome = cli("uninstall", "--json")
    assert outcome.exit_code == 0, outcome.stdout + outcome.stderr
    assert cli.config.read_bytes() == ORIGINAL.replace(b"10m", b"20m")
    assert cli("show", "--json").json["installed_by_us"] is False


@pytest.mark.parametrize("kill_at", [p for p in UNINSTALL_POINTS if not p.startswith("config:")]
                         + ["remove:" + step for step in REMOVE_STEPS])
def test_killed_uninstall_of_a_created_file_removes_it_next_time(cli, kill_at):
    assert cli.install().exit_code == 0
    child = _child(cli, "uninstall", kill_at)
    if kill_at in NO_COPY:  # removing a file we created backs it up first: the copy exists
        pass
    assert child.returncode == -signal.SIGKILL, (kill_at, child.returncode, child.stderr.decode(errors="replace"))
    _undo_is_exact(cli, None)


def test_random_kill_loop_never_loses_the_way_back(cli):
    """SIGKILL install and uninstall children at random moments (seeded), many times over; after
    every kill the next uninstall still restores the original bytes exactly."""
    rng = random.Random(9)
    cli.config.write_bytes(ORIGINAL)
    start = time.monotonic()
    timing = subprocess.run(
        [sys.executable, CHILD, str(cli.state_dir), str(cli.config), cli.runtime, "install", "none"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60,
    )
    full = time.monotonic() - start
    assert timing.returncode == 0, timing.stderr
    _undo_is_exact(cli, ORIGINAL)
    kills = 0
    for round_ in range(14):
        verb = "install" if round_ % 3 else "uninstall"
        if verb == "uninstall":
            assert cli.install().exit_code == 0
        child = subprocess.Popen(
            [sys.executable, CHILD, str(cli.state_dir), str(cli.config), cli.runtime, verb, "none"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(0.3, 1.0) * full)
        if child.poll() is None:
            child.kill()
            kills += 1
        child.wait(timeout=60)
        _undo_is_exact(cli, ORIGINAL)
    assert kills >= 3, "the kills all came too late to test anything ({} s per run)".format(full)


@pytest.mark.parametrize("kill_at", ["config:in-place-partial", "config:in-place-written"])
def test_killed_in_place_install_is_recoverable_from_the_named_backup(cli, kill_at):
    """--in-place (a bind-mounted file) cannot be atomic: a kill mid-write may leave a torn file.
    It is never empty or short, the backup was taken first, and the next run names it."""
    cli.config.write_bytes(ORIGINAL)
    _killed(cli, "install", kill_at, "--in-place")
    torn = cli.config.read_bytes()
    assert len(torn) >= len(ORIGINAL)
    outcome = cli("uninstall", "--in-place", "--json")
    if outcome.exit_code == 0:  # the kill came after all bytes were out: an ordinary undo
        assert cli.config.read_bytes() == ORIGINAL
        return
    assert outcome.exit_code == 3, outcome.stdout
    hint = outcome.json["error"]["hint"]
    name = hint.split("nvdocker-setup restore ")[1].split()[0]
    assert cli("restore", name, "--in-place").exit_code == 0
    assert cli.config.read_bytes() == ORIGINAL
