"""Helpers every capability shares, and nothing crishim-specific above them.

Owns the domain errors (mapped to gRPC codes in server/instrument), deadlines and
detached tasks, Prometheus metrics, log setup, time formats, kernel-file readers
(cgroups, disk usage) and small loop tools. Imports no other crishim package.
"""
