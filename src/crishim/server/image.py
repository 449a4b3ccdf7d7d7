"""runtime.v1.ImageService.

Nothing is implemented yet: every RPC is inherited from the generated base,
which answers UNIMPLEMENTED. The image issue fills this in.
"""

from __future__ import annotations

from crishim.api.runtime import v1 as api


class ImageService(api.ImageServiceBase):
    pass
