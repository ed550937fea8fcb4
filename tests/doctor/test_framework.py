"""The check framework: registry, results, independence of checks, shared facts, parsers."""

import re

import pytest

from nvdocker_setup.context import Context
from nvdocker_setup.doctor import checks, diagnose
from nvdocker_setup.doctor.checks import Check, DoctorReport, SkipCheck, fail, ok, run_one, skip, warn
from nvdocker_setup.doctor.facts import DoctorOptions, Facts
from nvdocker_setup.doctor.parsers import (
    parse_env_file,
    parse_flags,
    parse_toml_subset,
    parse_unit_execstart,
    version_tuple,
)

KEBAB = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


def test_every_check_has_a_stable_kebab_id_a_known_group_and_a_title():
    items = checks.all_checks()
    ids = [item.id for item in items]
    assert len(ids) == len(set(ids))
    assert all(KEBAB.match(check_id) for check_id in ids), ids
    assert all(item.group in checks.GROUPS and item.title for item in items)
    assert {item.group for item in checks.all_checks(None)} == set(checks.GROUPS)


def test_checks_come_grouped_in_display_order():
    groups = [item.group for item in checks.all_checks()]
    order = list(checks.GROUPS)
    assert groups == sorted(groups, key=order.index)


def test_registering_a_duplicate_or_badly_named_check_is_refused():
    with pytest.raises(ValueError):
        checks.check("Bad_Id", "host", "t")
    with pytest.raises(ValueError):
        checks.check("fine-id", "no-such-group", "t")
    with pytest.raises(ValueError):
        checks.check("host-selinux", "host", "again")(lambda facts: ok("x"))


def test_select_runs_the_named_checks_and_refuses_unknown_ids():
    assert [item.id for item in checks.select(["host-selinux", "config-parse"])] == ["config-parse", "host-selinux"]
    with pytest.raises(KeyError) as raised:
        checks.select(["host-selinux", "no-such-check"])
    assert "no-such-check" in str(raised.value)


def _facts(tmp_path, **options):
    ctx = Context(env={"PATH": str(tmp_path)}, root=str(tmp_path), state_dir=str(tmp_path / "state"), euid=0,
                  docker_socket=str(tmp_path / "none.sock"))
    return Facts(ctx, DoctorOptions(**options))


def test_a_crashing_check_is_a_failure_naming_the_error(tmp_path):
    def boom(facts):
        raise ZeroDivisionError("division by zero")

    result = run_one(Check("boom", "host", "explodes", boom), _facts(tmp_path))
    assert result.status == "fail"
    assert "ZeroDivisionError: division by zero" in result.detail
    assert "bug" in result.hint
    assert "Traceback" in result.data["traceback"]


def test_a_check_that_returns_garbage_fails_and_skipcheck_skips(tmp_path):
    garbage = run_one(Check("garbage", "host", "t", lambda facts: "ok"), _facts(tmp_path))
    assert garbage.status == "fail" and "instead of an Outcome" in garbage.detail

    def skipping(facts):
        raise SkipCheck("not here")

    skipped = run_one(Check("skipping", "host", "t", skipping), _facts(tmp_path))
    assert (skipped.status, skipped.detail) == ("skip", "not here")


def test_one_crashing_check_does_not_stop_the_others(tmp_path, monkeypatch):
    def boom(facts):
        raise RuntimeError("kaput")

    monkeypatch.setitem(checks._REGISTRY, "host-selinux", Check("host-selinux", "host", "t", boom))
    report = diagnose(_facts(tmp_path).ctx)
    assert len(report.results) == len(checks.all_checks())
    assert report.by_id("host-selinux").status == "fail"
    assert "RuntimeError: kaput" in report.by_id("host-selinux").detail
    others = [result for result in report.results if result.id != "host-selinux"]
    assert all("crashed" not in result.detail for result in others)


def test_opt_in_checks_skip_unless_asked_for(tmp_path):
    item = next(entry for entry in checks.all_checks() if entry.opt_in)
    assert item.id == "container-gpu-smoke"
    skipped = run_one(item, _facts(tmp_path))
    assert skipped.status == "skip" and "--smoke" in skipped.detail
    asked = run_one(item, _facts(tmp_path, smoke=True))
    assert "opt-in" not in asked.detail


