"""Disk checks made before any heavy work."""

from __future__ import annotations

import pytest

from hubquant.errors import ResourceError
from hubquant.resources import check_disk, estimate_job_bytes
from hubquant.targets import Target


def test_estimate_counts_source_intermediate_output():
    needed = estimate_job_bytes(1_000, None, [Target("gguf", "Q8_0")])
    assert needed > 2_000


def test_check_disk_rejects_too_large_job(tmp_path):
    with pytest.raises(ResourceError, match="not enough free disk .* pass --work-dir"):
        check_disk(tmp_path, source_bytes=10**16, parameters=None, targets=[Target("gguf", "F16")])


def test_check_disk_accepts_small_job(tmp_path):
    assert check_disk(tmp_path, source_bytes=1_000, parameters=None, targets=[Target("gguf", "Q4_K_M")]) > 0
