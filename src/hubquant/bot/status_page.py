"""The HTML status page: queued, running and finished jobs with their results and links."""

from __future__ import annotations

import datetime

import jinja2

from hubquant.bot.jobs import FINISHED, QUEUED, RUNNING, JobRecord

_TEMPLATE = jinja2.Environment(autoescape=True).from_string("""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="refresh" content="30">
<title>hubquant bot</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2rem; }
table { border-collapse: collapse; width: 100%; margin-bottom: 2rem; }
th, td { border-bottom: 1px solid #ddd; padding: 0.3rem 0.6rem; text-align: left; vertical-align: top; }
.failed { color: #a00; } .done { color: #070; } .skipped { color: #666; }
code { font-size: 0.9em; }
</style>
</head>
<body>
<h1>hubquant bot</h1>
<p>{{ counts.queued }} queued, {{ counts.running }} running, {{ counts.finished }} finished.
{% if operator %}Showing jobs on private sources (operator).{% else %}Jobs on private sources are hidden; <a href="?operator=1">sign in as operator</a>.{% endif %}</p>
{% for title, jobs in sections %}
<h2>{{ title }}</h2>
{% if jobs %}
<table>
<tr><th>Source</th><th>Targets</th><th>Status</th><th>Attempts</th><th>Queued at</th><th>Duration</th><th>Result</th></tr>
{% for job in jobs %}
<tr id="job-{{ job.id }}">
<td><a href="{{ endpoint }}/{{ job.spec.source }}/commit/{{ job.spec.sha }}">{{ job.spec.source }}@{{ job.spec.sha[:12] }}</a>
{% if job.spec.private_source %}(private){% endif %}<br><small>rule {{ job.spec.rule }}, {{ job.spec.event }}</small></td>
<td>{% for target in job.spec.targets %}<code>{{ target }}</code> {% endfor %}</td>
<td class="{{ job.status }}">{{ job.status }}{% if job.status == "running" and job.stage %} ({{ job.stage }}){% endif %}</td>
<td>{{ job.attempts }}</td>
<td>{{ when(job.created_at) }}</td>
<td>{{ seconds(job.duration) }}</td>
<td>{% for release in job.result.get("releases", []) %}<a href="{{ release.url }}">{{ release.repo_id }}</a> ({{ release.status }})<br>{% endfor %}
{% if job.error %}<span class="{{ job.status }}">{{ job.error }}</span>{% endif %}</td>
</tr>
{% endfor %}
</table>
{% else %}
<p>None.</p>
{% endif %}
{% endfor %}
</body>
</html>
""")


def render_status_page(records: list[JobRecord], *, endpoint: str, operator: bool) -> str:
    queued = [record for record in records if record.status == QUEUED]
    running = [record for record in records if record.status == RUNNING]
    finished = [record for record in records if record.status in FINISHED]
    return _TEMPLATE.render(
        sections=[("Running", running), ("Queued", queued), ("Finished", finished)],
        counts={"queued": len(queued), "running": len(running), "finished": len(finished)},
        endpoint=endpoint,
        operator=operator,
        when=_when,
        seconds=_seconds,
    )


def _when(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp, tz=datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    minutes, seconds = divmod(int(value), 60)
    return f"{minutes} min {seconds} s" if minutes else f"{value:.1f} s"
