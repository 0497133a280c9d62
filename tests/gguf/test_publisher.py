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
