"""The node's default CNI network, for nodes that have none yet.

The README's install command writes it where the CNI config directory is
empty, as containerd's packaging ships `10-containerd-net.conflist`: Debian's
reference plugins, a bridge with masquerading for the pods' traffic out of
the node, host-local addresses from an IPv4 range and an IPv6 ULA range
(dual-stack), and portmap for hostPorts. A cluster's network add-on (flannel,
Calico, Cilium) writes its own config later; being earlier in lexical order
(`05-`, `10-calico`) or replacing this file, it takes over for new pods.
"""

from __future__ import annotations

import json
from pathlib import Path

from crishim.network import conf
from crishim.network.checkpoint import write_atomic

FILENAME = "90-crishim.conflist"
NAME = "crishim"  # network.forward opens the node's FORWARD chain for this network only
IPV4_RANGE = "10.88.0.0/16"
IPV6_RANGE = "fd8c:7269:7368::/64"  # a ULA range of crishim's own


def conflist() -> dict[str, object]:
    return {
        "cniVersion": "1.0.0",
        "name": NAME,
        "plugins": [
            {
                "type": "bridge",
                "bridge": "crishim0",
                "isGateway": True,
                "ipMasq": True,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": IPV4_RANGE}], [{"subnet": IPV6_RANGE}]],
                    "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
        ],
    }


def write_if_absent(conf_dir: Path) -> Path | None:
    """Write the default network into `conf_dir` unless a config is there (blocking)."""
    if conf.config_files(conf_dir):
        return None
    conf_dir.mkdir(parents=True, exist_ok=True)
    path = conf_dir / FILENAME
    write_atomic(path, (json.dumps(conflist(), indent=2) + "\n").encode())
    return path
