"""The state directory is trusted only when it is safe; values read back from it are checked.

Each test plants what a user who can write a shared --state-dir would plant, and checks that
root neither follows it nor writes anywhere because of it (issue #9, item 3 and 7).
"""

import json
import os
import stat

import pytest

from nvdocker_setup.exit_status import ExitStatus

ORIGINAL = b'{\n  "log-level": "warn"\n}\n'
STRANGER = 12345  # a uid that is neither root nor the invoking user


@pytest.fixture
def cli(cli):
    cli.config.write_bytes(ORIGINAL)
    return cli


def _error_id(outcome):
    return outcome.json["error"]["id"]


def _installed(cli):
    outcome = cli.install("--json")
    assert outcome.exit_code == 0, outcome.stderr
    return outcome


# ---- the directory and what is above it -------------------------------------------------------


@pytest.mark.parametrize(
    "setup",
    ["owned-by-stranger", "group-writable", "world-writable", "symlink", "backups-owned-by-stranger",
     "parent-world-writable"],
)
def test_untrusted_state_dir_is_refused_and_nothing_is_written(cli, tmp_path, setup):
    state = cli.state_dir
    if setup == "symlink":
        real = tmp_path / "elsewhere"
        real.mkdir(mode=0o700)
        os.symlink(str(real), str(state))
    elif setup == "parent-world-writable":
        shared = tmp_path / "shared"
        shared.mkdir()
        os.chmod(str(shared), 0o777)  # writable by all and not sticky: our directory could be swapped
        state = shared / "state"
        cli.env["NVDOCKER_STATE_DIR"] = str(state)
    else:
        state.mkdir(mode=0o700)
        if setup == "owned-by-stranger":
            os.chown(str(state), STRANGER, STRANGER)
        elif setup == "group-writable":
            os.chmod(str(state), 0o770)
        elif setup == "world-writable":
            os.chmod(str(state), 0o777)
        elif setup == "backups-owned-by-stranger":
            (state / "backups").mkdir(mode=0o700)
            os.chown(str(state / "backups"), STRANGER, STRANGER)
    before = sorted(os.listdir(str(tmp_path)))
    outcome = cli.install("--json")
    assert outcome.exit_code == ExitStatus.TRUST_CHECK_FAILED, outcome.stdout + outcome.stderr
    assert _error_id(outcome) == "state-untrusted"
    assert "fix:" in outcome.json["error"]["hint"]
    assert cli.config.read_bytes() == ORIGINAL
    assert sorted(os.listdir(str(tmp_path))) == before
    # Read-only verbs refuse too, instead of trusting what they would read.
    for verb in (("show", "--json"), ("uninstall", "--json"), ("backups", "list", "--json")):
        if setup == "parent-world-writable" and not os.path.exists(str(state)):
            continue
        read = cli(*verb)
        assert read.exit_code == ExitStatus.TRUST_CHECK_FAILED, (verb, read.stdout, read.stderr)


def test_sticky_tmp_above_the_state_dir_is_accepted(cli, tmp_path):
    # /tmp (1777, root) is above every test's state dir: sticky root-owned parents are fine.
    assert stat.S_IMODE(os.stat("/tmp").st_mode) & stat.S_ISVTX
    _installed(cli)
    mode = stat.S_IMODE(os.stat(str(cli.state_dir)).st_mode)
    assert mode == 0o700


@pytest.mark.parametrize("name", ["state.json", "backups/manifest.json"])
def test_symlinked_state_files_are_not_followed(cli, tmp_path, name):
    _installed(cli)
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious\n")
    planted = cli.state_dir / name
    planted.unlink()
    os.symlink(str(victim), str(planted))
    reader = ("show", "--json") if name == "state.json" else ("backups", "list", "--json")
    for verb in (("install", "--runtime-path", cli.runtime, "--cdi", "--json"), ("uninstall", "--json"), reader):
        outcome = cli(*verb)
        assert outcome.exit_code == ExitStatus.TRUST_CHECK_FAILED, (verb, outcome.stdout, outcome.stderr)
        assert _error_id(outcome) == "state-untrusted"
        assert "symlink" in outcome.json["error"]["message"]
    assert victim.read_bytes() == b"precious\n"
    assert os.path.islink(str(planted))


def test_dangling_state_symlink_never_creates_its_target(cli, tmp_path):
    cli.state_dir.mkdir(mode=0o700)
    target = tmp_path / "etc-cron.d-evil"
    os.symlink(str(target), str(cli.state_dir / "state.json"))
    outcome = cli.install("--json")
    assert outcome.exit_code == ExitStatus.TRUST_CHECK_FAILED
    assert not os.path.lexists(str(target))
    assert cli.config.read_bytes() == ORIGINAL


