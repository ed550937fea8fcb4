"""doctor --engine containerd: each containerd check on the simulated host, with the facts no file
holds (containerd's version, the CRI Status answer) injected."""

import pytest

from nvdocker_setup.doctor.checks import NotForEngine, all_checks, run_checks, run_one, select
from nvdocker_setup.engines.containerd import cri
from tests.doctor.ctdhost import CTD_CONFIG, config_text, ctd_facts, live_status
from tests.doctor.simhost import RUNTIME

DOCKER_ONLY = {"runtime-binary", "gpu-hook-on-path", "gpu-hook-registered", "toolkit-config", "cdi-docker-support",
               "cdi-podman-support", "container-gpu-smoke"}


def run(facts, check_id):
    item = next(check for check in all_checks(None) if check.id == check_id)
    return run_one(item, facts)


def test_containerd_runs_its_own_checks_and_the_engine_independent_ones_only():
    docker = {item.id for item in all_checks("docker")}
    containerd = {item.id for item in all_checks("containerd")}
    assert not DOCKER_ONLY & containerd and DOCKER_ONLY <= docker
    assert not {check_id for check_id in containerd if check_id.startswith(("config-", "daemon-"))}
    assert {"driver-kernel-module", "runtime-hook-binary", "runtime-low-level", "host-selinux", "cdi-spec"} <= containerd
    assert not {check_id for check_id in docker if "containerd" in check_id}
    assert all_checks() == all_checks("docker")
    with pytest.raises(NotForEngine):
        select(["config-parse"], "containerd")
    with pytest.raises(KeyError):
        select(["no-such-check"], "containerd")


def test_healthy_containerd_is_ready(host):
    report = run_checks(ctd_facts(host, config_text(systemd=False), status=live_status()))
    bad = [(r.id, r.status, r.detail) for r in report.results if r.status not in ("ok", "skip")]
    assert report.verdict().status == "ready", bad
    assert {r.id for r in report.results} == {item.id for item in all_checks("containerd")}


def test_dev_char_links_follow_systemd_cgroup_of_our_handler(host):
    result = run(ctd_facts(host, config_text(systemd=True), status=live_status()), "driver-dev-char-links")
    assert result.status == "fail" and "SystemdCgroup of runtimes.nvidia" in result.detail
    assert "exec-opts" not in result.hint and "SystemdCgroup = false" in result.hint
    result = run(ctd_facts(host, config_text(systemd=False), status=live_status()), "driver-dev-char-links")
    assert result.status == "skip"


def test_no_docker_fact_is_asked_for(host, monkeypatch):
    from nvdocker_setup.doctor.facts import Facts

    def forbidden(self, *args, **kwargs):
        raise AssertionError("a Docker fact was gathered")

    for name in ("location", "snapshot", "config", "info", "api", "dockerd", "dockerd_processes", "flag_sources"):
        monkeypatch.setattr(Facts, name, forbidden)
    report = run_checks(ctd_facts(host, config_text(), status=live_status()))
    assert not [r for r in report.results if "crashed" in r.detail]


def test_location_names_the_rule_and_warns_on_a_regenerated_file(host, tmp_path):
    result = run(ctd_facts(host, config_text(), status=live_status()), "containerd-config-location")
    assert result.status == "ok" and result.data["rule"] == "default" and result.data["path"] == CTD_CONFIG
    rancher = "/var/lib/rancher/k3s/agent/etc/containerd/config.toml"
    host.write(rancher, config_text())
    facts = ctd_facts(host, status=live_status(), config=host.path(rancher))
    # --config names a host path here; the rule is about where the file lives on the host
    facts._memo["ctd-location"] = (True, type(facts.ctd_location())(rancher, "running-containerd", "--config of k3s"))
    result = run(facts, "containerd-config-location")
    assert result.status == "warn" and "k3s/RKE2" in result.detail and "config.toml.tmpl" in result.hint


def test_parse_error_has_line_and_column_and_a_fix(host):
    facts = ctd_facts(host, 'version = 2\n[plugins\n', status=live_status())
    result = run(facts, "containerd-config-parse")
    assert result.status == "fail" and "config.toml:2" in result.detail and "refuses to start" in result.detail
    assert "backups" in result.hint
    assert run(facts, "containerd-runtime-entry").cause == "containerd-config-parse"


def test_missing_file_is_containerd_defaults(host):
    facts = ctd_facts(host, None, version=(2, 1, 9), status=live_status(runtimes={}))
    result = run(facts, "containerd-config-parse")
    assert result.status == "ok" and "does not exist" in result.detail and "version 3" in result.detail
    assert run(facts, "containerd-runtime-entry").status == "fail"


def test_v1_file_on_containerd_2_needs_migrate(host):
    result = run(ctd_facts(host, config_text(version=1), version=(2, 1, 9), status=live_status()),
                 "containerd-config-version")
    assert result.status == "fail" and "containerd config migrate" in result.hint


def test_v3_file_on_containerd_1_fails_and_matching_versions_pass(host):
    assert run(ctd_facts(host, config_text(version=3), version=(1, 7, 24)), "containerd-config-version").status == "fail"
    assert run(ctd_facts(host, config_text(version=3), version=(2, 1, 9)), "containerd-config-version").status == "ok"
    assert run(ctd_facts(host, config_text(version=2), version=(2, 1, 9)), "containerd-config-version").status == "ok"
    assert run(ctd_facts(host, config_text(version=2), version=None), "containerd-config-version").status == "skip"


