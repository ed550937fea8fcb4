"""docker-config checks on simulated hosts: broken files, fake unit files and environment files,
fake dpkg/rpm/systemctl/dockerd on the checks' PATH."""

import json
import os

from nvdocker_setup.adapters.state import StateStore
from nvdocker_setup.core.plan import InstallRecord
from tests.doctor.simhost import CONFIG, RUNTIME

RUNTIME_ENTRY = {"nvidia": {"path": RUNTIME}}


def test_location_is_the_file_the_running_dockerd_reads(host):
    result = host.run("config-location")
    assert result.status == "ok", result
    assert result.data["rule"] == "default" and result.data["path"] == CONFIG and result.data["exists"]
    assert "pid 4242" in result.detail


def test_location_follows_dockerds_config_file_flag(host):
    host.add_dockerd(argv=("/usr/bin/dockerd", "--config-file", "/srv/docker.json"))
    host.write("/srv/docker.json", json.dumps({"runtimes": RUNTIME_ENTRY}))
    result = host.run("config-location")
    assert result.status == "ok" and result.data["path"] == "/srv/docker.json"
    assert host.run("config-runtime-entry").status == "ok"


def test_location_given_with_config_but_dockerd_reads_another_file(host, tmp_path):
    other = tmp_path / "elsewhere.json"
    other.write_text("{}")
    result = host.run("config-location", config=str(other))
    assert result.status == "warn"
    assert "dockerd reads /etc/docker/daemon.json" in result.detail
    assert "--config /etc/docker/daemon.json" in result.hint


def test_location_of_the_docker_snap(host):
    host.remove_dockerd()
    os.makedirs(host.path("/var/snap/docker/current/config"))
    result = host.run("config-location")
    assert result.status == "warn" and result.data["rule"] == "snap"
    assert "`nvdocker-setup install --runtime-name nvdocker --config /var/snap/docker/current/config/daemon.json`" \
        in result.hint
    assert "nvidia-ctk" not in result.hint and "snap set" not in result.hint


def test_location_of_a_missing_file(host):
    host.remove(CONFIG)
    result = host.run("config-location")
    assert result.status == "ok" and "does not exist yet" in result.detail and not result.data["exists"]
    assert host.run("config-parse").status == "skip"
    assert host.run("config-schema").status == "skip"


def test_parse_ok(host):
    result = host.run("config-parse")
    assert result.status == "ok" and "2 top-level keys" in result.detail


def test_parse_trailing_comma(host):
    host.write_config(None, raw='{\n  "runtimes": {"nvidia": {"path": "/usr/bin/nvdocker-runtime"},}\n}\n')
    result = host.run("config-parse")
    assert result.status == "fail"
    assert "line 2" in result.detail and "dockerd refuses to start" in result.detail
    assert "nvdocker-setup restore" in result.hint
    # the checks that need the file's content skip, pointing here
    for other in ("config-schema", "config-runtime-entry", "config-default-runtime", "config-flag-conflicts"):
        skipped = host.run(other)
        assert skipped.status == "skip" and "config-parse" in skipped.detail


def test_parse_two_concatenated_objects(host):
    host.write_config(None, raw='{"runtimes": {}}\n{"default-runtime": "nvidia"}\n')
    result = host.run("config-parse")
    assert result.status == "fail" and "more than one JSON document" in result.hint


def test_parse_empty_file(host):
    host.write_config(None, raw="  \n")
    result = host.run("config-parse")
    assert result.status == "warn" and "moby#41268" in result.detail
    assert "echo '{}' > /etc/docker/daemon.json" in result.hint


def test_schema_ok_error_and_warning(host):
    assert host.run("config-schema").status == "ok"
    host.write_config({"runtime": RUNTIME_ENTRY})
    result = host.run("config-schema")
    assert result.status == "fail" and "did you mean 'runtimes'" in result.detail
    host.write_config({"runtimes": RUNTIME_ENTRY, "label": "x"})
    result = host.run("config-schema")
    assert result.status == "warn" and "'label' has no effect" in result.detail


def test_schema_leaves_our_entry_to_the_entry_check(host):
    host.write_config({"runtimes": {"nvidia": {"path": "nvdocker-runtime", "args": []}}})
    assert host.run("config-schema").status == "ok"
    result = host.run("config-runtime-entry")
    assert result.status == "warn"
    assert "relative" in result.detail and "'args', which dockerd ignores" in result.detail
    assert 'rename "args" to "runtimeArgs"' in result.hint and "--runtime-path /usr/bin/nvdocker-runtime" in result.hint


def test_runtime_entry_ok_with_runtime_args(host):
    host.write_config({"runtimes": {"nvidia": {"path": RUNTIME, "runtimeArgs": ["--debug"]}}})
    result = host.run("config-runtime-entry")
    assert result.status == "ok" and "runtimeArgs" in result.detail and "--debug" in result.detail


