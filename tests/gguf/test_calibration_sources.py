"""Calibration text: hubquant's corpus, a user's file, and a Hub dataset on the local Hub."""

from __future__ import annotations

import json

import pytest
from huggingface_hub import HfApi

from hubquant.calibration import CORPUS_DIR, CalibrationOptions, builtin_corpus, hub_dataset, text_file
from hubquant.errors import UsageError
from hubquant.source import chat_template_of

from gguf_helpers import run_cli

DATASET = "alice/calibration-notes"


@pytest.fixture(scope="module")
def calibration_dataset(alice) -> str:
    """A public dataset with a card, two text files and a file that is not read."""
    alice.create_repo(DATASET, repo_type="dataset", exist_ok=True)
    prose = "\n\n".join(path.read_text() for path in sorted(CORPUS_DIR.glob("prose-*.txt")))
    card = "---\nlicense: cc-by-4.0\n---\n# Notes\n"
    for path, content in (("README.md", card), ("texts/prose.txt", prose), ("texts/code.txt", (CORPUS_DIR / "code.txt").read_text()),
                          ("data.csv", "not,read\n")):  # fmt: skip
        alice.upload_file(path_or_fileobj=content.encode(), path_in_repo=path, repo_id=DATASET, repo_type="dataset")
    return alice.dataset_info(DATASET).sha


def test_corpus_renders_chat_turns(tiny_model):
    folder = tiny_model("phi-3-mini-4k-instruct")
    corpus = builtin_corpus(chat_template_of(folder), folder)
    assert corpus.chat_rendered
    assert "<|user|>" in corpus.text
    assert corpus.documents == len(list(CORPUS_DIR.glob("*.txt"))) + len((CORPUS_DIR / "chat.jsonl").read_text().splitlines())
    assert corpus.license == "cc0-1.0"


def test_corpus_without_template_keeps_roles(tiny_model):
    folder = tiny_model("phi-2")
    corpus = builtin_corpus(chat_template_of(folder), folder)
    assert not corpus.chat_rendered
    assert "user: How long should I boil an egg" in corpus.text


def test_text_file_plain_and_jsonl(tmp_path, tiny_model):
    folder = tiny_model("phi-3-mini-4k-instruct")
    plain = tmp_path / "notes.txt"
    plain.write_text("Some text.\n")
    assert text_file(plain).text == "Some text.\n"
    lines = tmp_path / "mixed.jsonl"
    lines.write_text(json.dumps({"text": "A line."}) + "\n\n" + json.dumps({"messages": [{"role": "user", "content": "Hi"}]}) + "\n")
    loaded = text_file(lines, chat_template_of(folder), folder)
    assert loaded.documents == 2
    assert loaded.chat_rendered
    assert loaded.text.startswith("A line.")
    assert "<|user|>\nHi<|end|>" in loaded.text


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"text": "ok"}\nnot json\n', "bad.jsonl line 2 is not valid JSON"),
        ('{"prompt": "x"}\n', 'bad.jsonl line 1: expected an object with a "text" string'),
        ('["a list"]\n', "bad.jsonl line 1: expected a JSON object"),
    ],
)
def test_bad_jsonl_names_line(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(UsageError, match=message):
        text_file(path)


def test_empty_or_missing_file_rejected(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    with pytest.raises(UsageError, match="contains no text"):
        text_file(empty)
    with pytest.raises(UsageError, match="not found"):
        text_file(tmp_path / "absent.txt")


def test_hub_dataset_reads_text_files(alice, calibration_dataset, tmp_path):
    loaded = hub_dataset(alice, DATASET, tmp_path)
    assert loaded.name == f"{DATASET}@{calibration_dataset}"
    assert loaded.license == "cc-by-4.0"
    assert loaded.documents == 2
    assert "def merge_intervals" in loaded.text
    assert "not,read" not in loaded.text


def test_hub_dataset_errors(hub, alice, calibration_dataset, tmp_path):
    with pytest.raises(UsageError, match="calibration dataset 'alice/absent' not found"):
        hub_dataset(alice, "alice/absent", tmp_path)
    with pytest.raises(UsageError, match="has no revision 'nope'"):
        hub_dataset(alice, f"{DATASET}@nope", tmp_path)
    bob = HfApi(endpoint=hub.url, token=hub.token_for("bob"))
    bob.create_repo("bob/private-notes", repo_type="dataset", private=True, exist_ok=True)
    with pytest.raises(UsageError, match="'bob/private-notes' not found, or private"):
        hub_dataset(alice, "bob/private-notes", tmp_path)


def test_job_with_dataset_names_it_in_card(hub, calibration_dataset, tiny_model, tmp_path):
    from hubquant.pipeline import JobRequest, run_job

    folder = tiny_model("phi-3-mini-4k-instruct")
    request = JobRequest(
        source=str(folder), targets=["gguf:Q4_K_M:imatrix"], output_dir=tmp_path, endpoint=hub.url,
        token=hub.token_for("alice"), calibration_dataset=DATASET,
        calibration_options=CalibrationOptions(chunk_size=128, min_chunks=4),
    )  # fmt: skip
    result = run_job(request)
    assert result.ok, result.releases[0].failed
    card = (tmp_path / f"{folder.name}-GGUF" / "README.md").read_text()
    assert f"the Hub dataset {DATASET} at commit {calibration_dataset}" in card
    assert "License of the text: cc-by-4.0" in card
    assert "chunks of 128 tokens" in card
    assert (tmp_path / f"{folder.name}-GGUF" / f"{folder.name}.imatrix.gguf").is_file()


def test_cli_rejects_two_calibration_sources(hub, tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("words")
    result = run_cli(["run", str(tmp_path), "--target", "gguf:IQ2_XXS", "--calibration", str(text),
                      "--calibration-dataset", DATASET], hub=hub, cwd=tmp_path)  # fmt: skip
    assert result.returncode == 2
    assert "give either --calibration FILE or --calibration-dataset ID, not both" in result.stderr


def test_cli_rejects_missing_calibration_file(hub, tiny_model, tmp_path):
    folder = tiny_model("phi-3-mini-4k-instruct")
    result = run_cli(["run", str(folder), "--target", "gguf:IQ2_XXS", "--calibration", "absent.txt"], hub=hub, cwd=tmp_path)
    assert result.returncode == 2
    assert "calibration file 'absent.txt' not found" in result.stderr
    assert "converting" not in result.stderr


def test_cli_rejects_bad_chunk_options(hub, tiny_model, tmp_path):
    folder = tiny_model("phi-3-mini-4k-instruct")
    result = run_cli(["run", str(folder), "--target", "gguf:IQ2_XXS", "--imatrix-chunk-size", "8"], hub=hub, cwd=tmp_path)
    assert result.returncode == 2
    assert "--imatrix-chunk-size 8 is too small" in result.stderr
