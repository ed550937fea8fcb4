"""The pure apply decisions: what changed, reload or restart, what /info must show afterwards."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nvdocker_setup.engines.docker.apply_plan import (
    APPLY_MODES,
    RELOADABLE_KEYS,
    Expectation,
    changed_keys,
    choose_method,
    containers_stopped_by_restart,
    healthy_problems,
)

NVIDIA = {"nvidia": {"path": "/usr/bin/nvdocker-runtime"}}
KATA = {"kata": {"path": "/opt/kata/bin/kata-runtime"}}


# -- changed_keys -------------------------------------------------------------------------------

def test_identical_documents_have_no_changes():
    value = {"log-level": "warn", "runtimes": dict(NVIDIA), "features": {"cdi": True}}
    assert changed_keys(value, dict(value)) == []
    assert changed_keys({}, {}) == []


def test_a_changed_top_level_value():
    assert changed_keys({"log-level": "warn"}, {"log-level": "debug"}) == ["log-level"]


def test_added_and_removed_keys():
    assert changed_keys({}, {"runtimes": NVIDIA}) == ["runtimes"]
    assert changed_keys({"runtimes": NVIDIA}, {}) == ["runtimes"]
    assert changed_keys({"default-runtime": "nvidia"}, {"default-runtime": "runc"}) == ["default-runtime"]


def test_a_key_set_to_null_differs_from_an_absent_key():
    assert changed_keys({}, {"default-runtime": None}) == ["default-runtime"]
    assert changed_keys({"default-runtime": None}, {}) == ["default-runtime"]


def test_nested_changes_are_reported_on_the_top_level_key():
    before = {"runtimes": dict(NVIDIA, **KATA)}
    after = {"runtimes": {"nvidia": {"path": "/other"}, "kata": KATA["kata"]}}
    assert changed_keys(before, after) == ["runtimes"]


def test_order_is_before_order_then_new_keys_in_after_order():
    before = {"b": 1, "a": 1, "same": 0, "c": 1}
    after = {"z": 2, "c": 2, "same": 0, "a": 2, "y": 2}
    assert changed_keys(before, after) == ["b", "a", "c", "z", "y"]


def test_features_are_reported_per_flag_sorted():
    before = {"features": {"cdi": False, "buildkit": True, "same": 1}}
    after = {"features": {"same": 1, "cdi": True, "buildkit": False}}
    assert changed_keys(before, after) == ["features.buildkit", "features.cdi"]


def test_features_flag_added_removed_and_whole_block_added_or_removed():
    assert changed_keys({"features": {}}, {"features": {"cdi": True}}) == ["features.cdi"]
    assert changed_keys({"features": {"cdi": True}}, {"features": {}}) == ["features.cdi"]
    assert changed_keys({}, {"features": {"cdi": True}}) == ["features.cdi"]
    assert changed_keys({"features": {"cdi": True, "buildkit": True}}, {}) == ["features.buildkit", "features.cdi"]


def test_a_flag_set_to_null_differs_from_an_absent_flag():
    assert changed_keys({"features": {}}, {"features": {"cdi": None}}) == ["features.cdi"]


def test_an_empty_features_block_is_the_same_as_none():
    # dockerd treats "features": {} like no features at all: nothing to apply
    assert changed_keys({}, {"features": {}}) == []
    assert changed_keys({"features": {}}, {}) == []


def test_features_that_are_not_an_object_are_reported_whole():
    assert changed_keys({"features": "cdi"}, {"features": {"cdi": True}}) == ["features"]
    assert changed_keys({"features": {"cdi": True}}, {"features": None}) == ["features"]
    assert changed_keys({"features": [1]}, {}) == ["features"]


def test_features_keep_their_place_among_the_other_keys():
    before = {"log-level": "warn", "features": {"cdi": False}, "runtimes": {}}
    after = {"log-level": "info", "features": {"cdi": True}, "runtimes": NVIDIA}
    assert changed_keys(before, after) == ["log-level", "features.cdi", "runtimes"]


def test_inputs_are_not_modified():
    before = {"features": {"cdi": False}, "runtimes": {}}
    after = {"features": {"cdi": True}, "runtimes": dict(NVIDIA)}
    snapshot = (repr(before), repr(after))
    changed_keys(before, after)
    choose_method("auto", before, after)
    assert (repr(before), repr(after)) == snapshot


# -- choose_method: auto ----------------------------------------------------------------------------

def test_auto_unchanged_is_none():
    value = {"runtimes": NVIDIA, "log-level": "warn"}
    assert choose_method("auto", value, dict(value)) == ("none", "dockerd's configuration is unchanged")


def test_auto_adding_a_runtime_is_a_reload():
    method, reason = choose_method("auto", {"log-level": "warn"}, {"log-level": "warn", "runtimes": NVIDIA})
    assert method == "reload"
    assert reason == "runtimes can be reloaded without stopping containers"


def test_auto_changing_a_runtime_and_the_default_is_a_reload():
    before = {"runtimes": KATA}
    after = {"runtimes": dict(KATA, **NVIDIA), "default-runtime": "nvidia"}
    method, reason = choose_method("auto", before, after)
    assert method == "reload"
    assert reason == "runtimes, default-runtime can be reloaded without stopping containers"


def test_auto_removing_one_runtime_of_several_is_a_reload():
    # the "runtimes" key stays in the file, so dockerd replaces the whole map on SIGHUP
    assert choose_method("auto", {"runtimes": dict(KATA, **NVIDIA)}, {"runtimes": KATA})[0] == "reload"


def test_auto_emptying_runtimes_is_a_reload_because_the_key_stays():
    assert choose_method("auto", {"runtimes": NVIDIA}, {"runtimes": {}})[0] == "reload"


def test_auto_features_cdi_is_a_restart_naming_the_key():
    method, reason = choose_method("auto", {"runtimes": NVIDIA}, {"runtimes": NVIDIA, "features": {"cdi": True}})
    assert method == "restart"
    assert reason == "features.cdi only takes effect at start-up"


def test_auto_runtime_plus_cdi_is_a_restart_naming_only_the_startup_key():
    method, reason = choose_method("auto", {}, {"runtimes": NVIDIA, "features": {"cdi": True}})
    assert method == "restart"
    assert "features.cdi" in reason and "runtimes" not in reason


@pytest.mark.parametrize("key, old, new", [
    ("log-level", "warn", "debug"),
    ("data-root", None, "/srv/docker"),
    ("live-restore", True, None),
    ("exec-opts", ["native.cgroupdriver=cgroupfs"], ["native.cgroupdriver=systemd"]),
])
def test_auto_any_other_key_is_a_restart_naming_it(key, old, new):
    before = {} if old is None else {key: old}
    after = {} if new is None else {key: new}
    method, reason = choose_method("auto", before, after)
    assert method == "restart"
    assert reason == "{} only takes effect at start-up".format(key)


def test_auto_several_startup_keys_are_all_named():
    method, reason = choose_method("auto", {"debug": False}, {"debug": True, "features": {"cdi": True}, "runtimes": NVIDIA})
    assert method == "restart"
    assert reason == "debug, features.cdi only take effect at start-up"


def test_auto_removed_runtimes_key_is_a_restart():
    method, reason = choose_method("auto", {"runtimes": NVIDIA, "log-level": "warn"}, {"log-level": "warn"})
    assert method == "restart"
    assert reason == "a reload does not forget the removed runtimes"


def test_auto_removed_default_runtime_is_a_restart():
    method, reason = choose_method("auto", {"runtimes": NVIDIA, "default-runtime": "nvidia"}, {"runtimes": NVIDIA})
    assert method == "restart"
    assert reason == "a reload does not forget the removed default-runtime"


def test_auto_both_removed_are_named_sorted():
    method, reason = choose_method("auto", {"runtimes": NVIDIA, "default-runtime": "nvidia"}, {})
    assert method == "restart"
    assert reason == "a reload does not forget the removed default-runtime, runtimes"


def test_auto_default_runtime_changed_to_runc_is_a_reload():
    before = {"runtimes": NVIDIA, "default-runtime": "nvidia"}
    assert choose_method("auto", before, {"runtimes": NVIDIA, "default-runtime": "runc"})[0] == "reload"


def test_auto_hook_appeared_restarts_even_when_nothing_changed():
    value = {"runtimes": NVIDIA}
    method, reason = choose_method("auto", value, dict(value), hook_appeared=True)
    assert method == "restart"
    assert "--gpus hook" in reason


def test_auto_hook_appeared_turns_a_reload_into_a_restart():
    assert choose_method("auto", {}, {"runtimes": NVIDIA}, hook_appeared=True)[0] == "restart"


# -- choose_method: explicit modes ----------------------------------------------------------------

@pytest.mark.parametrize("mode", ["reload", "restart"])
@pytest.mark.parametrize("before, after", [
    ({}, {}),
    ({}, {"runtimes": NVIDIA}),
    ({}, {"features": {"cdi": True}}),
    ({"runtimes": NVIDIA}, {}),
])
def test_explicit_reload_or_restart_is_obeyed(mode, before, after):
    assert choose_method(mode, before, after) == (mode, "--apply " + mode)
    assert choose_method(mode, before, after, hook_appeared=True) == (mode, "--apply " + mode)


@pytest.mark.parametrize("before, after", [({}, {}), ({}, {"runtimes": NVIDIA}), ({}, {"features": {"cdi": True}})])
def test_explicit_none_is_obeyed(before, after):
    method, reason = choose_method("none", before, after, hook_appeared=True)
    assert method == "none"
    assert reason == "--apply none: dockerd reads the file at its next start"


@pytest.mark.parametrize("mode", ["Auto", "RELOAD", "", "systemd", "stop", "hup"])
def test_unknown_mode_is_a_value_error(mode):
    with pytest.raises(ValueError, match="unknown apply mode"):
        choose_method(mode, {}, {"runtimes": NVIDIA})


def test_the_modes_are_the_documented_ones():
    assert APPLY_MODES == ("auto", "reload", "restart", "none")
    assert RELOADABLE_KEYS == frozenset({"runtimes", "default-runtime"})


# -- choose_method: properties ----------------------------------------------------------------------

_KEYS = ("runtimes", "default-runtime", "features", "log-level", "debug")
_VALUES = {
    "runtimes": st.sampled_from([{}, NVIDIA, KATA, dict(NVIDIA, **KATA)]),
    "default-runtime": st.sampled_from(["runc", "nvidia", "kata", ""]),
    "features": st.dictionaries(st.sampled_from(["cdi", "buildkit"]), st.booleans(), max_size=2),
    "log-level": st.sampled_from(["warn", "info", "debug"]),
    "debug": st.booleans(),
}


@st.composite
def daemon_configs(draw):
    keys = draw(st.lists(st.sampled_from(_KEYS), unique=True))
    return {key: draw(_VALUES[key]) for key in keys}


@settings(max_examples=400, deadline=None)
@given(daemon_configs(), daemon_configs())
def test_auto_reloads_only_when_every_change_is_reloadable_and_nothing_was_removed(before, after):
    changed = changed_keys(before, after)
    method, reason = choose_method("auto", before, after)
    removed = [key for key in RELOADABLE_KEYS if key in before and key not in after]
    reloadable = bool(changed) and all(key in RELOADABLE_KEYS for key in changed) and not removed
    assert (method == "reload") == reloadable
    assert (method == "none") == (not changed)
    if method == "restart":
        startup_only = [key for key in changed if key not in RELOADABLE_KEYS]
        assert all(key in reason for key in startup_only)
        if not startup_only:
            assert removed and all(key in reason for key in removed)
    assert choose_method("auto", before, after, hook_appeared=True)[0] == "restart"


@settings(max_examples=300, deadline=None)
@given(daemon_configs(), daemon_configs())
def test_changed_keys_is_symmetric_without_duplicates(before, after):
    forward = changed_keys(before, after)
    assert len(forward) == len(set(forward))
    assert set(forward) == set(changed_keys(after, before))
    assert changed_keys(before, before) == []
    for key in set(before) | set(after):
        if key != "features":
            assert (key in forward) == (before.get(key, "<absent>") != after.get(key, "<absent>"))


# -- Expectation ------------------------------------------------------------------------------------

def test_expectation_from_a_config_with_our_runtime_and_default():
    config = {"runtimes": dict(NVIDIA, **KATA), "default-runtime": "nvidia"}
    assert Expectation.from_config(config, "nvidia") == Expectation("nvidia", "/usr/bin/nvdocker-runtime", "nvidia")


def test_expectation_defaults_to_runc():
    assert Expectation.from_config({"runtimes": NVIDIA}, "nvidia").default_runtime == "runc"
    assert Expectation.from_config({"runtimes": NVIDIA, "default-runtime": ""}, "nvidia").default_runtime == "runc"
    assert Expectation.from_config({"runtimes": NVIDIA, "default-runtime": 3}, "nvidia").default_runtime == "runc"


@pytest.mark.parametrize("config", [
    {},
    {"runtimes": KATA},
    {"runtimes": None},
    {"runtimes": ["nvidia"]},
    {"runtimes": {"nvidia": "/usr/bin/nvdocker-runtime"}},
])
def test_expectation_without_our_runtime_expects_it_absent(config):
    assert Expectation.from_config(config, "nvidia").runtime_path is None


def test_expectation_with_an_entry_without_a_path():
    assert Expectation.from_config({"runtimes": {"nvidia": {"runtimeArgs": []}}}, "nvidia").runtime_path is None


def _info(runtimes, default="runc"):
    return {"Runtimes": runtimes, "DefaultRuntime": default}


RUNC = {"runc": {"path": "runc"}}


def test_mismatches_none_when_info_matches():
    expectation = Expectation("nvidia", "/usr/bin/nvdocker-runtime", "nvidia")
    assert expectation.mismatches(_info(dict(RUNC, **NVIDIA), "nvidia")) == []


def test_mismatches_runtime_not_registered():
    expectation = Expectation("nvidia", "/usr/bin/nvdocker-runtime", "runc")
    assert expectation.mismatches(_info(RUNC)) == ["runtime 'nvidia' is not registered"]


def test_mismatches_wrong_path():
    expectation = Expectation("nvidia", "/usr/bin/nvdocker-runtime", "runc")
    problems = expectation.mismatches(_info(dict(RUNC, nvidia={"path": "/old/runtime"})))
    assert problems == ["runtime 'nvidia' has path '/old/runtime', expected '/usr/bin/nvdocker-runtime'"]


def test_mismatches_default_runtime():
    expectation = Expectation("nvidia", "/usr/bin/nvdocker-runtime", "nvidia")
    assert expectation.mismatches(_info(dict(RUNC, **NVIDIA), "runc")) == ["DefaultRuntime is 'runc', expected 'nvidia'"]


def test_mismatches_absent_runtime_expected_but_still_registered():
    expectation = Expectation("nvidia", None, "runc")
    assert expectation.mismatches(_info(RUNC)) == []
    assert expectation.mismatches(_info(dict(RUNC, **NVIDIA))) == ["runtime 'nvidia' is still registered"]


def test_mismatches_with_missing_runtimes_and_default():
    expectation = Expectation("nvidia", "/usr/bin/nvdocker-runtime", "nvidia")
    assert expectation.mismatches({}) == [
        "runtime 'nvidia' is not registered",
        "DefaultRuntime is None, expected 'nvidia'",
    ]
    assert expectation.mismatches({"Runtimes": None, "DefaultRuntime": "nvidia"}) == ["runtime 'nvidia' is not registered"]
    assert Expectation("nvidia", None, "runc").mismatches({"DefaultRuntime": "runc"}) == []


def test_mismatches_reports_both_problems_at_once():
    expectation = Expectation("nvidia", "/usr/bin/nvdocker-runtime", "nvidia")
    problems = expectation.mismatches(_info(dict(RUNC, nvidia={"path": "/x"}), "runc"))
    assert len(problems) == 2 and "has path '/x'" in problems[0] and "DefaultRuntime" in problems[1]


def test_expectation_round_trip_from_config_to_matching_info():
    config = {"runtimes": NVIDIA, "default-runtime": "nvidia"}
    info = _info(dict(RUNC, nvidia={"path": "/usr/bin/nvdocker-runtime", "runtimeArgs": None}), "nvidia")
    assert Expectation.from_config(config, "nvidia").mismatches(info) == []
    assert Expectation.from_config({}, "nvidia").mismatches(info) == [
        "runtime 'nvidia' is still registered",
        "DefaultRuntime is 'nvidia', expected 'runc'",
    ]


# -- healthy_problems and containers_stopped_by_restart ----------------------------------------------

def test_healthy_when_the_default_runtime_is_registered():
    assert healthy_problems(_info(RUNC, "runc")) == []
    assert healthy_problems(_info(dict(RUNC, **NVIDIA), "nvidia")) == []


def test_unhealthy_when_the_default_runtime_is_missing():
    assert healthy_problems(_info(RUNC, "nvidia")) == ["DefaultRuntime 'nvidia' is not a registered runtime"]
    assert healthy_problems({"DefaultRuntime": "runc"}) == ["DefaultRuntime 'runc' is not a registered runtime"]
    assert healthy_problems({"DefaultRuntime": "runc", "Runtimes": None}) == ["DefaultRuntime 'runc' is not a registered runtime"]


def test_healthy_without_a_reported_default():
    assert healthy_problems({}) == []
    assert healthy_problems({"DefaultRuntime": "", "Runtimes": {}}) == []


@pytest.mark.parametrize("info, stopped", [
    ({"ContainersRunning": 3, "LiveRestoreEnabled": False}, 3),
    ({"ContainersRunning": 3}, 3),
    ({"ContainersRunning": 3, "LiveRestoreEnabled": True}, 0),
    ({"ContainersRunning": 0, "LiveRestoreEnabled": False}, 0),
    ({"ContainersRunning": None}, 0),
    ({}, 0),
    ({"LiveRestoreEnabled": True}, 0),
])
def test_containers_stopped_by_restart(info, stopped):
    assert containers_stopped_by_restart(info) == stopped
