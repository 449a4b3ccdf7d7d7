"""A short kubelet-shaped soak (bench/soak.py): a node's polls, probes, events and pod
churn for about two minutes; no call fails and nothing outlives its pod."""

from __future__ import annotations

import argparse

import pytest

from bench import soak

# What may differ between the start and the end of a healthy run: a log file or a
# connection in the middle of being opened or closed.
FDS_IN_FLIGHT = 4


@pytest.mark.timeout(600)
def test_a_short_soak_fails_no_call_and_leaks_nothing() -> None:
    result = soak.run(argparse.Namespace(minutes=1.5, pods=12, peer="crishim", sample=15.0))
    assert result["failures"] == {}, result["failures"]
    calls = result["calls"]
    for rpc in ("RunPodSandbox", "StopPodSandbox", "ExecSync", "ListContainerStats",
                "ListPodSandboxMetrics", "GetContainerEvents (events)"):  # fmt: skip
        assert calls[rpc]["calls"] > 0, rpc
    assert result["pods_made"] > 12, "pods were replaced"
    left = result["leftovers"]
    for kind in ("containers", "veths", "reserved_ips", "netns_handles", "checkpoints"):
        assert left[kind] == 0, (kind, left)
    assert left["open_fds_gained"] <= FDS_IN_FLIGHT, left