def test_runtime_entry_missing(host):
    host.write_config({"runtimes": {"kata": {"path": "/usr/bin/kata-runtime"}}})
    result = host.run("config-runtime-entry")
    assert result.status == "fail" and "unknown or invalid runtime name: nvidia" in result.detail
    assert result.hint == "nvdocker-setup install"
    other = host.run("config-runtime-entry", runtime_name="gpu", config=host.path(CONFIG))
    assert other.hint == "nvdocker-setup install --runtime-name gpu --config " + host.path(CONFIG)


def test_default_runtime_runc_is_reported(host):
    result = host.run("config-default-runtime")
    assert result.status == "ok" and result.data["default"] == "runc"
    assert "Kubernetes and `docker build` get no GPU" in result.detail


def test_default_runtime_ours_and_executable(host):
    host.write_config({"runtimes": RUNTIME_ENTRY, "default-runtime": "nvidia"})
    result = host.run("config-default-runtime")
    assert result.status == "ok" and "executable" in result.detail and "BuildKit" in result.detail


def test_default_runtime_whose_binary_is_missing(host):
    host.write_config({"runtimes": RUNTIME_ENTRY, "default-runtime": "nvidia"})
    host.remove(RUNTIME)
    result = host.run("config-default-runtime")
    assert result.status == "fail" and "EVERY container fails" in result.detail
    assert '"default-runtime": "runc"' in result.hint


def test_default_runtime_relative_name_not_on_dockerds_path(host):
    host.write_config({"runtimes": {"nvidia": {"path": "nvidia-container-runtime"}}, "default-runtime": "nvidia"})
    result = host.run("config-default-runtime")
    assert result.status == "fail" and "nvidia-container-runtime on dockerd's PATH (the environment of dockerd" in result.detail


def test_default_runtime_undefined(host):
    host.write_config({"runtimes": RUNTIME_ENTRY, "default-runtime": "gpu"})
    result = host.run("config-default-runtime")
    assert result.status == "fail" and "'gpu' is not defined" in result.detail


def test_flag_conflicts_none(host):
    result = host.run("config-flag-conflicts")
    assert result.status == "ok"
    assert "the running dockerd (pid 4242)" in result.detail and "/lib/systemd/system/docker.service" in result.detail


def test_hosts_in_the_file_and_h_in_the_unit(host):
    host.write_config({"runtimes": RUNTIME_ENTRY, "hosts": ["unix:///var/run/docker.sock"]})
    result = host.run("config-flag-conflicts")
    assert result.status == "fail"
    assert "-H in the running dockerd (pid 4242) and 'hosts' in daemon.json" in result.detail
    assert "specified both as a flag and in the configuration file" in result.detail
    assert "systemctl daemon-reload" in result.hint


def test_default_runtime_flag_in_a_unit_drop_in(host):
    host.remove_dockerd()
    host.write("/etc/systemd/system/docker.service.d/gpu.conf",
               "[Service]\nExecStart=\nExecStart=/usr/bin/dockerd --default-runtime=nvidia\n")
    host.write_config({"runtimes": RUNTIME_ENTRY, "default-runtime": "nvidia"})
    result = host.run("config-flag-conflicts")
    assert result.status == "fail" and "--default-runtime in /lib/systemd/system/docker.service + " \
        "/etc/systemd/system/docker.service.d/gpu.conf" in result.detail


def test_add_runtime_in_sysconfig(host):
    host.write("/etc/sysconfig/docker", "OPTIONS='--selinux-enabled --add-runtime nvidia=/usr/bin/nvidia-container-runtime'\n")
    result = host.run("config-flag-conflicts")
    assert result.status == "warn" and "runtime 'nvidia' is defined both by --add-runtime in /etc/sysconfig/docker" in result.detail
    host.write("/etc/sysconfig/docker", "OPTIONS='--default-runtime=docker-runc'\n")
    host.write_config({"runtimes": RUNTIME_ENTRY, "default-runtime": "nvidia"})
    result = host.run("config-flag-conflicts")
    assert result.status == "fail" and "/etc/sysconfig/docker" in result.detail


def test_etc_default_docker_is_only_a_warning(host):
    host.write("/etc/default/docker", 'DOCKER_OPTS="-H tcp://0.0.0.0:2375"\n')
    host.write_config({"runtimes": RUNTIME_ENTRY, "hosts": ["unix:///run/docker.sock"]})
    host.remove_dockerd()
    host.remove("/lib/systemd/system/docker.service")
    result = host.run("config-flag-conflicts")
    assert result.status == "warn" and "sysvinit" in result.detail


def test_flags_from_systemctl_show(host):
    host.remove_dockerd()
    host.fake_tool("systemctl", 'echo "{ path=/usr/bin/dockerd ; argv[]=/usr/bin/dockerd -H fd:// --default-runtime=runc '
                   '; ignore_errors=no ; start_time=[n/a] ; stop_time=[n/a] ; pid=0 ; code=(null) ; status=0/0 }"\n')
    host.write_config({"runtimes": RUNTIME_ENTRY, "default-runtime": "nvidia"})
    result = host.run("config-flag-conflicts")
    assert result.status == "fail" and "`systemctl show docker.service -p ExecStart`" in result.detail