def test_report_summary_and_json_shape():
    report = DoctorReport([
        checks.CheckResult("a", "host", "t", "ok", "fine"),
        checks.CheckResult("b", "host", "t", "warn", "hmm", "do this"),
        checks.CheckResult("c", "host", "t", "skip", "n/a"),
    ])
    payload = report.to_dict()
    assert payload["ok"] is True and not report.failed
    assert payload["summary"] == {"ok": 1, "warn": 1, "fail": 0, "skip": 1, "total": 3}
    assert payload["checks"][1] == {"id": "b", "group": "host", "title": "t", "status": "warn", "detail": "hmm",
                                    "hint": "do this", "data": {}, "seconds": 0.0, "cause": None,
                                    "follows_from": None}
    assert payload["verdict"]["status"] == "warnings" and payload["verdict"]["check"] == "b"
    report.results.append(checks.CheckResult("d", "host", "t", "fail", "bad", "fix"))
    assert report.failed and report.to_dict()["ok"] is False


def test_outcome_helpers():
    assert ok("x", n=1).data == {"n": 1}
    assert warn("x", "h").hint == "h"
    assert fail("x", "h").status == "fail"
    assert skip("why").detail == "why"


def test_a_fact_is_computed_once_even_when_it_fails(tmp_path):
    facts = _facts(tmp_path)
    calls = []

    def compute():
        calls.append(1)
        raise OSError("nope")

    for _ in range(3):
        with pytest.raises(OSError):
            facts.memo("thing", compute)
    assert calls == [1]
    assert facts.memo("other", lambda: 42) == 42


def test_driver_root_comes_from_option_then_env_then_runtime_conf_then_root(tmp_path):
    (tmp_path / "etc" / "nvdocker").mkdir(parents=True)
    (tmp_path / "etc" / "nvdocker" / "runtime.conf").write_text("[runtime]\ndriver-root = /run/nvidia/driver\n")
    facts = _facts(tmp_path)
    assert facts.driver_root == str(tmp_path / "run" / "nvidia" / "driver")
    env_facts = Facts(Context(env={"NVDOCKER_DRIVER_ROOT": "/opt/drv"}, root=str(tmp_path)), DoctorOptions())
    assert env_facts.driver_root == "/opt/drv"
    assert _facts(tmp_path, driver_root="/given").driver_root == "/given"
    (tmp_path / "etc" / "nvdocker" / "runtime.conf").unlink()
    assert _facts(tmp_path).driver_root == str(tmp_path)


def test_parse_flags_maps_dockerd_flags_to_daemon_json_keys():
    keys = {"hosts", "default-runtime", "runtimes", "labels", "exec-opts", "data-root", "debug"}
    flags = parse_flags(("-H", "fd://", "--default-runtime=runc", "--label", "a=b", "--add-runtime", "x=/bin/x",
                         "--exec-opt", "native.cgroupdriver=systemd", "-D", "--config-file", "/x.json", "--unknown"),
                        keys)
    assert [(flag.flag, flag.value, flag.key) for flag in flags] == [
        ("-H", "fd://", "hosts"), ("--default-runtime", "runc", "default-runtime"), ("--label", "a=b", "labels"),
        ("--add-runtime", "x=/bin/x", "runtimes"), ("--exec-opt", "native.cgroupdriver=systemd", "exec-opts"),
        ("-D", None, "debug"), ("--config-file", "/x.json", None), ("--unknown", None, None),
    ]


def test_parse_unit_execstart_follows_drop_ins_and_resets():
    unit = "[Service]\nExecStart=/usr/bin/dockerd -H fd:// \\\n  --containerd=/run/c.sock\n"
    assert parse_unit_execstart([unit]) == ("/usr/bin/dockerd", "-H", "fd://", "--containerd=/run/c.sock")
    dropin = "[Service]\nExecStart=\nExecStart=-/usr/bin/dockerd --default-runtime=nvidia\n"
    assert parse_unit_execstart([unit, dropin]) == ("/usr/bin/dockerd", "--default-runtime=nvidia")
    assert parse_unit_execstart(["[Service]\nExecStart=\n"]) is None
    assert parse_unit_execstart(["[Unit]\nExecStart=/not/in/service\n"]) is None


