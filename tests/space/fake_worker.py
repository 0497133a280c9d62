"""A stand-in for ``hubquant.space.worker`` that speaks its protocol without running a job.

The source id picks the behaviour, so queue tests run in milliseconds.
``fake/ok`` publishes every target and ``fake/partial`` fails the second one.
``fake/sleep`` waits for a minute, ``fake/error`` reports an error, ``fake/env``
reports what the worker received, and ``fake/leak`` prints the token to stderr.
"""

import hashlib
import json
import os
import sys
import time


def emit(event: dict) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def main() -> int:
    payload = json.loads(sys.stdin.read())
    source, targets, token = payload["source"], payload["targets"], payload["token"]
    emit({"event": "step", "key": source, "state": "downloading", "reason": ""})

    if source == "fake/sleep":
        time.sleep(60)
    if source == "fake/error":
        emit({"event": "error", "kind": "SourceError", "message": "the source is broken"})
        return 1
    if source == "fake/env":
        secrets = sorted(name for name in os.environ if name.startswith(("HF_TOKEN", "OAUTH_")))
        emit({"event": "message", "text": f"secret variables: {secrets or 'none'}"})
        emit({"event": "message", "text": f"implicit token: {os.environ.get('HF_HUB_DISABLE_IMPLICIT_TOKEN')}"})
        emit({"event": "message", "text": f"HF_HOME inside cwd: {os.environ['HF_HOME'].startswith(os.getcwd())}"})
        emit({"event": "message", "text": f"token sha256: {hashlib.sha256(token.encode()).hexdigest()}"})
    if source == "fake/leak":
        print(f"oops, the token is {token}", file=sys.stderr, flush=True)

    failed = {}
    for index, target in enumerate(targets):
        key = f"fake-GGUF {target}"
        emit({"event": "step", "key": key, "state": "converting", "reason": ""})
        emit({"event": "progress", "label": "evaluate", "done": 1, "total": 2})
        if source == "fake/partial" and index == 1:
            failed[target] = "validation failed: made up for the test"
            emit({"event": "step", "key": key, "state": "failed", "reason": failed[target]})
        else:
            emit({"event": "step", "key": key, "state": "done", "reason": ""})
    published = [target for target in targets if target not in failed]
    release = {
        "repo_id": f"{payload['namespace']}/fake-GGUF",
        "url": f"{payload['endpoint']}/{payload['namespace']}/fake-GGUF",
        "targets": published,
        "files": [f"fake-{target.split(':')[1]}.gguf" for target in published],
        "failed": failed,
        "status": "published" if published else "failed",
        "card": "---\nlicense: mit\n---\n# fake card\n",
        "reference_validation": {},
        "artifacts": [],
    }
    emit({"event": "result", "result": {"source": source, "sha": "0" * 40, "visibility_note": "public, like the source", "releases": [release]}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
