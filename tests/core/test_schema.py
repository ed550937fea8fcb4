"""Tests for nvdocker_setup.core.schema: the daemon.json schema and the rules dockerd applies beyond it."""

import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest

from nvdocker_setup.core.schema import ERROR, WARNING, Problem, check_document, format_path, known_keys, schema

REPO_ROOT = Path(__file__).resolve().parents[2]

Triple = Tuple[str, str, str]


def triples(document: Any) -> List[Triple]:
    """(path, code, severity) of each problem, in the order check_document returns them."""
    return [(problem.path, problem.code, problem.severity) for problem in check_document(document)]


def errors(document: Any) -> List[Problem]:
    return [problem for problem in check_document(document) if problem.severity == ERROR]


REALISTIC_DAEMON_JSON: Dict[str, Any] = {
    "data-root": "/srv/docker",
    "exec-root": "/run/docker",
    "storage-driver": "overlay2",
    "storage-opts": ["overlay2.override_kernel_check=true"],
    "log-driver": "json-file",
    "log-opts": {"max-size": "10m", "max-file": "3", "labels": "production"},
    "log-level": "info",
    "log-format": "text",
    "debug": False,
    "experimental": False,
    "live-restore": True,
    "shutdown-timeout": 30,
    "default-stop-timeout": 10,
    "max-concurrent-downloads": 6,
    "max-concurrent-uploads": 4,
    "max-download-attempts": 5,
    "default-shm-size": "128M",
    "default-ulimits": {"nofile": {"Name": "nofile", "Hard": 65536, "Soft": 32768}},
    "default-ipc-mode": "private",
    "default-cgroupns-mode": "private",
    "exec-opts": ["native.cgroupdriver=systemd"],
    "cgroup-parent": "docker.slice",
    "labels": ["region=eu-west", "gpu=true"],
    "dns": ["10.0.0.2", "1.1.1.1"],
    "dns-opts": ["ndots:2"],
    "dns-search": ["corp.example.com"],
    "bip": "172.26.0.1/16",
    "mtu": 1450,
    "ipv6": True,
    "fixed-cidr-v6": "fd00:dead:beef::/48",
    "ip6tables": True,
    "iptables": True,
    "ip-masq": True,
    "icc": True,
    "userland-proxy": False,
    "default-address-pools": [{"base": "10.201.0.0/16", "size": 24}],
    "default-network-opts": {"bridge": {"com.docker.network.driver.mtu": "1450"}},
    "host-gateway-ips": ["172.26.0.1"],
    "registry-mirrors": ["https://mirror.example.com"],
    "insecure-registries": ["registry.lab:5000"],
    "metrics-addr": "127.0.0.1:9323",
    "features": {"buildkit": True, "cdi": True, "containerd-snapshotter": False},
    "cdi-spec-dirs": ["/etc/cdi", "/var/run/cdi"],
    "builder": {
        "gc": {
            "enabled": True,
            "defaultReservedSpace": "10GB",
            "policy": [
                {"all": False, "filter": ["unused-for=2200h"], "reservedSpace": "2GB"},
                {"all": True, "maxUsedSpace": "50GB"},
            ],
        },
        "entitlements": {"network-host": True, "security-insecure": False},
        "history": {"maxAge": "48h", "maxEntries": 100},
    },
    "proxies": {
        "http-proxy": "http://proxy.example.com:3128",
        "https-proxy": "http://proxy.example.com:3128",
        "no-proxy": "localhost,127.0.0.0/8,.example.com",
    },
    "nri-opts": {"enable": False},
    "default-runtime": "nvidia",
    "runtimes": {
        "nvidia": {"path": "/usr/bin/nvidia-container-runtime", "runtimeArgs": []},
        "nvidia-debug": {"path": "/usr/bin/nvidia-container-runtime", "runtimeArgs": ["--debug"]},
        "runsc": {"runtimeType": "io.containerd.runsc.v1", "options": {"TypeUrl": "io.containerd.runsc.v1.options"}},
        "crun": {"runtimeType": "io.containerd.runc.v2", "options": {"BinaryName": "/usr/bin/crun"}},
    },
}


# --- the schema file ------------------------------------------------------------------------------


def test_schema_file_is_a_valid_draft7_schema() -> None:
    from jsonschema import Draft7Validator

    Draft7Validator.check_schema(schema())


