"""tests/support/containerd.py itself: a missing containerd is a failure under CI=true, the base
config keeps every path in the temp dir, the tiny image archive is a valid OCI layout."""

import io
import json
import tarfile

import pytest

from tests.support import containerd as support
from tests.support.newer_docker import Docker26Unavailable


def _unavailable():
    raise Docker26Unavailable("no mirror here (test)")


@pytest.fixture
def missing_release(monkeypatch):
    release = support.ContainerdRelease("0.0", "0.0.", _unavailable, 2, "io.containerd.grpc.v1.cri", ())
    monkeypatch.setattr(support, "_outcome", {})
    monkeypatch.setattr(support.os, "geteuid", lambda: 0)
    return release


def test_a_missing_containerd_fails_under_ci(missing_release, monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true: containerd 0.0 is not available: no mirror here"):
        support.containerd_or_skip(missing_release)


def test_a_missing_containerd_is_a_skip_otherwise(missing_release, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="containerd 0.0 is not available"):
        support.containerd_or_skip(missing_release)


@pytest.mark.containerd
@pytest.mark.parametrize("name", [release.name for release in support.RELEASES])
def test_the_base_config_keeps_every_path_in_the_temp_dir(name):
    import tomlkit

    release = support.BY_NAME[name]
    daemon = support.PrivateContainerd(release, support.containerd_or_skip(release))
    try:
        daemon.write_config(daemon.base_config())
        dump = tomlkit.parse(daemon.config_dump()).unwrap()
        cri = dump["plugins"][release.cri_runtime_plugin]
        paths = [dump["root"], dump["state"], dump["grpc"]["address"], dump["ttrpc"]["address"],
                 dump["plugins"]["io.containerd.internal.v1.opt"]["path"], cri["cni"]["conf_dir"]]
        paths += cri["cni"]["bin_dirs"] if release.schema >= 3 else [cri["cni"]["bin_dir"]]
        assert all(path.startswith(daemon.workdir + "/") for path in paths), paths
        assert "io.containerd.nri.v1.nri" in dump["disabled_plugins"]
        assert len(daemon.socket) < 100
    finally:
        daemon.close()


def test_the_tiny_image_is_an_oci_layout():
    with tarfile.open(fileobj=io.BytesIO(support.tiny_oci_archive())) as archive:
        names = set(archive.getnames())
        index = json.load(archive.extractfile("index.json"))
    descriptor = index["manifests"][0]
    assert descriptor["annotations"]["io.containerd.image.name"] == support.TINY_IMAGE
    assert {"oci-layout", "index.json", "blobs/sha256/" + descriptor["digest"].split(":")[1]} <= names
    assert len([n for n in names if n.startswith("blobs/sha256/")]) == 3
