"""The --json contract (docs/json.md): every verb's output, errors included, validates against its
JSON Schema in docs/schemas/, carries schema_version and the tool's version, and exits as the
README's table says."""

import json
import os
import pathlib

import jsonschema
import pytest

from nvdocker_setup import __version__
from nvdocker_setup.cli import output
from nvdocker_setup.exit_status import ExitStatus
from tests.support.driver_root import simulated_driver_root_fixture

SCHEMAS = pathlib.Path(__file__).resolve().parents[2] / "docs" / "schemas"
ADMIN = b'{\n    "log-driver": "json-file",\n    "runtimes": {"kata": {"path": "/usr/bin/kata-runtime"}}\n}\n'


def schema(name):
    return json.loads((SCHEMAS / (name + ".json")).read_text())


def conforms(outcome, name, exit_code=0):
    """The output is one JSON document, valid for schema ``name``, with the envelope; returns it."""
    assert outcome.exit_code == exit_code, (outcome.stdout, outcome.stderr)
    document = json.loads(outcome.stdout)
    jsonschema.validate(document, schema(name), cls=jsonschema.Draft7Validator)
    assert document["schema_version"] == output.SCHEMA_VERSION == 1
    assert document["version"] == __version__
    if name == "error":
        assert document["error"]["exit_code"] == exit_code
    return document


@pytest.fixture(scope="module")
def driver_root(tmp_path_factory):
    return simulated_driver_root_fixture(tmp_path_factory)


@pytest.fixture
def cdi_env(tmp_path, driver_root):
    absent = tmp_path / "no-runtime.conf"
    absent.write_text("")
    return {"NVDOCKER_RUNTIME_CONFIG": str(absent), "NVDOCKER_DRIVER_ROOT": driver_root.path}


def test_every_schema_is_valid_and_requires_the_envelope():
    names = sorted(path.stem for path in SCHEMAS.glob("*.json"))
    assert names == sorted(["install", "uninstall", "restore", "show", "backups-list", "doctor", "doctor-list",
                            "cdi-generate", "cdi-list", "system", "config", "error"])
    for name in names:
        value = schema(name)
        jsonschema.Draft7Validator.check_schema(value)
        assert {"schema_version", "version", "ok"} <= set(value["required"]), name
        assert value["additionalProperties"] is False, name  # a new field must be documented first


def test_install_dry_run_reports_would_change(cli):
    cli.config.write_bytes(ADMIN)
    dry = conforms(cli.install("--dry-run", "--json"), "install")
    assert dry["dry_run"] is True and dry["changed"] is False and dry["would_change"] is True and dry["diff"]
    assert cli.config.read_bytes() == ADMIN
    done = conforms(cli.install("--json"), "install")
    assert done["changed"] is True and done["would_change"] is True and done["apply"]["method"] == "none"
    again = conforms(cli.install("--dry-run", "--json"), "install")
    assert again["would_change"] is False and again["diff"] == ""
    assert conforms(cli.install("--json"), "install")["would_change"] is False


def test_every_verb_validates(cli, tmp_path):
    cli.config.write_bytes(ADMIN)
    conforms(cli.install("--default-runtime", "--json"), "install")
    shown = conforms(cli("show", "--json"), "show")
    assert shown["installed_by_us"] is True and shown["default_runtime"] == "nvidia"
    listed = conforms(cli("backups", "list", "--json"), "backups-list")
    assert len(listed["backups"]) == 1
    conforms(cli("uninstall", "--dry-run", "--json"), "uninstall")
    removed = conforms(cli("uninstall", "--json"), "uninstall")
    assert removed["changed"] is True and cli.config.read_bytes() == ADMIN
    restored = conforms(cli("restore", "--latest", "--json"), "restore")
    assert restored["action"] == "restore" and restored["changed"] is True
    configured = conforms(cli("runtime", "configure", "--runtime-path", cli.runtime, "--json"), "install")
    assert configured["action"] == "install"
    conforms(cli("doctor", "--list", "--json"), "doctor-list")
    report = cli("doctor", "--check", "config-parse", "--check", "config-runtime-entry", "--json")
    assert conforms(report, "doctor", report.exit_code)["summary"]["total"] == 2
    assert report.exit_code in (ExitStatus.SUCCESS, ExitStatus.DOCTOR_FAILED)


