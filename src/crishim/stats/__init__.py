"""Container and pod stats and metrics, from kernel files and the store: the
collector (`collector`), interface counters (`netdev`) and the metrics of
ListPodSandboxMetrics (`metrics`).
May import: pods, engine, network, common.
"""
