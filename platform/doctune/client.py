"""A small HTTP client for the doctune API, used by the CLI, the demo and tests.

Error bodies come back as :class:`DoctuneError` with the server's code, message
and field, so callers handle remote and local errors the same way.
"""

from __future__ import annotations

import io
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from doctune.errors import DoctuneError, error_from_response

# the API routes that create something; their POSTs carry an Idempotency-Key (see doctune.api.idempotency)
CREATE_ROUTES = frozenset({"/v1/jobs", "/v1/sweeps", "/v1/datasets", "/v1/deployments", "/v1/keys", "/v1/tenants"})
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


def _is_append(route: str) -> bool:
    """``/v1/datasets/{id}/versions``: an append creates a dataset version, so it carries a key too."""
    parts = route.split("/")
    return len(parts) == 5 and parts[:3] == ["", "v1", "datasets"] and parts[4] == "versions" and bool(parts[3])


class _CountingReader(io.BytesIO):
    """Bytes that report each chunk httpx reads from them while streaming the upload."""

    def __init__(self, data: bytes, progress: Callable[[int], None]) -> None:
        super().__init__(data)
        self._progress = progress

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        self._progress(len(chunk))
        return chunk


class DoctuneClient:
    def __init__(self, api_url: str, api_key: str | None, timeout: float = 120.0) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=api_url, headers=headers, timeout=timeout)

    def _check(self, r: httpx.Response) -> Any:
        if r.status_code < 400:
            return r.json()
        raise error_from_response(r.status_code, r.text)

    def request(self, method: str, path: str, **kw: Any) -> Any:
        """One API call. A create (``POST`` to one of :data:`CREATE_ROUTES`) carries a fresh
        ``Idempotency-Key``, so the API answers a repeat with the first answer; only idempotent
        requests (GET, PUT, DELETE, ..., and creates with their key) are retried on a connection
        error. A retried create therefore never makes a second job, sweep, dataset, deployment or key."""
        method = method.upper()
        headers = dict(kw.pop("headers", None) or {})
        route = path.split("?")[0].rstrip("/")
        if method == "POST" and (route in CREATE_ROUTES or _is_append(route)):
            headers.setdefault("Idempotency-Key", str(uuid.uuid4()))
        if method in IDEMPOTENT_METHODS or "Idempotency-Key" in headers:
            return self._request_with_retries(method, path, headers=headers, **kw)
        return self._check(self.http.request(method, path, headers=headers, **kw))

    @retry(retry=retry_if_exception_type(httpx.TransportError), stop=stop_after_attempt(4), wait=wait_exponential(0.5, max=4), reraise=True)
    def _request_with_retries(self, method: str, path: str, **kw: Any) -> Any:
        for value in list(kw.get("files", {}).values()):  # a retry sends the files again from their start
            if isinstance(value, tuple) and hasattr(value[1], "seek"):
                value[1].seek(0)
        return self._check(self.http.request(method, path, **kw))

    # ------------------------------------------------------------ lists: pages of {"items", "next_cursor"}
    def pages(self, path: str, page_size: int = 200, **filters: Any) -> Iterator[dict[str, Any]]:
        """Every page of the list at ``path``, newest first, following ``next_cursor``; ``filters``
        (e.g. state, task) whose value is None are left out."""
        params = {k: v for k, v in filters.items() if v is not None} | {"limit": page_size}
        while True:
            page = self.request("GET", path, params=params)
            yield page
            if not page["next_cursor"]:
                return
            params["cursor"] = page["next_cursor"]

    def list_all(self, path: str, limit: int | None = None, **filters: Any) -> list[dict[str, Any]]:
        """The items of the list at ``path``, newest first: all of them, or the newest ``limit``."""
        items: list[dict[str, Any]] = []
        for page in self.pages(path, page_size=min(limit or 200, 200), **filters):
            items += page["items"]
            if limit is not None and len(items) >= limit:
                return items[:limit]
        return items

    def list_tenants(self, limit: int | None = None) -> list[dict[str, Any]]:
        return self.list_all("/v1/tenants", limit)

    def list_keys(self, limit: int | None = None) -> list[dict[str, Any]]:
        return self.list_all("/v1/keys", limit)

    def list_datasets(self, task: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        return self.list_all("/v1/datasets", limit, task=task)

    def list_jobs(self, state: str | None = None, task: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        return self.list_all("/v1/jobs", limit, state=state, task=task)

    def list_sweeps(self, state: str | None = None, task: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        return self.list_all("/v1/sweeps", limit, state=state, task=task)

    def list_models(self, task: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        return self.list_all("/v1/models", limit, task=task)

    def list_deployments(self, state: str | None = None, task: str | None = None,
                         limit: int | None = None) -> list[dict[str, Any]]:
        return self.list_all("/v1/deployments", limit, state=state, task=task)

    def list_tasks(self) -> list[dict[str, Any]]:
        """The registered task plugins: name, metrics and their labels, capability flags."""
        return self.request("GET", "/v1/tasks")

    # ------------------------------------------------------------ resources
    def create_tenant(self, name: str, display_name: str | None = None) -> dict[str, Any]:
        return self.request("POST", "/v1/tenants", json={"name": name, "display_name": display_name})

    def get_key(self, key_id: str) -> dict[str, Any]:
        return self.request("GET", f"/v1/keys/{key_id}")

    def get_dataset(self, dataset_id: str) -> dict[str, Any]:
        return self.request("GET", f"/v1/datasets/{dataset_id}")

    def delete_dataset(self, dataset_id: str) -> dict[str, Any]:
        """Delete the dataset's files and record; a conflict while a queued, running or paused job uses it."""
        return self.request("DELETE", f"/v1/datasets/{dataset_id}")

    def upload_dataset(self, name: str, task: str, files: dict[str, bytes | Path], tenant: str | None = None,
                       progress: Callable[[int], None] | None = None, redact_pii: bool = False,
                       **form: Any) -> dict[str, Any]:
        """Upload JSONL files (a Path ending in ``.csv`` goes as CSV; or ``documents``, an archive, with ``labels``); ``progress(n)`` is called as each
        chunk of n bytes is sent. ``redact_pii``: personal data is replaced by typed placeholders before it is
        stored (counts in the answer's ``info.pii_redaction``)."""
        blobs = {}
        for k, v in files.items():
            raw = v.read_bytes() if isinstance(v, Path) else v
            if isinstance(v, Path) and k in ("documents", "labels"):
                blobs[k] = (v.name, _CountingReader(raw, progress) if progress else raw, "application/jsonl")
                continue
            csv = isinstance(v, Path) and v.suffix.lower() == ".csv"
            blobs[k] = (f"{k}.csv" if csv else f"{k}.jsonl", _CountingReader(raw, progress) if progress else raw,
                        "text/csv" if csv else "application/jsonl")
        data = {"name": name, "task": task, **{k: str(v) for k, v in form.items()}}
        if tenant:
            data["tenant"] = tenant
        if redact_pii:
            data["redact_pii"] = "true"
        # documents are extracted (OCR included), and personal data looked for, before the API answers:
        # minutes for many scans or a large dataset
        timeout = httpx.Timeout(120.0, read=3600.0) if "documents" in files or redact_pii else self.http.timeout
        return self.request("POST", "/v1/datasets", data=data, files=blobs, timeout=timeout)

    def append_dataset(self, dataset: str, data: bytes | Path,
                       progress: Callable[[int], None] | None = None) -> dict[str, Any]:
        """Append new records (JSONL, or a Path ending in ``.csv``) to a dataset (its id or name) as its next
        version. Returns {"dataset", "version", "retrain"}: the new version's counts and label drift, and what
        each endpoint's retrain policy decided."""
        raw = data.read_bytes() if isinstance(data, Path) else data
        csv = isinstance(data, Path) and data.suffix.lower() == ".csv"
        body = _CountingReader(raw, progress) if progress else raw
        blob = ("data.csv" if csv else "data.jsonl", body, "text/csv" if csv else "application/jsonl")
        return self.request("POST", f"/v1/datasets/{dataset}/versions", files={"data": blob})

    def dataset_versions(self, dataset: str) -> list[dict[str, Any]]:
        """Every version of a dataset (its id or name), oldest first."""
        items: list[dict[str, Any]] = []
        while True:
            page = self.request("GET", f"/v1/datasets/{dataset}/versions",
                                params={"after": items[-1]["version"] if items else 0, "limit": 1000})
            items += page
            if len(page) < 1000:
                return items

    def set_retrain_policy(self, deployment_id: str, policy: dict[str, Any] | None) -> dict[str, Any]:
        """Set (``policy``: RetrainPolicySpec fields) or, with None, remove a deployment's retrain policy."""
        if policy is None:
            return self.request("DELETE", f"/v1/deployments/{deployment_id}/retrain-policy")
        return self.request("PUT", f"/v1/deployments/{deployment_id}/retrain-policy", json=policy)

    def retrain_events(self, deployment_id: str, after: int = 0) -> list[dict[str, Any]]:
        """The decisions of a deployment's retrain policy with ids above ``after``, oldest first."""
        items: list[dict[str, Any]] = []
        while True:
            page = self.request("GET", f"/v1/deployments/{deployment_id}/retrain-events",
                                params={"after": items[-1]["id"] if items else after, "limit": 1000})
            items += page
            if len(page) < 1000:
                return items

    def upload_base_model(self, name: str, folder: Path, tenant: str | None = None,
                          progress: Callable[[int], None] | None = None) -> dict[str, Any]:
        """Upload a Hugging Face model folder as tenant's base model ``name``: its files (links
        followed) are sent as one tar archive, streamed from an unnamed temporary file."""
        import tarfile
        import tempfile

        folder = Path(folder)
        if not (folder / "config.json").is_file():
            raise DoctuneError(f"{folder} has no config.json: give the folder of a Hugging Face model (one that "
                               "save_pretrained wrote)", "invalid_request", field="dir")
        with tempfile.TemporaryFile() as fh:
            with tarfile.open(fileobj=fh, mode="w", dereference=True) as tar:
                for path in sorted(folder.rglob("*")):
                    if path.is_file():
                        tar.add(path, arcname=path.relative_to(folder).as_posix(), recursive=False)
            size = fh.tell()
            fh.seek(0)

            def chunks() -> Iterator[bytes]:
                while chunk := fh.read(1024 * 1024):
                    if progress:
                        progress(len(chunk))
                    yield chunk

            params = {"name": name, **({"tenant": tenant} if tenant else {})}
            headers = {"Content-Type": "application/x-tar", "Content-Length": str(size)}
            return self._check(self.http.post("/v1/base-models", params=params, content=chunks(), headers=headers,
                                              timeout=httpx.Timeout(120.0, write=600.0)))

    def list_base_models(self, tenant: str | None = None) -> list[dict[str, Any]]:
        """The catalog, then the tenant's uploaded base models: every page."""
        items: list[dict[str, Any]] = []
        cursor = None
        while True:
            params = {**({"tenant": tenant} if tenant else {}), **({"cursor": cursor} if cursor else {})}
            page = self.request("GET", "/v1/base-models", params=params)
            items += page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                return items

    def submit_job(self, spec: dict[str, Any]) -> dict[str, Any]:
        return self.request("POST", "/v1/jobs", json=spec)

    def plan_job(self, spec: dict[str, Any]) -> dict[str, Any]:
        return self.request("POST", "/v1/jobs/plan", json=spec)

    def get_job(self, job_id: str) -> dict[str, Any]:
        return self.request("GET", f"/v1/jobs/{job_id}")

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        return self.request("POST", f"/v1/jobs/{job_id}/cancel")

    def delete_checkpoints(self, job_id: str) -> dict[str, Any]:
        """Delete an ended job's checkpoints: {"job_id", "deleted_objects", "freed_bytes"}."""
        return self.request("DELETE", f"/v1/jobs/{job_id}/checkpoints")

    def submit_sweep(self, spec: dict[str, Any]) -> dict[str, Any]:
        return self.request("POST", "/v1/sweeps", json=spec)

    def get_sweep(self, sweep_id: str) -> dict[str, Any]:
        return self.request("GET", f"/v1/sweeps/{sweep_id}")

    def cancel_sweep(self, sweep_id: str) -> dict[str, Any]:
        """Cancel the sweep and its trials that have not ended."""
        return self.request("POST", f"/v1/sweeps/{sweep_id}/cancel")

    def sweep_leaderboard(self, sweep_id: str) -> dict[str, Any]:
        return self.request("GET", f"/v1/sweeps/{sweep_id}/leaderboard")

    def get_model(self, model_id: str) -> dict[str, Any]:
        return self.request("GET", f"/v1/models/{model_id}")

    def delete_model(self, model_id: str) -> dict[str, Any]:
        """Delete the model's files and record; a conflict while a deployment serves it or its history names it."""
        return self.request("DELETE", f"/v1/models/{model_id}")

    def deploy(self, model_id: str, name: str, **spec: Any) -> dict[str, Any]:
        return self.request("POST", "/v1/deployments", json={"model_id": model_id, "name": name, **spec})

    def delete_deployment(self, deployment_id: str) -> dict[str, Any]:
        return self.request("DELETE", f"/v1/deployments/{deployment_id}")

    def get_deployment(self, deployment_id: str) -> dict[str, Any]:
        return self.request("GET", f"/v1/deployments/{deployment_id}")

    def promote(self, endpoint: str, model_id: str | None = None, sweep_id: str | None = None, force: bool = False,
                metric: str | None = None, **deployment: Any) -> dict[str, Any]:
        """Champion/challenger at ``endpoint``; ``deployment``: DeploymentSpec settings for a new endpoint.
        Returns {"decision", "metric", "champion", "challenger", "summary", "endpoint", "deployment"}."""
        body = {"endpoint": endpoint, "model_id": model_id, "sweep_id": sweep_id, "metric": metric,
                "deployment": deployment or None}
        return self.request("POST", "/v1/promotions", json={**{k: v for k, v in body.items() if v is not None}, "force": force})

    def rollback(self, deployment_id: str, revision: int | None = None) -> dict[str, Any]:
        return self.request("POST", f"/v1/deployments/{deployment_id}/rollback",
                            json={"revision": revision} if revision is not None else {})

    def deployment_revisions(self, deployment_id: str) -> list[dict[str, Any]]:
        """Every revision, oldest first, following the route's pages (``after`` the last one seen)."""
        items: list[dict[str, Any]] = []
        while True:
            page = self.request("GET", f"/v1/deployments/{deployment_id}/revisions",
                                params={"after": items[-1]["revision"] if items else 0, "limit": 1000})
            items += page
            if len(page) < 1000:
                return items

    # ------------------------------------------------------------ the console's admin and deployments pages
    def create_key(self, tenant: str | None = None, role: str = "member") -> dict[str, Any]:
        """A new key (its secret shown once in ``api_key``); an admin names the tenant."""
        return self.request("POST", "/v1/keys", json={**({"tenant": tenant} if tenant else {}), "role": role})

    def revoke_key(self, key_id: str) -> dict[str, Any]:
        return self.request("DELETE", f"/v1/keys/{key_id}")

    def set_quota(self, tenant: str, **quota: Any) -> dict[str, Any]:
        """Change the given quota fields (and weight) of a tenant; None means unlimited (admin)."""
        return self.request("PUT", f"/v1/tenants/{tenant}/quota", json=quota)

    def set_tenant_settings(self, tenant: str, **settings: Any) -> dict[str, Any]:
        """Admin: change a tenant's settings (``redact_pii=True``); the others keep their values."""
        return self.request("PUT", f"/v1/tenants/{tenant}/settings", json=settings)

    def set_ray_cluster(self, tenant: str, address: str, token: str) -> dict[str, Any]:
        """Register (or replace) the tenant's dedicated Ray cluster: its Jobs API address and the Ray
        token its head takes (admin). Returns the tenant, showing the address, never the token."""
        return self.request("PUT", f"/v1/tenants/{tenant}/ray-cluster", json={"address": address, "token": token})

    def remove_ray_cluster(self, tenant: str) -> dict[str, Any]:
        """The tenant's new work goes to the shared cluster again (admin)."""
        return self.request("DELETE", f"/v1/tenants/{tenant}/ray-cluster")

    def cluster_resources(self) -> dict[str, Any]:
        return self.request("GET", "/v1/cluster")

    def job_queue(self) -> list[dict[str, Any]]:
        """Every queued job, in fair-share order (admin)."""
        return self.request("GET", "/v1/queue")

    def deployment_metrics(self, deployment_id: str) -> dict[str, Any]:
        return self.request("GET", f"/v1/deployments/{deployment_id}/metrics")
