"""The Docker Engine as crishim uses it.

Owns the Docker adapter (`docker/`: the only code that speaks Docker's API; typed
values out, no Docker JSON), the event-fed store of every CRI object on the daemon
(`store/`), the labels crishim writes on Docker objects (`labels`), the daemon's
state kept for the polled calls (`state`) and what Version, Status and
RuntimeConfig report (`status`, which includes the pod network's readiness).
May import: common, config, network.
"""
