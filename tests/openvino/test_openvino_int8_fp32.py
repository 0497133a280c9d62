"""openvino:int8 and openvino:fp32 end to end on the tiny Phi-3: per-channel
int8 as NNCF writes it, and an fp32 IR compared with transformers."""

from __future__ import annotations

import pytest

from openvino_helpers import check_statuses, local_job, staged_manifest


@pytest.fixture(scope="module")
def job(tiny_model, tmp_path_factory):
    folder = tiny_model("phi-3-mini-4k-instruct")
    return local_job(folder, ["openvino:int8", "openvino:fp32", "openvino:int4:group-size=-1,sym=true"],
                     tmp_path_factory.mktemp("int8-fp32"))  # fmt: skip


@pytest.fixture(scope="module")
def manifests(job) -> dict:
    assert job.ok, {release.repo_id: release.failed for release in job.releases}
    return {staged_manifest(release)["artifacts"][0]["target"]: staged_manifest(release) for release in job.releases}


def test_three_releases(manifests):
    assert sorted(manifests) == ["openvino:fp32", "openvino:int4:group-size=-1,sym=true", "openvino:int8"]


def test_int8_is_per_channel(manifests):
    artifact = manifests["openvino:int8"]["artifacts"][0]
    assert artifact["facts"]["weight_compression"]["group_size"] == "-1"
    assert artifact["facts"]["weight_compression"]["mode"] == "int8_asym"
    statuses = check_statuses(artifact["validation"])
    assert statuses["compression settings in the IR"] == "passed"
    assert statuses["KL divergence to the unquantized IR"] == "passed"


def test_fp32_matches_transformers(manifests):
    artifact = manifests["openvino:fp32"]["artifacts"][0]
    statuses = check_statuses(artifact["validation"])
    assert statuses["logits match transformers"] == "passed"
    assert statuses["inference precision"] == "passed"
    assert "int8_asym" not in artifact["facts"]["weight_formats"]


def test_int4_per_channel_group_size_reaches_ir(manifests):
    artifact = manifests["openvino:int4:group-size=-1,sym=true"]["artifacts"][0]
    assert artifact["facts"]["weight_compression"]["group_size"] == "-1"
    assert artifact["facts"]["weight_compression"]["mode"] == "int4_sym"


def test_unvalidated_int4_exports_once(tiny_model, tmp_path, monkeypatch):
    """Benchmarks turn validation off. The unquantized export, made only to
    validate the quantized one against, is then skipped."""
    from hubquant.backends.openvino import OpenvinoBackend
    from hubquant.pipeline import JobRequest, run_job

    exported = []
    original = OpenvinoBackend._export

    def recording(self, toolchain, work, name, source_dir, compression, calibration_texts=None):
        exported.append(compression.precision)
        return original(self, toolchain, work, name, source_dir, compression, calibration_texts)

    monkeypatch.setattr(OpenvinoBackend, "_export", recording)
    folder = tiny_model("phi-3-mini-4k-instruct")
    result = run_job(JobRequest(source=str(folder), targets=["openvino:int4"], output_dir=tmp_path, validate=False))
    assert result.ok, result.releases[0].failed
    assert exported == ["int4"]
