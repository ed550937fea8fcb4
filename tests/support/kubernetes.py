"""Kubernetes test support: render the Kustomize manifests, validate them against the Kubernetes
JSON schemas offline, build the node-agent image, and turn the DaemonSet's pod spec into a
``docker run`` on a private dockerd.

- Rendering: ``kubectl kustomize`` (or ``kustomize build``), both offline.
- Validation: ``kubernetes-validate`` (PyPI; it bundles the schemas), in a venv cached under
  /var/cache/nvdocker-tests (its PyYAML also turns the rendered YAML into data here).
- The image: the cached Debian 12 debootstrap rootfs of the package tests (``docker import``),
  our .debs and the dependencies apt plans for them on that rootfs (downloaded into the package
  tests' apt archive when missing: :func:`dependency_archives`; the build itself is offline,
  ``apt-get install --no-download``, ``docker build --network none``), and the launcher built for the
  node layout.
  Saved with ``docker save`` to /var/cache/nvdocker-tests/node-agent-image-KEY.tar, KEY the hash of
  the inputs (the rootfs's name, the sources the packages are built from, the Dockerfile): a
  later run loads it instead of building.

A missing tool is a skip, and a failure when CI=true.
"""

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Sequence

import pytest

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy" / "kubernetes"
IN_CI = os.environ.get("CI") == "true"
KUBERNETES_VERSION = "1.30.0"
IMAGE = "nvdocker-node-agent"
#: What the image build hashes (besides the Dockerfile and the rootfs).
SOURCES = ("nvdocker_setup", "debian", "launcher", "scripts/build-launcher.sh", "pyproject.toml", "setup.py",
           "setup.cfg", "man", "completions", "udev", "README.md")


def need(condition: bool, reason: str) -> None:
    if condition:
        return
    if IN_CI:
        pytest.fail("CI=true: " + reason)
    pytest.skip(reason)


def cache_dir() -> Path:
    from tests.packaging.support import cache_dir as packaging_cache

    return packaging_cache()


