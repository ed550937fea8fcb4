"""containerd config.toml: the corpus round-trips (install adds lines only, a second install changes
nothing, uninstall gives back the bytes), containerd's own parser agrees, hostile files are refused."""

import copy
import difflib
import os
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nvdocker_setup.core.plan import InstallRequest
from nvdocker_setup.engines.containerd import plan as cplan
from nvdocker_setup.engines.containerd.config import MAX_BYTES, ContainerdDocument
from nvdocker_setup.errors import ConfigReadError, Conflict, UsageError
from tests.containerd.corpus_support import (
    CONTAINERDS,
    FILES,
    cases,
    config_dump,
    containerd_binary,
    corpus_bytes,
    empty_version,
)

PATH = "/usr/bin/nvdocker-runtime"
FLAGS = [(False, False), (True, False), (False, True), (True, True)]


def _doc(name: str, version: int = 2) -> ContainerdDocument:
    return ContainerdDocument.parse(corpus_bytes(name), name, empty_version=version)


def _request(set_default: bool = False, cdi: bool = False, name: str = "nvidia", path: str = PATH, **kw):
    return InstallRequest(name, path, set_default=set_default, enable_cdi=cdi, **kw)


def _check_only_additions(before: str, after: str, allowed=()) -> None:
    """``after`` is ``before`` plus whole lines, apart from lines that set one of ``allowed``."""
    old, new = before.splitlines(True), after.splitlines(True)
    if old and not old[-1].endswith("\n") and not after.endswith(old[-1]):  # a last line without newline gets one when we append after it
        old[-1] += "\r\n" if "\r\n" in after else "\n"
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=old, b=new, autojunk=False).get_opcodes():
        if tag in ("equal", "insert"):
            continue
        changed = old[i1:i2] + new[j1:j2]
        assert all(any(key in line for key in allowed) for line in changed), (tag, changed)


# -- the corpus, pure -----------------------------------------------------------------------------------


@pytest.mark.parametrize("set_default,cdi", FLAGS)
@pytest.mark.parametrize("name", sorted(FILES))
def test_corpus_install_reinstall_uninstall(name, set_default, cdi):
    original = corpus_bytes(name)
    document = _doc(name)
    plan = cplan.plan_install(document, _request(set_default, cdi))
    assert plan.changed
    allowed = (["default_runtime_name"] if set_default else []) + (["enable_cdi"] if cdi else [])
    _check_only_additions(document.text, plan.after.text, allowed)
    after = plan.after
    assert after.encode().count(b"\r\n") == after.encode().count(b"\n") or b"\r\n" not in original
    entry = cplan.runtime_entry(after.value, "nvidia")
    assert entry is not None and entry["runtime_type"] == "io.containerd.runc.v2"
    assert entry["options"]["BinaryName"] == PATH
    assert plan.record is not None and plan.record.engine == "containerd" and plan.record.entry == entry
    runc = cplan.runtime_entry(document.value, "runc")
    if runc is not None and isinstance(runc.get("options"), dict):
        for key, value in runc["options"].items():
            if key != "BinaryName":
                assert entry["options"][key] == value
    if set_default:
        assert cplan.default_runtime_name(after.value) == "nvidia"
    if cdi:
        assert cplan.cdi_enabled(after.value) is True
    # everything else reads back the same
    expected = copy.deepcopy(document.value)
    again = cplan.plan_install(after, _request(set_default, cdi), plan.record)
    assert not again.changed and again.after.text == after.text
    undo = cplan.plan_uninstall(after, "nvidia", plan.record)
    assert undo.after.encode() == original
    assert expected == document.value


def test_corpus_install_beside_existing_tables_is_where_a_human_puts_it():
    plan = cplan.plan_install(_doc("kata-comments.toml"), _request())
    text = plan.after.text
    kata_options = text.index("runtimes.kata.options]")
    ours = text.index("runtimes.nvidia]")
    assert kata_options < ours < text.index("  # registry mirrors")
    assert '\n    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nvidia]\n' in text
    assert '\n      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nvidia.options]\n' in text
    v3 = cplan.plan_install(_doc("default-2.1.toml"), _request()).after.text
    assert "\n        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.nvidia]\n" in v3
    assert "\n            BinaryName = '/usr/bin/nvdocker-runtime'\n" in v3


