"""Reading OCI runtime command lines: global flags in every form, the subcommand, the bundle."""

import pytest

from nvdocker_setup.runtime.args import parse, split_flag

GLOBAL_VALUE_FLAGS = ["--root", "--log", "--log-format", "--criu", "--rootless"]


@pytest.mark.parametrize("flag", GLOBAL_VALUE_FLAGS)
@pytest.mark.parametrize("form", ["space", "equals", "single-dash"])
def test_a_value_flag_never_becomes_the_subcommand(flag, form):
    if form == "space":
        argv = [flag, "create", "state", "c1"]
    elif form == "equals":
        argv = [flag + "=create", "state", "c1"]
    else:
        argv = [flag[1:], "create", "state", "c1"]
    parsed = parse(argv)
    assert parsed.subcommand == "state" and not parsed.is_create
    assert parsed.argv == argv


@pytest.mark.parametrize("flag", ["--systemd-cgroup", "--debug", "-debug", "--systemd-cgroup=true"])
def test_boolean_flags_take_no_value(flag):
    parsed = parse([flag, "create", "--bundle", "/b", "c1"])
    assert parsed.is_create and parsed.bundle == "/b" and parsed.container_id == "c1"


def test_what_containerd_passes():
    argv = [
        "--root", "/var/run/docker/runtime-runc/moby", "--log", "/run/b/log.json", "--log-format", "json",
        "--systemd-cgroup", "create", "--bundle", "/run/b", "--pid-file", "/run/b/init.pid", "c1",
    ]
    parsed = parse(argv)
    assert (parsed.subcommand, parsed.subcommand_index, parsed.bundle, parsed.container_id) == ("create", 7, "/run/b", "c1")
    assert (parsed.log, parsed.log_format) == ("/run/b/log.json", "json")


@pytest.mark.parametrize(
    "create_args, bundle",
    [
        (["--bundle", "/b"], "/b"),
        (["--bundle=/b"], "/b"),
        (["-b", "/b"], "/b"),
        (["-b=/b"], "/b"),
        (["-bundle", "/b"], "/b"),
        (["--pid-file", "--bundle", "--console-socket", "/s"], None),  # values are not flags
        (["--no-pivot", "--preserve-fds", "2", "-b", "/b"], "/b"),
        ([], None),  # the working directory
    ],
)
def test_bundle_forms(create_args, bundle):
    parsed = parse(["--log=/l", "create"] + create_args + ["c1"])
    assert parsed.is_create and parsed.bundle == bundle and parsed.container_id == "c1"
    assert parsed.log == "/l"


def test_create_as_an_argument_of_another_subcommand_is_not_create():
    assert parse(["kill", "create", "KILL"]).subcommand == "kill"
    assert parse(["--log", "create", "--root", "/r", "delete", "create"]).subcommand == "delete"


@pytest.mark.parametrize("argv, subcommand", [([], None), (["--version"], None), (["--", "state", "x"], "state"), (["-"], "-")])
def test_edge_cases(argv, subcommand):
    assert parse(argv).subcommand == subcommand


def test_split_flag():
    assert split_flag("--root=/r") == ("root", "/r")
    assert split_flag("-b") == ("b", None)
    assert split_flag("create") is None and split_flag("--") is None and split_flag("-") is None