def test_schema_forbids_unknown_top_level_keys() -> None:
    assert schema()["additionalProperties"] is False


def plain_schema_errors(document: Any) -> List[str]:
    """Errors from the bare schema, as any other draft-7 consumer would see them."""
    from jsonschema import Draft7Validator

    return [error.message for error in Draft7Validator(schema()).iter_errors(document)]


def test_plain_validator_accepts_the_realistic_document() -> None:
    assert plain_schema_errors(REALISTIC_DAEMON_JSON) == []


@pytest.mark.parametrize(
    "entry, valid",
    [
        ({"path": "/usr/bin/x"}, True),
        ({"path": "/usr/bin/x", "runtimeArgs": ["--debug"], "args": []}, True),
        ({"runtimeType": "io.containerd.runsc.v1", "options": {"a": "b"}}, True),
        ({}, False),
        ({"path": "/usr/bin/x", "runtimeType": "io.containerd.runsc.v1"}, False),
        ({"path": "/usr/bin/x", "options": {"a": "b"}}, False),
        ({"runtimeType": "io.containerd.runsc.v1", "runtimeArgs": ["--debug"]}, False),
    ],
)
def test_plain_validator_knows_the_runtime_shapes(entry: Dict[str, Any], valid: bool) -> None:
    assert (plain_schema_errors({"runtimes": {"gpu": entry}}) == []) is valid


def test_schema_returns_a_copy() -> None:
    schema()["properties"].clear()
    assert "runtimes" in schema()["properties"]


def test_version_annotations_look_like_versions() -> None:
    document_schema = schema()
    annotated = [prop for prop in document_schema["properties"].values() if "x-since" in prop]
    annotated += list(document_schema["x-removed-keys"].values())
    assert annotated
    for annotations in annotated:
        for name in ("x-since", "x-removed", "x-deprecated"):
            if name in annotations:
                assert re.match(r"^\d+\.\d+$", annotations[name]), annotations


REMOVED_KEYS = {
    "cluster-store": "24.0",
    "cluster-advertise": "24.0",
    "cluster-store-opts": "24.0",
    "graph": "24.0",
    "oom-score-adjust": "26.0",
    "api-cors-header": "29.0",
}
REJECTED_KEYS = [
    "default-init",
    "resolv-conf",
    "swarm-raft-heartbeat-tick",
    "swarm-raft-election-tick",
    "containerd-plugin-namespace",
]


def test_refused_keys_are_not_properties() -> None:
    assert not (set(REMOVED_KEYS) | set(REJECTED_KEYS)) & known_keys()


def test_importing_the_module_does_not_import_jsonschema() -> None:
    code = "import nvdocker_setup.core.schema, sys; assert 'jsonschema' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=str(REPO_ROOT), check=True)


# --- whole documents -------------------------------------------------------------------------------


def test_realistic_daemon_json_is_clean() -> None:
    assert check_document(REALISTIC_DAEMON_JSON) == []


@pytest.mark.parametrize("document", [None, {}])
def test_empty_documents_are_clean(document: Any) -> None:
    assert check_document(document) == []


@pytest.mark.parametrize("document", [[], "runtimes", 3, True])
def test_document_must_be_an_object(document: Any) -> None:
    assert triples(document) == [("$", "wrong-type", ERROR)]


def test_nvidia_ctk_output_only_warns_about_args() -> None:
    document = {"runtimes": {"nvidia": {"args": [], "path": "/usr/bin/nvidia-container-runtime"}}}
    assert triples(document) == [("$.runtimes.nvidia.args", "runtime-args-ignored", WARNING)]


def test_problems_are_sorted_by_path_then_code() -> None:
    document = {
        "zzz": 1,
        "registry-mirrors": ["bad"] * 11,
        "host-gateway-ip": "10.0.0.1",
        "host-gateway-ips": ["10.0.0.1"],
        "aaa": 1,
    }
    found = triples(document)
    assert found[0] == ("$.aaa", "unknown-key", ERROR)
    assert found[1:3] == [
        ("$.host-gateway-ip", "conflicting-keys", ERROR),
        ("$.host-gateway-ip", "deprecated-key", WARNING),
    ]
    assert [path for path, _, _ in found[3:14]] == ["$.registry-mirrors[%d]" % index for index in range(11)]
    assert found[-1] == ("$.zzz", "unknown-key", ERROR)
    assert check_document(document) == check_document(dict(reversed(list(document.items()))))