def test_dotted_keys_stay_dotted():
    plan = cplan.plan_install(_doc("dotted-inline.toml"), _request(True, True))
    assert 'containerd.runtimes.nvidia.runtime_type = "io.containerd.runc.v2"\n' in plan.after.text
    assert 'containerd.runtimes.nvidia.options.SystemdCgroup = true\n' in plan.after.text
    assert 'containerd.default_runtime_name = "nvidia"\n' in plan.after.text


def test_empty_file_gets_a_version_and_gives_back_nothing():
    for version in (2, 3):
        document = ContainerdDocument.parse(b"", "config.toml", empty_version=version)
        assert document.version == version and document.text == ""
        plan = cplan.plan_install(document, _request(True, True))
        assert plan.after.text.startswith("version = {}\n".format(version))
        assert plan.after.version == version
        assert plan.record is not None and plan.record.created_tables[0] == cplan.VERSION_MARKER
        assert cplan.plan_uninstall(plan.after, "nvidia", plan.record).after.text == ""


def test_crlf_stays_crlf():
    plan = cplan.plan_install(_doc("crlf.toml"), _request(True, True))
    data = plan.after.encode()
    assert b"\r\n" in data and data.count(b"\n") == data.count(b"\r\n")


# -- containerd's own parser ------------------------------------------------------------------------------


def _cri(dump):
    version = dump.get("version", 1)
    return dump["plugins"]["io.containerd.cri.v1.runtime" if version == 3 else "io.containerd.grpc.v1.cri"]


def _same_as_runc(handler, runc, release) -> bool:
    """Our handler as containerd reads it equals its runc handler apart from BinaryName and the fields we do
    not copy (:data:`cplan.NOT_COPIED`, all empty in the corpus). containerd 2.x fills its built-in runc with
    ``sandboxer = "podsandbox"`` and gives an empty ``sandboxer`` the same meaning when it validates the
    config (``podsandbox`` is the default mode), so an empty one counts as ``podsandbox`` there."""
    ours, theirs = copy.deepcopy(handler), copy.deepcopy(runc)
    for entry in (ours, theirs):
        entry["options"].pop("BinaryName", None)
        # runc's options are a protobuf message: a key left out is its zero value (2.x shows the built-in
        # runc's zero options, a handler of the file shows the keys it sets)
        entry["options"] = {key: value for key, value in entry["options"].items() if value not in ("", 0, False)}
        if release == "2.1" and not entry.get("sandboxer"):
            entry["sandboxer"] = "podsandbox"
    return ours == theirs


@pytest.mark.parametrize("name,release", cases())
def test_containerd_dump_shows_our_handler_and_nothing_else(name, release, tmp_path):
    binary = containerd_binary(release)
    cdi_supported = CONTAINERDS[release][1]
    document = _doc(name, empty_version(release))
    plan = cplan.plan_install(document, _request(True, cdi_supported), cdi_supported=cdi_supported)
    before_file, after_file = tmp_path / "before.toml", tmp_path / "after.toml"
    before_file.write_bytes(document.encode())
    after_file.write_bytes(plan.after.encode())
    before, after = config_dump(binary, str(before_file)), config_dump(binary, str(after_file))
    handler = _cri(after)["containerd"]["runtimes"].pop("nvidia")
    assert handler["runtime_type"] == "io.containerd.runc.v2"
    assert plan.record is not None
    for key, value in plan.record.entry["options"].items():
        assert handler["options"][key] == value
    assert _same_as_runc(handler, _cri(after)["containerd"]["runtimes"]["runc"], release), handler
    assert _cri(after)["containerd"].pop("default_runtime_name") == "nvidia"
    _cri(before)["containerd"].pop("default_runtime_name")
    if cdi_supported:
        assert _cri(after).pop("enable_cdi") is True
        _cri(before).pop("enable_cdi", None)
    for dump in (before, after):
        dump.pop("imports", None)  # names the file itself
    assert after == before


