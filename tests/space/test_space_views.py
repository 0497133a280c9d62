"""What the Space's page shows, rendered from plain data without a browser."""

from __future__ import annotations

from hubquant.space import views
from hubquant.space.jobs import Job
from hubquant.space.sources import SourceSummary


def _summary(**changes) -> SourceSummary:
    values = dict(
        repo_id="alice/secret-phi", revision=None, sha="a" * 40, architecture="Phi3ForCausalLM",
        parameters=3_800_000_000, dtype="bfloat16", license="mit", private=True, gated=False,
        source_bytes=7_600_000_000, backends=["gguf"], unsupported_backends=["mlx"],
    )
    values.update(changes)
    return SourceSummary(**values)


def test_warning_for_public_release_of_private_source():
    warning = views.visibility_warning(_summary(), public=True)
    assert "the source is private" in warning
    assert "anyone can download" in warning


def test_warning_for_public_release_of_gated_source():
    assert "gated too" in views.visibility_warning(_summary(private=False, gated=True), public=True)


def test_no_warning_when_private_or_source_public():
    assert views.visibility_warning(_summary(), public=False) == ""
    assert views.visibility_warning(_summary(private=False), public=True) == ""


def test_summary_lists_facts_and_repos():
    plan = {
        "visibility": "the source is private, so the release is private (pass --public to change)",
        "releases": [{"repo": "alice/secret-phi-GGUF", "exists": False, "private": True,
                      "files": [{"name": "secret-phi-Q8_0.gguf", "target": "gguf:Q8_0", "estimated_bytes": 4_000_000_000}]}],
        "estimated_disk_bytes": 20_000_000_000,
        "estimated_memory_bytes": 24_000_000_000,
    }
    text = views.summary_markdown(_summary(plan=plan, estimated_seconds=600), skipped_targets=["onnx:int4"])
    assert "| Parameters | 3.80 B |" in text
    assert "| Access | private |" in text
    assert "| Backends that do not | mlx |" in text
    assert "`alice/secret-phi-GGUF` (new repo, private)" in text
    assert "`secret-phi-Q8_0.gguf`: about 4.00 GB (gguf:Q8_0)" in text
    assert "(tick Public releases to change)" in text
    assert "--public" not in text
    assert "about 10 min" in text
    assert "Not built on this Space: onnx:int4" in text


def test_job_views_show_rows_results_and_cards():
    job = Job(id="abc", owner="alice", source="alice/secret-phi", targets=["gguf:Q8_0", "gguf:F16"],
              namespace="alice", public=None, repo_name=None, hardware=["any-cpu"])
    job.rows["gguf:Q8_0"] = {"state": "done", "reason": ""}
    job.rows["gguf:F16"] = {"state": "failed", "reason": "beyond the F16 range"}
    job.progress["evaluate"] = [3, 5]
    job.releases = [{
        "repo_id": "alice/secret-phi-GGUF", "url": "http://hub/alice/secret-phi-GGUF", "status": "published",
        "files": ["secret-phi-Q8_0.gguf"], "failed": {"gguf:F16": "beyond the F16 range"},
        "card": "---\nlicense: mit\n---\n# secret-phi GGUF\n", "reference_validation": {"status": "passed"},
        "artifacts": [{"target": "gguf:Q8_0", "size_bytes": 20_000_000, "bits_per_weight": 8.5,
                       "validation": {"status": "passed", "kl_mean": 0.005118, "top1_agreement": 0.8978}}],
    }]
    assert views.status_rows(job) == [["gguf:Q8_0", "done", ""], ["gguf:F16", "failed", "beyond the F16 range"]]
    progress = views.progress_html(job)
    assert 'value="2" max="2"' in progress
    assert 'value="3" max="5"' in progress
    results = views.results_markdown(job)
    assert "[alice/secret-phi-GGUF](http://hub/alice/secret-phi-GGUF) (published)" in results
    assert "`gguf:F16` failed and was not published: beyond the F16 range" in results
    assert "| gguf:Q8_0 | passed | 20.0 MB | 8.5 | 0.005118 | 0.898 |" in results
    assert views.card_previews(job) == [("alice/secret-phi-GGUF", "# secret-phi GGUF\n")]