@pytest.mark.parametrize(
    "parts, expected",
    [
        ((), "$"),
        (("runtimes", "nvidia", "path"), "$.runtimes.nvidia.path"),
        (("log-opts", "max-file"), "$.log-opts.max-file"),
        (("dns", 0), "$.dns[0]"),
        (("runtimes", "a/b"), "$.runtimes['a/b']"),
        (("default-network-opts", "bridge", "com.docker.network.driver.mtu"),
         "$.default-network-opts.bridge['com.docker.network.driver.mtu']"),
        (("it's",), "$['it\\'s']"),
    ],
)
def test_format_path(parts: Tuple[Any, ...], expected: str) -> None:
    assert format_path(parts) == expected


# --- every key of the section 1.3 table: right type accepted, wrong type refused --------------------

KEY_TYPE_TABLE = [
    # (key, a value of the right type, a value of the wrong type)
    ("allow-direct-routing", True, "yes"),
    ("allow-nondistributable-artifacts", ["registry.lab:5000"], "registry.lab:5000"),
    ("authorization-plugins", ["authz-broker"], "authz-broker"),
    ("bip", "172.26.0.1/16", 16),
    ("bip6", "fd00::1/64", ["fd00::1/64"]),
    ("bridge", "docker1", True),
    ("bridge-accept-fwmark", "0x1/0xff", 1),
    ("builder", {"gc": {"enabled": True}}, ["gc"]),
    ("cdi-spec-dirs", ["/etc/cdi"], "/etc/cdi"),
    ("cgroup-parent", "docker.slice", 1),
    ("containerd", "/run/containerd/containerd.sock", True),
    ("containerd-namespace", "moby", 1),
    ("containerd-plugins-namespace", "plugins.moby", 1),
    ("cpu-rt-period", 1000000, "1000000"),
    ("cpu-rt-runtime", 950000, 950000.5),
    ("cri-containerd", False, 0),
    ("data-root", "/var/lib/docker", ["/var/lib/docker"]),
    ("debug", True, "true"),
    ("default-address-pools", [{"base": "10.10.0.0/16", "size": 24}], {"base": "10.10.0.0/16", "size": 24}),
    ("default-cgroupns-mode", "host", 1),
    ("default-gateway", "172.26.0.254", 1),
    ("default-gateway-v6", "fd00::254", 1),
    ("default-ipc-mode", "shareable", True),
    ("default-network-opts", {"bridge": {"com.docker.network.bridge.mtu": "1400"}}, ["bridge"]),
    ("default-runtime", "runc", ["runc"]),
    ("default-shm-size", "64M", 67108864),
    ("default-stop-timeout", 10, "10"),
    ("default-ulimits", {"nofile": {"Name": "nofile", "Hard": 2048, "Soft": 1024}}, ["nofile=1024:2048"]),
    ("dns", ["1.1.1.1"], "1.1.1.1"),
    ("dns-opts", ["ndots:2"], "ndots:2"),
    ("dns-search", ["example.com"], "example.com"),
    ("exec-opts", ["native.cgroupdriver=cgroupfs"], "native.cgroupdriver=cgroupfs"),
    ("exec-root", "/run/docker", 1),
    ("experimental", True, 1),
    ("features", {"cdi": True}, ["cdi"]),  # not in the draft table; from flatOptions and the Config JSON tag
    ("firewall-backend", "nftables", True),
    ("fixed-cidr", "172.26.5.0/24", 24),
    ("fixed-cidr-v6", "fd00:1::/64", 64),
    ("group", "docker", 999),
    ("host-gateway-ip", "172.26.0.1", ["172.26.0.1"]),
    ("host-gateway-ips", ["172.26.0.1", "fd00::1"], "172.26.0.1"),
    ("hosts", ["unix:///var/run/docker.sock"], "unix:///var/run/docker.sock"),
    ("http-proxy", "http://proxy:3128", {"url": "http://proxy:3128"}),
    ("https-proxy", "http://proxy:3128", 3128),
    ("no-proxy", "localhost", ["localhost"]),
    ("icc", False, "false"),
    ("init", True, "tini"),
    ("ip-forward", True, 1),
    ("ip-masq", True, 1),
    ("ip6tables", True, 1),
    ("iptables", True, 1),
    ("ipv6", True, 1),
    ("live-restore", True, "true"),
    ("no-new-privileges", True, 1),
    ("raw-logs", True, 1),
    ("rootless", False, 0),
    ("selinux-enabled", True, "enforcing"),
    ("tls", True, "true"),
    ("tlsverify", True, "true"),
    ("userland-proxy", False, "false"),
    ("ip-forward-no-drop", True, 1),
    ("init-path", "/usr/libexec/docker/docker-init", True),
    ("pidfile", "/run/docker.pid", 1),
    ("seccomp-profile", "builtin", {"defaultAction": "SCMP_ACT_ERRNO"}),
    ("storage-driver", "overlay2", ["overlay2"]),
    ("swarm-default-advertise-addr", "eth0", 1),
    ("tlscacert", "/etc/docker/ca.pem", 1),
    ("tlscert", "/etc/docker/cert.pem", 1),
    ("tlskey", "/etc/docker/key.pem", 1),
    ("userland-proxy-path", "/usr/libexec/docker/docker-proxy", False),
    ("userns-remap", "default", True),
    ("log-driver", "journald", ["journald"]),
    ("metrics-addr", "127.0.0.1:9323", 9323),
    ("ip", "0.0.0.0", 0),
    ("insecure-registries", ["registry.lab:5000"], "registry.lab:5000"),
    ("registry-mirrors", ["https://mirror.gcr.io"], "https://mirror.gcr.io"),
    ("labels", ["env=prod"], {"env": "prod"}),
    ("log-format", "json", True),
    ("log-level", "warn", 2),
    ("log-opts", {"max-size": "10m"}, ["max-size=10m"]),
    ("max-concurrent-downloads", 3, "3"),
    ("max-concurrent-uploads", 5, 5.0),
    ("max-download-attempts", 5, "5"),
    ("shutdown-timeout", 15, "15s"),
    ("mtu", 1500, "1500"),
    ("network-control-plane-mtu", 1500, "1500"),
    ("network-diagnostic-port", 2000, "2000"),
    ("min-api-version", "1.24", 1.24),
    ("node-generic-resources", ["gpu=UUID1"], "gpu=UUID1"),
    ("nri-opts", {"enable": True, "plugin-path": "/opt/nri/plugins", "plugin-config-path": "/etc/nri/conf.d",
                  "socket-path": "/var/run/nri/nri.sock"}, True),
    ("proxies", {"http-proxy": "http://proxy:3128"}, "http://proxy:3128"),
    ("runtimes", {"nvidia": {"path": "/usr/bin/nvidia-container-runtime"}}, ["nvidia"]),
    ("storage-opts", ["dm.basesize=20G"], "dm.basesize=20G"),
]