def test_doctor_for_containerd_validates(cli, tmp_path):
    listed = conforms(cli("doctor", "--list", "--engine", "containerd", "--json"), "doctor-list")
    assert listed["engine"] == "containerd" and "containerd-runtime-loaded" in [c["id"] for c in listed["checks"]]
    assert "config-parse" not in [c["id"] for c in listed["checks"]]
    config = tmp_path / "config.toml"
    config.write_text('version = 2\n[grpc]\n  address = "{}"\n'.format(tmp_path / "none.sock"))
    ids = ["containerd-config-parse", "containerd-runtime-entry", "containerd-reachable", "containerd-runtime-loaded"]
    report = cli("doctor", "--engine", "containerd", "--config", str(config), *[a for i in ids for a in ("--check", i)],
                 "--json")
    data = conforms(report, "doctor", report.exit_code)
    assert data["engine"] == "containerd" and data["summary"]["total"] == 4 and report.exit_code == ExitStatus.DOCTOR_FAILED
    other = cli("doctor", "--engine", "containerd", "--check", "config-parse", "--json")
    assert other.exit_code == ExitStatus.USAGE


def test_cdi_verbs_validate(cli, tmp_path, cdi_env):
    out = tmp_path / "cdi" / "nvdocker.yaml"
    generated = conforms(cli("cdi", "generate", "-o", str(out), "--json", env=cdi_env), "cdi-generate")
    assert generated["changed"] is True and "nvidia.com/gpu=all" in generated["devices"]
    assert conforms(cli("cdi", "list", "--spec", str(out), "--json", env=cdi_env), "cdi-list")["stale"] is False


def test_cdi_verbs_with_imex_channels_validate(cli, tmp_path, tmp_path_factory):
    """On the MIG root: the IMEX spec's name in `cdi generate`, its channels and staleness in `cdi list`."""
    from tests.support.driver_root import simulated_mig_root_fixture

    mig_root = simulated_mig_root_fixture(tmp_path_factory)
    absent = tmp_path / "no-runtime.conf"
    absent.write_text("")
    env = {"NVDOCKER_RUNTIME_CONFIG": str(absent), "NVDOCKER_DRIVER_ROOT": mig_root.path}
    out = tmp_path / "cdi" / "nvdocker.yaml"
    generated = conforms(cli("cdi", "generate", "-o", str(out), "--json", env=env), "cdi-generate")
    assert generated["imex_output"] == str(tmp_path / "cdi" / "nvdocker-imex-channel.yaml")
    listed = conforms(cli("cdi", "list", "--spec", str(out), "--json", env=env), "cdi-list")
    assert listed["imex"]["stale"] is False and len(listed["imex"]["devices"]) == 2


@pytest.mark.parametrize(
    "args, error_id, status",
    [
        (("install", "--json", "--apply", "bogus"), "usage", ExitStatus.USAGE),
        (("install", "--json", "--service-manager", "openrc", "--apply", "none"), "usage", ExitStatus.USAGE),
        (("install", "--json", "--no-such-option"), "usage", ExitStatus.USAGE),
        (("backups", "list", "--json", "--bogus"), "usage", ExitStatus.USAGE),
        (("runtime", "configure", "--runtime=crio", "--json"), "usage", ExitStatus.USAGE),
        (("restore", "--json"), "usage", ExitStatus.USAGE),
        (("restore", "no-such-backup", "--json"), "backup-not-found", ExitStatus.NOT_FOUND),
        (("doctor", "--check", "no-such-check", "--json"), "usage", ExitStatus.USAGE),
    ],
)
def test_errors_validate(cli, args, error_id, status):
    document = conforms(cli(*args), "error", status)
    assert document["ok"] is False and document["error"]["id"] == error_id


def test_conflict_and_trust_errors_validate(cli, tmp_path):
    cli.config.write_bytes(b'{"runtimes": {"kata": {"path": "/k"}}, "default-runtime": "kata"}')
    assert conforms(cli.install("--default-runtime", "--json"), "error", ExitStatus.CONFLICT)["error"]["id"] == "conflict"
    missing = str(tmp_path / "bin" / "absent")
    refused = conforms(cli("install", "--runtime-path", missing, "--default-runtime", "--json"), "error",
                       ExitStatus.TRUST_CHECK_FAILED)
    assert refused["error"]["id"] == "runtime-missing"


