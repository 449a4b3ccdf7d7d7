"""Domain errors, and the one place they become gRPC status codes.

Every layer below the server raises these (never a gRPC error, never an
aiodocker one); `to_grpc` maps them. An exception that is not a CrishimError
is a bug and surfaces as INTERNAL with a logged traceback.
"""

from __future__ import annotations

from grpclib.const import Status


class CrishimError(Exception):
    """Base of every error crishim raises on purpose."""

    status: Status = Status.INTERNAL


class InvalidArgument(CrishimError):
    """The request is malformed or names something impossible."""

    status = Status.INVALID_ARGUMENT


class NotFound(CrishimError):
    """An id, name or reference that does not exist."""

    status = Status.NOT_FOUND


class AlreadyExists(CrishimError):
    """A create that would duplicate an existing object."""

    status = Status.ALREADY_EXISTS


class FailedPrecondition(CrishimError):
    """The object is in a state that forbids the call (e.g. an image in use)."""

    status = Status.FAILED_PRECONDITION


class Unauthenticated(CrishimError):
    """A registry refused the credentials."""

    status = Status.UNAUTHENTICATED


class Unavailable(CrishimError):
    """Docker (or a registry) cannot be reached right now; retrying may help."""

    status = Status.UNAVAILABLE


class DeadlineExceeded(CrishimError):
    """The operation ran out of time."""

    status = Status.DEADLINE_EXCEEDED


class ResourceExhausted(CrishimError):
    """A request or a resource over a limit."""

    status = Status.RESOURCE_EXHAUSTED


class Unimplemented(CrishimError):
    """A feature Docker (or crishim) does not provide."""

    status = Status.UNIMPLEMENTED


def to_grpc(exc: BaseException) -> tuple[Status, str]:
    """The status code and message a client sees for `exc`."""
    if isinstance(exc, CrishimError):
        return exc.status, str(exc) or type(exc).__name__
    if isinstance(exc, TimeoutError):
        return Status.DEADLINE_EXCEEDED, "operation timed out"
    return Status.INTERNAL, f"internal error: {type(exc).__name__}"