# -- refusals ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("data,reference,line", [
    (b"version = 2\n[plugins\n", "containerd-config-invalid", 2),
    (b'version = 2\n[a]\nx = 1\n[a]\ny = 2\n', "containerd-config-duplicate", 4),
    (b'version = 2\nroot = "a"\nroot = "b"\n', "containerd-config-duplicate", 3),
    (b'version = 2\n[a]\nb.c = 1\n[a.b]\nd = 2\n', "containerd-config-duplicate", 4),
    (b'version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd]\nruntimes = "x"\n',
     "containerd-config-bad-table", 3),
    (b'version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes]\nnvidia = 1\n',
     "containerd-config-bad-table", 3),
    (b'version = 2\n[plugins]\n"io.containerd.grpc.v1.cri" = []\n', "containerd-config-bad-table", 3),
    (b'version = 2\n[[plugins."io.containerd.grpc.v1.cri".containerd.runtimes]]\n', "containerd-config-bad-table", 2),
    (b'version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd]\ndefault_runtime_name = 3\n',
     "containerd-config-bad-value", 3),
    (b"version = 9\n", "containerd-config-unknown-version", 1),
    (b'version = "2"\n', "containerd-config-unknown-version", 1),
    (b"version = 2\n# a\x00b\n", "containerd-config-invalid", 2),
    (b'version = 2\nroot = "\xff"\n', "containerd-config-encoding", 2),
    (b"\xef\xbb\xbfversion = 2\n", "containerd-config-encoding", 1),
    (b"version = 2\rroot = 'x'\n", "containerd-config-invalid", 1),
])
def test_hostile_files_are_refused_with_a_stable_reference(data, reference, line):
    with pytest.raises(ConfigReadError) as caught:
        ContainerdDocument.parse(data, "config.toml")
    assert caught.value.reference == reference
    assert caught.value.hint
    assert "config.toml:{}".format(line) in caught.value.message


def test_huge_file_is_refused():
    with pytest.raises(ConfigReadError) as caught:
        ContainerdDocument.parse(b"#" * (MAX_BYTES + 1), "config.toml")
    assert caught.value.reference == "containerd-config-too-large"


def test_inline_runtimes_are_refused_not_rewritten():
    data = b'version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd]\nruntimes = { runc = { runtime_type = "x" } }\n'
    with pytest.raises(ConfigReadError) as caught:
        cplan.plan_install(ContainerdDocument.parse(data), _request())
    assert caught.value.reference == "containerd-config-edit-unsafe"


def test_cri_disabled_is_refused():
    data = b'# docker-ce containerd.io\ndisabled_plugins = ["cri"]\n'
    document = ContainerdDocument.parse(data)
    assert document.version == 1 and document.cri_disabled() == "cri"
    with pytest.raises(Conflict) as caught:
        cplan.plan_install(document, _request())
    assert caught.value.reference == "containerd-cri-disabled" and "disabled_plugins" in (caught.value.hint or "")


def test_foreign_entry_needs_force_and_comes_back():
    data = corpus_bytes("kubeadm.toml") + (
        b'\n      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nvidia]\n'
        b'        runtime_type = "io.containerd.runc.v2"\n'
        b'        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nvidia.options]\n'
        b'          BinaryName = "/usr/bin/nvidia-container-runtime"\n'
    )
    document = ContainerdDocument.parse(data)
    with pytest.raises(Conflict) as caught:
        cplan.plan_install(document, _request())
    assert caught.value.reference == "runtime-entry-foreign"
    plan = cplan.plan_install(document, _request(force=True))
    assert cplan.runtime_entry(plan.after.value, "nvidia")["options"]["BinaryName"] == PATH
    assert plan.record is not None and plan.record.previous_entry is not None
    undo = cplan.plan_uninstall(plan.after, "nvidia", plan.record)
    assert undo.after.value == document.value