#: Keys dockerd accepts with any value: the tolerated legacy key, and flag names it never reads.
UNTYPED_KEYS = {
    "deprecated-key-path",
    "label", "exec-opt", "log-opt", "storage-opt", "dns-opt", "registry-mirror", "insecure-registry",
    "add-runtime", "host", "default-ulimit", "cdi-spec-dir", "authorization-plugin", "node-generic-resource",
    "default-network-opt", "default-address-pool", "feature",
    "validate", "config-file", "version", "restart",
}


def test_key_table_covers_every_schema_key() -> None:
    tabled = {key for key, _, _ in KEY_TYPE_TABLE}
    assert len(tabled) == len(KEY_TYPE_TABLE), "a key appears twice in the table"
    assert tabled | UNTYPED_KEYS == known_keys()


@pytest.mark.parametrize("key, good, bad", KEY_TYPE_TABLE, ids=[row[0] for row in KEY_TYPE_TABLE])
def test_key_accepts_its_type(key: str, good: Any, bad: Any) -> None:
    assert errors({key: good}) == []


@pytest.mark.parametrize("key, good, bad", KEY_TYPE_TABLE, ids=[row[0] for row in KEY_TYPE_TABLE])
def test_key_refuses_another_type(key: str, good: Any, bad: Any) -> None:
    assert ("$." + key, "wrong-type", ERROR) in triples({key: bad})
    assert [problem.path for problem in errors({key: bad})] == ["$." + key]


