"""Release visibility follows the source unless the user asks otherwise."""

from __future__ import annotations

import pytest

from hubquant.publish import visibility_for


@pytest.mark.parametrize(
    ("private", "gated", "public", "expected"),
    [
        (False, False, None, (False, False)),
        (True, False, None, (True, False)),
        (False, True, None, (True, False)),
        (True, False, True, (False, False)),
        (False, True, True, (False, True)),
        (False, False, False, (True, False)),
    ],
)
def test_visibility_for_source(private, gated, public, expected):
    assert visibility_for(private, gated, public)[:2] == expected


def test_visibility_explains_private_default():
    assert "pass --public" in visibility_for(True, False, None)[2]
