"""Reconcile: the metadata store converges on what the cluster really runs.

:func:`reconcile_all` compares every unfinished job (and attempt), sweep, sweep trial and
deployment with the cluster, through the runner, and settles what nobody else will: a job
claimed but never handed to the cluster is queued again; a job whose driver died or that the
cluster forgot (a Ray head restart) retries from its last checkpoint while it has retries
left, else fails with the reason (:func:`doctune.services.jobs.reconcile_job`); a sweep whose
driver is gone fails, and its unfinished trials with it (:func:`doctune.services.sweeps.reconcile_sweeps`);
an endpoint whose Serve application vanished is deployed again, and one stuck in ``deploying``
or ``deleting`` is settled from what Serve runs (:func:`doctune.services.deployments.reconcile_deployments`).
It also runs the deployments' retrain policies: a retrain job that ended has its model promoted (or
refused), and a schedule that came due fires (:func:`doctune.services.retrain.run_retrains`).

The API server runs it at start and every ``reconcile_interval_s`` (settings) in a
:class:`Reconciler` thread, so a restart of the API, of the Ray head, or a driver that died
strands nothing; a job's GET also reconciles that one job.
"""

from __future__ import annotations

import logging
import threading

from doctune.services import Platform
from doctune.services import deployments as deployments_svc
from doctune.services import jobs as jobs_svc
from doctune.services import retrain as retrain_svc
from doctune.services import sweeps as sweeps_svc

__all__ = ["Reconciler", "reconcile_all"]

log = logging.getLogger("doctune.reconcile")


def reconcile_all(p: Platform, grace_s: float | None = None) -> dict[str, int]:
    """One pass over jobs, sweeps (and their trials) and deployments; each kind is reconciled even
    when another could not be (the cluster or the object store is down). Returns how many of each
    changed (deployments: how many were deployed again); -1 for a kind that could not be read."""
    out: dict[str, int] = {}
    for kind, fn in (("jobs", lambda: jobs_svc.reconcile_with_ray(p, grace_s)),
                     ("sweeps", lambda: sweeps_svc.reconcile_sweeps(p, grace_s)),
                     ("deployments", lambda: len(deployments_svc.reconcile_deployments(p))),
                     ("retrains", lambda: retrain_svc.run_retrains(p))):
        try:
            out[kind] = fn()
        except Exception as exc:  # e.g. Ray's dashboard is restarting: the next pass tries again
            log.warning("could not reconcile %s with the cluster: %s", kind, exc)
            out[kind] = -1
    if any(n > 0 for n in out.values()):
        log.warning("reconciled with the cluster: %s", out)
    return out


class Reconciler:
    """Runs :func:`reconcile_all` at once and then every ``interval_s`` (default: the settings'
    ``reconcile_interval_s``) in a daemon thread."""

    def __init__(self, p: Platform, interval_s: float | None = None) -> None:
        self.p = p
        self.interval_s = interval_s if interval_s is not None else p.settings.reconcile_interval_s
        self._stop = threading.Event()
        self.passes = 0
        self.thread = threading.Thread(target=self._run, name="doctune-reconciler", daemon=True)

    def start(self) -> "Reconciler":
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                reconcile_all(self.p)
            except Exception:
                log.exception("reconcile failed")
            self.passes += 1
            self._stop.wait(self.interval_s)
