"""The CRI gRPC server: services that translate CRI messages to capability calls.

No Docker JSON, no aiodocker object here: handlers call the capability packages
and build response messages from their typed results. Also owns the CRI socket
(`listen`) and the one place errors become gRPC codes (`instrument`).
May import: every capability package, api, common, config.
"""
