"""The CRI gRPC server: services that translate CRI messages to domain calls.

No Docker JSON, no aiodocker object here: handlers call the domain layer and
build response messages from its typed results.
"""
