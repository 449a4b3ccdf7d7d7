"""The Docker Engine adapter: the only package that speaks Docker's API.

Everything that leaves it is a typed value from `docker.types` or a domain
error from `crishim.errors`; no Docker JSON and no aiodocker object escapes.
"""

from crishim.docker.client import DockerClient
from crishim.docker.types import EngineInfo, EngineVersion

__all__ = ["DockerClient", "EngineInfo", "EngineVersion"]