@pytest.mark.parametrize("problem", ["stranger-owned", "group-writable"])
def test_state_file_with_untrusted_owner_or_mode_is_refused(cli, problem):
    _installed(cli)
    path = cli.state_dir / "state.json"
    if problem == "stranger-owned":
        os.chown(str(path), STRANGER, STRANGER)
    else:
        os.chmod(str(path), 0o664)
    outcome = cli("uninstall", "--json")
    assert outcome.exit_code == ExitStatus.TRUST_CHECK_FAILED
    assert _error_id(outcome) == "state-untrusted"
    assert b"nvidia" in cli.config.read_bytes()  # nothing undone on the word of that file


# ---- values read back from state ----------------------------------------------------------------


def _state(cli):
    return json.loads((cli.state_dir / "state.json").read_text())


def _write_state(cli, data):
    path = cli.state_dir / "state.json"
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    os.chmod(str(path), 0o600)


def _record(cli):
    state = _state(cli)
    (config,) = state["configs"]
    return state, state["configs"][config]["nvidia"]


def _deep(depth):
    return "[" * depth + "]" * depth


@pytest.mark.parametrize(
    "mutate",
    [
        lambda s, r: "[]",
        lambda s, r: {"configs": []},
        lambda s, r: {"configs": {"relative/daemon.json": {}}},
        lambda s, r: r.update(entry="not an object"),
        lambda s, r: r.update(entry={"path": 5}),
        lambda s, r: r.update(previous_entry=["x"]),
        lambda s, r: r.update(default_changed="yes"),
        lambda s, r: r.update(runtime_name="other"),
        lambda s, r: r.update(runtime_name="bad name\n"),
        lambda s, r: r.update(original_backup="../../etc/shadow"),
        lambda s, r: r.update(installed_sha256=5),
        lambda s, r: r.update(history_sha256=["zz"]),
        lambda s, r: r.update(previous_default={"a": 1}),
        lambda s, r: '{"configs": ' + _deep(200000) + "}",
        lambda s, r: "\udcff",
    ],
    ids=["list", "configs-list", "relative-config", "entry-string", "entry-path-int", "previous-entry-list",
         "bool-as-string", "name-mismatch", "bad-name", "backup-traversal", "sha-int", "history-garbage",
         "default-object", "deep-nesting", "not-utf8"],
)
def test_malformed_state_is_a_clear_error_not_a_traceback(cli, mutate):
    _installed(cli)
    state, record = _record(cli)
    replaced = mutate(state, record)
    if replaced is None:
        _write_state(cli, state)
    elif isinstance(replaced, str) and replaced == "\udcff":
        (cli.state_dir / "state.json").write_bytes(b'{"configs": "\xff"}')
    else:
        _write_state(cli, replaced)
    for verb in (("uninstall", "--json"), ("show", "--json"), ("install", "--runtime-path", cli.runtime, "--json")):
        outcome = cli(*verb)
        assert outcome.exit_code not in (0, ExitStatus.ERROR), (verb, outcome.stdout, outcome.stderr)
        assert _error_id(outcome) == "state-damaged", outcome.stdout
        assert "Traceback" not in outcome.stderr
    assert b"nvidia" in cli.config.read_bytes()


def test_planted_previous_entry_is_not_written_back(cli):
    _installed(cli)
    cli.config.write_bytes(cli.config.read_bytes().replace(b"warn", b"info"))  # no exact restore now
    state, record = _record(cli)
    # Safe-looking path, hostile arguments: dockerd would run `sh -c ...` as root.
    record["previous_entry"] = {"path": "/bin/sh", "runtimeArgs": ["-c", "id > /tmp/pwned"]}
    _write_state(cli, state)
    outcome = cli("uninstall", "--json")
    assert outcome.exit_code == 0, outcome.stdout + outcome.stderr
    assert any("not putting back" in w and "does not hold that entry" in w for w in outcome.json["warnings"])
    value = json.loads(cli.config.read_text())
    assert "nvidia" not in value.get("runtimes", {})
    assert "/bin/sh" not in cli.config.read_text()


def _with_previous_entry(cli, path):
    cli.config.write_text(json.dumps({"log-level": "warn", "runtimes": {"nvidia": {"path": path}}}))
    outcome = cli.install("--force", "--json")  # --force: the entry is someone else's
    assert outcome.exit_code == 0, outcome.stdout + outcome.stderr
    cli.config.write_bytes(cli.config.read_bytes().replace(b"warn", b"info"))  # no exact restore


