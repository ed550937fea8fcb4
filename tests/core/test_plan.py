"""Merge and unmerge plans: unit cases plus properties over generated daemon.json documents."""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nvdocker_setup.core.jsondoc import JsonDocument, empty_document
from nvdocker_setup.core.plan import InstallRequest
from nvdocker_setup.engines.docker.plan import docker_entry, plan_install, plan_uninstall
from nvdocker_setup.errors import ConfigReadError, Conflict, UsageError

RUNTIME = "/usr/bin/nvdocker-runtime"


def doc(value, **dump) -> JsonDocument:
    return JsonDocument.parse(json.dumps(value, ensure_ascii=False, **dump).encode())


def request(**kwargs) -> InstallRequest:
    kwargs.setdefault("runtime_name", "nvidia")
    kwargs.setdefault("runtime_path", RUNTIME)
    return InstallRequest(**kwargs)


def test_entry_uses_runtime_args_only_when_given():
    assert docker_entry(request()) == {"path": RUNTIME}
    assert docker_entry(request(runtime_args=("--debug",))) == {"path": RUNTIME, "runtimeArgs": ["--debug"]}


def test_install_into_a_missing_file():
    plan = plan_install(empty_document(), request(set_default=True))
    assert plan.after.value == {"runtimes": {"nvidia": {"path": RUNTIME}}, "default-runtime": "nvidia"}
    assert plan.after.text.endswith("}\n")
    assert plan.record.runtimes_created and plan.record.default_changed and plan.record.previous_default is None


def test_install_keeps_other_runtimes_and_keys_in_order():
    before = doc({"log-level": "warn", "runtimes": {"kata": {"path": "/k"}}, "zz": 1}, indent=4)
    plan = plan_install(before, request())
    assert list(plan.after.value) == ["log-level", "runtimes", "zz"]
    assert list(plan.after.value["runtimes"]) == ["kata", "nvidia"]


def test_nothing_to_change_is_reported_unchanged():
    before = doc({"runtimes": {"nvidia": {"path": RUNTIME}}})
    plan = plan_install(before, request())
    assert not plan.changed and plan.changes == []


@pytest.mark.parametrize("default", [False, True])
def test_nvidia_ctk_entry_is_a_conflict_without_force(default):
    value = {"runtimes": {"nvidia": {"path": "nvidia-container-runtime", "args": []}}}
    if default:
        value["default-runtime"] = "nvidia"
    with pytest.raises(Conflict) as caught:
        plan_install(doc(value), request())
    error = caught.value
    assert error.reference == "runtime-entry-foreign" and int(error.exit_status) == 7
    assert '{"args": [], "path": "nvidia-container-runtime"}' in error.message  # JSON, not a Python repr
    assert "--runtime-name nvdocker" in error.hint and "--force" in error.hint
    beside = plan_install(doc(value), request(runtime_name="nvdocker"))
    assert beside.after.value["runtimes"]["nvidia"] == value["runtimes"]["nvidia"]
    assert beside.after.value.get("default-runtime") == value.get("default-runtime")


def test_an_entry_with_our_binary_is_updated_not_refused():
    plan = plan_install(doc({"runtimes": {"nvidia": {"path": RUNTIME, "runtimeArgs": ["--debug"]}}}), request())
    assert plan.after.value["runtimes"]["nvidia"] == {"path": RUNTIME}


def test_nvidia_ctk_entry_is_replaced_with_force_and_remembered():
    ctk = {"path": "nvidia-container-runtime", "args": []}
    plan = plan_install(doc({"runtimes": {"nvidia": ctk}}), request(force=True))
    assert any('"path": "nvidia-container-runtime"' in w for w in plan.warnings)
    assert plan.after.value["runtimes"]["nvidia"] == {"path": RUNTIME}
    assert plan.record.previous_entry == ctk
    undone = plan_uninstall(plan.after, "nvidia", plan.record)
    assert undone.after.value == {"runtimes": {"nvidia": ctk}}


@pytest.mark.parametrize("previous", [None, "runc", "io.containerd.runc.v2"])
def test_default_runtime_takes_docker_defaults(previous):
    value = {} if previous is None else {"default-runtime": previous}
    plan = plan_install(doc(value), request(set_default=True))
    assert plan.after.value["default-runtime"] == "nvidia"
    assert plan.record.previous_default == previous


def test_default_runtime_refuses_someone_elses_default_without_force():
    before = doc({"default-runtime": "kata", "runtimes": {"kata": {"path": "/k"}}})
    with pytest.raises(Conflict) as caught:
        plan_install(before, request(set_default=True))
    assert "kata" in caught.value.message and "--force" in caught.value.hint
    forced = plan_install(before, request(set_default=True, force=True))
    assert forced.after.value["default-runtime"] == "nvidia"
    undone = plan_uninstall(forced.after, "nvidia", forced.record)
    assert undone.after.value == before.value
    assert undone.after.text == before.text


def test_cdi_keeps_other_feature_flags():
    before = doc({"features": {"buildkit": True, "containerd-snapshotter": False}})
    plan = plan_install(before, request(enable_cdi=True))
    assert plan.after.value["features"] == {"buildkit": True, "containerd-snapshotter": False, "cdi": True}
    assert plan_uninstall(plan.after, "nvidia", plan.record).after.text == before.text


def test_cdi_false_is_restored_to_false():
    before = doc({"features": {"cdi": False}}, indent=2)
    plan = plan_install(before, request(enable_cdi=True))
    assert plan.record.previous_cdi is False
    assert plan_uninstall(plan.after, "nvidia", plan.record).after.text == before.text