def test_cdi_errors_have_ids_and_exit_codes(cli, tmp_path, cdi_env):
    missing = conforms(cli("cdi", "list", "--spec", str(tmp_path / "absent.yaml"), "--json", env=cdi_env),
                       "error", ExitStatus.NOT_FOUND)
    assert missing["error"]["id"] == "cdi-spec-missing"
    broken = tmp_path / "broken.json"
    broken.write_text("[1, 2]")
    invalid = conforms(cli("cdi", "list", "--spec", str(broken), "--json", env=cdi_env), "error",
                       ExitStatus.INVALID_CONFIG)
    assert invalid["error"]["id"] == "cdi-spec-invalid"
    nowhere = dict(cdi_env, NVDOCKER_DRIVER_ROOT=str(tmp_path / "nowhere"))
    no_driver = conforms(cli("cdi", "generate", "-o", str(tmp_path / "x.yaml"), "--json", env=nowhere), "error",
                         ExitStatus.NOT_FOUND)
    assert no_driver["error"]["id"] == "gpu-driver"
    bad_conf = tmp_path / "runtime.conf"
    bad_conf.write_text("not an ini line\n")
    conf_error = conforms(cli("cdi", "generate", "-o", str(tmp_path / "y.yaml"), "--json",
                              env=dict(cdi_env, NVDOCKER_RUNTIME_CONFIG=str(bad_conf))), "error", ExitStatus.INVALID_CONFIG)
    assert conf_error["error"]["id"] == "runtime-config-invalid"


def test_system_verbs_validate(cli, tmp_path, driver_root):
    from tests.doctor.simhost import clone_tree

    root = str(tmp_path / "root")
    clone_tree(driver_root.path, root)
    with open(os.path.join(root, "proc/devices"), "w") as handle:
        handle.write("Character devices:\n195 nvidia-frontend\n510 nvidia-uvm\n")
    os.unlink(os.path.join(root, "dev/nvidiactl"))
    dry = conforms(cli("system", "create-dev-char-symlinks", "--driver-root", root, "--dry-run", "--json"), "system")
    assert dry["would_change"] is True and dry["changed"] is False
    nodes = conforms(cli("system", "create-device-nodes", "--control-devices", "--driver-root", root, "--json"),
                     "system")
    assert nodes["action"] == "create-device-nodes" and nodes["changed"] is True
    made = conforms(cli("system", "create-dev-char-symlinks", "--driver-root", root, "--json"), "system")
    assert made["changed"] is True and {entry["status"] for entry in made["entries"]} == {"created"}
    os.unlink(os.path.join(root, "dev/char/195:0"))
    os.symlink("../nvidia1", os.path.join(root, "dev/char/195:0"))
    conflict = conforms(cli("system", "create-dev-char-symlinks", "--driver-root", root, "--json"), "system",
                        ExitStatus.CONFLICT)
    assert conflict["ok"] is False
    os.symlink("/", os.path.join(root, "dev/char/escape"))
    unsafe = conforms(cli("system", "create-dev-char-symlinks", "--driver-root", root, "--dev-char-path",
                          "/dev/char/escape", "--json"), "error", ExitStatus.TRUST_CHECK_FAILED)
    assert unsafe["error"]["id"] == "unsafe-path"


def test_config_verb_validates(cli, tmp_path):
    conf = tmp_path / "runtime.conf"
    conf.write_text("# mine\n[runtime]\nruntimes = runc\n")
    listed = conforms(cli("config", "--list", "--config", str(conf), "--json"), "config")
    assert listed["action"] == "list" and {"no-cgroups", "log-level"} <= {k["key"] for k in listed["keys"]}
    got = conforms(cli("config", "--get", "nvidia-container-cli.no-cgroups", "--config", str(conf), "--json"), "config")
    assert got["key"] == "no-cgroups" and got["value"] == "false" and got["set"] is False
    printed = conforms(cli("config", "--set", "no-cgroups", "--config", str(conf), "--json"), "config")
    assert printed["written"] is None and printed["would_change"] is True and "no-cgroups = true" in printed["content"]
    done = conforms(cli("config", "--set", "no-cgroups", "--in-place", "--config", str(conf), "--json"), "config")
    assert done["changed"] is True and done["backup"] and done["written"] == str(conf)
    unknown = conforms(cli("config", "--set", "bogus=1", "--config", str(conf), "--json"), "error", ExitStatus.USAGE)
    assert unknown["error"]["id"] == "config-key-unknown"


def test_envelope_cannot_be_overwritten():
    with pytest.raises(ValueError):
        output.envelope({"version": "x"})
    assert list(output.envelope({"a": 1})) == ["schema_version", "version", "ok", "a"]


def test_the_docs_name_every_schema():
    text = (SCHEMAS.parent / "json.md").read_text()
    for path in SCHEMAS.glob("*.json"):
        assert "schemas/{}".format(path.name) in text, path.name
    assert os.path.exists(str(SCHEMAS.parent / "json.md"))
