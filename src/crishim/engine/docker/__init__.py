"""The Docker Engine adapter: the only package that speaks Docker's API.

Everything that leaves it is a typed value from `docker.types` or a domain
error from `crishim.common.errors`; no Docker JSON and no aiodocker object escapes.
"""

from crishim.engine.docker.client import DockerClient
from crishim.engine.docker.types import EngineInfo, EngineVersion

__all__ = ["DockerClient", "EngineInfo", "EngineVersion"]
