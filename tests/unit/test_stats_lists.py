"""The stats list calls' reuse: the same answer while nothing it shows changed, a new
one as soon as something did. Readings come from this test process's own cgroups."""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import replace

from crishim.common.fsusage import LayerMeter, LayerUsage
from crishim.engine import labels
from crishim.engine.docker.types import ContainerInfo, ContainerState
from crishim.engine.store import Record
from crishim.pods.sandboxes import SandboxView
from crishim.server.stats import StatsEntries, container_stats, pod_stats
from crishim.stats import collector

from .test_protowire import _container_view

LIST = collector.LIST_MAX_AGE_NS


class Listing:
    """Stands in for Containers/Sandboxes: list() is the same tuple until set anew."""

    def __init__(self, items) -> None:
        self.items = tuple(items)

    def list(self):
        return self.items


def _running(cid: str, sandbox_id: str = "s" * 64):
    info = ContainerInfo(
        cid, "k8s_web_pod_ns_uid_0", 1, "img", "sha256:x", {},
        ContainerState("running", True, 0, False, os.getpid(), "", 5, 0), "", "", "", "", "", "",
        "",
    )  # fmt: skip
    return replace(
        _container_view(), id=cid, sandbox_id=sandbox_id, record=Record(info, labels.read({}), 1)
    )


def _pod(sid: str = "s" * 64) -> SandboxView:
    return SandboxView(
        id=sid, meta=labels.SandboxMeta("pod", "ns", "uid-1", 1), ready=True, created_at_ns=1,
        labels={}, annotations={}, runtime_handler="", ip="", additional_ips=(),
        host_network=True, host_pid=False, host_ipc=False, pid=os.getpid(), docker_runtime="",
        netns_path="", cgroup_parent="", info={}, record=None,
    )  # fmt: skip


@contextlib.asynccontextmanager
async def _turns():
    """`async with _turns() as turns:` turns() is how often another task has run since."""
    ran = 0

    async def other() -> None:
        nonlocal ran
        while True:
            await asyncio.sleep(0)
            ran += 1

    task = asyncio.create_task(other())
    await asyncio.sleep(0)  # started: it counts from its next turn
    try:
        yield lambda: ran
    finally:
        task.cancel()


def _collector(containers, pods=()):
    meter = LayerMeter()
    return collector.StatsCollector(Listing(containers), Listing(pods), meter), meter


async def test_a_list_over_every_container_is_reused_until_a_reading_changes() -> None:
    stats, _ = _collector([_running("a" * 64), _running("b" * 64)])
    everyone = stats.containers.list()
    first = await stats.containers_stats(everyone, max_age_ns=LIST)
    assert [s.view.id for s in first] == ["a" * 64, "b" * 64]
    assert first[0].cpu is not None
    assert await stats.containers_stats(everyone, max_age_ns=LIST) is first
    # A read-now call (ContainerStats, the sampler) makes newer readings: a new list.
    await stats.containers_stats(everyone)
    second = await stats.containers_stats(everyone, max_age_ns=LIST)
    assert second is not first
    assert second[0].timestamp_ns > first[0].timestamp_ns
    # A filtered list is read from the kept stats, never reused as the whole list.
    part = await stats.containers_stats([everyone[1]], max_age_ns=LIST)
    assert part == [second[1]]
    assert await stats.containers_stats(everyone, max_age_ns=LIST) is second


async def test_a_list_is_made_anew_for_a_changed_store_or_an_old_reading() -> None:
    stats, _ = _collector([_running("a" * 64)])
    first = await stats.containers_stats(stats.containers.list(), max_age_ns=LIST)
    stats.containers.items = (*stats.containers.items, _running("c" * 64))
    grown = await stats.containers_stats(stats.containers.list(), max_age_ns=LIST)
    assert [s.view.id for s in grown] == ["a" * 64, "c" * 64]
    assert grown[0] is first[0]  # a's reading is still recent: kept
    # Readings older than the allowed age: read again.
    fresh = await stats.containers_stats(stats.containers.list(), max_age_ns=1)
    assert fresh is not grown
    assert fresh[0].timestamp_ns > grown[0].timestamp_ns


