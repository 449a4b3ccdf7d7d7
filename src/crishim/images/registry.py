"""Why a pull failed, asked of the registry itself and told by HTTP status.

Docker 20.10 reports a refused login, a missing image and an unreachable
registry all as a 500 with prose. crishim never classifies errors by message
text, so after a pull fails it asks the registry the same questions Docker
did, with the same credentials, and reads the answers' status codes:

  cannot connect            -> UNAVAILABLE
  401/403 with credentials  -> UNAUTHENTICATED ("authentication failed for <registry>")
  401 without credentials   -> UNAUTHENTICATED ("<registry> requires credentials")
  404 for the manifest      -> NOT_FOUND

Only the registry of the failed pull is contacted, only after a failure.
"""

from __future__ import annotations

import base64
import re
import ssl
from urllib.parse import urlencode

import aiohttp
import structlog

from crishim.common import errors
from crishim.engine.docker.types import RegistryAuth
from crishim.images.ref import DEFAULT_DOMAIN, Reference

log = structlog.get_logger(__name__)

HUB_API = "registry-1.docker.io"
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')
MANIFEST_TYPES = ", ".join(
    (
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    )
)


def credentials(auth: RegistryAuth) -> tuple[str, str] | None:
    """(user, password) from the username/password or the base64 `auth` form."""
    if auth.username or auth.password:
        return auth.username, auth.password
    if auth.auth:
        user, _, password = base64.b64decode(auth.auth).decode().partition(":")
        return user, password
    return None


PROBE_TIMEOUT = aiohttp.ClientTimeout(total=10)


async def diagnose(ref: Reference, auth: RegistryAuth) -> errors.CrishimError | None:
    """The domain error that explains a failed pull of `ref`, or None if the registry has none."""
    host = HUB_API if ref.domain == DEFAULT_DOMAIN else ref.domain
    try:
        async with aiohttp.ClientSession(timeout=PROBE_TIMEOUT) as session:
            return await _diagnose(session, host, ref, auth)
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        log.info("registry_probe_failed", registry=ref.domain, error=repr(exc))
        return errors.Unavailable(
            f"registry {ref.domain} is unreachable: {exc or type(exc).__name__}"
        )


async def _diagnose(
    session: aiohttp.ClientSession, host: str, ref: Reference, auth: RegistryAuth
) -> errors.CrishimError | None:
    base = await _base_url(session, host)
    manifest = f"{base}/v2/{ref.path}/manifests/{ref.digest or ref.tag}"
    headers = {"Accept": MANIFEST_TYPES}
    if auth.registry_token:
        headers["Authorization"] = f"Bearer {auth.registry_token}"
    async with session.head(manifest, headers=headers) as resp:
        status, challenge = resp.status, resp.headers.get("WWW-Authenticate", "")
    if status in (401, 403) and not auth.registry_token:
        token_header = await _authorize(session, challenge, ref, auth)
        if isinstance(token_header, errors.CrishimError):
            return token_header
        async with session.head(
            manifest, headers={**headers, "Authorization": token_header}
        ) as resp:
            status = resp.status
    if status in (401, 403):
        return _refused(ref, auth)
    if status == 404:
        return errors.NotFound(f"image {ref} not found in registry {ref.domain}")
    return None


async def _base_url(session: aiohttp.ClientSession, host: str) -> str:
    """https, or plain http where the registry only speaks that (Docker's insecure registries)."""
    try:
        async with session.get(f"https://{host}/v2/") as resp:
            resp.release()
        return f"https://{host}"
    except (
        aiohttp.ClientSSLError,
        aiohttp.ClientConnectorSSLError,
        ssl.SSLError,
        aiohttp.ServerDisconnectedError,
        aiohttp.ClientOSError,
    ):
        return f"http://{host}"


async def _authorize(
    session: aiohttp.ClientSession, challenge: str, ref: Reference, auth: RegistryAuth
) -> str | errors.CrishimError:
    """The Authorization header the challenge asks for, or the error that prevents it."""
    creds = credentials(auth)
    scheme = challenge.split(" ", 1)[0].lower()
    if scheme == "basic":
        if creds is None:
            return _refused(ref, auth)
        raw = base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode()
        return f"Basic {raw}"
    if scheme != "bearer":
        return _refused(ref, auth)
    params = dict(_CHALLENGE_PARAM.findall(challenge))
    query = {"service": params.get("service", ""), "scope": f"repository:{ref.path}:pull"}
    realm = params.get("realm", "")
    basic = aiohttp.BasicAuth(*creds) if creds else None
    if auth.identity_token:
        form = {
            "grant_type": "refresh_token",
            "refresh_token": auth.identity_token,
            "service": query["service"],
            "scope": query["scope"],
            "client_id": "crishim",
        }
        request = session.post(realm, data=form)
    else:
        request = session.get(f"{realm}?{urlencode(query)}", auth=basic)
    async with request as resp:
        if resp.status in (401, 403):
            return _refused(ref, auth)
        if resp.status != 200:
            return errors.Unavailable(f"token service of {ref.domain} answered {resp.status}")
        body = await resp.json(content_type=None)
    token = body.get("token") or body.get("access_token") or ""
    return f"Bearer {token}"


def _refused(ref: Reference, auth: RegistryAuth) -> errors.Unauthenticated:
    given = credentials(auth) or auth.identity_token or auth.registry_token
    if given:
        return errors.Unauthenticated(
            f"authentication failed for registry {ref.domain} (pulling {ref})"
        )
    return errors.Unauthenticated(
        f"registry {ref.domain} requires credentials to pull {ref}; none given"
    )