def test_a_real_previous_entry_is_put_back(cli, runtime_binary):
    _with_previous_entry(cli, runtime_binary + "-old")  # missing, but under a root-only directory
    outcome = cli("uninstall", "--json")
    assert outcome.exit_code == 0, outcome.stdout
    assert json.loads(cli.config.read_text())["runtimes"]["nvidia"] == {"path": runtime_binary + "-old"}


def test_a_previous_runtime_type_entry_without_path_is_recorded_and_put_back(cli):
    """dockerd's runtimeType entries name no path: the record keeps it (the state stays readable) and
    uninstall puts it back, as the original backup holds it; a planted one still is not."""
    entry = {"runtimeType": "io.containerd.runsc.v1"}
    cli.config.write_text(json.dumps({"log-level": "warn", "runtimes": {"nvidia": entry}}))
    assert cli.install("--force", "--json").exit_code == 0
    cli.config.write_bytes(cli.config.read_bytes().replace(b"warn", b"info"))  # no exact restore
    outcome = cli("uninstall", "--json")
    assert outcome.exit_code == 0, outcome.stdout
    assert json.loads(cli.config.read_text())["runtimes"]["nvidia"] == entry
    assert cli.install("--force", "--json").exit_code == 0
    cli.config.write_bytes(cli.config.read_bytes().replace(b"info", b"error"))
    state, record = _record(cli)
    record["previous_entry"] = {"runtimeType": "io.containerd.evil.v1"}
    _write_state(cli, state)
    outcome = cli("uninstall", "--json")
    assert outcome.exit_code == 0 and "evil" not in cli.config.read_text(), outcome.stdout


def test_a_previous_entry_whose_directory_became_unsafe_is_not_put_back(cli, tmp_path):
    drop = tmp_path / "drop"
    drop.mkdir(mode=0o755)
    os.chmod(str(drop), 0o755)
    _with_previous_entry(cli, str(drop / "old-runtime"))
    os.chmod(str(drop), 0o777)  # since install, anyone may create the binary dockerd would run
    outcome = cli("uninstall", "--json")
    assert outcome.exit_code == 0, outcome.stdout
    assert any("not putting back" in w and str(drop) in w for w in outcome.json["warnings"]), outcome.json
    assert str(drop) not in cli.config.read_text()


# ---- restore never writes where a manifest says --------------------------------------------------


def _manifest(cli):
    path = cli.state_dir / "backups" / "manifest.json"
    return path, json.loads(path.read_text())


def test_restore_refuses_a_backup_of_another_file(cli, tmp_path):
    _installed(cli)
    path, records = _manifest(cli)
    victim = tmp_path / "victim"
    records[0]["source"] = str(victim)
    path.write_text(json.dumps(records))
    outcome = cli("restore", records[0]["name"], "--json")
    assert outcome.exit_code == ExitStatus.USAGE, outcome.stdout + outcome.stderr
    assert _error_id(outcome) == "backup-other-file"
    assert not victim.exists()


def test_restore_never_widens_the_mode(cli):
    _installed(cli)
    path, records = _manifest(cli)
    records[0]["mode"] = 0o6777
    path.write_text(json.dumps(records))
    outcome = cli("restore", records[0]["name"], "--json")
    assert outcome.exit_code == 0, outcome.stdout + outcome.stderr
    assert cli.config.read_bytes() == ORIGINAL
    assert stat.S_IMODE(os.stat(str(cli.config)).st_mode) == 0o644


def test_restore_updates_the_records_and_says_dockerd_was_not_told(cli):
    _installed(cli)
    _, records = _manifest(cli)
    outcome = cli("restore", records[0]["name"], "--json")
    assert outcome.exit_code == 0
    assert any("dockerd was not told" in n for n in outcome.json["notices"])
    assert cli("show", "--json").json["installed_by_us"] is False
    again = cli("uninstall", "--json")
    assert again.exit_code == 0 and again.json["changed"] is False
    assert cli.config.read_bytes() == ORIGINAL


def test_restore_of_a_later_backup_keeps_our_record(cli):
    _installed(cli)
    cli.install("--cdi")  # backup 2 holds the file with our entry, without cdi
    _, records = _manifest(cli)
    assert cli("restore", records[-1]["name"], "--json").exit_code == 0
    assert cli("show", "--json").json["installed_by_us"] is True
    assert cli("uninstall", "--json").exit_code == 0
    assert cli.config.read_bytes() == ORIGINAL


