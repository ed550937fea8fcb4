"""Runtime-binary trust checks on real files under tmp_path (the suite runs as root)."""

import os
import stat
from pathlib import Path

import pytest

from nvdocker_setup.adapters.trust import (
    TrustReport,
    check_runtime_binary,
    require_trusted_runtime,
)
from nvdocker_setup.errors import TrustCheckFailed

pytestmark = pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to chown test files"
)

OTHER_UID = 1234


def _ancestors_safe(path: Path) -> bool:
    """tmp_path's own chain (/tmp is 1777 root, pytest dirs 0700 root) must pass for the tests."""
    for parent in [path, *path.parents]:
        st = os.stat(str(parent))
        sticky_root = st.st_uid == 0 and st.st_mode & stat.S_ISVTX
        if st.st_uid != 0 or (st.st_mode & 0o022 and not sticky_root):
            return False
    return True


@pytest.fixture
def base(tmp_path: Path) -> Path:
    real = Path(os.path.realpath(str(tmp_path)))
    if not _ancestors_safe(real):
        pytest.skip("tmp_path {} has an unsafe ancestor; set --basetemp under /tmp".format(real))
    return real


def _dir(path: Path, mode: int = 0o755) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(mode)
    return path


def _binary(path: Path, mode: int = 0o755) -> Path:
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(mode)
    return path


@pytest.fixture
def good(base: Path) -> Path:
    """A root-owned 0755 binary in a root-owned 0755 directory."""
    return _binary(_dir(base / "opt" / "bin") / "runtime")


def test_good_binary_is_ok(good: Path) -> None:
    report = check_runtime_binary(str(good))
    assert report == TrustReport(str(good), True, (), resolved=str(good))
    assert report.ok
    assert require_trusted_runtime(str(good)).ok


def test_missing(base: Path) -> None:
    path = str(base / "nope" / "runtime")
    report = check_runtime_binary(path)
    assert not report.exists and not report.ok
    assert len(report.problems) == 1 and "does not exist" in report.problems[0]
    assert path in report.problems[0]
    with pytest.raises(TrustCheckFailed) as info:
        require_trusted_runtime(path)
    assert info.value.reference == "runtime-untrusted"
    assert info.value.details == list(report.problems)


def test_relative(good: Path) -> None:
    report = check_runtime_binary("runtime")
    assert not report.ok and not report.exists
    assert "relative" in report.problems[0] and "PATH" in report.problems[0]


def test_not_executable(good: Path) -> None:
    good.chmod(0o644)
    report = check_runtime_binary(str(good))
    assert report.exists and not report.ok
    assert report.problems == (
        "{p} is not executable by its owner (mode 0644); fix: chmod u+x {p}".format(p=good),
    )


def test_not_a_regular_file(base: Path) -> None:
    directory = _dir(base / "opt" / "runtime.d")
    report = check_runtime_binary(str(directory))
    assert not report.ok
    assert "not a regular file" in report.problems[0]


def test_group_writable_file(good: Path) -> None:
    good.chmod(0o775)
    (problem,) = check_runtime_binary(str(good)).problems
    assert str(good) in problem and "chmod g-w {}".format(good) in problem


def test_world_writable_file(good: Path) -> None:
    good.chmod(0o777)
    (problem,) = check_runtime_binary(str(good)).problems
    assert "chmod go-w {}".format(good) in problem


def test_world_writable_parent_dir(good: Path) -> None:
    good.parent.chmod(0o757)
    (problem,) = check_runtime_binary(str(good)).problems
    assert "directory {}".format(good.parent) in problem
    assert "chmod o-w {}".format(good.parent) in problem


def test_non_root_owner_of_file(good: Path) -> None:
    os.chown(str(good), OTHER_UID, -1)
    (problem,) = check_runtime_binary(str(good)).problems
    assert "uid {}".format(OTHER_UID) in problem and "chown root {}".format(good) in problem


def test_non_root_owner_of_parent(good: Path) -> None:
    os.chown(str(good.parent), OTHER_UID, -1)
    (problem,) = check_runtime_binary(str(good)).problems
    assert "chown root {}".format(good.parent) in problem


def test_expected_owner_is_trusted_alongside_root(good: Path) -> None:
    os.chown(str(good), OTHER_UID, -1)
    assert check_runtime_binary(str(good), expected_owner=OTHER_UID).ok
    os.chown(str(good), 4321, -1)
    (problem,) = check_runtime_binary(str(good), expected_owner=OTHER_UID).problems
    assert "chown {} {}".format(OTHER_UID, good) in problem


def test_non_sticky_world_writable_ancestor(base: Path) -> None:
    shared = _dir(base / "shared", 0o777)
    binary = _binary(_dir(shared / "a" / "bin") / "runtime")
    (problem,) = check_runtime_binary(str(binary)).problems
    assert "directory {} is writable by group and others (mode 0777)".format(shared) in problem
    assert "chmod go-w {}".format(shared) in problem


