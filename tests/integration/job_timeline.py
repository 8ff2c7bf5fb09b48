"""Where the integration session's time went, job by job: when each job was submitted, how long it
queued, how long its Ray job and workers took to start, its first optimizer step, and its end. The
session's wall time is its job queue on 2 cores, so this table (printed at the end of the session
and written to ``job_timeline.txt`` beside the session's DOCTUNE_HOME) says which jobs to shrink."""

from __future__ import annotations

from datetime import timezone
from typing import Any

COLUMNS = ("job", "tenant", "steps", "status", "submitted", "queued", "ray start", "workers", "to 1st step",
           "training", "total")


def _ts(at: Any) -> float:
    if at.tzinfo is None:  # SQLite returns naive datetimes (stored in UTC)
        at = at.replace(tzinfo=timezone.utc)
    return at.timestamp()


def _marks(job: Any, events: list[Any]) -> dict[str, float]:
    """The job's first time in each status, and the worker milestones of its latest run (a paused or retried
    job's "workers" span then runs from its first start to its last run's workers: read it with the status)."""
    marks = {"created": _ts(job.created_at)}
    for e in events:
        if e.kind == "status" and e.status:
            marks.setdefault(e.status, _ts(e.at))
            if e.status in ("succeeded", "failed", "cancelled", "paused"):
                marks["ended"] = _ts(e.at)
    marks.update((job.progress or {}).get("timeline") or {})
    return marks


def _span(marks: dict[str, float], a: str, b: str) -> str:
    return f"{marks[b] - marks[a]:.0f}" if a in marks and b in marks else "–"


def job_rows(settings: Any, session_start: float) -> list[tuple[str, ...]]:
    """One row per job of the session, in the order they were submitted (seconds)."""
    from sqlalchemy import select

    from doctune.services import Platform
    from doctune.store.db import Job, JobEvent

    p = Platform(settings)
    try:
        with p.db.session() as s:
            jobs = s.scalars(select(Job).order_by(Job.created_at)).all()
            rows = []
            for job in jobs:
                events = s.scalars(select(JobEvent).where(JobEvent.job_id == job.id).order_by(JobEvent.id)).all()
                m = _marks(job, events)
                rows.append((
                    (job.spec or {}).get("name") or job.id, job.tenant_id, str((job.spec or {}).get("max_steps", "")),
                    f"{job.status}" + (f" (attempt {job.attempt})" if job.attempt > 1 else ""),
                    f"{m['created'] - session_start:.0f}", _span(m, "created", "starting"),
                    _span(m, "starting", "running"), _span(m, "running", "worker_started"),
                    _span(m, "worker_started", "first_step"), _span(m, "first_step", "ended"),
                    _span(m, "created", "ended")))
            return rows
    finally:
        p.db.dispose()


def render(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(str(r[i])) for r in [COLUMNS, *rows]) for i in range(len(COLUMNS))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths))  # noqa: E731
    return "\n".join([line(COLUMNS), *(line(r) for r in rows)])
