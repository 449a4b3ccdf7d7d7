"""A node moving from cri-dockerd to crishim, with cri-dockerd's state where crishim's
flags do not point (a node where cri-dockerd ran with other flags).

The kit's cri-dockerd 0.4.3 makes pods on the node's daemon and network, keeping its
CNI cache under its own root; then it stops and crishim starts on the same daemon,
its --cni-cache-dir and --cri-dockerd-root elsewhere. crishim reads the pods'
addresses from their namespaces, shows them, says what to set, and StopPodSandbox
releases every address and veth.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from tests.harness import conformance
from tests.harness.procs import stop_process, wait_for


@pytest.mark.timeout(600)
def test_cri_dockerd_pods_without_their_cni_state_are_adopted_and_released(workdir) -> None:
    root = Path(tempfile.mkdtemp(prefix="mig-", dir=workdir))
    node = conformance.ConformanceNode(root).start(crishim=False)
    try:
        sock = root / "cri-dockerd" / "cri-dockerd.sock"
        sock.parent.mkdir()
        peer = subprocess.Popen(
            [
                *node.netns.prefix,
                str(conformance.CRI_DOCKERD_SH),
                str(node.dockerd.socket),
                str(sock),
                str(node.conf_dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for(sock.exists, 60, "cri-dockerd's socket")
            pods = {}
            for i in range(2):
                config = root / f"pod{i}.json"
                name = f"migrated-{i}-{uuid.uuid4().hex[:6]}"
                meta = {"name": name, "namespace": "default", "uid": str(uuid.uuid4())}
                doc = {"metadata": meta, "linux": {}}  # cri-dockerd: no linux, no CNI
                config.write_text(json.dumps(doc))
                pod_id = node.crictl("runp", str(config), socket=sock).strip()
                shown = json.loads(node.crictl("inspectp", pod_id, socket=sock))
                pods[pod_id] = shown["status"]["network"]["ip"]
        finally:
            stop_process(peer, timeout=30)
        assert all(pods.values()), pods
        assert sorted(node.network.reservations()) == sorted(pods.values())
        # cri-dockerd's state is under its own root, not where crishim's flags point.
        assert list((sock.parent / "cri-dockerd-root" / "cni-cache" / "results").iterdir())

        node.crishim.start()
        for pod_id, ip in pods.items():
            status = json.loads(node.crictl("inspectp", pod_id))["status"]
            assert status["state"] == "SANDBOX_READY"
            assert status["network"]["ip"] == ip
        warned = [
            e
            for e in node.crishim.events()
            if e.get("event") == "pod_network_adopted_without_state"
        ]
        assert len(warned) == 1, "one warning"
        assert "--cni-cache-dir" in warned[0]["hint"]
        check = subprocess.run(
            [*node.netns.prefix, sys.executable, "-m", "crishim", "check",
             f"--state-dir={node.crishim.state_dir}", f"--cni-conf-dir={node.conf_dir}",
             f"--cni-cache-dir={root / 'cni-cache'}", f"--docker-endpoint={node.dockerd.endpoint}",
             f"--listen=unix://{root / 'check.sock'}"],
            capture_output=True, text=True, timeout=60,
        ).stdout  # fmt: skip
        assert "WARN adopted pods: 2 pod(s) of cri-dockerd adopted without its CNI state" in check
        assert all(pod_id[:12] in check for pod_id in pods)

        for pod_id in pods:
            node.crictl("stopp", pod_id)
        assert node.network.reservations() == [], "every address released"
        assert node.netns.veths() == [], "no veth left"
        for pod_id in pods:
            node.crictl("rmp", pod_id)
        assert node.crictl("pods", "-q").split() == []
    finally:
        node.stop()
