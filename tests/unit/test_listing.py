"""Stream* chunking: every item once, in order, no empty message."""

from __future__ import annotations

import pytest

from crishim.server.listing import chunks


@pytest.mark.parametrize("n", [0, 1, 499, 500, 501, 1234])
def test_every_item_once_in_order(n) -> None:
    pieces = list(chunks(list(range(n))))
    assert [i for piece in pieces for i in piece] == list(range(n))
    assert all(1 <= len(piece) <= 500 for piece in pieces)
