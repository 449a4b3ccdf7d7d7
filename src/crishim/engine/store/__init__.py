"""The event-fed, in-memory view of every CRI object on the Docker daemon."""

from crishim.engine.store.cache import Record, Store

__all__ = ["Record", "Store"]
