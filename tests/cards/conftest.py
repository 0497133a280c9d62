"""Fixtures for the card tests."""

from __future__ import annotations

import copy

import pytest
from card_examples import build_gguf_context


@pytest.fixture
def gguf_context() -> dict:
    """A fresh, complete GGUF card context; tests may change it."""
    return copy.deepcopy(build_gguf_context())