DOCKERD_26 = """if [ "$1" = --version ]; then echo "Docker version 26.1.5+dfsg1, build a72d7cd"; exit 0; fi
case "$(cat "$3")" in *bogus*)
  echo "unable to configure the Docker daemon with file $3: the following directives don't match any configuration option: bogus" >&2
  exit 1;;
esac
echo "configuration OK"
"""


def test_dockerd_validate_skips_without_a_new_enough_dockerd(host):
    result = host.run("config-dockerd-validate")
    assert result.status == "skip" and "not on PATH" in result.detail
    host.fake_tool("dockerd", 'echo "Docker version 20.10.24+dfsg1, build 5d6db84"\n')
    result = host.run("config-dockerd-validate")
    assert result.status == "skip" and "20.10.24+dfsg1 has no --validate" in result.detail


def test_dockerd_validate_accepts_and_rejects(host):
    host.fake_tool("dockerd", DOCKERD_26)
    result = host.run("config-dockerd-validate")
    assert result.status == "ok" and "accepted" in result.detail
    host.write_config({"runtimes": RUNTIME_ENTRY, "bogus": 1})
    result = host.run("config-dockerd-validate")
    assert result.status == "fail" and "don't match any configuration option: bogus" in result.detail
    assert result.data["messages"] == ["the following directives don't match any configuration option: bogus"]


def test_packaging_leftovers(host):
    assert host.run("config-packaging-leftovers").status == "ok"
    host.write(CONFIG + ".dpkg-old", "{}")
    host.write(CONFIG + ".rpmsave", "{}")
    result = host.run("config-packaging-leftovers")
    assert result.status == "warn"
    assert result.data["leftovers"] == ["daemon.json.dpkg-old", "daemon.json.rpmsave"]
    assert "diff -u /etc/docker/daemon.json.dpkg-old /etc/docker/daemon.json" in result.hint


DPKG_NOT_OWNED = 'echo "dpkg-query: no path found matching pattern $2" >&2\nexit 1\n'


def test_package_owner_none(host):
    assert host.run("config-package-owner").status == "skip"
    host.fake_tool("dpkg", DPKG_NOT_OWNED)
    result = host.run("config-package-owner")
    assert result.status == "ok" and "no package owns /etc/docker/daemon.json (dpkg asked)" in result.detail


def test_package_owner_nvidia_docker2(host):
    host.fake_tool("dpkg", 'echo "diversion by foo from: $2"\necho "nvidia-docker2: $2"\n')
    result = host.run("config-package-owner")
    assert result.status == "warn" and "belongs to package nvidia-docker2" in result.detail
    assert "apt-get remove nvidia-docker2" in result.hint and "never purge" in result.hint


def test_package_owner_two_packages(host):
    host.fake_tool("dpkg", 'echo "nvidia-docker2, nvidia-container-runtime: $2"\n')
    result = host.run("config-package-owner")
    assert result.status == "fail" and "owned by 2 packages" in result.detail


def test_package_owner_rpm(host):
    host.fake_tool("rpm", 'echo "nvidia-docker2-2.5.0-1.noarch"\n')
    result = host.run("config-package-owner")
    assert result.status == "warn" and "rpm -e nvidia-docker2" in result.hint
    host.fake_tool("rpm", 'echo "file $2 is not owned by any package"\nexit 1\n')
    assert host.run("config-package-owner").status == "ok"


def _record(host, entry):
    store = StateStore(os.path.join(host.state_dir, "state.json")).load()
    store.put(os.path.realpath(host.path(CONFIG)), InstallRecord(runtime_name="nvidia", entry=entry))
    store.save()


def test_install_record(host):
    assert host.run("config-install-record").status == "skip"
    _record(host, {"path": RUNTIME})
    assert host.run("config-install-record").status == "ok"


def test_install_record_entry_gone(host):
    _record(host, {"path": RUNTIME})
    host.write_config({"log-driver": "json-file"})
    result = host.run("config-install-record")
    assert result.status == "fail" and "it is gone: the file was replaced" in result.detail
    assert "nvdocker-setup install" in result.hint and "nvdocker-setup backups" in result.hint


def test_install_record_after_a_purge_deleted_the_file(host):
    _record(host, {"path": RUNTIME})
    host.remove(CONFIG)
    assert host.run("config-install-record").status == "fail"


def test_install_record_entry_changed(host):
    _record(host, {"path": "/opt/old/nvdocker-runtime"})
    result = host.run("config-install-record")
    assert result.status == "warn" and "changed since nvdocker-setup installed it" in result.detail


def test_a_directory_instead_of_the_file(host):
    host.remove(CONFIG)
    os.makedirs(host.path(CONFIG))
    result = host.run("config-parse")
    assert result.status == "fail" and "is a directory" in result.detail
    assert "not a regular file" in host.run("config-location").detail
    _record(host, {"path": RUNTIME})
    for check_id in ("config-schema", "config-dockerd-validate", "config-install-record", "config-runtime-entry"):
        result = host.run(check_id)
        assert result.status == "skip" and "config-parse" in result.detail, (check_id, result)
