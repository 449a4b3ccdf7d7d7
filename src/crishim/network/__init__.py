"""Pod networks: CNI configuration and plugin calls, pinned network namespaces,
per-pod checkpoints of what ADD returned, and the node's firewall for pod
traffic. Knows nothing of Docker.
May import: common, config.
"""