def test_foreign_default_needs_force_and_uninstall_restores_it():
    data = corpus_bytes("kata-comments.toml").replace(b'default_runtime_name = "runc"', b'default_runtime_name = "kata"')
    document = ContainerdDocument.parse(data)
    with pytest.raises(Conflict):
        cplan.plan_install(document, _request(True))
    plan = cplan.plan_install(document, _request(True, force=True))
    assert plan.record is not None and plan.record.previous_default == "kata"
    assert cplan.plan_uninstall(plan.after, "nvidia", plan.record).after.encode() == data


def test_usage_errors():
    document = _doc("kubeadm.toml")
    with pytest.raises(UsageError) as caught:
        cplan.plan_install(document, InstallRequest("nvidia", PATH, runtime_args=("--debug",)))
    assert caught.value.reference == "containerd-runtime-args"
    with pytest.raises(UsageError) as caught:
        cplan.plan_install(document, _request(cdi=True), cdi_supported=False)
    assert caught.value.reference == "containerd-cdi-unsupported"
    with pytest.raises(UsageError):
        cplan.plan_install(document, _request(path="nvidia-container-runtime"))


def test_admin_edits_after_install_are_left_alone():
    document = _doc("kubeadm.toml")
    plan = cplan.plan_install(document, _request(True))
    edited = plan.after.text.replace(PATH, "/opt/other/runtime")
    undo = cplan.plan_uninstall(plan.after.with_text(edited), "nvidia", plan.record)
    assert cplan.runtime_entry(undo.after.value, "nvidia") is not None and undo.warnings
    assert cplan.default_runtime_name(undo.after.value) is None  # kubeadm.toml leaves it unset
    assert cplan.plan_uninstall(document, "nvidia", None).after.text == document.text


def test_versions_and_paths():
    assert _doc("v1-noversion.toml").runtimes_path == ("plugins", "cri", "containerd", "runtimes")
    assert _doc("default-2.1.toml").cri_path == ("plugins", "io.containerd.cri.v1.runtime")
    eks = _doc("eks.toml")
    assert eks.imports == ["/etc/containerd/config.d/*.toml"] and eks.version == 2
    assert eks.get(eks.default_runtime_name_path) == "runc"


# -- random requests ------------------------------------------------------------------------------------

_names = st.from_regex(r"\A[a-z0-9](?:[a-z0-9_.-]{0,20}[a-z0-9])?\Z").filter(
    lambda n: n != "runc" and not n.startswith("io.containerd.") and n not in ("kata",))
_paths = st.lists(st.text(alphabet=string.ascii_letters + string.digits + "._-'\" é\\", min_size=1, max_size=12),
                  min_size=1, max_size=4).map(lambda parts: "/" + "/".join(parts))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=_names, path=_paths, flags=st.sampled_from(FLAGS),
       corpus=st.sampled_from(["kubeadm.toml", "default-2.1.toml", "dotted-inline.toml", "empty.toml", "crlf.toml",
                               "v1-noversion.toml", "kata-comments.toml", "realistic-250.toml"]))
def test_random_requests_round_trip(name, path, flags, corpus):
    original = corpus_bytes(corpus)
    document = ContainerdDocument.parse(original, corpus)
    request = _request(flags[0], flags[1], name=name, path=path)
    plan = cplan.plan_install(document, request)
    entry = cplan.runtime_entry(plan.after.value, name)
    assert entry is not None and entry["options"]["BinaryName"] == path
    assert not cplan.plan_install(plan.after, request, plan.record).changed
    assert cplan.plan_uninstall(plan.after, name, plan.record).after.encode() == original


def test_corpus_files_exist():
    assert sorted(os.listdir(os.path.join(os.path.dirname(__file__), "corpus"))) == sorted(FILES)
