"""Streaming tokens: single use, short-lived, unguessable, bounded."""

from __future__ import annotations

import pytest

from crishim.common import errors
from crishim.streaming.tokens import Tokens


def test_a_token_works_once() -> None:
    tokens = Tokens()
    token = tokens.issue("exec", "request")
    assert tokens.take("exec", token) == "request"
    assert tokens.take("exec", token) is None


def test_a_token_expires_after_its_ttl() -> None:
    now = [100.0]
    tokens = Tokens(ttl=60, clock=lambda: now[0])
    token = tokens.issue("exec", "request")
    now[0] += 60.5
    assert tokens.take("exec", token) is None


def test_a_token_is_for_one_kind_of_stream() -> None:
    tokens = Tokens()
    token = tokens.issue("portforward", "request")
    assert tokens.take("exec", token) is None
    assert tokens.take("portforward", token) is None  # spent by the wrong use


def test_tokens_are_long_and_distinct() -> None:
    tokens = Tokens()
    issued = {tokens.issue("exec", i) for i in range(1000)}
    assert len(issued) == 1000
    assert min(len(t) for t in issued) >= 43  # 256 random bits, base64


def test_pending_tokens_are_bounded() -> None:
    now = [0.0]
    tokens = Tokens(limit=3, clock=lambda: now[0])
    for i in range(3):
        tokens.issue("exec", i)
    with pytest.raises(errors.ResourceExhausted):
        tokens.issue("exec", 3)
    now[0] += 61  # expired ones make room
    tokens.issue("exec", 4)
    assert len(tokens) == 1
