"""`make bench`, serving part: what a deployed endpoint costs and gains, on the bench stack.

1. Throughput at 32 concurrent clients: the endpoint (one replica, dynamic batching,
   max_batch_size 32) against a sequential in-process transformers ``pipeline`` on the
   same exported model, the same documents and the same torch threads (1, what a replica
   uses). Each client sends one document per request and its next request when the
   answer comes.
2. Latency at 1 client: p50 of the endpoint (HTTP through Ray Serve's proxy, API-key
   check, batching with nobody to wait for, the model call) minus p50 of the same model
   call made in-process.
3. Replica memory per extra LoRA adapter: adapters of several real jobs loaded into one
   :class:`doctune.serve.adapters.AdapterPool` (what a multiplexed replica holds) — the
   tensor bytes each extra adapter adds over the shared base, ÷ the base's bytes.

Timings are measured here, never asserted.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

CLIENTS = 32
SEQ = 128
DURATION_S = 20.0
LATENCY_REQUESTS = 200


def _wait(get, ident: str, done, deadline_s: float = 1200) -> dict:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        row = get(ident)
        if done(row):
            return row
        time.sleep(2)
    raise RuntimeError(f"{ident} did not finish in {deadline_s}s")


def _job(client, dataset_id: str, seed: int, merge: bool) -> dict:
    spec = {
        "task": "classification", "base_model": "all-minilm-l6-v2", "dataset": {"id": dataset_id},
        "tuning": {"method": "lora", "merge_adapter": merge,
                   "lora": {"r": 8, "alpha": 16, "target_modules": ["query", "key", "value", "dense"]}},
        "deepspeed": {"zero_stage": 2}, "micro_batch_size": 8, "gradient_accumulation_steps": 1,
        "max_steps": 40 if merge else 10, "learning_rate": 2e-3, "warmup_ratio": 0.1, "max_seq_length": SEQ,
        "eval_interval": 10**6, "checkpoint_interval": 10**6, "num_workers": 2,
        "resources_per_worker": {"cpu": 1, "threads": 1}, "seed": seed,
    }
    job = client.submit_job(spec)
    job = _wait(client.get_job, job["id"], lambda j: j["status"] in ("succeeded", "failed", "cancelled"))
    if job["status"] != "succeeded":
        raise RuntimeError(f"serving bench job failed: {job['error']}")
    return job


def _download(client, model_id: str) -> Path:
    import httpx

    out = Path(tempfile.mkdtemp(prefix="doctune-bench-model-"))
    for f in client.request("GET", f"/v1/models/{model_id}/files"):
        (out / f["path"]).parent.mkdir(parents=True, exist_ok=True)
        (out / f["path"]).write_bytes(httpx.get(f["url"], timeout=120).content)
    return out


async def _clients(url: str, key: str, docs: list[str], clients: int, duration_s: float) -> tuple[int, list[float], int]:
    import httpx

    done, latencies, failed = 0, [], 0
    end = time.monotonic() + duration_s
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=120, limits=limits, headers={"Authorization": f"Bearer {key}"}) as http:
        async def one(i: int) -> None:
            nonlocal done, failed
            j = i
            while time.monotonic() < end:
                t = time.perf_counter()
                r = await http.post(url, json={"inputs": [docs[j % len(docs)]]})
                latencies.append(time.perf_counter() - t)
                if r.status_code == 200:
                    done += 1
                else:
                    failed += 1
                j += clients

        await asyncio.gather(*(one(i) for i in range(clients)))
    return done, latencies, failed


def serving_bench(client, key: str, dataset_id: str, docs: list[str]) -> dict:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    from doctune.tasks import get_task

    torch.set_num_threads(1)  # what a replica uses
    job = _job(client, dataset_id, seed=42, merge=True)
    dep = client.deploy(job["model_id"], "bench", min_replicas=1, max_replicas=1, num_cpus=1,
                        max_batch_size=CLIENTS, batch_wait_timeout_s=0.0)
    dep = _wait(client.get_deployment, dep["id"], lambda d: d["status"] not in ("deploying",), 600)
    if dep["status"] != "running":
        raise RuntimeError(f"bench deployment failed: {dep['message']}")
    url = dep["url"]
    local = _download(client, job["model_id"])
    meta = json.loads((local / "doctune.json").read_text())
    plugin = get_task("classification")
    tokenizer = AutoTokenizer.from_pretrained(local)
    model = AutoModelForSequenceClassification.from_pretrained(local).eval()

    # 1 client: endpoint vs in-process model call, same document each time in turn
    asyncio.run(_clients(url, key, docs, 1, 3.0))  # warm the connection and the replica
    endpoint_lat, replica_lat = [], []
    import httpx

    with httpx.Client(timeout=60, headers={"Authorization": f"Bearer {key}"}) as http:
        for i in range(LATENCY_REQUESTS):
            t = time.perf_counter()
            r = http.post(url, json={"inputs": [docs[i % len(docs)]]})
            endpoint_lat.append(time.perf_counter() - t)
            r.raise_for_status()
            replica_lat.append(float(r.headers["server-timing"].split(";dur=")[1]) / 1000)  # the replica's share
    forward_lat = []
    for i in range(LATENCY_REQUESTS):
        t = time.perf_counter()
        plugin.predict(model, tokenizer, [docs[i % len(docs)]], meta, SEQ)
        forward_lat.append(time.perf_counter() - t)

    # 32 clients: endpoint (batched) vs a sequential in-process pipeline answering them one by one
    ok, lat, failed = asyncio.run(_clients(url, key, docs, CLIENTS, DURATION_S))
    endpoint_rps = ok / DURATION_S
    pipe = pipeline("text-classification", model=model, tokenizer=tokenizer, device=-1, truncation=True, max_length=SEQ)
    n, t = 0, time.perf_counter()
    while time.perf_counter() - t < DURATION_S:
        pipe(docs[n % len(docs)])
        n += 1
    pipeline_rps = n / (time.perf_counter() - t)
    client.delete_deployment(dep["id"])

    result = {
        "clients": CLIENTS, "seq": SEQ, "duration_s": DURATION_S, "max_batch_size": CLIENTS,
        "endpoint_rps": endpoint_rps, "pipeline_rps": pipeline_rps, "throughput_ratio": endpoint_rps / pipeline_rps,
        "endpoint_failed": failed, "endpoint_p50_under_load_ms": 1000 * statistics.median(lat),
        "p50_endpoint_ms": 1000 * statistics.median(endpoint_lat), "p50_forward_ms": 1000 * statistics.median(forward_lat),
        "p50_replica_ms": 1000 * statistics.median(replica_lat),
        # per request: what the client waited beyond the replica's own time (HTTP, Serve's proxy, the hop to the replica)
        "p50_outside_replica_ms": 1000 * statistics.median(e - r for e, r in zip(endpoint_lat, replica_lat)),
    }
    result["latency_overhead_ms"] = result["p50_endpoint_ms"] - result["p50_forward_ms"]
    result["adapters"] = adapter_memory(client, dataset_id)
    return result


def adapter_memory(client, dataset_id: str, n: int = 3) -> dict:
    """Tensor bytes of the base and of each extra adapter in one AdapterPool, and the replica's RSS growth."""
    import psutil

    from doctune.serve.adapters import AdapterPool
    from doctune.tasks import get_task

    paths = [_download(client, _job(client, dataset_id, seed=100 + i, merge=False)["model_id"]) for i in range(n)]
    proc = psutil.Process()
    pool = AdapterPool(get_task("classification"))
    rss = [proc.memory_info().rss]
    for i, path in enumerate(paths):
        pool.load(f"m{i}", str(path))
        rss.append(proc.memory_info().rss)
    mem = pool.memory()
    extra = [mem["adapters"][f"m{i}"] for i in range(1, n)]
    return {
        "adapters": n, "base_bytes": mem["shared"], "extra_adapter_bytes": extra,
        "ratio": statistics.mean(extra) / mem["shared"],
        "rss_per_extra_adapter_bytes": (rss[-1] - rss[2]) / max(1, n - 2) if n > 2 else None,
        "rss_first_adapter_bytes": rss[1] - rss[0],
    }