@pytest.mark.parametrize("value", [None, 1, "x", [1], {"a": {"b": 1}}])
def test_untyped_keys_accept_any_value(value: Any) -> None:
    for key in UNTYPED_KEYS:
        assert errors({key: value}) == [], key


# --- values inside objects ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "document, expected",
    [
        ({"log-opts": {"max-file": 3}}, ("$.log-opts.max-file", "wrong-type", ERROR)),
        ({"features": {"cdi": "true"}}, ("$.features.cdi", "wrong-type", ERROR)),
        ({"default-address-pools": [{"base": "10.0.0.0/8", "size": "24"}]},
         ("$.default-address-pools[0].size", "wrong-type", ERROR)),
        ({"default-ulimits": {"nofile": {"Name": "nofile", "Hard": "2048"}}},
         ("$.default-ulimits.nofile.Hard", "wrong-type", ERROR)),
        ({"default-network-opts": {"bridge": {"com.docker.network.bridge.mtu": 1400}}},
         ("$.default-network-opts.bridge['com.docker.network.bridge.mtu']", "wrong-type", ERROR)),
        ({"builder": {"gc": {"enabled": "yes"}}}, ("$.builder.gc.enabled", "wrong-type", ERROR)),
        ({"builder": {"gc": {"policy": [{"filter": "until=24h"}]}}},
         ("$.builder.gc.policy[0].filter", "wrong-type", ERROR)),
        ({"nri-opts": {"enabled": True}}, ("$.nri-opts.enabled", "unknown-key", ERROR)),
        ({"proxies": {"ftp-proxy": "x"}}, ("$.proxies.ftp-proxy", "unknown-key", ERROR)),
        ({"runtimes": {"nvidia": {"path": 5}}}, ("$.runtimes.nvidia.path", "wrong-type", ERROR)),
        ({"runtimes": {"nvidia": {"path": "/bin/x", "runtimeArgs": ["--debug", 1]}}},
         ("$.runtimes.nvidia.runtimeArgs[1]", "wrong-type", ERROR)),
        ({"runtimes": {"nvidia": "/usr/bin/nvidia-container-runtime"}}, ("$.runtimes.nvidia", "wrong-type", ERROR)),
        ({"dns": ["1.1.1.1", 8]}, ("$.dns[1]", "wrong-type", ERROR)),
    ],
)
def test_nested_value_problems(document: Dict[str, Any], expected: Triple) -> None:
    assert triples(document) == [expected]


def test_builder_filter_accepts_the_legacy_object_form() -> None:
    assert check_document({"builder": {"gc": {"policy": [{"filter": {"unused-for": {"24h": True}}}]}}}) == []


def test_log_opts_number_message_says_to_quote_it() -> None:
    (problem,) = check_document({"log-opts": {"max-file": 3}})
    assert "must be a string" in problem.message
    assert '"max-file": "3"' in problem.message


def test_shm_size_number_message_asks_for_units() -> None:
    (problem,) = check_document({"default-shm-size": 67108864})
    assert '"64M"' in problem.message


def test_integral_float_is_not_an_integer() -> None:
    # Go refuses 3.0 for an int field, although JSON Schema's "integer" would accept it.
    assert triples({"max-concurrent-downloads": 3.0}) == [("$.max-concurrent-downloads", "wrong-type", ERROR)]


def test_null_is_a_warning_because_go_ignores_it() -> None:
    assert triples({"debug": None, "log-level": None}) == [
        ("$.debug", "null-value", WARNING),
        ("$.log-level", "null-value", WARNING),
    ]


# --- values dockerd validates -------------------------------------------------------------------


@pytest.mark.parametrize(
    "key, value",
    [
        ("log-level", "verbose"),
        ("log-level", "warning"),
        ("log-format", "logfmt"),
        ("default-ipc-mode", "host"),
        ("default-cgroupns-mode", "shared"),
        ("firewall-backend", "ufw"),
        ("default-shm-size", "64 megabytes"),
        ("bridge-accept-fwmark", "mark1"),
        ("mtu", -1),
        ("max-concurrent-downloads", -1),
        ("default-stop-timeout", -5),
        ("network-diagnostic-port", 65536),
        ("host-gateway-ips", ["10.0.0.1", "fd00::1", "10.0.0.2"]),
    ],
)
def test_invalid_values(key: str, value: Any) -> None:
    assert triples({key: value}) == [("$." + key, "invalid-value", ERROR)]