# ---- runtime names -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["runc", "io.containerd.runc.v2", "io.containerd.kata.v2", 'nv"idia', "nv\nidia", "nv idia", "x" * 5000,
     "-nvidia", "nvidia-", "nv/idia", ""],
    ids=["runc", "runc-shim", "kata-shim", "quote", "newline", "space", "long", "leading-dash", "trailing-dash",
         "slash", "empty"],
)
def test_runtime_names_dockerd_and_containerd_would_misread_are_refused(cli, name):
    outcome = cli.install("--runtime-name", name, "--json")
    assert outcome.exit_code == ExitStatus.USAGE, outcome.stdout + outcome.stderr
    assert len(outcome.stdout) < 2000  # a 5,000-character name is not echoed whole
    assert cli.config.read_bytes() == ORIGINAL


@pytest.mark.parametrize("name", ["nvidia", "nvidia-cdi", "nvidia_legacy", "gpu.v2", "N1"])
def test_ordinary_runtime_names_are_accepted(cli, name):
    assert cli.install("--runtime-name", name).exit_code == 0


# ---- a runtime path somebody else could create ---------------------------------------------------


def test_missing_runtime_under_a_world_writable_directory_is_refused(cli, tmp_path):
    drop = tmp_path / "drop"
    drop.mkdir()
    os.chmod(str(drop), 0o1777)  # even sticky: the name does not exist, anyone may create it
    path = str(drop / "sub" / "nvdocker-runtime")
    outcome = cli("install", "--runtime-path", path, "--json")
    assert outcome.exit_code == ExitStatus.TRUST_CHECK_FAILED, outcome.stdout
    assert _error_id(outcome) == "runtime-hijackable"
    assert any(str(drop) in line for line in outcome.json["error"]["details"])
    # the fix never makes a shared (sticky) directory unwritable: that would break the host (issue #24)
    assert not any("chmod" in line for line in outcome.json["error"]["details"]), outcome.json["error"]["details"]
    assert any("root-only directory such as /usr/local/bin" in line for line in outcome.json["error"]["details"])
    assert cli.config.read_bytes() == ORIGINAL
    assert cli("install", "--runtime-path", path, "--force", "--json").exit_code == ExitStatus.TRUST_CHECK_FAILED
    forced = cli("install", "--runtime-path", path, "--allow-unsafe-runtime", "--json")
    assert forced.exit_code == 0


def test_missing_runtime_under_root_only_directories_is_a_warning(cli, runtime_binary):
    outcome = cli("install", "--runtime-path", runtime_binary + "-not-yet", "--json")
    assert outcome.exit_code == 0
    assert any("does not exist yet" in w for w in outcome.json["warnings"])


# ---- found by the attacker's review ----------------------------------------------------------------


def test_a_symlink_owned_by_another_user_on_the_way_is_refused(cli, tmp_path):
    real = tmp_path / "root-owned"
    real.mkdir(mode=0o755)
    link = tmp_path / "lnk"
    os.symlink(str(real), str(link))
    os.lchown(str(link), STRANGER, STRANGER)  # its owner could point it at /etc later
    cli.env["NVDOCKER_STATE_DIR"] = str(link / "state")
    outcome = cli.install("--json")
    assert outcome.exit_code == ExitStatus.TRUST_CHECK_FAILED, outcome.stdout
    assert "symlink owned by uid {}".format(STRANGER) in outcome.json["error"]["message"]
    assert not (real / "state").exists()
    os.lchown(str(link), 0, 0)  # root's own link is fine
    assert cli.install().exit_code == 0
    assert stat.S_IMODE(os.lstat(str(real / "state")).st_mode) == 0o700


@pytest.mark.parametrize("owner", [0, STRANGER])
def test_a_state_dir_under_a_dangling_symlink(cli, tmp_path, owner):
    os.symlink(str(tmp_path / "nowhere"), str(tmp_path / "dangling"))
    os.lchown(str(tmp_path / "dangling"), owner, owner)
    cli.env["NVDOCKER_STATE_DIR"] = str(tmp_path / "dangling" / "state")
    outcome = cli.install("--json")
    if owner == 0:  # root's own link: followed, its target created like any missing directory
        assert outcome.exit_code == 0, outcome.stdout + outcome.stderr
        assert stat.S_IMODE(os.lstat(str(tmp_path / "nowhere" / "state")).st_mode) == 0o700
    else:
        assert outcome.exit_code == ExitStatus.TRUST_CHECK_FAILED, outcome.stdout + outcome.stderr
        assert not (tmp_path / "nowhere").exists()
        assert cli.config.read_bytes() == ORIGINAL


