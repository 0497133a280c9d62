"""The publisher uploads each file when it is ready and commits once at the end."""

from __future__ import annotations

import os

from hubquant.publish import HubPublisher, LocalPublisher, RepoPlan


def test_uploaded_file_removed_locally(alice, tmp_path):
    artifact = tmp_path / "model-Q8_0.gguf"
    artifact.write_bytes(os.urandom(1024) * 12 * 1024)
    publisher = HubPublisher(alice, RepoPlan("alice/publisher-test", False, None, private=True, gated=False))
    publisher.add_file(artifact)
    assert not artifact.exists()
    assert alice.list_repo_files("alice/publisher-test") == [".gitattributes"]
    publisher.add_bytes("README.md", b"---\nlicense: mit\n---\n# test\n")
    publisher.commit("Release test", "", keep={"README.md", "model-Q8_0.gguf"})
    assert sorted(alice.list_repo_files("alice/publisher-test")) == [".gitattributes", "README.md", "model-Q8_0.gguf"]
    assert alice.model_info("alice/publisher-test").private is True


def test_abort_deletes_created_repo(alice, tmp_path):
    artifact = tmp_path / "model-Q4_0.gguf"
    artifact.write_bytes(os.urandom(1024) * 11 * 1024)
    publisher = HubPublisher(alice, RepoPlan("alice/publisher-abort", False, None, private=False, gated=False))
    publisher.add_file(artifact)
    publisher.abort()
    assert not alice.repo_exists("alice/publisher-abort")


def test_local_release_appears_whole(tmp_path):
    artifact = tmp_path / "model-F16.gguf"
    artifact.write_bytes(b"gguf")
    publisher = LocalPublisher(tmp_path / "out", "model-GGUF")
    publisher.add_file(artifact)
    assert not (tmp_path / "out" / "model-GGUF").exists()
    publisher.commit("", "", keep=set())
    assert (tmp_path / "out" / "model-GGUF" / "model-F16.gguf").read_bytes() == b"gguf"


def test_commit_deletes_only_old_release_files(alice):
    repo = "alice/publisher-replace"
    alice.create_repo(repo)
    old_manifest = {"artifacts": [{"target": "gguf:Q2_K", "files": ["model-Q2_K.gguf"], "shared_files": ["model.imatrix.gguf"]}]}
    for name, data in (("model-Q2_K.gguf", b"old"), ("model.imatrix.gguf", b"matrix"), ("LICENSE", b"old licence"),
                       ("NOTES.md", b"someone's notes"), ("hubquant.json", b"{}")):
        alice.upload_file(path_or_fileobj=data, path_in_repo=name, repo_id=repo)
    publisher = HubPublisher(alice, RepoPlan(repo, True, old_manifest, private=False, gated=False))
    publisher.add_bytes("model-Q8_0.gguf", b"new")
    publisher.add_bytes("README.md", b"---\nlicense: mit\n---\n# test\n")
    publisher.add_bytes("hubquant.json", b"{}")
    publisher.commit("Release test", "", keep={"README.md", "hubquant.json", "model-Q8_0.gguf"})
    assert sorted(alice.list_repo_files(repo)) == [".gitattributes", "NOTES.md", "README.md", "hubquant.json", "model-Q8_0.gguf"]


def test_commit_into_adopted_repo_deletes_nothing(alice):
    repo = "alice/publisher-adopted"
    alice.create_repo(repo)
    alice.upload_file(path_or_fileobj=b"mine", path_in_repo="LICENSE", repo_id=repo)
    publisher = HubPublisher(alice, RepoPlan(repo, True, None, private=False, gated=False))
    publisher.add_bytes("model-Q8_0.gguf", b"new")
    publisher.commit("Release test", "", keep={"model-Q8_0.gguf"})
    assert sorted(alice.list_repo_files(repo)) == [".gitattributes", "LICENSE", "model-Q8_0.gguf"]