@pytest.mark.parametrize(
    "key, value",
    [("labels", ["no-equals-sign"]), ("registry-mirrors", ["mirror.example.com"])],
)
def test_invalid_list_entries(key: str, value: Any) -> None:
    assert triples({key: value}) == [("$.%s[0]" % key, "invalid-value", ERROR)]


def test_enum_message_lists_the_choices() -> None:
    (problem,) = check_document({"log-level": "verbose"})
    assert "debug, info, warn, error, fatal, panic, trace" in problem.message


@pytest.mark.parametrize("value", ["INFO", "Debug", ""])
def test_log_level_is_case_insensitive_and_may_be_empty(value: str) -> None:
    assert check_document({"log-level": value}) == []


@pytest.mark.parametrize("key", ["log-format", "default-ipc-mode", "default-cgroupns-mode", "firewall-backend"])
def test_empty_enum_values_mean_the_default(key: str) -> None:
    assert check_document({key: ""}) == []


@pytest.mark.parametrize("value", ["64M", "64m", "1g", "512MB", "1.5GiB", "100", "64 M"])
def test_shm_sizes_dockerd_accepts(value: str) -> None:
    assert check_document({"default-shm-size": value}) == []


# --- top-level keys -------------------------------------------------------------------------------


def test_unknown_key() -> None:
    (problem,) = check_document({"foo": 1})
    assert (problem.path, problem.code, problem.severity) == ("$.foo", "unknown-key", ERROR)
    assert problem.message == (
        "unknown key 'foo': dockerd refuses to start (the following directives don't match any configuration option)"
    )


def test_one_problem_per_unknown_key() -> None:
    assert triples({"foo": 1, "bar": 2, "debug": True}) == [
        ("$.bar", "unknown-key", ERROR),
        ("$.foo", "unknown-key", ERROR),
    ]


def test_unknown_key_suggests_a_close_name() -> None:
    (problem,) = check_document({"runtime": {"nvidia": {"path": "/usr/bin/nvidia-container-runtime"}}})
    assert problem.code == "unknown-key"
    assert "did you mean 'runtimes'?" in problem.message


def test_unknown_key_with_odd_characters_uses_bracket_path() -> None:
    assert triples({"log.level": "info"}) == [("$['log.level']", "unknown-key", ERROR)]


@pytest.mark.parametrize("key, version", sorted(REMOVED_KEYS.items()))
def test_removed_keys(key: str, version: str) -> None:
    (problem,) = check_document({key: "x"})
    assert (problem.path, problem.code, problem.severity) == ("$." + key, "removed-key", ERROR)
    assert "removed in Docker %s" % version in problem.message


def test_removed_graph_points_to_data_root() -> None:
    (problem,) = check_document({"graph": "/srv/docker"})
    assert "use 'data-root'" in problem.message


@pytest.mark.parametrize("key", REJECTED_KEYS)
def test_rejected_keys(key: str) -> None:
    (problem,) = check_document({key: "x"})
    assert (problem.path, problem.code, problem.severity) == ("$." + key, "rejected-key", ERROR)
    assert "no dockerd flag has that name" in problem.message


@pytest.mark.parametrize(
    "key, instead",
    [
        ("label", "labels"),
        ("exec-opt", "exec-opts"),
        ("log-opt", "log-opts"),
        ("storage-opt", "storage-opts"),
        ("dns-opt", "dns-opts"),
        ("registry-mirror", "registry-mirrors"),
        ("insecure-registry", "insecure-registries"),
        ("add-runtime", "runtimes"),
        ("host", "hosts"),
        ("default-ulimit", "default-ulimits"),
        ("cdi-spec-dir", "cdi-spec-dirs"),
        ("authorization-plugin", "authorization-plugins"),
        ("node-generic-resource", "node-generic-resources"),
        ("default-network-opt", "default-network-opts"),
        ("default-address-pool", "default-address-pools"),
        ("feature", "features"),
        ("http-proxy", "proxies"),
        ("https-proxy", "proxies"),
        ("no-proxy", "proxies"),
        ("containerd-plugins-namespace", "--containerd-plugins-namespace"),
    ],
)
def test_no_op_keys_name_the_key_that_works(key: str, instead: str) -> None:
    value = "x"
    (problem,) = check_document({key: value})
    assert (problem.path, problem.code, problem.severity) == ("$." + key, "no-op-key", WARNING)
    assert instead in problem.message


