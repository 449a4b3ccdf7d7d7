"""What ContainerStatus reports from Docker's state, before any RPC encoding."""

from __future__ import annotations

import dataclasses

from crishim.engine import labels
from crishim.engine.docker.types import ContainerState
from crishim.engine.store.cache import Record
from crishim.pods.containers import Containers
from tests.unit.test_store import info as sandbox_info


def record(started: int, finished: int, exit_code: int = 0) -> Record:
    state = ContainerState("exited", False, exit_code, False, 0, "", started, finished)
    info = dataclasses.replace(
        sandbox_info("c1", "exited"),
        name="k8s_app_pod_ns_uid_0",
        image="busybox",
        labels={"io.kubernetes.docker.type": "container", "io.kubernetes.sandbox.id": "s1"},
        state=state,
    )
    return Record(info, labels.read(info.labels), 1)


def view(rec: Record):
    return Containers.view(rec)


def test_a_finish_stamped_before_the_start_is_reported_at_the_start() -> None:
    # Docker 20.10 did this for `sh -c "exit 0"`: FinishedAt 1.8 ms before StartedAt.
    v = view(record(started=2_000, finished=1_000))
    assert v.finished_at_ns == v.started_at_ns == 2_000
    assert v.reason == "Completed"


def test_ordinary_times_pass_through() -> None:
    v = view(record(started=1_000, finished=5_000, exit_code=3))
    assert (v.started_at_ns, v.finished_at_ns, v.reason) == (1_000, 5_000, "Error")


def test_a_container_that_never_finished_has_no_finish_time() -> None:
    rec = record(started=1_000, finished=0)
    rec = dataclasses.replace(
        rec,
        info=dataclasses.replace(
            rec.info, state=dataclasses.replace(rec.info.state, status="running", running=True)
        ),
    )
    assert view(rec).finished_at_ns == 0
