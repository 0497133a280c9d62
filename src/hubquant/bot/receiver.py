"""The webhook receiver: an ASGI app (Starlette) that checks, parses and queues deliveries.

Endpoints:

- ``POST /webhook``: a Hub delivery. The errors are 401 without
  `X-Webhook-Secret`, 403 with a wrong one, 413 over `max_body_bytes` (with or
  without a Content-Length header), 400 for
  invalid JSON, and 422 for missing fields or another payload version. A
  delivery that queued a job gets 202. One that matched no rule, or only jobs
  queued before, gets 200.
- ``GET /healthz``: 200 when the queue answers, 503 otherwise.
- ``GET /api/jobs`` and ``GET /api/jobs/{id}``: job records as JSON.
- ``GET /``: the status page.

Jobs on private sources are listed only for requests that carry the operator
token, as `Authorization: Bearer TOKEN` or as the password of HTTP Basic
authentication (which lets a browser ask for it at `/?operator=1`).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import time

from hubquant.bot.config import BotConfig
from hubquant.bot.jobs import JobRecord
from hubquant.bot.payload import PayloadError, parse_payload, webhook_id_of
from hubquant.bot.queues import JobQueue
from hubquant.bot.rules import match_rules
from hubquant.errors import UsageError

log = logging.getLogger(__name__)

# An oversized body is read up to this many times the limit, keeping only its
# first and last bytes, to log its webhook id (the Hub puts the "webhook" object
# after "repo"). A larger declared body is rejected without reading it.
OVERSIZE_READ_FACTOR = 16
TAIL_BYTES = 4096


def _import_starlette():
    try:
        import starlette  # noqa: F401
    except ImportError:
        raise UsageError("the webhook receiver needs the bot extra; install it with: pip install 'hubquant[bot]'") from None


def create_app(config: BotConfig, queue: JobQueue):
    """Build the receiver's ASGI app for `config`, queueing into `queue`."""
    _import_starlette()
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse, Response
    from starlette.routing import Route

    from hubquant.bot.status_page import render_status_page

    secret = config.secret().encode()
    operator_token = config.operator_token()

    def reject(status: int, message: str, webhook_id: str | None, started: float) -> Response:
        log.warning("rejected delivery (webhook id %s) with %d: %s [%.1f ms]",
                    webhook_id or "unknown", status, message, (time.perf_counter() - started) * 1000)
        return JSONResponse({"error": message}, status_code=status)

    async def webhook(request: Request) -> Response:
        started = time.perf_counter()
        given = request.headers.get("x-webhook-secret")
        if given is None:
            return reject(401, "missing X-Webhook-Secret header", None, started)
        if not hmac.compare_digest(given.encode(), secret):
            return reject(403, "invalid X-Webhook-Secret", None, started)

        limit = config.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit * OVERSIZE_READ_FACTOR:
            return reject(413, f"body of {declared} bytes exceeds the limit of {limit} bytes", None, started)
        body = bytearray()
        tail = b""
        total = 0
        async for chunk in request.stream():
            total += len(chunk)
            room = limit - len(body)
            if room > 0:
                body += chunk[:room]
            tail = (tail + chunk)[-TAIL_BYTES:]
            if total > limit * OVERSIZE_READ_FACTOR:
                break
        if total > limit:
            webhook_id = webhook_id_of(bytes(body)) or webhook_id_of(tail)
            size = f"{declared} bytes" if declared is not None and declared.isdigit() else f"over {limit} bytes"
            return reject(413, f"body of {size} exceeds the limit of {limit} bytes", webhook_id, started)

        try:
            event = parse_payload(bytes(body))
        except PayloadError as error:
            return reject(error.status, error.message, error.webhook_id, started)

        specs, reasons = match_rules(config.rules, event)
        if not specs:
            log.info("delivery of webhook %s (%s on %s) matched no rule: %s [%.1f ms]",
                     event.webhook_id, event.name, event.repo_id, "; ".join(reasons),
                     (time.perf_counter() - started) * 1000)
            return JSONResponse({"status": "ignored", "reasons": reasons})

        submitted = await run_in_threadpool(lambda: [queue.submit(spec) for spec in specs])
        jobs = [{"id": record.id, "new": new, "status": record.status} for record, new in submitted]
        new_jobs = [job["id"] for job in jobs if job["new"]]
        log.info("delivery of webhook %s (%s on %s at %s): %d new job(s) %s, %d already queued [%.1f ms]",
                 event.webhook_id, event.name, event.repo_id, specs[0].sha[:12], len(new_jobs),
                 ", ".join(new_jobs), len(jobs) - len(new_jobs), (time.perf_counter() - started) * 1000)
        status = "queued" if new_jobs else "duplicate"
        return JSONResponse({"status": status, "jobs": jobs}, status_code=202 if new_jobs else 200)

    def is_operator(request: Request) -> bool:
        if operator_token is None:
            return False
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "basic":
            try:
                value = base64.b64decode(value, validate=True).decode().partition(":")[2]
            except (binascii.Error, UnicodeDecodeError):
                return False
        elif scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(value.encode(), operator_token.encode())

    def visible(request: Request, records: list[JobRecord]) -> list[JobRecord]:
        if is_operator(request):
            return records
        return [record for record in records if not record.spec.private_source]

    async def jobs(request: Request) -> Response:
        records = visible(request, await run_in_threadpool(queue.list_jobs))
        return JSONResponse({"jobs": [record.to_dict() for record in records], "operator": is_operator(request)})

    async def job(request: Request) -> Response:
        record = await run_in_threadpool(queue.get, request.path_params["job_id"])
        if record is None or not visible(request, [record]):
            return JSONResponse({"error": f"job {request.path_params['job_id']} not found"}, status_code=404)
        return JSONResponse(record.to_dict())

    async def page(request: Request) -> Response:
        operator = is_operator(request)
        if request.query_params.get("operator") and not operator:
            return Response("operator token required", status_code=401,
                            headers={"WWW-Authenticate": 'Basic realm="hubquant bot"'})
        records = visible(request, await run_in_threadpool(queue.list_jobs))
        return HTMLResponse(render_status_page(records, endpoint=config.endpoint, operator=operator))

    async def health(request: Request) -> Response:
        try:
            await run_in_threadpool(queue.check)
        except Exception as error:  # noqa: BLE001 - reported as the health status
            log.error("health check: the %s queue did not respond: %s", queue.kind, error)
            return JSONResponse({"status": "unavailable", "queue": queue.kind, "error": str(error)}, status_code=503)
        return JSONResponse({"status": "ok", "queue": queue.kind})

    routes = [
        Route("/webhook", webhook, methods=["POST"]),
        Route("/healthz", health, methods=["GET"]),
        Route("/api/jobs", jobs, methods=["GET"]),
        Route("/api/jobs/{job_id}", job, methods=["GET"]),
        Route("/", page, methods=["GET"]),
    ]
    return Starlette(routes=routes)


def serve(config: BotConfig, queue: JobQueue, host: str, port: int) -> None:
    """Serve the receiver with uvicorn until interrupted."""
    try:
        import uvicorn
    except ImportError:
        raise UsageError("the webhook receiver needs the bot extra; install it with: pip install 'hubquant[bot]'") from None
    app = create_app(config, queue)
    log.info("receiver listening on http://%s:%d (queue: %s, %d rule(s))", host, port, queue.kind, len(config.rules))
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
    log.info("receiver stopped")