def test_cri_disabled_as_containerd_io_ships_it(host):
    text = config_text(extra='disabled_plugins = ["cri"]\n')
    facts = ctd_facts(host, text, status=cri.CriUnavailable("containerd on /run/containerd/containerd.sock does not "
                                                            "serve the CRI API"))
    result = run(facts, "containerd-cri-enabled")
    assert result.status == "fail" and '"cri"' in result.detail and "remove" in result.hint
    reachable = run(facts, "containerd-reachable")
    assert reachable.status == "fail" and reachable.cause == "containerd-cri-enabled"


def test_missing_handler_says_how_to_install(host):
    result = run(ctd_facts(host, config_text(ours=False), status=live_status(runtimes={})), "containerd-runtime-entry")
    assert result.status == "fail" and "`nvdocker-setup install --engine containerd`" in result.hint


def test_foreign_nvidia_handler_is_informational_with_the_choice(host):
    facts = ctd_facts(host, config_text(binary="/usr/bin/nvidia-container-runtime"),
                      status=live_status(runtimes={"nvidia": "/usr/bin/nvidia-container-runtime"}))
    foreign = run(facts, "containerd-foreign-handler")
    assert foreign.status == "ok" and "NVIDIA's" in foreign.detail
    assert "--runtime-name nvdocker" in foreign.detail
    assert run(facts, "containerd-runtime-entry").data["owner"] == "nvidia"
    binary = run(facts, "containerd-handler-binary")
    assert binary.status == "fail" and "nvidia-container-toolkit" in binary.hint


def test_systemd_cgroup_mismatch_fails_with_the_fix(host):
    facts = ctd_facts(host, config_text(systemd=True, ours_systemd=False), status=live_status())
    result = run(facts, "containerd-systemd-cgroup")
    assert result.status == "fail" and "SystemdCgroup = true" in result.hint and "reinstall" in result.hint
    assert run(ctd_facts(host, config_text(systemd=False)), "containerd-systemd-cgroup").status == "ok"


def test_handler_binary_missing_or_unsafe(host):
    host.remove(RUNTIME)
    result = run(ctd_facts(host, config_text(), status=live_status()), "containerd-handler-binary")
    assert result.status == "fail" and "does not exist" in result.detail
    host.write(RUNTIME, "#!/bin/sh\n", 0o777)
    result = run(ctd_facts(host, config_text(), status=live_status()), "containerd-handler-binary")
    assert result.status == "fail" and "not safe" in result.detail


def test_unreachable_grpc_missing_and_not_ready(host):
    facts = ctd_facts(host, config_text())
    assert run(facts, "containerd-reachable").status == "fail"
    loaded = run(facts, "containerd-runtime-loaded")
    assert loaded.status == "skip" and loaded.cause == "containerd-reachable"
    missing = cri.GrpcMissing("the CRI Status check needs the grpc Python package: No module named 'grpc'",
                              hint="install python3-grpcio")
    result = run(ctd_facts(host, config_text(), status=missing), "containerd-reachable")
    assert result.status == "warn" and "python3-grpcio" in result.hint
    result = run(ctd_facts(host, config_text(), status=live_status(ready=False)), "containerd-reachable")
    assert result.status == "fail" and "RuntimeReady is false" in result.detail


def test_handler_in_the_file_but_not_loaded_says_restart(host):
    result = run(ctd_facts(host, config_text(), status=live_status(runtimes={})), "containerd-runtime-loaded")
    assert result.status == "fail" and "restart containerd" in result.detail
    result = run(ctd_facts(host, config_text(), status=live_status(runtimes={"nvidia": "/old/runtime"})),
                 "containerd-runtime-loaded")
    assert result.status == "fail" and "/old/runtime" in result.detail
    result = run(ctd_facts(host, config_text(ours=False), status=live_status()), "containerd-runtime-loaded")
    assert result.status == "warn" and "no longer has" in result.detail


SPEC = ("cdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices:\n- name: all\n  containerEdits:\n    deviceNodes:\n"
        "    - path: /dev/nvidia0\n")


def test_cdi_needs_containerd_1_7_and_enable_cdi(host):
    assert run(ctd_facts(host, config_text(), status=live_status()), "cdi-containerd-support").status == "skip"
    host.write("/etc/cdi/nvidia.yaml", SPEC)
    result = run(ctd_facts(host, config_text(), version=(1, 6, 20), status=live_status()), "cdi-containerd-support")
    assert result.status == "warn" and "has no CDI" in result.detail
    result = run(ctd_facts(host, config_text(), status=live_status(enable_cdi=False)), "cdi-containerd-support")
    assert result.status == "warn" and "--cdi" in result.hint
    result = run(ctd_facts(host, config_text(), status=live_status(enable_cdi=True)), "cdi-containerd-support")
    assert result.status == "ok"
    # containerd unreachable: the file, else the version's default (on from 2.0)
    assert run(ctd_facts(host, config_text(version=3), version=(2, 1, 9)), "cdi-containerd-support").status == "ok"


def test_docs_describe_every_containerd_check():
    from tests.doctor.test_catalogue import _docs

    docs = _docs()
    for item in all_checks("containerd"):
        assert "| `{}` |".format(item.id) in docs, item.id
    assert "--engine containerd" in docs
