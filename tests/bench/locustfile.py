"""The users of the API load bench (``tests/bench/api_load.py``), for ``locust -f``.

Each simulated user holds its own member key of one tenant and, with a think time of
``THINK_S`` between actions, lists its tenant's jobs (the first page, sometimes the next one),
reads a job's page (the job, then its events) picked from the last list it saw, and now and then
submits a job. Its tenant's concurrent-job quota is 0, so every submitted job stays queued: no
training starts. ``api_load.py`` writes the users' keys and the job spec to the JSON file named
by ``DOCTUNE_LOAD_CONFIG``; every request's route, time and outcome is written to the file that
config names (``samples``) when locust stops, so that the bench computes exact percentiles.

Run by ``api_load.measure()`` in a subprocess (locust's gevent patches the whole process):
``locust -f tests/bench/locustfile.py --headless -u 50 -r 10 -t 60s``.
"""

from __future__ import annotations

import itertools
import json
import os
import random

from locust import between, events, task
from locust.contrib.fasthttp import FastHttpUser

CONFIG = json.loads(open(os.environ["DOCTUNE_LOAD_CONFIG"]).read())
THINK_S = tuple(CONFIG.get("think_s", (0.5, 1.5)))
PAGE = CONFIG.get("page_size", 20)
_identities = itertools.count()
_samples: list[tuple[str, float, str | None]] = []  # (route, milliseconds, error or None)


@events.request.add_listener
def _record(request_type: str, name: str, response_time: float, exception: BaseException | None = None,
            **_: object) -> None:
    _samples.append((f"{request_type} {name}", response_time, None if exception is None else repr(exception)[:300]))


@events.quitting.add_listener
def _write_samples(**_: object) -> None:
    with open(CONFIG["samples"], "w") as f:
        json.dump(_samples, f)


class TenantMember(FastHttpUser):
    """One member of one tenant, browsing and submitting jobs."""

    wait_time = between(*THINK_S)

    def on_start(self) -> None:
        me = CONFIG["users"][next(_identities) % len(CONFIG["users"])]
        self.auth = {"Authorization": f"Bearer {me['key']}"}
        self.spec = {**CONFIG["spec"], "dataset": {"id": me["dataset"]}}
        self.seen: list[str] = list(me.get("jobs", []))  # job ids from the last list this user read
        self.cursor: str | None = None

    def _list(self, cursor: str | None) -> None:
        path = f"/v1/jobs?limit={PAGE}" + (f"&cursor={cursor}" if cursor else "")
        name = "/v1/jobs?cursor=..." if cursor else "/v1/jobs"
        with self.client.get(path, headers=self.auth, name=name, catch_response=True) as r:
            if r.status_code != 200:
                r.failure(f"{r.status_code}: {r.text[:200]}")
                return
            page = r.json()
            self.seen = [job["id"] for job in page["items"]] or self.seen
            self.cursor = page.get("next_cursor")

    @task(3)
    def list_jobs(self) -> None:
        self._list(None)

    @task(1)
    def next_page(self) -> None:
        self._list(self.cursor)  # the first page again when there is no next one

    @task(3)
    def read_job(self) -> None:
        if not self.seen:
            return self._list(None)
        self.client.get(f"/v1/jobs/{random.choice(self.seen)}", headers=self.auth, name="/v1/jobs/{id}")

    @task(2)
    def read_job_events(self) -> None:
        if not self.seen:
            return self._list(None)
        self.client.get(f"/v1/jobs/{random.choice(self.seen)}/events?limit=100", headers=self.auth,
                        name="/v1/jobs/{id}/events")

    @task(1)
    def submit_job(self) -> None:
        with self.client.post("/v1/jobs", json=self.spec, headers=self.auth, name="/v1/jobs",
                              catch_response=True) as r:
            if r.status_code != 201:
                r.failure(f"{r.status_code}: {r.text[:200]}")
            elif r.json()["status"] != "queued":
                r.failure(f"submitted job is {r.json()['status']}, not queued")
