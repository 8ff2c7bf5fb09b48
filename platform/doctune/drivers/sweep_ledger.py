"""The ledger of the sweep a sweep's driver runs: the few things it records, behind one interface.

:class:`SweepLedger` is what :mod:`doctune.drivers.sweep` records through: load the sweep, mark it
running, ask whether it has ended, start a trial (a job of the tenant, once its quota allows it, with
the ledger its attempt records through), settle the trials the search stopped or lost, and end the
sweep as failed or with its winner. Two implementations, as for a job's attempt
(:mod:`doctune.drivers.ledger`):

- :class:`DatabaseSweepLedger`, on the shared cluster: the service functions of
  :mod:`doctune.services.sweep_ledger`, straight on the metadata database.
- :class:`ApiSweepLedger`, on a tenant's dedicated cluster, whose drivers get no database URL: the
  same operations through the API (``/v1/sweeps/{sweep_id}/driver/...``) with the sweep token the
  platform gave this driver, good for this sweep only; each trial it starts comes with a job token,
  and records its attempt through :class:`doctune.drivers.ledger.ApiLedger`.

:func:`sweep_ledger_for` picks one from the environment the runner gave the driver
(``DOCTUNE_JOB_LEDGER=api``, ``DOCTUNE_SWEEP_TOKEN``, ``DOCTUNE_API_URL``;
:meth:`doctune.config.Settings.tenant_job_env`).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any, Protocol

from doctune.config import JOB_LEDGER_VAR, SWEEP_TOKEN_VAR
from doctune.drivers.ledger import ApiLedger, AttemptLedger, DatabaseLedger, call_api
from doctune.errors import DoctuneError
from doctune.services import Platform
from doctune.services import sweep_ledger as ledger_svc
from doctune.states import SweepState

__all__ = ["ApiSweepLedger", "DatabaseSweepLedger", "SweepLedger", "SweepRecord", "TrialStart", "sweep_ledger_for"]


@dataclass
class SweepRecord:
    """What a driver knows of its sweep when it starts."""

    sweep_id: str
    tenant: str
    status: str
    spec: dict[str, Any]
    max_concurrent_jobs: int | None = None


@dataclass
class TrialStart:
    """A trial recorded as a job of the tenant, and the ledger its attempt records through."""

    job_id: str
    ledger: AttemptLedger


class SweepLedger(Protocol):
    sweep_id: str

    def load(self) -> SweepRecord: ...

    def ended(self) -> bool: ...

    def mark_running(self) -> None: ...

    def start_trial(self, overrides: dict[str, Any]) -> TrialStart: ...

    def settle_unfinished(self) -> None: ...

    def record_failed(self, error: dict[str, Any]) -> None: ...

    def record_outcome(self) -> dict[str, Any]: ...


class DatabaseSweepLedger:
    """The sweep recorded in the metadata database itself (the shared cluster's sweeps)."""

    def __init__(self, p: Platform, sweep_id: str) -> None:
        self.p, self.sweep_id = p, sweep_id

    def load(self) -> SweepRecord:
        return SweepRecord(**ledger_svc.sweep_view(self.p, ledger_svc.load_sweep(self.p, self.sweep_id)))

    def ended(self) -> bool:
        return ledger_svc.sweep_ended(self.p, self.sweep_id)

    def mark_running(self) -> None:
        ledger_svc.mark_running(self.p, self.sweep_id)

    def start_trial(self, overrides: dict[str, Any]) -> TrialStart:
        job = ledger_svc.start_trial(self.p, self.sweep_id, overrides)
        return TrialStart(job.id, DatabaseLedger(self.p, job.id))

    def settle_unfinished(self) -> None:
        ledger_svc.settle_unfinished(self.p, self.sweep_id)

    def record_failed(self, error: dict[str, Any]) -> None:
        ledger_svc.record_failed(self.p, self.sweep_id, error)

    def record_outcome(self) -> dict[str, Any]:
        return ledger_svc.record_outcome(self.p, self.sweep_id)


class ApiSweepLedger:
    """The sweep recorded through the API with its sweep token (a tenant's dedicated cluster).

    Once the sweep has ended on the platform's side (cancelled, say) the token is refused (403): the
    driver then hears that the sweep has ended, and what it records changes nothing, as the database
    ledger does for a sweep that has ended (the platform settles its trials itself)."""

    def __init__(self, api_url: str, token: str, sweep_id: str, *, http: Any = None) -> None:
        import httpx

        if not api_url:
            raise DoctuneError(f"this sweep reports through the doctune API, but {JOB_LEDGER_VAR}=api came without "
                               "DOCTUNE_API_URL", "unavailable")
        if not token:
            raise DoctuneError(f"this sweep reports through the doctune API, but {JOB_LEDGER_VAR}=api came without "
                               f"its sweep token ({SWEEP_TOKEN_VAR})", "unauthenticated")
        self.api_url, self.sweep_id = api_url, sweep_id
        self.http = http or httpx.Client(base_url=api_url, timeout=60)
        self.headers = {"X-Sweep-Token": token}

    def _call(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        return call_api(self.http, method, f"/v1/sweeps/{self.sweep_id}/driver{path}", self.headers, **kw)

    def _end(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """Record something; None (nothing changed) when the sweep had already ended."""
        try:
            return self._call("POST", path, json=body)
        except DoctuneError as exc:
            if exc.code != "forbidden":
                raise
            print(f"doctune: not recorded ({path.strip('/')}): {exc.message}", file=sys.stderr, flush=True)
            return None

    def load(self) -> SweepRecord:
        return SweepRecord(**self._call("GET", ""))

    def ended(self) -> bool:
        try:
            return self._call("GET", "")["status"] in SweepState.terminal()
        except DoctuneError as exc:
            if exc.code == "forbidden":  # the sweep ended on the platform's side
                return True
            raise

    def mark_running(self) -> None:
        self._call("POST", "/running")

    def start_trial(self, overrides: dict[str, Any]) -> TrialStart:
        # not sent twice: a second send would record a second trial
        started = self._call("POST", "/trials", json={"overrides": overrides}, once=True)
        return TrialStart(started["job_id"], ApiLedger(self.api_url, started["job_token"], started["job_id"],
                                                       http=self.http))

    def settle_unfinished(self) -> None:
        self._end("/settle")

    def record_failed(self, error: dict[str, Any]) -> None:
        self._end("/failed", {"error": error})

    def record_outcome(self) -> dict[str, Any]:
        outcome = self._end("/finished")
        return outcome or {"sweep_id": self.sweep_id, "winner": None, "trials": [], "cancelled": True}


def sweep_ledger_for(p: Platform, sweep_id: str) -> SweepLedger:
    """The ledger this driver's environment says: the API's with a sweep token on a tenant's dedicated
    cluster (``DOCTUNE_JOB_LEDGER=api``), else the database's."""
    if os.environ.get(JOB_LEDGER_VAR) == "api":
        return ApiSweepLedger(p.settings.api_url, os.environ.get(SWEEP_TOKEN_VAR, ""), sweep_id)
    return DatabaseSweepLedger(p, sweep_id)
