"""Image references, parsed and normalised the way Docker and the kubelet do.

`busybox` -> docker.io/library/busybox:latest; `registry:5000/a/b@sha256:...`
keeps its digest and gets no tag. An image ID (`sha256:<64 hex>`, or the bare
64 hex digits) is not a reference to a repository and is kept as an ID.
Malformed references are InvalidArgument, naming what is wrong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from crishim.common import errors

DEFAULT_DOMAIN = "docker.io"
LEGACY_DOMAINS = ("index.docker.io", "registry-1.docker.io")
OFFICIAL_NAMESPACE = "library"
DEFAULT_TAG = "latest"

# The grammar of github.com/distribution/reference.
_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(rf"(?:{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?")
_TAG = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}")
_ID = re.compile(r"(?:sha256:)?([a-f0-9]{64})")
MAX_NAME = 255


@dataclass(frozen=True, slots=True)
class Reference:
    """A normalised repository reference: domain/path, with a tag, a digest, or both."""

    domain: str
    path: str
    tag: str = ""
    digest: str = ""

    @property
    def repository(self) -> str:
        return f"{self.domain}/{self.path}"

    def __str__(self) -> str:
        out = self.repository
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out


@dataclass(frozen=True, slots=True)
class ImageID:
    """An image ID: what the runtime reports as image_ref and Image.id."""

    digest: str  # sha256:<64 hex>

    def __str__(self) -> str:
        return self.digest


def parse(text: str, default_tag: bool = True) -> Reference | ImageID:
    """Parse an image reference or ID; raise InvalidArgument naming the problem.

    A reference with neither tag nor digest gets `latest`, unless default_tag is
    False (a list filter naming a repository means all of its tags).
    """
    if not text:
        raise errors.InvalidArgument("image reference is empty")
    if len(text) > 4096 or any(c.isspace() for c in text):
        raise errors.InvalidArgument(f"invalid image reference {text[:100]!r}")
    id_match = _ID.fullmatch(text)
    if id_match:
        return ImageID(f"sha256:{id_match.group(1)}")

    name, _, digest = text.partition("@")
    if digest and not _DIGEST.fullmatch(digest):
        raise errors.InvalidArgument(f"invalid digest in image reference {text!r}")
    tag = ""
    last_slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > last_slash:
        name, tag = name[:colon], name[colon + 1 :]
        if not _TAG.fullmatch(tag):
            raise errors.InvalidArgument(f"invalid tag {tag!r} in image reference {text!r}")

    # A registry is named with a dot, a port or as localhost, as Docker 20.10 and
    # cri-dockerd's docker/distribution split it. Newer distribution releases also
    # take an uppercase first component (`UPPER/x`) for a host; that makes a typo
    # a DNS lookup of `upper`, so here it is a repository name, and invalid.
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        domain, path = first, rest
        if not _DOMAIN.fullmatch(domain):
            raise errors.InvalidArgument(f"invalid registry {domain!r} in image reference {text!r}")
    else:
        domain, path = DEFAULT_DOMAIN, name
    if domain in LEGACY_DOMAINS:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = f"{OFFICIAL_NAMESPACE}/{path}"
    components = path.split("/")
    if not path or not all(_COMPONENT.fullmatch(c) for c in components):
        raise errors.InvalidArgument(
            f"invalid repository name {path!r} in image reference {text!r} "
            "(lowercase letters, digits and separators only)"
        )
    if len(f"{domain}/{path}") > MAX_NAME:
        raise errors.InvalidArgument(f"repository name too long in image reference {text!r}")
    if not tag and not digest and default_tag:
        tag = DEFAULT_TAG
    return Reference(domain, path, tag, digest)


def normalize(text: str) -> str:
    """The canonical string form: `busybox` -> `docker.io/library/busybox:latest`."""
    return str(parse(text))


def familiar(ref: Reference) -> str:
    """Docker's short form (`busybox:latest`), as it stores tags for Docker Hub images."""
    out = ref.repository
    if ref.domain == DEFAULT_DOMAIN:
        out = ref.path.removeprefix(f"{OFFICIAL_NAMESPACE}/")
    if ref.tag:
        out += f":{ref.tag}"
    if ref.digest:
        out += f"@{ref.digest}"
    return out
