"""The webhook bot: Hub webhooks (or polling) start quantization jobs that workers run.

- `payload`: parsing of Hub webhook payloads (version 3).
- `rules` and `config`: which events start which jobs, from a YAML file.
- `queues`, `queue_sqlite`, `queue_redis`: the job queue, embedded or on Redis.
- `runner` and `worker`: running jobs with limits, retries and cleanup.
- `receiver` and `status_page`: the HTTP service.
- `watch`: the same rules driven by polling the Hub.
"""
