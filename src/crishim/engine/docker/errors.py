"""Docker's HTTP status codes as crishim domain errors.

Errors are chosen by status code only, never by the text of Docker's message:
the text changes between releases, the codes are API.
"""

from __future__ import annotations

from crishim.common import errors


class DockerNotFound(errors.NotFound):
    """404: no such container, image, network or exec."""


class DockerConflict(errors.FailedPrecondition):
    """409: a name in use, an image in use, a container in the wrong state."""


class DockerBadRequest(errors.InvalidArgument):
    """400: Docker rejected the parameters."""


class DockerUnauthorized(errors.Unauthenticated):
    """401/403 from the daemon (a registry's refusal during a pull)."""


class DockerUnavailable(errors.Unavailable):
    """The daemon cannot be reached, or answered 503."""


class DockerServerError(errors.CrishimError):
    """500 and other unexpected codes: the daemon failed to do what was asked."""


# aiodocker reports "cannot connect" as the pseudo status 900.
CONNECT_FAILED = 900

_BY_STATUS: dict[int, type[errors.CrishimError]] = {
    400: DockerBadRequest,
    401: DockerUnauthorized,
    403: DockerUnauthorized,
    404: DockerNotFound,
    409: DockerConflict,
    503: DockerUnavailable,
    CONNECT_FAILED: DockerUnavailable,
}


def from_status(status: int, message: str) -> errors.CrishimError:
    return _BY_STATUS.get(status, DockerServerError)(f"docker: {message}")