def _run(argv: Sequence[Any], timeout: float = 600, **kwargs: Any) -> subprocess.CompletedProcess:
    completed = subprocess.run([str(a) for a in argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               timeout=timeout, check=False, **kwargs)
    if completed.returncode != 0:
        raise AssertionError("{} failed ({}):\n{}{}".format(
            " ".join(str(a) for a in argv), completed.returncode, completed.stdout.decode(errors="replace")[-3000:],
            completed.stderr.decode(errors="replace")[-3000:]))
    return completed


# -- kubernetes-validate and rendering -------------------------------------------------------------------


def validator_venv() -> Path:
    """A venv with kubernetes-validate at the versions of constraints/kubernetes-validate.txt (cached;
    made on first use, and again when the pins change, with pip from PyPI)."""
    pins = REPO / "constraints" / "kubernetes-validate.txt"
    key = hashlib.sha256(pins.read_bytes()).hexdigest()[:16]
    venv = cache_dir() / "kubernetes-validate-venv"
    tool = venv / "bin" / "kubernetes-validate"
    stamp = venv / ".pins"
    with open(str(cache_dir() / "kubernetes-validate.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not tool.exists() or not stamp.exists() or stamp.read_text().strip() != key:
            shutil.rmtree(str(venv), ignore_errors=True)
            try:
                _run([sys.executable if sys.prefix == sys.base_prefix else "/usr/bin/python3", "-m", "venv", venv])
                _run([venv / "bin" / "pip", "install", "-q", "-c", pins, "kubernetes-validate"], timeout=900)
                stamp.write_text(key + "\n")
            except (AssertionError, OSError, subprocess.SubprocessError) as error:
                shutil.rmtree(str(venv), ignore_errors=True)
                need(False, "cannot install kubernetes-validate: {}".format(error))
    return venv


def kubernetes_validate(paths: Sequence[Path]) -> str:
    venv = validator_venv()
    return _run([venv / "bin" / "kubernetes-validate", "--strict", "-k", KUBERNETES_VERSION, *paths]).stdout.decode()


def render(directory: Path) -> str:
    """``kubectl kustomize DIR`` (or ``kustomize build DIR``): the rendered YAML. Without either (a CI
    machine need not have kubectl), :func:`render_offline`, which a test checks against kubectl where
    both exist."""
    kubectl, kustomize = shutil.which("kubectl"), shutil.which("kustomize")
    if kubectl is None and kustomize is None:
        return render_offline(directory)
    argv = [kubectl, "kustomize", directory] if kubectl else [kustomize, "build", directory]
    return _run(argv, timeout=120).stdout.decode()


#: The part of Kustomize our manifests use: resources (files and kustomization directories), images
#: (newName/newTag), patches from a file or inline, each a JSON 6902 list (add/remove/replace) or a
#: strategic-merge document whose only use here is ``$patch: delete``. Anything else is refused.
_RENDER_SCRIPT = r"""
import copy, json, os, sys, yaml

def load(path):
    with open(path) as handle:
        return [d for d in yaml.safe_load_all(handle) if d]

def pointer(doc, path):
    parts = [p.replace("~1", "/").replace("~0", "~") for p in path.lstrip("/").split("/")]
    parent = doc
    for part in parts[:-1]:
        parent = parent[int(part)] if isinstance(parent, list) else parent[part]
    return parent, parts[-1]

def json6902(doc, ops):
    for op in ops:
        parent, key = pointer(doc, op["path"])
        if isinstance(parent, list):
            index = len(parent) if key == "-" else int(key)
            if op["op"] == "add":
                parent.insert(index, op["value"])
            elif op["op"] == "replace":
                parent[index] = op["value"]
            elif op["op"] == "remove":
                del parent[index]
            else:
                raise SystemExit("unsupported op " + op["op"])
        elif op["op"] in ("add", "replace"):
            if op["op"] == "replace" and key not in parent:
                raise SystemExit("replace of a missing " + op["path"])
            parent[key] = op["value"]
        elif op["op"] == "remove":
            del parent[key]
        else:
            raise SystemExit("unsupported op " + op["op"])

def matches(doc, target):
    api = doc.get("apiVersion", "")
    group, _, version = api.rpartition("/")
    if "group" in target and target["group"] != group:
        return False
    if "version" in target and target["version"] != version:
        return False
    return all(target.get(k) in (None, v) for k, v in (("kind", doc.get("kind")), ("name", doc["metadata"].get("name"))))

def build(directory):
    with open(os.path.join(directory, "kustomization.yaml")) as handle:
        spec = yaml.safe_load(handle)
    known = {"apiVersion", "kind", "resources", "images", "patches"}
    if set(spec) - known:
        raise SystemExit("unsupported kustomization fields: {}".format(sorted(set(spec) - known)))
    docs = []
    for resource in spec.get("resources", []):
        path = os.path.join(directory, resource)
        docs.extend(build(path) if os.path.isdir(path) else load(path))
    for image in spec.get("images", []):
        for doc in docs:
            pod = doc.get("spec", {}).get("template", {}).get("spec", {})
            for container in pod.get("containers", []) + pod.get("initContainers", []):
                base = container["image"].split("@")[0]
                name = base.rsplit(":", 1)[0] if ":" in base.split("/")[-1] else base
                if name == image["name"]:
                    container["image"] = "{}:{}".format(image.get("newName", name), image["newTag"])
    for patch in spec.get("patches", []):
        if "path" in patch:
            with open(os.path.join(directory, patch["path"])) as handle:
                body = yaml.safe_load(handle)
        else:
            body = yaml.safe_load(patch["patch"])
        if isinstance(body, list):
            targets = [d for d in docs if matches(d, patch["target"])]
            if len(targets) != 1:
                raise SystemExit("a JSON 6902 patch must match one resource")
            json6902(targets[0], body)
        elif body.get("$patch") == "delete":
            docs = [d for d in docs if not (d["kind"] == body["kind"] and d["metadata"]["name"] == body["metadata"]["name"])]
        else:
            raise SystemExit("unsupported strategic-merge patch")
    return docs

print(yaml.safe_dump_all(build(sys.argv[1]), sort_keys=False), end="")
"""


def render_offline(directory: Path) -> str:
    """Our kustomizations rendered without kubectl (PyYAML of the validator's venv)."""
    python = validator_venv() / "bin" / "python"
    return _run([python, "-c", _RENDER_SCRIPT, directory], timeout=120).stdout.decode()


def load_yaml(text: str) -> List[Dict[str, Any]]:
    """YAML documents as data (PyYAML of the validator's venv: the test venv may not have it)."""
    python = validator_venv() / "bin" / "python"
    script = "import json, sys, yaml; print(json.dumps([d for d in yaml.safe_load_all(sys.stdin) if d]))"
    return json.loads(_run([python, "-c", script], input=text.encode()).stdout)


def find(documents: List[Dict[str, Any]], kind: str) -> Dict[str, Any]:
    found = [d for d in documents if d.get("kind") == kind]
    assert len(found) == 1, "{} {} documents".format(len(found), kind)
    return found[0]


# -- the pod spec as a docker run ---------------------------------------------------------------------------


def docker_run_args(daemonset: Dict[str, Any], host_dirs: Dict[str, str]) -> List[str]:
    """``docker run`` options giving the container exactly what the DaemonSet's pod declares: every
    volumeMount (its hostPath volume's path mapped through ``host_dirs``, a directory of this machine
    standing for that path of the node), privileged, hostPID. Raises on anything the pod declares
    that this does not translate."""
    spec = daemonset["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    args = ["--network", "none"]
    if spec.get("hostPID"):
        args += ["--pid", "host"]
    if container.get("securityContext", {}).get("privileged"):
        args += privileged_args()
    for mount in container["volumeMounts"]:
        volume = volumes[mount["name"]]
        host_path = volume["hostPath"]["path"]
        if host_path not in host_dirs:
            raise AssertionError("the test has no stand-in for the node's {}".format(host_path))
        source = host_dirs[host_path]
        if volume["hostPath"].get("type") in ("DirectoryOrCreate",):
            os.makedirs(source, exist_ok=True)
        args += ["--mount", "type=bind,source={},target={}{}".format(
            source, mount["mountPath"], ",readonly" if mount.get("readOnly") else "")]
    unsupported = set(spec) - {"serviceAccountName", "automountServiceAccountToken", "priorityClassName", "hostPID",
                               "nodeSelector", "tolerations", "terminationGracePeriodSeconds", "containers", "volumes"}
    assert not unsupported, "pod spec fields the test does not translate: {}".format(sorted(unsupported))
    return args


#: Capability numbers to names (linux/capability.h), for the ones this machine cannot grant.
CAPABILITIES = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
    "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
    "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
    "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP",
    "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF",
    "CHECKPOINT_RESTORE",
)


def privileged_args() -> List[str]:
    """``--privileged``, or where this machine's capability bounding set lacks some capability
    (this test VM has no CAP_SYS_RESOURCE, and runc then refuses --privileged) the same less those:
    every other capability, no seccomp or AppArmor profile, every device allowed."""
    with open("/proc/self/status") as handle:
        bounding = next(int(line.split()[1], 16) for line in handle if line.startswith("CapBnd:"))
    missing = [name for bit, name in enumerate(CAPABILITIES) if not bounding & (1 << bit)]
    if not missing:
        return ["--privileged"]
    args = ["--cap-add", "ALL"]
    for name in missing:
        args += ["--cap-drop", name]
    return args + ["--security-opt", "apparmor=unconfined", "--security-opt", "seccomp=unconfined",
                   "--device-cgroup-rule", "a *:* rwm"]


def command_of(daemonset: Dict[str, Any]) -> List[str]:
    (container,) = daemonset["spec"]["template"]["spec"]["containers"]
    return list(container.get("command") or []) + list(container.get("args") or [])


# -- the image ------------------------------------------------------------------------------------------------


def _tree_hash() -> str:
    digest = hashlib.sha256()
    listed = _run(["git", "-C", REPO, "ls-files", "-co", "--exclude-standard", "--", *SOURCES]).stdout.decode().split()
    for name in sorted(listed):
        path = REPO / name
        if path.is_file():
            digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def image_key(rootfs: Path) -> str:
    dockerfile = (DEPLOY / "image" / "Dockerfile").read_bytes()
    return hashlib.sha256(rootfs.name.encode() + dockerfile + _tree_hash().encode()).hexdigest()[:16]


def rootfs_tarball() -> Path:
    found = sorted(cache_dir().glob("bookworm-minbase-*.tar"))
    if not found:
        from tests.packaging.support import pristine_tarball

        try:
            return pristine_tarball(cache_dir())
        except Exception as error:  # debootstrap needs a mirror: offline, a skip (a failure in CI)
            need(False, "no cached Debian 12 rootfs and cannot make one: {}".format(error))
    return found[-1]


def dependency_archives(work: Path, debs: Sequence[Path]) -> List[Path]:
    """The .debs that ``debs`` need on top of the Debian 12 rootfs the image starts from, downloaded
    into the shared apt archive of the package tests by ``apt-get install --download-only`` in a
    chroot of that rootfs (on a cold cache this fetches them; later runs find them there). What apt
    would install is read from its own plan, so nothing depends on an earlier run's leftovers."""
    from tests.packaging.support import Chroot

    archives = cache_dir() / "apt-archives"
    root = Chroot(rootfs_tarball(), archives, work)
    try:
        inside = root.copy_in(list(debs), "/tmp/node-agent-debs")
        root.apt("install --download-only --no-install-recommends " + " ".join(inside))
        plan = root.sh("apt-get install -s --no-install-recommends " + " ".join(inside)).stdout
    finally:
        root.close()
    wanted = set()
    for line in plan.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[0] == "Inst" and fields[1] not in ("nvdocker-toolkit", "nvdocker-setup"):
            version = fields[2].strip("()[]")
            if fields[2].startswith("["):  # "Inst pkg [old] (new ...)": an upgrade
                version = fields[3].strip("(")
            wanted.add((fields[1], version.replace(":", "%3a")))
    found = []
    for name, version in sorted(wanted):
        matches = sorted(archives.glob("{}_{}_*.deb".format(name, version)))
        assert matches, "apt planned {} {} but its .deb is not in {}".format(name, version, archives)
        found.append(matches[0])
    return found


def _build_context(work: Path) -> Path:
    from tests.packaging.support import build_debs

    context = work / "context"
    (context / "debs" / "archives").mkdir(parents=True)
    debs = build_debs(work / "debs")
    for name in ("nvdocker-toolkit", "nvdocker-setup"):
        shutil.copy2(str(debs[name]), str(context / "debs"))
    for deb in dependency_archives(work, [debs["nvdocker-toolkit"], debs["nvdocker-setup"]]):
        shutil.copy2(str(deb), str(context / "debs" / "archives"))
    from nvdocker_setup.node_agent import DEFAULT_INSTALL_DIR, runtime_script

    env = dict(os.environ, STATIC="yes", PYTHON="/usr/bin/python3", RUNTIME_SCRIPT=runtime_script(DEFAULT_INSTALL_DIR))
    _run(["bash", REPO / "scripts" / "build-launcher.sh", context / "launcher"], env=env)
    shutil.copy2(str(DEPLOY / "image" / "Dockerfile"), str(context / "Dockerfile"))
    return context


def ensure_image(box: Any) -> str:
    """The node-agent image in the private dockerd ``box`` (a DockerdSandbox): loaded from the
    cache, else built and saved there. Returns its tag."""
    rootfs = rootfs_tarball()
    key = image_key(rootfs)
    tag = "{}:{}".format(IMAGE, key)
    saved = cache_dir() / "node-agent-image-{}.tar".format(key)
    with open(str(cache_dir() / "node-agent-image.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not saved.exists():
            work = Path(tempfile.mkdtemp(prefix="node-agent-image.", dir=str(cache_dir())))
            try:
                context = _build_context(work)
                base = "nvdocker-bookworm-minbase:" + rootfs.name.rsplit("-", 1)[-1].split(".")[0]
                with open(str(rootfs), "rb") as handle:
                    box.docker("import", "-", base, input=handle.read(), timeout=600)
                env_build = ["build", "--network", "none", "--build-arg", "BASE=" + base, "-t", tag, str(context)]
                completed = subprocess.run(["docker", "-H", box.docker_host, *env_build], env=dict(box.env, DOCKER_BUILDKIT="0"),
                                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=900, check=False)
                if completed.returncode != 0:
                    raise AssertionError("docker build failed:\n" + completed.stdout.decode(errors="replace")[-4000:])
                partial = str(saved) + ".partial"
                box.docker("save", "-o", partial, tag, timeout=600)
                os.replace(partial, str(saved))
                for old in cache_dir().glob("node-agent-image-*.tar"):
                    if old != saved:
                        old.unlink()
                return tag
            finally:
                shutil.rmtree(str(work), ignore_errors=True)
    box.docker("load", "-i", str(saved), timeout=600)
    return tag