@pytest.mark.parametrize("name", ["runc", "", "a/b", " nvidia"])
def test_bad_runtime_names_are_refused(name):
    with pytest.raises(UsageError):
        plan_install(empty_document(), request(runtime_name=name))


def test_relative_runtime_path_is_refused():
    with pytest.raises(UsageError):
        plan_install(empty_document(), request(runtime_path="nvdocker-runtime"))


@pytest.mark.parametrize("key, value", [("runtimes", []), ("runtimes", "x"), ("features", [1]), ("features", None)])
def test_runtimes_and_features_must_be_objects(key, value):
    with pytest.raises(ConfigReadError) as caught:
        plan_install(doc({key: value}), request())
    assert caught.value.reference == "daemon-json-bad-" + key


def test_second_install_adds_to_the_first_record():
    first = plan_install(doc({"default-runtime": "runc"}), request())
    second = plan_install(first.after, request(set_default=True), first.record)
    assert second.record.runtimes_created and second.record.previous_default == "runc"
    assert plan_uninstall(second.after, "nvidia", second.record).after.value == {"default-runtime": "runc"}


def test_uninstall_leaves_an_entry_the_admin_changed():
    plan = plan_install(doc({}), request())
    edited = plan.after.with_member(["runtimes", "nvidia"], "path", "/opt/other")
    kept = plan_uninstall(edited, "nvidia", plan.record)
    assert not kept.changed and "left in place" in kept.warnings[0]
    forced = plan_uninstall(edited, "nvidia", plan.record, force=True)
    assert forced.after.value == {}


def test_uninstall_leaves_a_default_the_admin_switched():
    plan = plan_install(doc({}), request(set_default=True))
    switched = plan.after.with_member([], "default-runtime", "kata")
    undone = plan_uninstall(switched, "nvidia", plan.record)
    assert undone.after.value == {"default-runtime": "kata"}


def test_uninstall_without_record_does_nothing_unless_forced():
    before = doc({"runtimes": {"nvidia": {"path": "/x"}}, "default-runtime": "nvidia"})
    plan = plan_uninstall(before, "nvidia", None)
    assert not plan.changed and "no record" in plan.warnings[0]
    forced = plan_uninstall(before, "nvidia", None, force=True)
    assert forced.after.value == {"runtimes": {}}


# -- properties -------------------------------------------------------------------------------------

keys = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=8)
scalars = st.none() | st.booleans() | st.integers(-(10**12), 10**12) | st.text(max_size=8)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3), max_leaves=8)
runtime_entries = st.fixed_dictionaries({"path": st.sampled_from(["/k", "/usr/bin/runsc", RUNTIME])})


@st.composite
def daemon_documents(draw):
    value = draw(st.dictionaries(keys.filter(lambda k: k not in ("runtimes", "features", "default-runtime")), values, max_size=6))
    extra = {}
    if draw(st.booleans()):
        extra["runtimes"] = draw(st.dictionaries(st.sampled_from(["kata", "runsc", "nvidia"]), runtime_entries, max_size=2))
    if draw(st.booleans()):
        extra["features"] = draw(st.dictionaries(st.sampled_from(["buildkit", "cdi", "containerd-snapshotter"]), st.booleans(), max_size=2))
    if draw(st.booleans()):
        extra["default-runtime"] = draw(st.sampled_from(["runc", "io.containerd.runc.v2"]))
    items = list(value.items()) + list(extra.items())
    order = draw(st.permutations(range(len(items))))
    ordered = dict(items[i] for i in order)
    indent = draw(st.sampled_from([None, 2, 4, "\t"]))
    text = json.dumps(ordered, ensure_ascii=False, indent=indent)
    if draw(st.booleans()):
        text += "\n"
    return JsonDocument.parse(text.encode())


requests = st.builds(
    InstallRequest,
    runtime_name=st.sampled_from(["nvidia", "gpu", "nvidia-cdi"]),
    runtime_path=st.just(RUNTIME),
    runtime_args=st.lists(st.text(max_size=5), max_size=2).map(tuple),
    set_default=st.booleans(),
    enable_cdi=st.booleans(),
    force=st.just(True),  # the documents may hold someone else's runtimes.nvidia: replacing it is the property
)

PROPERTY_SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _without_ours(value, req):
    rest = {k: v for k, v in value.items() if k not in ("runtimes", "features", "default-runtime")}
    return rest


@PROPERTY_SETTINGS
@given(daemon_documents(), requests)
def test_install_keeps_every_other_key_value_and_order(before, req):
    after = plan_install(before, req).after.value
    assert list(_without_ours(after, req).items()) == list(_without_ours(before.value, req).items())
    for name, entry in before.value.get("runtimes", {}).items():
        if name != req.runtime_name:
            assert after["runtimes"][name] == entry
    for flag, enabled in before.value.get("features", {}).items():
        if flag != "cdi":
            assert after["features"][flag] == enabled
    assert after["runtimes"][req.runtime_name] == docker_entry(req)


@PROPERTY_SETTINGS
@given(daemon_documents(), requests)
def test_install_is_idempotent(before, req):
    once = plan_install(before, req)
    twice = plan_install(once.after, req, once.record)
    assert not twice.changed
    assert twice.after.text == once.after.text


@PROPERTY_SETTINGS
@given(daemon_documents(), requests)
def test_install_then_uninstall_gives_back_the_original_text(before, req):
    installed = plan_install(before, req)
    undone = plan_uninstall(installed.after, req.runtime_name, installed.record)
    assert undone.after.text == before.text
