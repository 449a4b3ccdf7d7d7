"""Exec, attach and port-forward: the streaming endpoint the kubelet hands out
(single-use tokens), SPDY and WebSocket framing, and the Docker streams behind it.
May import: pods, engine, config, common.
"""
