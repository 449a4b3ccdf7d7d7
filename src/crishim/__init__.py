"""crishim: a Kubernetes CRI (runtime.v1) server that runs pods on a Docker Engine.

One package per capability; the modules at this level only start and wire them
(`__main__`, `cli`, `daemon`, `config`, `preflight`). From the bottom up, each
layer imports only the layers below it (tests/unit/test_layers.py keeps it so):

    common      helpers every layer shares: errors, deadlines, tasks, metrics, log
                setup, time, kernel files (cgroups, disk usage); and `config`, the
                settings (it imports only common)
    network     pod networks: CNI, netns handles, the node's firewall
    engine      Docker: the adapter (the only code that speaks Docker's API), the
                event-fed store, the labels crishim writes, engine state and status
    images      pull, list, remove, references, registry auth, image filesystem
    logs        container output into the kubelet's CRI log files
    pods        sandboxes and containers: creation, validation, security, resources,
                exec, checkpoints, events
    stats       stats and metrics, from kernel files and the store
    streaming   exec, attach and port-forward over the streaming endpoint
    server      the gRPC services: CRI messages in, capability calls, messages out
    api         the generated CRI messages (used by server only)

A new capability is a package at the layer of what it needs, with an `__init__`
docstring that says what it owns and what it may import; its Docker calls go
into engine/docker (typed values out, no Docker JSON), its gRPC handlers into
server/, and daemon.py builds it and hands it to the services that use it.
"""

__version__ = "0.1.0"
