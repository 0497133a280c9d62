"""The Redis queue against a real redis-server: a burst of deliveries, and two
worker processes, one of which is killed in the middle of a job."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from huggingface_hub import HfApi

from hubquant.bot.config import load_config
from hubquant.bot.jobs import DONE, FAILED, QUEUED, RUNNING, SKIPPED, JobSpec
from hubquant.bot.queues import open_queue
from hubquant.tinymodels import publish_tiny_model

from conftest import SECRET, start_receiver, wait_until, write_config

ARTIFACTS = Path(__file__).parents[2] / "test-artifacts"
BUILD_STAGES = ("converting", "quantizing", "validating", "publishing")


def delivery(repo: str, sha: str, *, create: bool = False, webhook_id: str = "6390e855e30d9209411de93b") -> dict:
    payload = {
        "event": {"action": "create", "scope": "repo"} if create else {"action": "update", "scope": "repo.content"},
        "repo": {
            "type": "model", "name": repo, "id": "621ffdc036468d709f17434d", "private": False,
            "url": {"web": f"https://huggingface.co/{repo}", "api": f"https://huggingface.co/api/models/{repo}"},
            "headSha": sha, "owner": {"id": "628b753283ef59b5be89e937"},
        },
        "webhook": {"id": webhook_id, "version": 3},
    }
    if not create:
        payload["updatedRefs"] = [{"ref": "refs/heads/main", "oldSha": None, "newSha": sha}]
    return payload


def percentile(values: list[float], rank: int) -> float:
    """Return the nearest-rank percentile of sorted `values`."""
    return values[max(0, -(-len(values) * rank // 100) - 1)]


def burst(rng: random.Random) -> tuple[list[tuple[dict, bytes, str]], set[tuple[str, str]]]:
    """Return 200 deliveries (headers, body, expected outcome) and the (repo, sha) pairs that must be queued."""
    matching = [(f"microsoft/Phi-burst-{index}", f"{rng.getrandbits(160):040x}") for index in range(120)]
    other = [(f"someone/Phi-burst-{index}", f"{rng.getrandbits(160):040x}") for index in range(10)]
    good = {"X-Webhook-Secret": SECRET, "Content-Type": "application/json"}
    # Each matching commit is delivered once or more: exactly one of its deliveries queues the job.
    items = [(good, json.dumps(delivery(repo, sha)).encode(), f"match {repo}") for repo, sha in matching]
    items += [(good, json.dumps(delivery(repo, sha)).encode(), "ignored") for repo, sha in other]
    for index, (repo, sha) in enumerate(rng.sample(matching, 50)):
        # Half repeat the same delivery, half are the repo-creation event of the same commit.
        items.append((good, json.dumps(delivery(repo, sha, create=index % 2 == 0)).encode(), f"match {repo}"))
    repo, sha = matching[0]
    body = json.dumps(delivery(repo, sha)).encode()
    bad = [({"Content-Type": "application/json"}, body, "401")] * 4
    bad += [({**good, "X-Webhook-Secret": "wrong"}, body, "403")] * 4
    bad += [(good, body[: len(body) // 2], "400")] * 4
    bad += [(good, json.dumps({**delivery(repo, sha), "webhook": {"id": "x", "version": 2}}).encode(), "422")] * 3
    bad += [(good, json.dumps({"event": {"action": "update"}, "webhook": {"id": "y", "version": 3}}).encode(), "422")] * 3
    bad += [(good, json.dumps({**delivery(repo, sha), "padding": "x" * 300_000}).encode(), "413")] * 2
    items += bad
    rng.shuffle(items)
    return items, set(matching)


def test_burst_queues_right_jobs(bot_hub, redis_url, redis_namespace, processes, tmp_path):
    config = write_config(tmp_path / "bot.yaml", hub_url=bot_hub.url, queue_url=redis_url,
                          queue={"namespace": redis_namespace})
    url = start_receiver(processes, config)
    items, expected = burst(random.Random(8))
    assert len(items) == 200

    def send(item):
        headers, body, outcome = item
        with httpx.Client(timeout=30) as client:
            started = time.perf_counter()
            response = client.post(f"{url}/webhook", content=body, headers=headers)
            return outcome, response.status_code, response.json(), time.perf_counter() - started

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(send, items))

    queued_by_repo: dict[str, int] = {}
    for outcome, status, body, _ in results:
        if outcome.startswith("match "):
            assert (status, body["status"]) in ((202, "queued"), (200, "duplicate"))
            queued_by_repo[outcome] = queued_by_repo.get(outcome, 0) + (status == 202)
        elif outcome == "ignored":
            assert (status, body["status"]) == (200, "ignored")
        else:
            assert status == int(outcome)
    assert len(queued_by_repo) == 120
    assert set(queued_by_repo.values()) == {1}
    assert sum(status == 200 and body["status"] == "duplicate" for _, status, body, _ in results) == 50

    loaded = load_config(config)
    queue = open_queue(loaded.queue_url, loaded.queue)
    jobs = queue.list_jobs(limit=1000)
    assert {(job.spec.source, job.spec.sha) for job in jobs} == expected
    assert len(jobs) == 120
    assert all(job.status == QUEUED for job in jobs)
    assert queue.broker.do_qsize("jobs") == 120

    # Client-side: from sending the request to reading the response, on a new connection each.
    # Server-side: the time the receiver logs for each delivery, from the headers to the response.
    latencies = sorted(seconds * 1000 for *_, seconds in results)
    handled = sorted(float(ms) for ms in re.findall(r"\[([0-9.]+) ms\]", processes.log_of(processes.started[0][0])))
    assert len(handled) == 200
    ARTIFACTS.mkdir(exist_ok=True)
    record = {
        "requests": len(latencies), "concurrency": 8,
        "client_p50_ms": statistics.median(latencies), "client_p99_ms": percentile(latencies, 99),
        "client_max_ms": latencies[-1],
        "server_p50_ms": statistics.median(handled), "server_p99_ms": percentile(handled, 99),
        "load_average": os.getloadavg(),
    }
    p99 = record["client_p99_ms"]
    (ARTIFACTS / "bot-burst-latency.json").write_text(json.dumps(record, indent=2))
    print(f"receiver latency over {len(latencies)} deliveries: {record}")
    # NOTE: the target is 100 ms; the bound here leaves room for a loaded 2-core CI machine.
    assert p99 < 1000


@pytest.fixture
def sources(bot_hub, bot_alice, tiny_model) -> dict[str, str]:
    """One tiny Phi model, four repos without config.json, and one unsupported architecture."""
    shas = {"build": publish_tiny_model(bot_alice, "phi-3-mini-4k-instruct", repo_id="microsoft/Phi-3-redis",
                                        cache=tiny_model)}
    for index in range(4):
        repo = f"microsoft/Phi-empty-{index}"
        bot_alice.create_repo(repo, exist_ok=True)
        shas[repo] = bot_alice.list_repo_commits(repo)[0].commit_id
    bot_alice.create_repo("microsoft/Phi-unsupported", exist_ok=True)
    config = {"architectures": ["NotARealForCausalLM"], "model_type": "not-real"}
    shas["unsupported"] = bot_alice.upload_file(path_or_fileobj=json.dumps(config).encode(), path_in_repo="config.json",
                                                repo_id="microsoft/Phi-unsupported").oid
    return shas


def test_two_workers_and_a_killed_one(bot_hub, redis_url, redis_namespace, processes, sources, tmp_path,
                                      gguf_toolchain, reference_toolchain):
    config = write_config(tmp_path / "bot.yaml", hub_url=bot_hub.url, queue_url=redis_url,
                          queue={"namespace": redis_namespace, "heartbeat_timeout_seconds": 3, "maintenance_chance": 1.0},
                          worker={"work_dir": "work"})
    loaded = load_config(config)
    queue = open_queue(loaded.queue_url, loaded.queue)
    build, _ = queue.submit(JobSpec("microsoft/Phi-3-redis", sources["build"], ("gguf:Q8_0",), "hubquant-org"))
    empty = [queue.submit(JobSpec(repo, sources[repo], ("gguf:Q8_0",), "hubquant-org"))[0]
             for repo in sources if repo.startswith("microsoft/Phi-empty")]
    unsupported, _ = queue.submit(JobSpec("microsoft/Phi-unsupported", sources["unsupported"], ("gguf:Q8_0",), "hubquant-org"))
    workers = [processes.start(f"worker-{index}", "bot", "worker", "--config", str(config)) for index in range(2)]

    def building():
        record = queue.get(build.id)
        return record if record.status == RUNNING and record.stage in BUILD_STAGES else None

    first = wait_until(building, 300, 0.1, "the build job to reach a build stage")
    # The job has run longer than the heartbeat timeout: a live worker keeps it.
    assert time.time() - first.started_at > 3
    assert len(first.runs) == 1
    pid = int(first.worker.split(":")[1])
    killed = next(process for process in workers if process.pid == pid)
    survivor = next(process for process in workers if process is not killed)
    os.kill(pid, signal.SIGKILL)
    killed.wait()
    api = HfApi(endpoint=bot_hub.url, token=bot_hub.token_for("bob"))
    release = "hubquant-org/Phi-3-redis-GGUF"
    assert not api.repo_exists(release) or not any(name.endswith(".gguf") for name in api.list_repo_files(release))

    finished = wait_until(lambda: (record := queue.get(build.id)).status == DONE and record, 400, 0.5,
                          "the build job to finish on the surviving worker")
    others = [queue.get(record.id) for record in [*empty, unsupported]]
    wait_until(lambda: all(queue.get(record.id).status in (SKIPPED, FAILED) for record in others), 60, 0.5,
               "the other jobs to finish")
    others = [queue.get(record.id) for record in [*empty, unsupported]]

    assert [int(worker.split(":")[1]) for worker in finished.runs] == [pid, survivor.pid]
    assert finished.result["releases"][0]["status"] == "published"
    for record in others:
        assert len(record.runs) == 1, record.id
    assert {record.status for record in others[:-1]} == {SKIPPED}
    failed = others[-1]
    assert failed.status == FAILED
    assert failed.attempts == 1
    assert "NotARealForCausalLM" in failed.error
    ran_on = {int(worker.split(":")[1]) for record in [finished, *others] for worker in record.runs}
    assert ran_on == {pid, survivor.pid}

    commits = [commit for commit in api.list_repo_commits(release) if commit.title.startswith("Release ")]
    assert len(commits) == 1
    assert "Phi-3-redis-Q8_0.gguf" in api.list_repo_files(release)
    assert queue.broker.do_qsize("jobs") == 0
