"""`hubquant watch` polls the local Hub and queues jobs for new Phi models."""

from __future__ import annotations

from hubquant.bot.config import load_config
from hubquant.bot.queues import open_queue
from hubquant.bot.watch import Watcher
from hubquant.tinymodels import publish_tiny_model

from conftest import wait_until, write_config


def test_watch_queues_new_model(bot_hub, bot_alice, processes, tiny_model, tmp_path):
    bot_alice.create_repo("microsoft/Phi-watch-existing", exist_ok=True)
    config = write_config(tmp_path / "bot.yaml", hub_url=bot_hub.url, queue_url="sqlite:///jobs.db",
                          watch={"state": "watch-state.json"})
    loaded = load_config(config)
    queue = open_queue(loaded.queue_url, loaded.queue)
    watcher = processes.start("watch", "watch", "--config", str(config), "--interval", "1")
    wait_until(lambda: "recorded" in processes.log_of(watcher), 60, what="the first poll")
    assert queue.list_jobs() == []

    sha = publish_tiny_model(bot_alice, "phi-3-mini-4k-instruct", repo_id="microsoft/Phi-watch-new", cache=tiny_model)
    job = wait_until(lambda: next((record for record in queue.list_jobs() if record.spec.sha == sha), None), 60,
                     what="a job for the new model's commit")
    assert job.spec.source == "microsoft/Phi-watch-new"
    assert job.spec.targets == ("gguf:Q8_0",)
    assert job.spec.webhook_id == "watch"
    assert {record.spec.source for record in queue.list_jobs()} == {"microsoft/Phi-watch-new"}


def test_watch_backfill_and_state(bot_hub, bot_alice, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", bot_hub.token_for("bob"))
    bot_alice.create_repo("microsoft/Phi-watch-backfill", exist_ok=True)
    bot_alice.create_repo("microsoft/Phi-watch-backfill-GGUF", exist_ok=True)
    config = load_config(write_config(tmp_path / "bot.yaml", hub_url=bot_hub.url, queue_url="sqlite:///jobs.db"))
    queue = open_queue(config.queue_url, config.queue)
    watcher = Watcher(config, queue, state_path=tmp_path / "state.json", backfill=True)
    sources = {record.spec.source for record in watcher.poll_once()}
    assert "microsoft/Phi-watch-backfill" in sources
    assert "microsoft/Phi-watch-backfill-GGUF" not in sources
    assert watcher.poll_once() == []

    sha = bot_alice.upload_file(path_or_fileobj=b"{}", path_in_repo="config.json",
                                repo_id="microsoft/Phi-watch-backfill").oid
    updated = watcher.poll_once()
    assert [(record.spec.source, record.spec.sha, record.spec.event) for record in updated] == [
        ("microsoft/Phi-watch-backfill", sha, "repo.content.update")
    ]