@pytest.mark.parametrize(
    "field, value",
    [("name", "20261130T000000.000000Z-" + "9" * 5000), ("gid", 2 ** 70), ("uid", -5), ("mode", 2 ** 80),
     ("reason", "\udcff"), ("source", "relative/daemon.json"), ("sha256", "not-a-sha")],
)
def test_manifest_values_out_of_range_are_refused(cli, field, value):
    _installed(cli)
    path, records = _manifest(cli)
    records[0][field] = value
    path.write_text(json.dumps(records))
    verbs = (("backups", "list", "--json"), ("restore", "--latest", "--json"),
             ("install", "--runtime-path", cli.runtime, "--cdi", "--json"))
    for verb in verbs:
        outcome = cli(*verb)
        assert outcome.exit_code == ExitStatus.TRUST_CHECK_FAILED, (verb, outcome.stdout, outcome.stderr)
        assert _error_id(outcome) == "backup-manifest-corrupt"


@pytest.mark.parametrize("text", ['{"configs": {}, "x": NaN}', None])
def test_non_json_constants_and_deep_entries_in_state_are_refused(cli, text):
    _installed(cli)
    if text is None:
        state, record = _record(cli)
        deep = {}
        node = deep
        for _ in range(20):
            node["a"] = {}
            node = node["a"]
        record["previous_entry"] = {"path": "/usr/bin/x", "options": deep}
        _write_state(cli, state)
    else:
        _write_state(cli, text)
    outcome = cli("uninstall", "--json")
    assert outcome.exit_code == ExitStatus.TRUST_CHECK_FAILED, outcome.stdout
    assert _error_id(outcome) == "state-damaged"


def test_a_torn_in_place_write_keeps_its_backup_and_says_how_back(cli, monkeypatch):
    from nvdocker_setup.adapters import files

    def tear(fd, data, hook):
        os.pwrite(fd, data[: len(data) // 2], 0)
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(files, "_overwrite", tear)
    outcome = cli.install("--in-place", "--json")
    monkeypatch.undo()
    assert outcome.exit_code == ExitStatus.WRITE_FAILED, outcome.stdout
    assert cli.config.read_bytes() != ORIGINAL  # torn: neither version
    hint = outcome.json["error"]["hint"]
    assert "nvdocker-setup restore" in hint and "--in-place" in hint
    name = hint.split("nvdocker-setup restore ")[1].split()[0]
    assert name in [b["name"] for b in cli("backups", "list", "--json").json["backups"]]
    assert cli("restore", name, "--in-place").exit_code == 0
    assert cli.config.read_bytes() == ORIGINAL


def test_an_unparsable_config_names_the_backup_that_brings_it_back(cli):
    _installed(cli)
    cli.config.write_bytes(b'{"log-level": "warn", "runt')
    outcome = cli("uninstall", "--json")
    assert outcome.exit_code == ExitStatus.INVALID_CONFIG
    assert "nvdocker-setup restore " in outcome.json["error"]["hint"]


def test_stale_private_temps_of_killed_runs_are_removed(cli):
    _installed(cli)
    dead = 4194303  # above any pid this machine has handed out
    for directory in (cli.state_dir, cli.state_dir / "backups"):
        (directory / ".state.json.{}-0123456789ab.tmp".format(dead)).write_bytes(b"{}")
    alive = cli.state_dir / ".state.json.{}-0123456789ab.tmp".format(os.getpid())
    alive.write_bytes(b"{}")
    assert cli.install("--cdi").exit_code == 0
    assert [n for n in os.listdir(str(cli.state_dir)) if n.endswith(".tmp")] == [alive.name]
    assert [n for n in os.listdir(str(cli.state_dir / "backups")) if n.endswith(".tmp")] == []


@pytest.mark.parametrize("kind", ["hardlink", "symlink", "fifo", "stranger"])
def test_a_planted_lock_file_is_refused(cli, tmp_path, kind):
    _installed(cli)
    lock = cli.state_dir / "lock"
    lock.unlink()
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious\n")
    if kind == "hardlink":
        os.link(str(victim), str(lock))
    elif kind == "symlink":
        os.symlink(str(victim), str(lock))
    elif kind == "fifo":
        os.mkfifo(str(lock))
    else:
        lock.write_bytes(b"")
        os.chown(str(lock), STRANGER, STRANGER)
    outcome = cli.install("--cdi", "--json")
    assert outcome.exit_code in (ExitStatus.TRUST_CHECK_FAILED, ExitStatus.WRITE_FAILED), outcome.stdout
    assert victim.read_bytes() == b"precious\n"
    assert b"cdi" not in cli.config.read_bytes()