async def test_a_new_layer_measurement_makes_a_new_list() -> None:
    stats, meter = _collector([_running("a" * 64)])
    everyone = stats.containers.list()
    first = await stats.containers_stats(everyone, max_age_ns=LIST)
    assert first[0].layer is None
    meter._usage["a" * 64] = LayerUsage(4096, 3, 7)
    meter.changes += 1  # as the meter's task does with each measurement
    second = await stats.containers_stats(everyone, max_age_ns=LIST)
    assert second is not first
    assert second[0].layer is not None
    assert second[0].layer.bytes == 4096
    # The layer alone changed: the cgroup reading is kept, not read again.
    assert second[0].usage is first[0].usage
    assert second[0].timestamp_ns == first[0].timestamp_ns
    assert await stats.containers_stats(everyone, max_age_ns=LIST) is second


async def test_pod_lists_are_reused_and_new_pod_readings_do_not_drop_the_container_list() -> None:
    stats, _ = _collector([_running("a" * 64)], [_pod(), _pod("t" * 64)])
    pods = stats.sandboxes.list()
    first = await stats.pods_stats(pods, max_age_ns=LIST)
    assert [c.view.id for c in first[0].containers] == ["a" * 64]
    assert await stats.pods_stats(pods, max_age_ns=LIST) is first
    containers = await stats.containers_stats(stats.containers.list(), max_age_ns=LIST)
    assert containers[0] is first[0].containers[0]
    # The sampler's round: everything read now. The next list calls reuse its lists.
    sampled = await stats.pods_stats(pods)
    assert sampled is not first
    assert await stats.pods_stats(pods, max_age_ns=LIST) is sampled
    again = await stats.containers_stats(stats.containers.list(), max_age_ns=LIST)
    assert again[0] is sampled[0].containers[0]
    # One pod read now (PodSandboxStats; this one has no containers): the next list
    # shows that newer reading.
    (one,) = await stats.pods_stats([pods[1]])
    listed = await stats.pods_stats(pods, max_age_ns=LIST)
    assert listed is not sampled
    assert listed[1] is one
    # A metrics read (full) also serves the lists; a list never serves the metrics.
    assert await stats.pods_stats(pods, full=True, max_age_ns=LIST) is not listed
    full = await stats.pods_stats(pods, full=True)
    assert await stats.pods_stats(pods, max_age_ns=LIST) is full
    assert await stats.pods_stats(pods, full=True, max_age_ns=LIST) is full


async def test_after_a_metrics_call_the_samplers_rounds_serve_the_metrics() -> None:
    stats, _ = _collector([_running("a" * 64)], [_pod()])
    pods = stats.sandboxes.list()
    metrics_age = collector.METRICS_MAX_AGE_NS
    # No metrics asked yet: a round reads what the stats lists show, not enough for them.
    await stats.sample()
    plain = await stats.pods_stats(pods, max_age_ns=LIST)
    first = await stats.pods_stats(pods, full=True, max_age_ns=metrics_age)
    assert first is not plain
    assert first[0].containers[0].usage.memory_failcnt is not None  # read full now
    stats.metrics_asked()
    await stats.sample()
    sampled = await stats.pods_stats(pods, max_age_ns=LIST)
    assert sampled is not first
    # The next scrape gets the round's reading: no cgroup read of its own.
    assert await stats.pods_stats(pods, full=True, max_age_ns=metrics_age) is sampled
    # While the stats lists are polled, rounds come often; most stay partial ...
    stats.asked()
    await stats.sample()
    polled = await stats.pods_stats(pods, max_age_ns=LIST)
    assert polled is not sampled
    assert polled[0].containers[0].usage.memory_failcnt is None
    # ... and a scrape meanwhile still gets the last full round's reading, not a new one.
    scraped = await stats.pods_stats(pods, full=True, max_age_ns=metrics_age)
    assert scraped[0].containers[0] is sampled[0].containers[0]
    assert scraped[0].pause is sampled[0].pause
    # One round in FULL_EVERY seconds reads full again.
    stats._full_round_at -= collector.FULL_EVERY
    await stats.sample()
    renewed = await stats.pods_stats(pods, max_age_ns=LIST)
    assert renewed[0].containers[0].usage.memory_failcnt is not None
    scraped = await stats.pods_stats(pods, full=True, max_age_ns=metrics_age)
    assert scraped[0].containers[0] is renewed[0].containers[0]