def test_parse_env_file_and_toml_subset():
    env = parse_env_file("# comment\nOPTIONS='--selinux-enabled --log-driver=journald'\nexport DOCKER_OPTS=\"-H x\"\nbad line\n")
    assert env == {"OPTIONS": "--selinux-enabled --log-driver=journald", "DOCKER_OPTS": "-H x"}
    toml = parse_toml_subset(
        'disable-require = false\n[nvidia-container-cli]\nroot = "/run/nvidia/driver"\nno-cgroups = true\n'
        '#ldcache = "/x"\n[nvidia-container-runtime]\nmode = "cdi" # comment\nruntimes = ["runc", "crun"]\n'
        'log-level = info\n'
    )
    assert toml == {"disable-require": False, "nvidia-container-cli.root": "/run/nvidia/driver",
                    "nvidia-container-cli.no-cgroups": True, "nvidia-container-runtime.mode": "cdi",
                    "nvidia-container-runtime.runtimes": ["runc", "crun"], "nvidia-container-runtime.log-level": "info"}


def test_version_tuple():
    assert version_tuple("26.1.5+dfsg1") == (26, 1, 5)
    assert version_tuple("v20.10") == (20, 10)
    assert version_tuple("dev") == ()


def _result(check_id, group, status, detail="d", cause=None):
    return checks.CheckResult(check_id, group, "t", status, detail, "fix" if status in ("warn", "fail") else None,
                              cause=cause)


def test_a_skip_pointing_at_a_check_names_it_as_its_cause(tmp_path):
    def needs_parse(facts):
        raise SkipCheck("daemon.json cannot be read (see config-parse)")

    result = run_one(Check("x-needs-parse", "host", "t", needs_parse), _facts(tmp_path), explicit=True)
    assert result.status == "skip" and result.cause == "config-parse"
    unknown = run_one(Check("x-other", "host", "t", lambda facts: skip("n/a (see no-such-check)")), _facts(tmp_path))
    assert unknown.cause is None  # only registered checks are causes
    explicit = run_one(Check("x-explicit", "host", "t", lambda facts: fail("bad", "fix", cause="driver-gpus")),
                       _facts(tmp_path))
    assert explicit.cause == "driver-gpus"


def test_consequences_follow_the_chain_of_causes_to_the_first_failure():
    report = DoctorReport([
        _result("driver-kernel-module", "driver", "fail"),
        _result("driver-gpus", "driver", "skip", cause="driver-kernel-module"),
        _result("driver-dev-char-links", "driver", "skip", cause="driver-gpus"),
        _result("runtime-binary", "runtime-binaries", "fail"),
        _result("config-default-runtime", "docker-config", "fail", cause="runtime-binary"),
        _result("cdi-hooks-env", "cdi", "skip", cause="cdi-spec"),
        _result("cdi-spec", "cdi", "skip"),
    ])
    follows = {result.id: getattr(report.follows_from(result), "id", None) for result in report.results}
    assert follows == {"driver-kernel-module": None, "driver-gpus": "driver-kernel-module",
                       "driver-dev-char-links": "driver-kernel-module", "runtime-binary": None,
                       "config-default-runtime": "runtime-binary", "cdi-hooks-env": None, "cdi-spec": None}
    verdict = report.verdict()
    assert (verdict.status, verdict.group, verdict.check) == ("blocked", "driver", "driver-kernel-module")
    assert (verdict.failures, verdict.consequences) == (3, 1)
    payload = report.to_dict()
    assert payload["verdict"]["check"] == "driver-kernel-module"
    assert [item["follows_from"] for item in payload["checks"]][:5] == [
        None, "driver-kernel-module", "driver-kernel-module", None, "runtime-binary"]


def test_the_first_failure_is_the_first_that_follows_from_no_other():
    report = DoctorReport([
        _result("runtime-binary", "runtime-binaries", "fail", cause="daemon-reachable"),
        _result("daemon-reachable", "docker-daemon", "fail"),
    ])
    assert report.verdict().check == "daemon-reachable"
    loop = DoctorReport([_result("a-b", "host", "fail", cause="c-d"), _result("c-d", "host", "fail", cause="a-b")])
    assert loop.verdict().check == "a-b"  # a cycle of causes still names a failure


def test_verdict_ready_and_warnings():
    assert DoctorReport([_result("a-b", "host", "ok"), _result("c-d", "host", "skip")]).verdict().status == "ready"
    warned = DoctorReport([_result("a-b", "host", "ok"), _result("c-d", "cdi", "warn")]).verdict()
    assert (warned.status, warned.check, warned.warnings) == ("warnings", "c-d", 1)