def test_sticky_root_owned_ancestor_is_accepted(base: Path) -> None:
    scratch = _dir(base / "scratch", 0o1777)
    binary = _binary(_dir(scratch / "bin") / "runtime")
    assert check_runtime_binary(str(binary)).ok


def test_sticky_dir_owned_by_someone_else_is_not(base: Path) -> None:
    scratch = _dir(base / "scratch", 0o1777)
    os.chown(str(scratch), OTHER_UID, -1)
    binary = _binary(_dir(scratch / "bin") / "runtime")
    problems = check_runtime_binary(str(binary)).problems
    assert len(problems) == 2
    assert "uid {}".format(OTHER_UID) in problems[0]
    assert "chmod go-w {}".format(scratch) in problems[1]


def test_symlink_to_safe_target(good: Path, base: Path) -> None:
    link = _dir(base / "usr" / "bin") / "runtime"
    link.symlink_to(good)
    report = check_runtime_binary(str(link))
    assert report.ok and report.resolved == str(good)


def test_relative_symlink_chain(good: Path, base: Path) -> None:
    links = _dir(base / "links")
    (links / "second").symlink_to("../opt/bin/runtime")
    (links / "first").symlink_to("second")
    report = check_runtime_binary(str(links / "first"))
    assert report.ok and report.resolved == str(good)


def test_symlink_to_unsafe_target(base: Path) -> None:
    unsafe = _dir(base / "home" / "user", 0o777)
    target = _binary(unsafe / "runtime")
    link = _dir(base / "usr" / "bin") / "runtime"
    link.symlink_to(target)
    report = check_runtime_binary(str(link))
    assert report.exists and not report.ok
    assert report.resolved == str(target)
    assert any("chmod go-w {}".format(unsafe) in problem for problem in report.problems)


def test_symlink_in_unsafe_dir_to_safe_target(good: Path, base: Path) -> None:
    unsafe = _dir(base / "drop", 0o777)
    (unsafe / "runtime").symlink_to(good)
    (problem,) = check_runtime_binary(str(unsafe / "runtime")).problems
    assert "chmod go-w {}".format(unsafe) in problem


def test_foreign_symlink_in_sticky_dir(good: Path, base: Path) -> None:
    scratch = _dir(base / "scratch", 0o1777)
    link = scratch / "runtime"
    link.symlink_to(good)
    os.lchown(str(link), OTHER_UID, -1)
    (problem,) = check_runtime_binary(str(link)).problems
    assert "symlink {}".format(link) in problem and "chown -h root {}".format(link) in problem


def test_symlinked_directory_checks_the_real_directory(good: Path, base: Path) -> None:
    real = _dir(base / "real" / "bin", 0o775)
    _binary(real / "runtime")
    alias = base / "alias"
    alias.symlink_to(real)
    (problem,) = check_runtime_binary(str(alias / "runtime")).problems
    assert "chmod g-w {}".format(real) in problem


def test_dangling_symlink(base: Path) -> None:
    link = _dir(base / "bin") / "runtime"
    link.symlink_to(base / "gone")
    report = check_runtime_binary(str(link))
    assert not report.exists
    assert "symlink to {}".format(base / "gone") in report.problems[0]


def test_symlink_loop(base: Path) -> None:
    directory = _dir(base / "loop")
    (directory / "a").symlink_to("b")
    (directory / "b").symlink_to("a")
    report = check_runtime_binary(str(directory / "a"))
    assert not report.exists and "symbolic links" in report.problems[0]


def test_several_problems_are_all_reported(base: Path) -> None:
    directory = _dir(base / "bad", 0o777)
    binary = _binary(directory / "runtime", 0o666)
    os.chown(str(binary), OTHER_UID, -1)
    problems = check_runtime_binary(str(binary)).problems
    assert len(problems) == 4  # dir writable, not executable, wrong owner, file writable
    assert all(str(directory) in problem for problem in problems)


def test_python_entry_point_is_recognised(tmp_path: Path) -> None:
    from nvdocker_setup.adapters.trust import is_python_entry_point

    script = tmp_path / "nvdocker-runtime"
    script.write_text("#!/usr/bin/python3\nimport sys\nfrom nvdocker_setup.runtime.main import main\nsys.exit(main())\n")
    venv = tmp_path / "venv-runtime"
    venv.write_text("#!/opt/venv/bin/python3.11\n# -*- coding: utf-8 -*-\n")
    shell = tmp_path / "wrapper"
    shell.write_text("#!/bin/sh\nexec runc \"$@\"\n")
    elf = tmp_path / "launcher"
    elf.write_bytes(b"\x7fELF\x02\x01\x01" + b"\0" * 64)
    assert is_python_entry_point(str(script)) and is_python_entry_point(str(venv))
    assert not is_python_entry_point(str(shell)) and not is_python_entry_point(str(elf))
    assert not is_python_entry_point(str(tmp_path / "missing"))