async def test_the_wire_answer_is_reused_for_the_same_list_and_members_match_entries(pb) -> None:
    stats, _ = _collector([_running("a" * 64)], [_pod()])
    entries = StatsEntries()
    found = await stats.pods_stats(stats.sandboxes.list(), max_age_ns=LIST)
    items, joined = entries.answer("pods", found, entries.pod)
    assert entries.answer("pods", found, entries.pod)[1] is joined
    # The member entry made from the container's list entry is what encoding it whole gives.
    decoded = pb.ListPodSandboxStatsResponse.FromString(joined)
    assert decoded.stats[0] == pb.PodSandboxStats.FromString(pod_stats(found[0]))
    member = decoded.stats[0].linux.containers[0]
    assert member == pb.ContainerStats.FromString(container_stats(found[0].containers[0]))
    assert member.attributes.id == "a" * 64
    # Another list of the same stats: joined again from the entries already made.
    again, joined_again = entries.answer("pods", list(found), entries.pod)
    assert joined_again == joined
    assert again is not items
    assert again[0] is items[0]


async def test_other_tasks_run_while_a_large_scrape_is_encoded() -> None:
    from crishim.server.stats import METRICS_YIELD_EVERY

    pods = [_pod(f"{i:064x}") for i in range(2 * METRICS_YIELD_EVERY + 1)]
    stats, _ = _collector([], pods)
    rpcs = _rpcs(stats)
    # Read beforehand: the scrape below reuses the reading and only encodes.
    await stats.pods_stats(stats.sandboxes.list(), full=True)
    async with _turns() as turns:
        entries = await rpcs._pod_metrics()
        during = turns()
    assert len(entries) == len(pods)
    assert during >= 2  # at least once per METRICS_YIELD_EVERY pods


async def test_a_full_round_encodes_the_metrics_and_the_next_scrape_only_joins(
    pb, monkeypatch
) -> None:
    stats, rpcs, encoded = _counting_encodings(monkeypatch)
    await stats.sample()  # metrics not asked for: a partial round, nothing encoded
    assert encoded == []
    stats.metrics_asked()
    await stats.sample()  # a full round: the pod's metrics encoded with it
    assert len(encoded) == 1
    scraped = b"".join(await rpcs._pod_metrics())
    assert len(encoded) == 1  # the scrape encoded nothing
    (pod,) = pb.ListPodSandboxMetricsResponse.FromString(scraped).pod_metrics
    assert pod.pod_sandbox_id == "s" * 64
    (container,) = pod.container_metrics
    assert container.container_id == "a" * 64
    names = {m.name for m in container.metrics}
    assert "container_memory_failcnt" in names  # from the full reading
    # The next full round reads anew: the scrape after it gets the new reading's entry.
    await stats.sample()
    assert len(encoded) == 2
    again = b"".join(await rpcs._pod_metrics())
    assert len(encoded) == 2
    assert again != scraped


async def test_a_round_encodes_the_metrics_only_when_the_next_scrape_may_follow_it(
    monkeypatch,
) -> None:
    stats, rpcs, encoded = _counting_encodings(monkeypatch)
    # Scraped a minute apart, the last one just now: the rounds of the next ~45 s are
    # read full (a scrape may come early) but not encoded; the ones after are.
    stats.metrics_asked()
    stats._metrics_asked_at -= 60
    stats.metrics_asked()
    await stats.sample()
    assert encoded == []
    stats._metrics_asked_at -= 50  # 50 s later: the next round may be the last before it
    await stats.sample()
    assert len(encoded) == 1
    # A scrape that comes before its time still gets the metrics, encoded then.
    stats._metrics_asked_at += 50
    await stats.sample()
    assert len(encoded) == 1
    assert len(await rpcs._pod_metrics()) == 1
    assert len(encoded) == 2


async def test_a_new_layer_measurement_alone_makes_no_new_metrics_entry(pb) -> None:
    stats, meter = _collector([_running("a" * 64)], [_pod()])
    rpcs = _rpcs(stats)
    stats.metrics_asked()
    await stats.sample()  # a full round; its metrics encoded
    (first,) = await rpcs._pod_metrics()
    meter._usage["a" * 64] = LayerUsage(4096, 3, 7)
    meter.changes += 1  # as the meter's task does with each measurement
    # The lists show the new layer at once ...
    (listed,) = await stats.containers_stats(stats.containers.list(), max_age_ns=LIST)
    assert listed.layer.bytes == 4096
    # ... the metrics keep the entry of the round's reading, made before the layer came.
    (scraped,) = await rpcs._pod_metrics()
    assert scraped is first

    def fs_usage(entry: bytes) -> list[float]:
        (pod,) = pb.ListPodSandboxMetricsResponse.FromString(entry).pod_metrics
        (container,) = pod.container_metrics
        return [m.value.value for m in container.metrics if m.name == "container_fs_usage_bytes"]

    assert fs_usage(scraped) == []
    await stats.sample()  # the next full round: its entry shows the layer
    (renewed,) = await rpcs._pod_metrics()
    assert fs_usage(renewed) == [4096]


