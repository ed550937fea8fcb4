"""The manifests: rendered with Kustomize (kubectl kustomize), validated offline against the
Kubernetes JSON schemas (kubernetes-validate --strict), and checked against what the agent needs."""

import pytest

from nvdocker_setup.node_agent import DEFAULT_CONFIGS, DEFAULT_SOCKETS
from tests.support import kubernetes as k8s

pytestmark = pytest.mark.kubernetes

BASE = k8s.DEPLOY / "base"
DOCKER = k8s.DEPLOY / "overlays" / "docker"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    out = {}
    directory = tmp_path_factory.mktemp("rendered")
    for name, path in (("base", BASE), ("docker", DOCKER)):
        text = k8s.render(path)
        target = directory / (name + ".yaml")
        target.write_text(text)
        out[name] = (target, k8s.load_yaml(text))
    return out


def _args(daemonset):
    (container,) = daemonset["spec"]["template"]["spec"]["containers"]
    return dict(arg[2:].split("=", 1) for arg in container["args"] if arg.startswith("--") and "=" in arg)


def _mounts(daemonset):
    """{mountPath: hostPath} of the agent container."""
    spec = daemonset["spec"]["template"]["spec"]
    volumes = {v["name"]: v["hostPath"]["path"] for v in spec["volumes"]}
    return {m["mountPath"]: volumes[m["name"]] for m in spec["containers"][0]["volumeMounts"]}


@pytest.mark.parametrize("name", ["base", "docker"])
def test_rendered_manifests_pass_the_kubernetes_schemas(rendered, name):
    path, documents = rendered[name]
    out = k8s.kubernetes_validate([path])
    assert out.count("passed") == len(documents), out
    assert "fail" not in out.lower()


def test_source_files_pass_the_kubernetes_schemas():
    files = [p for p in sorted(BASE.glob("*.yaml")) if p.name != "kustomization.yaml"]
    out = k8s.kubernetes_validate(files)
    assert out.count("passed") == len(files), out


def test_base_daemonset_gives_the_agent_what_it_needs(rendered):
    _path, documents = rendered["base"]
    assert sorted(d["kind"] for d in documents) == ["DaemonSet", "Namespace", "RuntimeClass", "ServiceAccount"]
    daemonset = k8s.find(documents, "DaemonSet")
    spec = daemonset["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    args = _args(daemonset)
    assert container["command"] == ["nvdocker-setup"] and container["args"][0] == "node-agent"
    assert container["securityContext"]["privileged"] is True
    assert spec["hostPID"] is True and args["host-exec"] == "nsenter"  # nsenter -t 1 needs the host's pids
    assert container["readinessProbe"]["exec"]["command"] == ["test", "-f", args["ready-file"]]
    assert spec["terminationGracePeriodSeconds"] >= 150  # uninstall, its restart and a rollback's
    assert spec["nodeSelector"] and spec["tolerations"]
    assert spec["serviceAccountName"] == k8s.find(documents, "ServiceAccount")["metadata"]["name"]
    assert k8s.find(documents, "ServiceAccount")["automountServiceAccountToken"] is False
    mounts = _mounts(daemonset)
    root = args["host-root"]
    config_dir = DEFAULT_CONFIGS["containerd"].rsplit("/", 1)[0]
    assert mounts[root + config_dir] == config_dir
    assert mounts[root + DEFAULT_SOCKETS["containerd"].rsplit("/", 1)[0]] == "/run/containerd"
    assert mounts[root + args["install-dir"]] == args["install-dir"]
    assert mounts[args["install-dir"]] == args["install-dir"]  # the same file in both views
    assert mounts[root + "/var/lib/nvdocker-setup"] == "/var/lib/nvdocker-setup"
    runtime_class = k8s.find(documents, "RuntimeClass")
    assert runtime_class["metadata"]["name"] == "nvidia" and runtime_class["handler"] == args["runtime-name"]
    assert all(d["metadata"].get("namespace") in (None, "nvdocker-system") for d in documents)


def test_docker_overlay_points_the_agent_at_dockerd(rendered):
    _path, documents = rendered["docker"]
    assert "RuntimeClass" not in [d["kind"] for d in documents]
    daemonset = k8s.find(documents, "DaemonSet")
    args = _args(daemonset)
    assert args["engine"] == "docker"
    mounts = _mounts(daemonset)
    root = args["host-root"]
    assert mounts[root + "/etc/docker"] == "/etc/docker"
    assert mounts[root + "/var/run"] == "/var/run"  # holds docker.sock (DEFAULT_SOCKETS["docker"])
    assert DEFAULT_SOCKETS["docker"].startswith("/var/run/")
    assert not any("containerd" in path for path in mounts.values())


def test_docker_run_translation_takes_every_mount(rendered):
    daemonset = k8s.find(rendered["base"][1], "DaemonSet")
    with pytest.raises(AssertionError, match="no stand-in"):
        k8s.docker_run_args(daemonset, {})


@pytest.mark.parametrize("name, path", [("base", BASE), ("docker", DOCKER)])
def test_the_offline_renderer_agrees_with_kubectl(name, path):
    """Where kubectl is missing (a CI machine need not have it), the tests render our kustomizations
    with tests/support/kubernetes.py's small renderer: it must give what kubectl gives."""
    import shutil

    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed: nothing to compare the offline renderer with")
    key = lambda doc: (doc["kind"], doc["metadata"]["name"])  # noqa: E731
    ours = sorted(k8s.load_yaml(k8s.render_offline(path)), key=key)
    theirs = sorted(k8s.load_yaml(k8s.render(path)), key=key)
    assert ours == theirs