@pytest.mark.parametrize("key", ["validate", "config-file", "version", "restart"])
def test_flag_only_keys_are_no_ops(key: str) -> None:
    assert triples({key: True}) == [("$." + key, "no-op-key", WARNING)]


@pytest.mark.parametrize(
    "key, value, mentions",
    [
        ("host-gateway-ip", "172.17.0.1", "host-gateway-ips"),
        ("allow-nondistributable-artifacts", ["registry.lab:5000"], "28.0"),
        ("deprecated-key-path", "/etc/docker/key.json", "legacy"),
    ],
)
def test_deprecated_keys_warn(key: str, value: Any, mentions: str) -> None:
    (problem,) = check_document({key: value})
    assert (problem.path, problem.code, problem.severity) == ("$." + key, "deprecated-key", WARNING)
    assert mentions in problem.message


def test_host_gateway_ip_and_ips_conflict() -> None:
    document = {"host-gateway-ip": "172.17.0.1", "host-gateway-ips": ["172.17.0.1"]}
    assert ("$.host-gateway-ip", "conflicting-keys", ERROR) in triples(document)
    (conflict,) = [problem for problem in check_document(document) if problem.code == "conflicting-keys"]
    assert "host-gateway-ip and host-gateway-ips must not both be specified" in conflict.message


# --- exec-opts ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "option", ["native.cgroupdriver=systemd", "native.cgroupdriver=cgroupfs", " Native.CgroupDriver = systemd "]
)
def test_supported_exec_opts(option: str) -> None:
    assert check_document({"exec-opts": [option]}) == []


@pytest.mark.parametrize("option", ["isolation=hyperv", "native.umask=normal", "systemd", "native.cgroupdriver="])
def test_unsupported_exec_opts_warn(option: str) -> None:
    assert triples({"exec-opts": [option]}) == [("$.exec-opts[0]", "exec-opt-unsupported", WARNING)]


@pytest.mark.parametrize("option", ["native.cgroupdriver=foo", "native.cgroupdriver=Systemd"])
def test_unknown_cgroup_driver_is_an_error(option: str) -> None:
    (problem,) = check_document({"exec-opts": ["native.cgroupdriver=systemd", option]})
    assert (problem.path, problem.code, problem.severity) == ("$.exec-opts[1]", "invalid-value", ERROR)
    assert "not supported" in problem.message


# --- runtimes -------------------------------------------------------------------------------------

NVIDIA = "/usr/bin/nvidia-container-runtime"


@pytest.mark.parametrize(
    "entry",
    [
        {"path": NVIDIA},
        {"path": NVIDIA, "runtimeArgs": ["--debug"]},
        {"path": NVIDIA, "runtimeType": ""},
        {"path": NVIDIA, "options": {}},
        {"runtimeType": "io.containerd.runsc.v1"},
        {"runtimeType": "/opt/shims/containerd-shim-kata-v2", "options": {"ConfigPath": "/etc/kata.toml"}},
        {"runtimeType": "io.containerd.runsc.v1", "runtimeArgs": [], "path": ""},
        {"Path": NVIDIA},  # Go matches field names case-insensitively
        {"path": NVIDIA, "x-comment": "installed by nvdocker-setup"},
    ],
)
def test_valid_runtime_entries(entry: Dict[str, Any]) -> None:
    assert check_document({"runtimes": {"gpu": entry}}) == []


def test_runtime_named_runc_is_reserved() -> None:
    (problem,) = check_document({"runtimes": {"runc": {"path": "/usr/bin/runc"}}})
    assert (problem.path, problem.code, problem.severity) == ("$.runtimes.runc", "runtime-reserved-name", ERROR)
    assert "runtime name 'runc' is reserved" in problem.message


def test_runtime_name_with_slash() -> None:
    assert triples({"runtimes": {"nvidia/v2": {"path": NVIDIA}}}) == [
        ("$.runtimes['nvidia/v2']", "runtime-bad-name", ERROR)
    ]


