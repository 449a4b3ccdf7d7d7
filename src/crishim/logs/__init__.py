"""Container output into the kubelet's CRI log files, with nothing lost across
restarts (`copier`), and the one copier per Docker daemon (`owner`).
May import: engine, common.
"""
