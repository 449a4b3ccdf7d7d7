"""CRI metadata on Docker containers, byte-compatible with cri-dockerd (adoption depends on it)."""

from __future__ import annotations

import pytest

from crishim.common import errors
from crishim.engine import labels

POD = labels.SandboxMeta(name="web-7d4b9", namespace="default", uid="5e2c-11ef-uid", attempt=1)
APP = labels.ContainerMeta(name="nginx", attempt=3)


def test_names_are_what_cri_dockerd_writes() -> None:
    assert labels.sandbox_name(POD) == "k8s_POD_web-7d4b9_default_5e2c-11ef-uid_1"
    assert labels.container_name(POD, APP) == "k8s_nginx_web-7d4b9_default_5e2c-11ef-uid_3"


@pytest.mark.parametrize(
    ("docker_name", "expected"),
    [
        pytest.param("/k8s_POD_web-7d4b9_default_5e2c-11ef-uid_1", POD, id="docker-slash"),
        pytest.param(
            "k8s_POD_web-7d4b9_default_5e2c-11ef-uid_1_0a1b2c3d", POD, id="conflict-suffix"
        ),
        pytest.param("k8s_POD_web_default", None, id="too-short"),
        pytest.param("k8s_POD_web-7d4b9_default_uid_x", None, id="attempt-not-a-number"),
        pytest.param("k8s_POD_a_b_c_99999999999", None, id="attempt-over-uint32"),
        pytest.param("my-own-container", None, id="not-kubernetes"),
        pytest.param("k8s_nginx_web-7d4b9_default_5e2c-11ef-uid_3", None, id="a-container"),
    ],
)
def test_sandbox_names_parse(docker_name, expected) -> None:
    assert labels.parse_sandbox_name(docker_name) == expected


def test_container_names_parse_back_to_their_metadata() -> None:
    name = labels.container_name(POD, APP)
    assert labels.parse_container_name("/" + name) == APP
    assert labels.parse_container_name(name + "_deadbeef") == APP
    assert labels.parse_container_name(name + "_not-hex!") is None


@pytest.mark.parametrize(
    ("meta", "field"),
    [
        pytest.param(labels.SandboxMeta("", "ns", "uid"), "config.metadata.name", id="no-name"),
        pytest.param(
            labels.SandboxMeta("a_b", "ns", "uid"), "config.metadata.name", id="underscore"
        ),
        pytest.param(labels.SandboxMeta("a", "", "uid"), "config.metadata.namespace", id="no-ns"),
        pytest.param(labels.SandboxMeta("a", "ns", "u/1"), "config.metadata.uid", id="slash"),
    ],
)
def test_metadata_that_would_break_a_name_is_refused(meta, field) -> None:
    with pytest.raises(errors.InvalidArgument, match=field):
        labels.sandbox_name(meta)


def test_labels_and_annotations_round_trip_for_a_sandbox() -> None:
    cri_labels = {"app": "web", "io.kubernetes.pod.name": "web-7d4b9", "": ""}
    annotations = {"kubernetes.io/config.seen": "2026-11-22T10:00:00Z", "x": ""}
    docker = labels.sandbox_labels(cri_labels, annotations)
    assert docker["io.kubernetes.docker.type"] == "podsandbox"
    assert docker["annotation.kubernetes.io/config.seen"] == "2026-11-22T10:00:00Z"
    assert docker["io.kubernetes.container.name"] == "POD"
    back = labels.read(docker)
    assert (back.kind, back.labels, back.annotations) == ("podsandbox", cri_labels, annotations)


def test_labels_and_annotations_round_trip_for_a_container() -> None:
    docker = labels.container_labels(
        {"io.kubernetes.container.name": "nginx"},
        {"io.kubernetes.container.hash": "ad01c60e"},
        sandbox_id="f00d",
        log_directory="/var/log/pods/default_web-7d4b9_5e2c-11ef-uid",
        log_path="nginx/3.log",
    )
    back = labels.read(docker)
    assert back.kind == "container"
    assert back.sandbox_id == "f00d"
    assert back.log_path == "/var/log/pods/default_web-7d4b9_5e2c-11ef-uid/nginx/3.log"
    assert back.labels == {"io.kubernetes.container.name": "nginx"}
    assert back.annotations == {"io.kubernetes.container.hash": "ad01c60e"}


def test_a_container_written_by_cri_dockerd_reads_back() -> None:
    # Labels as cri-dockerd (and dockershim before it) put them on a container.
    written = {
        "annotation.io.kubernetes.container.hash": "ad01c60e",
        "annotation.io.kubernetes.container.restartCount": "0",
        "annotation.io.kubernetes.container.terminationMessagePath": "/dev/termination-log",
        "io.kubernetes.container.logpath": "/var/log/pods/kube-system_coredns_1f2e/coredns/0.log",
        "io.kubernetes.container.name": "coredns",
        "io.kubernetes.docker.type": "container",
        "io.kubernetes.pod.name": "coredns-5d78c9869d-abcde",
        "io.kubernetes.pod.namespace": "kube-system",
        "io.kubernetes.pod.uid": "1f2e",
        "io.kubernetes.sandbox.id": "9b1c" * 16,
    }
    back = labels.read(written)
    assert back.kind == "container"
    assert back.sandbox_id == "9b1c" * 16
    assert back.annotations["io.kubernetes.container.restartCount"] == "0"
    assert "io.kubernetes.docker.type" not in back.labels
    assert back.labels["io.kubernetes.pod.namespace"] == "kube-system"


def test_an_unlabelled_container_is_no_cri_object() -> None:
    assert labels.read({"maintainer": "someone"}).kind == ""
    assert labels.read(None) == labels.CriLabels(kind="")