@pytest.mark.parametrize(
    "entry, path, dockerd_says",
    [
        ({}, "$.runtimes.gpu", "either a runtimeType or a path must be configured"),
        ({"runtimeArgs": ["--debug"]}, "$.runtimes.gpu", "either a runtimeType or a path must be configured"),
        ({"path": ""}, "$.runtimes.gpu", "either a runtimeType or a path must be configured"),
        (None, "$.runtimes.gpu", "either a runtimeType or a path must be configured"),
        ({"path": NVIDIA, "runtimeType": "io.containerd.runc.v2"}, "$.runtimes.gpu",
         "cannot configure both path and runtimeType"),
        ({"path": NVIDIA, "options": {"BinaryName": "x"}}, "$.runtimes.gpu.options",
         "options cannot be used with a path runtime"),
        ({"runtimeType": "io.containerd.runsc.v1", "runtimeArgs": ["--debug"]}, "$.runtimes.gpu.runtimeArgs",
         "args cannot be used with a runtimeType runtime"),
    ],
)
def test_runtime_shape_rules(entry: Any, path: str, dockerd_says: str) -> None:
    (problem,) = check_document({"runtimes": {"gpu": entry}})
    assert (problem.path, problem.code, problem.severity) == (path, "runtime-shape", ERROR)
    assert dockerd_says in problem.message
    assert "\n" not in problem.message
    assert "valid under" not in problem.message  # no jsonschema oneOf blob


def test_runtime_with_both_shapes_reports_each_rule() -> None:
    document = {"runtimes": {"gpu": {"path": NVIDIA, "runtimeType": "io.containerd.runc.v2", "options": {"a": 1}}}}
    assert triples(document) == [
        ("$.runtimes.gpu", "runtime-shape", ERROR),
        ("$.runtimes.gpu.options", "runtime-shape", ERROR),
    ]


def test_runtime_args_key_is_ignored_by_dockerd() -> None:
    (problem,) = check_document({"runtimes": {"gpu": {"path": NVIDIA, "args": ["--debug"]}}})
    assert (problem.path, problem.code, problem.severity) == ("$.runtimes.gpu.args", "runtime-args-ignored", WARNING)
    assert "dockerd ignores 'args'; use 'runtimeArgs'" in problem.message


def test_relative_runtime_path_warns() -> None:
    assert triples({"runtimes": {"gpu": {"path": "nvidia-container-runtime"}}}) == [
        ("$.runtimes.gpu.path", "runtime-path-relative", WARNING)
    ]


# --- default-runtime ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "default", ["runc", "io.containerd.runc.v2", "gpu", "io.containerd.runsc.v1", "io.containerd.kata.v2", "a.b", ""]
)
def test_default_runtime_that_exists(default: str) -> None:
    assert check_document({"default-runtime": default, "runtimes": {"gpu": {"path": NVIDIA}}}) == []


@pytest.mark.parametrize("default", ["nvidia", "/usr/bin/nvidia-container-runtime", "io.containerd/runsc.v1", ".a.b"])
def test_default_runtime_that_does_not_exist(default: str) -> None:
    (problem,) = check_document({"default-runtime": default, "runtimes": {"gpu": {"path": NVIDIA}}})
    assert (problem.path, problem.code, problem.severity) == ("$.default-runtime", "default-runtime-unknown", ERROR)
    assert "specified default runtime '%s' does not exist" % default in problem.message


def test_default_runtime_without_runtimes_key() -> None:
    assert triples({"default-runtime": "nvidia"}) == [("$.default-runtime", "default-runtime-unknown", ERROR)]


# --- the Problem type -----------------------------------------------------------------------------


def test_problems_are_frozen_and_hashable() -> None:
    problem = check_document({"foo": 1})[0]
    assert {problem} == {Problem(problem.path, problem.message, problem.severity, problem.code)}
    with pytest.raises(AttributeError):
        problem.path = "$"  # type: ignore[misc]


def test_every_message_is_one_line() -> None:
    document = dict(REALISTIC_DAEMON_JSON)
    document.update({
        "foo": 1, "graph": "/x", "label": "a=b", "log-opts": {"max-file": 3}, "mtu": -1,
        "runtimes": {"runc": {}, "a/b": {"path": "x", "runtimeType": "y", "args": ["z"]}},
        "exec-opts": ["junk"], "default-runtime": "nope",
    })
    problems = check_document(document)
    assert len(problems) >= 10
    for problem in problems:
        assert problem.message and "\n" not in problem.message
        assert problem.severity in (ERROR, WARNING)
        assert re.match(r"^[a-z]+(-[a-z]+)*$", problem.code)