def _counting_encodings(monkeypatch):
    """(collector, server, the pods whose metrics were encoded) over one pod with one
    container, the server's warming hooked to the collector's rounds as in crishim."""
    from crishim.server.stats import StatsRPCs

    stats, _ = _collector([_running("a" * 64)], [_pod()])
    rpcs = _rpcs(stats)
    stats.on_sample = rpcs.warm_stats_lists
    encoded = []
    encode = StatsRPCs._metrics_of
    monkeypatch.setattr(
        StatsRPCs, "_metrics_of", lambda self, pod: encoded.append(pod) or encode(self, pod)
    )
    return stats, rpcs, encoded


def _rpcs(stats):
    from crishim.server.stats import StatsRPCs

    rpcs = StatsRPCs()
    rpcs._stats, rpcs._sandboxes, rpcs._containers = stats, stats.sandboxes, stats.containers
    rpcs._stats_entries = StatsEntries()
    return rpcs


async def test_other_tasks_run_while_a_round_builds_and_encodes_the_lists(monkeypatch) -> None:
    from crishim.server.stats import StatsRPCs

    async def at_once(fn, *args):  # the cgroup reads without a thread: no wait but the yields
        return fn(*args)

    monkeypatch.setattr(asyncio, "to_thread", at_once)

    count = 2 * collector.BUILD_YIELD_EVERY + 1
    pods = [_pod(f"{i:064x}") for i in range(count)]
    stats, _ = _collector([_running(f"{i:064x}", pods[i].id) for i in range(count)], pods)
    rpcs = StatsRPCs()
    rpcs._stats, rpcs._sandboxes, rpcs._containers = stats, stats.sandboxes, stats.containers
    rpcs._stats_entries = StatsEntries()
    rpcs._stats_entries.asked("containers")
    rpcs._stats_entries.asked("pods")
    async with _turns() as turns:
        await stats.pods_stats(stats.sandboxes.list())  # a round's reading: every object built
        built = turns()
        await rpcs.warm_stats_lists()  # the round's encoding of both lists
        warmed = turns() - built
    # Once per BUILD_YIELD_EVERY containers, then pods: built, then encoded.
    assert built >= 2 + 2
    assert warmed >= 2 + 2
    found = await stats.pods_stats(stats.sandboxes.list(), max_age_ns=LIST)
    _, joined = rpcs._stats_entries.answer("pods", found, rpcs._stats_entries.pod)
    assert joined == b"".join(rpcs._stats_entries.pod(p) for p in found)


async def test_a_list_call_that_finds_entries_not_made_yet_encodes_them_in_steps() -> None:
    count = 2 * collector.BUILD_YIELD_EVERY + 1
    pods = [_pod(f"{i:064x}") for i in range(count)]
    stats, _ = _collector([_running(f"{i:064x}", pods[i].id) for i in range(count)], pods)
    rpcs = _rpcs(stats)
    await stats.pods_stats(stats.sandboxes.list())  # a round's reading, not encoded yet
    # The calls come before the round's own encoding: they encode, and let others run.
    async with _turns() as turns:
        _, containers = await rpcs._container_stats(None)
        between = turns()
        _, listed = await rpcs._pod_stats(None)
        during = turns() - between
    assert between >= 2  # at least once per BUILD_YIELD_EVERY entries
    assert during >= 2
    found = await stats.pods_stats(stats.sandboxes.list(), max_age_ns=LIST)
    assert listed == b"".join(rpcs._stats_entries.pod(p) for p in found)
    listed_containers = await stats.containers_stats(stats.containers.list(), max_age_ns=LIST)
    assert containers == b"".join(rpcs._stats_entries.container(c) for c in listed_containers)


async def test_a_list_call_keeps_what_it_found_when_the_sampler_forgets_objects_meanwhile() -> None:
    a, b = _running("a" * 64), _running("b" * 64)
    stats, _ = _collector([a, b])
    await stats.containers_stats([a, b], max_age_ns=LIST)  # both read and kept
    b2 = replace(b)  # a new view of b: read anew, in a worker thread
    call = asyncio.create_task(stats.containers_stats([a, b2], max_age_ns=LIST))
    await asyncio.sleep(0)  # the call now waits for its reading
    stats.containers.items = (b2,)  # a is removed meanwhile...
    stats._live_keys()  # ...and the sampler forgets it
    found = await call
    assert [s.view.id for s in found] == ["a" * 64, "b" * 64]
    assert found[1].view is b2