def report_lines(r: dict) -> list[str]:
    a = r.get("adapters") or {}
    lines = [
        "## Serving",
        "",
        f"A MiniLM-L6 classifier (LoRA merged, seq {r['seq']}) deployed on the bench stack: one replica, 1 torch thread,",
        f"dynamic batching up to {r['max_batch_size']} requests, no batch wait. Documents: BBC test articles, one per request.",
        "The in-process side runs the same exported model in the benchmark process with 1 torch thread.",
        "",
        "| measure | endpoint | in-process | ratio or difference | goal |",
        "| --- | --- | --- | --- | --- |",
        f"| throughput at {r['clients']} concurrent clients (requests/s, {r['duration_s']:.0f} s) | {r['endpoint_rps']:.1f} "
        f"| {r['pipeline_rps']:.1f} (sequential `pipeline`) | **{r['throughput_ratio']:.2f}×** | ≥ 3 |",
        f"| p50 latency at 1 client (ms) | {r['p50_endpoint_ms']:.1f} | {r['p50_forward_ms']:.1f} (model call) "
        f"| **{r['latency_overhead_ms']:+.1f} ms** | ≤ 5 ms |",
        "",
        f"Under load the endpoint's p50 latency was {r['endpoint_p50_under_load_ms']:.0f} ms; {r['endpoint_failed']} request(s) failed.",
        "The 32 clients, Ray Serve's HTTP proxy and the replica share the machine's 2 cores.",
        "",
    ]
    if "p50_replica_ms" in r:
        lines += [
            f"Where the 1-client latency goes (p50s, from each answer's `Server-Timing` header): the replica itself "
            f"{r['p50_replica_ms']:.1f} ms (key check, batching, model call; the model call alone in-process "
            f"{r['p50_forward_ms']:.1f} ms), and {r['p50_outside_replica_ms']:.1f} ms outside it: HTTP, Ray Serve's proxy "
            "and its hop to the replica.",
            "",
        ]
    if r["throughput_ratio"] < 3 or r["latency_overhead_ms"] > 5:
        lines += [
            "Goals not met here. On this CPU a forward pass over one article at sequence length "
            f"{r['seq']} is compute-bound ({r['p50_forward_ms']:.0f} ms on one thread): by the ratio above, a batch of 32 cost "
            "about what 32 single calls do, so batching saved only per-call overhead; the throughput goal "
            "assumes an accelerator, where one batched call costs about what one document does. The latency "
            "difference is the path every request takes: client → Ray Serve's HTTP proxy (its own process) → the "
            "replica's ASGI app and the key check → the model call, on the same 2 cores (broken down above).",
            "",
        ]
    if a:
        lines += [
            f"Multiplexed LoRA: {a['adapters']} real adapters (LoRA r=8 on query/key/value/dense plus the classifier head,",
            "three jobs with different seeds) loaded into one `AdapterPool`, as a multiplexed replica holds them.",
            f"Base model tensors {a['base_bytes'] / 2**20:.1f} MiB; each extra adapter adds "
            + ", ".join(f"{b / 2**20:.2f} MiB" for b in a["extra_adapter_bytes"])
            + f": **{a['ratio']:.4f} of the base per extra adapter** (goal ≤ 0.02).",
        ]
        if a.get("rss_per_extra_adapter_bytes") is not None:
            lines.append(f"Process RSS grew {a['rss_per_extra_adapter_bytes'] / 2**20:.1f} MiB per extra adapter "
                         f"(the first, with the base, {a['rss_first_adapter_bytes'] / 2**20:.1f} MiB); RSS also counts "
                         "the allocator's temporary copies while an adapter loads.")
        lines.append("")
    return lines
