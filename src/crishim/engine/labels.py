"""CRI metadata <-> Docker container labels and names, in cri-dockerd's convention.

Docker is the source of truth: every sandbox and container carries its CRI
metadata on the Docker container itself, exactly as dockershim and cri-dockerd
wrote it, so a node moving from cri-dockerd to crishim keeps its pods.

Names (also the idempotency mechanism: Docker refuses a second container
with the same name):
    sandbox    k8s_POD_<pod name>_<namespace>_<pod uid>_<attempt>
    container  k8s_<container name>_<pod name>_<namespace>_<pod uid>_<attempt>
cri-dockerd may append `_<8 hex>` after a Docker name-conflict bug; that
suffix is tolerated when reading.

Labels:
    io.kubernetes.docker.type        podsandbox | container
    io.kubernetes.sandbox.id         a container's sandbox (container id)
    io.kubernetes.container.logpath  <log_directory>/<log_path>, for containers
    annotation.<key>                 each CRI annotation
    io.kubernetes.container.name     POD, on sandboxes (for `docker ps` readers)
and every CRI label as itself. Reading strips the internal keys again, so
CRI callers get back exactly the labels and annotations they gave.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from crishim.common import errors

KUBE_PREFIX = "k8s"
SANDBOX_CONTAINER_NAME = "POD"
DELIMITER = "_"

TYPE_LABEL = "io.kubernetes.docker.type"
TYPE_SANDBOX = "podsandbox"
TYPE_CONTAINER = "container"
SANDBOX_ID_LABEL = "io.kubernetes.sandbox.id"
LOG_PATH_LABEL = "io.kubernetes.container.logpath"
CONTAINER_NAME_LABEL = "io.kubernetes.container.name"
ANNOTATION_PREFIX = "annotation."
INTERNAL_LABELS = frozenset({TYPE_LABEL, SANDBOX_ID_LABEL, LOG_PATH_LABEL})
CRISHIM_PREFIX = "io.crishim."  # crishim's own bookkeeping, never a CRI label
# A token unique to each Docker create crishim makes: its mark (crishim.pods.creating).
CREATE_TOKEN_LABEL = CRISHIM_PREFIX + "create"

_RANDOM_SUFFIX = re.compile(r"[0-9a-f]{8}")


@dataclass(frozen=True, slots=True)
class SandboxMeta:
    name: str
    namespace: str
    uid: str
    attempt: int = 0


@dataclass(frozen=True, slots=True)
class ContainerMeta:
    name: str
    attempt: int = 0


@dataclass(frozen=True, slots=True)
class CriLabels:
    """What a Docker container's labels say in CRI terms."""

    kind: str  # TYPE_SANDBOX | TYPE_CONTAINER | "" (not a CRI object)
    sandbox_id: str = ""
    log_path: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)


def _check_part(value: str, field_name: str) -> None:
    # The delimiter inside a part would make the name unparseable (and could
    # collide with another pod's name); Kubernetes names never contain it.
    if not value:
        raise errors.InvalidArgument(f"{field_name} is required")
    if DELIMITER in value or "/" in value:
        raise errors.InvalidArgument(f"{field_name} {value!r} must not contain '_' or '/'")


def validate_sandbox(meta: SandboxMeta) -> None:
    _check_part(meta.name, "config.metadata.name")
    _check_part(meta.namespace, "config.metadata.namespace")
    _check_part(meta.uid, "config.metadata.uid")


def validate_container(meta: ContainerMeta) -> None:
    _check_part(meta.name, "config.metadata.name")


def sandbox_name(meta: SandboxMeta) -> str:
    validate_sandbox(meta)
    parts = [KUBE_PREFIX, SANDBOX_CONTAINER_NAME, meta.name, meta.namespace, meta.uid]
    return DELIMITER.join([*parts, str(meta.attempt)])


def container_name(sandbox: SandboxMeta, container: ContainerMeta) -> str:
    validate_sandbox(sandbox)
    validate_container(container)
    parts = [KUBE_PREFIX, container.name, sandbox.name, sandbox.namespace, sandbox.uid]
    return DELIMITER.join([*parts, str(container.attempt)])


def _split_name(name: str) -> list[str] | None:
    parts = name.removeprefix("/").split(DELIMITER)
    if len(parts) == 7 and _RANDOM_SUFFIX.fullmatch(parts[6]):
        parts = parts[:6]
    if len(parts) != 6 or parts[0] != KUBE_PREFIX or not parts[5].isdigit():
        return None
    if int(parts[5]) > 0xFFFFFFFF:  # attempt is a uint32
        return None
    return parts


def parse_sandbox_name(name: str) -> SandboxMeta | None:
    """The metadata in a sandbox's Docker name; None if it is not one."""
    parts = _split_name(name)
    if parts is None or parts[1] != SANDBOX_CONTAINER_NAME:
        return None
    return SandboxMeta(name=parts[2], namespace=parts[3], uid=parts[4], attempt=int(parts[5]))


def parse_container_name(name: str) -> ContainerMeta | None:
    """The container metadata in a container's Docker name; None if it is not one."""
    parts = _split_name(name)
    if parts is None:
        return None
    return ContainerMeta(name=parts[1], attempt=int(parts[5]))


def _merge(labels: dict[str, str], annotations: dict[str, str]) -> dict[str, str]:
    merged = dict(labels)
    for key, value in annotations.items():
        merged[ANNOTATION_PREFIX + key] = value
    return merged


def sandbox_labels(labels: dict[str, str], annotations: dict[str, str]) -> dict[str, str]:
    merged = _merge(labels, annotations)
    merged[TYPE_LABEL] = TYPE_SANDBOX
    merged[CONTAINER_NAME_LABEL] = SANDBOX_CONTAINER_NAME
    return merged


def container_labels(
    labels: dict[str, str],
    annotations: dict[str, str],
    *,
    sandbox_id: str,
    log_directory: str,
    log_path: str,
) -> dict[str, str]:
    merged = _merge(labels, annotations)
    merged[TYPE_LABEL] = TYPE_CONTAINER
    merged[SANDBOX_ID_LABEL] = sandbox_id
    merged[LOG_PATH_LABEL] = os.path.join(log_directory, log_path) if log_path else ""
    return merged


def read(docker_labels: dict[str, str] | None) -> CriLabels:
    """Split a Docker container's labels back into CRI labels and annotations."""
    docker_labels = docker_labels or {}
    kind = docker_labels.get(TYPE_LABEL, "")
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}
    for key, value in docker_labels.items():
        if key in INTERNAL_LABELS or key.startswith(CRISHIM_PREFIX):
            continue
        if key == CONTAINER_NAME_LABEL and kind == TYPE_SANDBOX:
            continue  # added by the shim for readability, never given by the kubelet
        if key.startswith(ANNOTATION_PREFIX):
            annotations[key.removeprefix(ANNOTATION_PREFIX)] = value
        else:
            labels[key] = value
    return CriLabels(
        kind=kind if kind in (TYPE_SANDBOX, TYPE_CONTAINER) else "",
        sandbox_id=docker_labels.get(SANDBOX_ID_LABEL, ""),
        log_path=docker_labels.get(LOG_PATH_LABEL, ""),
        labels=labels,
        annotations=annotations,
    )
