"""The node's FORWARD chain, opened for the pods of crishim's own network.

A node that runs crishim runs Docker, and Docker's daemon sets the FORWARD policy
of iptables (and, since Docker 28, of ip6tables) to DROP, with chains of its own
that accept only its own bridges' traffic. The kernel passes bridged traffic
through iptables too (br_netfilter), so on such a node a pod reaches nothing but
the node itself: not another pod, not the world, and a hostPort is not reached
from beyond the node.

The CNI reference plugins' `firewall` plugin accepts traffic from a pod and the
replies to it, but not a new connection to it (so neither pod to pod on another
bridge port under its rules nor a hostPort from outside), and it leaves its
chains and FORWARD jump behind after the last pod. So crishim keeps two rules per
pod address itself, inserted at the head of FORWARD and removed with the pod:

    -s <pod ip> -j ACCEPT     what the pod sends (to pods, the node's peers, the world)
    -d <pod ip> -j ACCEPT     what is sent to it (replies, other pods, hostPort DNAT)

each commented `crishim <sandbox id>`, so that removal finds exactly its own. This
is done only for the network crishim wrote (network.default, named "crishim"): a
network someone else wrote (flannel, Calico, a bridge of an operator's) is
diagnosed (`diagnose`), never rewritten. Docker's own chains come first after a
restart of Docker; they return what is not theirs, so these rules still decide.

Rules are changed with `iptables -w` (Debian's, nft backend) in a subprocess, never
on the event loop.
"""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass

import structlog

from crishim.common import errors
from crishim.network.default import NAME as OWN_NETWORK

log = structlog.get_logger(__name__)

TIMEOUT = 30.0


def _tool(ip: str) -> str:
    return "ip6tables" if ipaddress.ip_address(ip).version == 6 else "iptables"


def _rules(sandbox_id: str, ips: tuple[str, ...]) -> list[tuple[str, list[str]]]:
    comment = ["-m", "comment", "--comment", f"crishim {sandbox_id}"]
    out = []
    for ip in ips:
        for direction in ("-s", "-d"):
            out.append((_tool(ip), [direction, ip, *comment, "-j", "ACCEPT"]))
    return out


async def _iptables(tool: str, *args: str) -> tuple[int, str]:
    try:
        proc = await asyncio.create_subprocess_exec(
            tool,
            "-w",
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
    except OSError as exc:  # not installed: Debian's iptables package
        return 127, f"{tool}: {exc.strerror}"
    try:
        async with asyncio.timeout(TIMEOUT):
            out, _ = await proc.communicate()
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    return proc.returncode or 0, out.decode(errors="replace").strip()


async def open_pod(sandbox_id: str, ips: tuple[str, ...]) -> None:
    """Accept the pod's traffic in FORWARD (idempotent)."""
    for tool, rule in _rules(sandbox_id, ips):
        code, _ = await _iptables(tool, "-C", "FORWARD", *rule)
        if code == 0:
            continue
        code, said = await _iptables(tool, "-I", "FORWARD", "1", *rule)
        if code:
            raise errors.FailedPrecondition(f"{tool}: cannot open FORWARD for the pod: {said}")
    log.debug("pod_forward_opened", pod_sandbox_id=sandbox_id, ips=ips)


async def close_pod(sandbox_id: str, ips: tuple[str, ...]) -> None:
    """Remove the pod's rules (idempotent: every copy, none is an error)."""
    for tool, rule in _rules(sandbox_id, ips):
        for _ in range(16):  # a rule added twice (two crishims, a restart) goes twice
            code, _ = await _iptables(tool, "-D", "FORWARD", *rule)
            if code:
                break


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """Whether pods of the configured network get through the node's FORWARD chain."""

    ok: bool  # False: FORWARD drops by default and nothing is known to accept them
    message: str


# Plugins that program the host's firewall for their pods themselves: the reference
# `firewall` plugin, and the add-ons whose agents do (flannel, Calico, Cilium, ...).
FORWARDING_PLUGINS = frozenset(
    {"firewall", "flannel", "calico", "cilium-cni", "weave-net", "antrea"}
)


async def diagnose(network_name: str, plugin_types: tuple[str, ...]) -> Diagnosis:
    """What the node's FORWARD policy means for pods of this network (crishim check)."""
    code, out = await _iptables("iptables", "-S", "FORWARD")
    if code:  # no iptables to read: no firewall of Docker's to speak of either
        return Diagnosis(True, f"cannot read FORWARD (iptables -S FORWARD): {out}")
    if not any(line in ("-P FORWARD DROP", "-P FORWARD REJECT") for line in out.splitlines()):
        return Diagnosis(True, "FORWARD accepts by default")
    if network_name == OWN_NETWORK:
        return Diagnosis(True, "FORWARD drops by default (Docker's firewall); crishim accepts "
                         "its own network's pods there, two rules per pod address")  # fmt: skip
    if FORWARDING_PLUGINS & set(plugin_types):
        return Diagnosis(True, f"FORWARD drops by default; network {network_name!r} programs "
                         "the firewall itself")  # fmt: skip
    return Diagnosis(
        False,
        f"FORWARD drops by default (Docker's firewall), and network {network_name!r} was not "
        "written by crishim, so crishim does not open it: unless that network accepts its pods' "
        "traffic in FORWARD, pods reach only the node (add the CNI `firewall` plugin to it, or "
        "use crishim's default network: `crishim cni-config`)",
    )
