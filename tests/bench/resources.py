"""`make bench`, resources part (issue 17 §3): memory per worker, checkpoint upload speed, time
to the first optimizer step, and how well `doctune jobs plan` predicts them.

Every job is a real one, submitted through the REST API to its own embedded stack (Ray with
token auth, weed S3, SQLite, the API), as ``tests/bench/serving.py``'s are:

* P3, memory per worker: Gemma-3-270M, full fine-tuning of a BBC classifier, 2 workers,
  micro-batch 2, sequence length 64, a few steps, under ZeRO-0 (plain data parallel), ZeRO-3
  and ZeRO-3 with parameters and optimizer state offloaded. The figure is each worker's peak
  resident memory while it trains (VmHWM, which the loop reports in the job's
  ``metrics.memory``), cross-checked by sampling every Ray Train worker's RSS with psutil for the
  whole job (test evaluation and export included). Goal: ZeRO-3 ÷ ZeRO-0 ≤ 0.6.
* P7, checkpoint upload: the same bytes (one file the size of a MiniLM-L6 and of a Gemma-3-270M
  fp32 checkpoint) written to the local disk (write + fsync) and uploaded to the stack's weed
  S3 server by both of doctune's upload paths: Ray Train's checkpoint persist (pyarrow's S3
  filesystem from :meth:`ObjectStore.pyarrow_fs`, what :func:`save_checkpoint` goes through) and
  :meth:`ObjectStore.upload_file` (the minio SDK: exports, datasets). Goal: MB/s ÷ disk ≥ 0.5.
* P8, submit → first optimizer step on a warm stack (one job of the same spec already ran):
  the demo's job (MiniLM-L6, LoRA r=8, ZeRO-2, 2 workers) split into queue, Ray job start,
  worker start, model load, baseline evaluation and first batch, from the job's events and the
  loop's ``progress.timeline``. Goal ≤ 20 s.
* Plan accuracy: each job's plan (``POST /v1/jobs/plan``, what `doctune jobs plan` shows), made
  just before it is submitted, against what it measured: peak memory per worker, tokens trained
  on, and wall time (driver start → finish, what the plan's time estimate covers). Goal: within
  30 % (a ratio measured ÷ predicted in 0.7 .. 1.3).

Run: ``python -m tests.bench.resources`` (about 15-25 minutes on 2 cores; peak memory about
14 GiB, the ZeRO-0 Gemma job's two workers). It prints the markdown section and writes
docs/bench_resources.json. Timings and sizes are measured here, never asserted.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import threading
import time
import traceback
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "docs" / "bench_resources.json"
MB = 1024 * 1024
DONE = ("succeeded", "failed", "cancelled")

GEMMA_STEPS = int(os.environ.get("BENCH_GEMMA_STEPS", "6"))
P8_REPS = int(os.environ.get("BENCH_P8_REPS", "2"))
UPLOAD_REPS = int(os.environ.get("BENCH_UPLOAD_REPS", "2"))
# one file of each size: MiniLM-L6's fp32 weights (22.7 M parameters) and Gemma-3-270M's (268 M)
UPLOAD_SIZES_MB = [int(x) for x in os.environ.get("BENCH_UPLOAD_SIZES_MB", "90,1024").split(",")]
# ZeRO-3 first: the smallest; ZeRO-0 (the most memory) starts only once what ZeRO-3 measured says it
# fits in the memory free then (the machine is shared). The first job gives the later ones the plan's
# time estimate (same model and method), so it has none itself.
GEMMA_CASES = [
    ("zero3", {"zero_stage": 3}),
    ("zero3_offload", {"zero_stage": 3, "offload_params": True, "offload_optimizer": True}),
    ("zero0", {"zero_stage": 0}),
]
MEMORY_MARGIN_MB = 2048  # left free beside a job's workers
MEMORY_WAIT_S = 300  # how long a job waits for that much memory before the bench gives up on it
GOALS = {"p3": 0.6, "p7": 0.5, "p8_s": 20.0, "plan_within": 0.30}


def _gemma_spec(dataset_id: str, deepspeed: dict) -> dict:
    return {
        "task": "classification", "base_model": "gemma-3-270m", "dataset": {"id": dataset_id},
        "tuning": {"method": "full"}, "deepspeed": deepspeed, "micro_batch_size": 2,
        "gradient_accumulation_steps": 1, "max_steps": GEMMA_STEPS, "learning_rate": 2e-5, "max_seq_length": 64,
        "eval_interval": 10**6, "checkpoint_interval": 10**6, "num_workers": 2,
        "resources_per_worker": {"cpu": 1, "threads": 1}, "seed": 42,
    }


def _demo_spec(dataset_id: str, seed: int) -> dict:
    """docs/examples/bbc-classification.yaml (the demo's job), cut to a few steps: P8 is about
    the time before the first one."""
    return {
        "task": "classification", "base_model": "all-minilm-l6-v2", "dataset": {"id": dataset_id},
        "tuning": {"method": "lora", "merge_adapter": True,
                   "lora": {"r": 8, "alpha": 16, "dropout": 0.05, "target_modules": ["query", "key", "value", "dense"]}},
        "deepspeed": {"zero_stage": 2}, "micro_batch_size": 8, "gradient_accumulation_steps": 4, "max_steps": 3,
        "learning_rate": 1e-3, "warmup_ratio": 0.1, "max_seq_length": 128, "eval_interval": 10**6,
        "checkpoint_interval": 10**6, "num_workers": 2, "resources_per_worker": {"cpu": 1}, "seed": seed,
    }


# ------------------------------------------------------------------ helpers
def _ts(value: str | None) -> float | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else None


class WorkerMemory:
    """Peak RSS of every Ray Train worker process, sampled with psutil every ``every_s`` while a job
    runs (a cross-check of the loop's own VmHWM figure, over the whole job)."""

    def __init__(self, every_s: float = 1.0) -> None:
        self.every_s, self.peak = every_s, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "WorkerMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        import psutil

        while not self._stop.wait(self.every_s):
            for proc in psutil.process_iter(["cmdline", "memory_info"]):
                try:
                    if "RayTrainWorker" in " ".join(proc.info["cmdline"] or [])[:80]:
                        rss = proc.info["memory_info"].rss / MB
                        self.peak[proc.pid] = max(rss, self.peak.get(proc.pid, 0.0))
                except Exception:  # noqa: BLE001 - a process that ended between listing and reading
                    continue

    def result(self, pids) -> list[float]:
        """The peaks of the processes ``pids`` (the job's workers: other stacks may be training too)."""
        return sorted((self.peak[int(pid)] for pid in pids if int(pid) in self.peak), reverse=True)


def _run_job(client, spec: dict, deadline_s: float = 2400) -> tuple[dict, dict, float]:
    """Plan ``spec``, submit it, wait for it; (plan, finished job, wall-clock time of the submit call)."""
    plan = client.plan_job(spec)
    submitted = time.time()
    job = client.submit_job(spec)
    end = time.monotonic() + deadline_s
    while (job := client.get_job(job["id"]))["status"] not in DONE:
        if time.monotonic() > end:
            raise RuntimeError(f"job {job['id']} did not finish in {deadline_s}s")
        time.sleep(3)
    if job["status"] != "succeeded":
        raise RuntimeError(f"job {job['id']} {job['status']}: {job['error']}")
    return plan, job, submitted


def _ratio(measured: float | None, predicted: float | None) -> float | None:
    return measured / predicted if measured is not None and predicted else None


def plan_accuracy(plan: dict, job: dict) -> dict:
    """Measured ÷ predicted for memory per worker, tokens trained on and wall time."""
    m = job["metrics"]
    steps = plan["steps"]
    predicted_tokens = plan["tokens"]["tokens_per_epoch"] * steps["total"] / max(steps["per_epoch"], 1)
    wall = _ts(job["finished_at"]) - _ts(job["started_at"])  # the span the plan's time estimate covers
    t = plan.get("expected_time") or {}
    timing = m.get("timing") or {}
    mem = plan["memory_per_worker_mb"]
    return {
        "memory_mb": {"predicted": mem["total_mb"], "measured": m["memory"]["peak_train_mb"],
                      "ratio": _ratio(m["memory"]["peak_train_mb"], mem["total_mb"]),
                      "predicted_parts": mem, "measured_start_mb": m["memory"]["start_mb"]},
        "tokens": {"predicted": predicted_tokens, "measured": m["tokens_seen"],
                   "ratio": _ratio(m["tokens_seen"], predicted_tokens)},
        "time_s": {"predicted": t.get("total_s"), "measured": wall, "ratio": _ratio(wall, t.get("total_s")),
                   "predicted_parts": {k: t.get(k) for k in ("train_s", "eval_s", "fixed_s")} if t else None,
                   "measured_parts": {"train_s": timing.get("train_s"), "eval_s": timing.get("eval_s"),
                                      "fixed_s": wall - timing.get("train_s", 0) - timing.get("eval_s", 0)},
                   "basis": t.get("basis") or "no estimate: " + "; ".join(w for w in plan["warnings"]
                                                                           if "time estimate" in w)},
    }


# ------------------------------------------------------------------ P3: memory per worker
def _short_error(message: str) -> str:
    """A failed job's error in one line: Ray's memory monitor's kill, with the workers' sizes, or its head."""
    import re

    if "low on memory" in message or "memory pressure" in message or "OOM" in message:
        sizes = re.findall(r"(\d+)\t([\d.]+)\tray::RayTrainWorker", message)
        return ("killed by Ray's memory monitor (the node passed 95 % of its memory; the machine is shared)"
                + (": training workers at " + ", ".join(f"{gb} GB" for _, gb in sizes) if sizes else ""))
    return message[:300]


def _one_worker_zero0(client, dataset_id: str) -> dict:
    """ZeRO-0 with one worker, when two do not fit: the same per-worker state (parameters, gradients,
    AdamW), without the gradient all-reduce."""
    spec = {**_gemma_spec(dataset_id, {"zero_stage": 0}), "num_workers": 1}
    try:
        _wait_for_memory(client.plan_job(spec)["memory_per_worker_mb"]["total_mb"], "zero0, 1 worker")
        plan, job, _ = _run_job(client, spec)
    except RuntimeError as exc:
        return {"error": _short_error(str(exc))}
    mem = job["metrics"]["memory"]
    return {"job_id": job["id"], "peak_train_mb": mem["peak_train_mb"], "start_mb": mem["start_mb"],
            "load_avg_1m": os.getloadavg()[0], "plan": plan_accuracy(plan, job)}


def _wait_for_memory(need_mb: float, what: str) -> None:
    """Wait until the machine has ``need_mb`` + MEMORY_MARGIN_MB available (others share it)."""
    import psutil

    end = time.monotonic() + MEMORY_WAIT_S
    while (free := psutil.virtual_memory().available / MB) < need_mb + MEMORY_MARGIN_MB:
        if time.monotonic() > end:
            raise RuntimeError(f"{what}: needs about {need_mb:,.0f} MiB, only {free:,.0f} MiB available")
        print(f"{what}: waiting for {need_mb + MEMORY_MARGIN_MB:,.0f} MiB available ({free:,.0f} now)", flush=True)
        time.sleep(30)


def memory_bench(client, dataset_id: str) -> dict:
    out: dict = {"settings": f"Gemma-3-270M, full fine-tuning, 2 workers × 1 thread, micro-batch 2, seq 64, "
                             f"{GEMMA_STEPS} steps, BBC classification (5 labels)"}
    scale = 1.0  # measured ÷ planned memory of the jobs so far: how much the next one will really take
    for name, ds in GEMMA_CASES:
        spec = _gemma_spec(dataset_id, ds)
        try:
            _wait_for_memory(2 * scale * client.plan_job(spec)["memory_per_worker_mb"]["total_mb"], name)
            with WorkerMemory() as sampler:
                plan, job, _ = _run_job(client, spec)
        except RuntimeError as exc:  # not enough memory, or the job failed: the other cases still run
            out[name] = {"deepspeed": ds, "error": _short_error(str(exc))}
            print(f"P3 {name}: {out[name]['error']}", flush=True)
            if name == "zero0":
                out["zero0_1worker"] = _one_worker_zero0(client, dataset_id)
            continue
        mem = job["metrics"]["memory"]
        sampled = sampler.result((job["progress"].get("worker_pids") or {}).values())
        out[name] = {
            "deepspeed": ds, "job_id": job["id"], "load_avg_1m": os.getloadavg()[0],
            "peak_train_mb": mem["peak_train_mb"], "start_mb": mem["start_mb"],
            "per_rank": mem["per_rank"], "sampled_peak_mb": sampled,
            "steps_per_s": job["progress"].get("steps_per_s"), "timing": job["metrics"].get("timing"),
            "plan": plan_accuracy(plan, job),
        }
        scale = max(scale if name != GEMMA_CASES[0][0] else 0.0, out[name]["plan"]["memory_mb"]["ratio"])
        print(f"P3 {name}: peak {mem['peak_train_mb']:.0f} MiB per worker (sampled {[round(x) for x in sampled]}), "
              f"plan {plan['memory_per_worker_mb']['total_mb']:.0f} MiB", flush=True)
    z0, z3, off = (out[n].get("peak_train_mb") and out[n] for n in ("zero0", "zero3", "zero3_offload"))
    one = out.get("zero0_1worker", {})
    if not z0 and z3 and one.get("peak_train_mb"):  # the ratio against one ZeRO-0 worker: the same state per worker
        out["ratio_vs_1worker"] = z3["peak_train_mb"] / one["peak_train_mb"]
        out["ratio_offload_vs_1worker"] = off["peak_train_mb"] / one["peak_train_mb"] if off else None
    out["ratio"] = z3["peak_train_mb"] / z0["peak_train_mb"] if z0 and z3 else None
    out["ratio_offload"] = off["peak_train_mb"] / z0["peak_train_mb"] if z0 and off else None
    # without the runtime every process holds before any model (torch, DeepSpeed, Ray): what ZeRO can shard
    out["state_ratio"] = ((z3["peak_train_mb"] - z3["start_mb"]) / (z0["peak_train_mb"] - z0["start_mb"])
                          if z0 and z3 else None)
    return out


# ------------------------------------------------------------------ P7: checkpoint upload
def _disk_write(data: bytes, path: Path) -> float:
    t = time.perf_counter()
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return time.perf_counter() - t


def _cpu_s(proc) -> float:
    t = proc.cpu_times()
    return t.user + t.system + sum(c.cpu_times().user + c.cpu_times().system for c in proc.children(recursive=True))


def upload_bench(store, weed_pid: int, filer_url: str) -> dict:
    """MB/s of a local write + fsync against each upload path, per size (medians of UPLOAD_REPS), with the CPU
    seconds this process (the uploader) and weed spent on each: on 2 shared cores the upload is CPU-bound.
    ``filer_url``: weed's filer, written to directly over HTTP (no S3 gateway, no request signing), for reference."""
    import httpx
    import psutil
    import pyarrow.fs
    from ray.train.v2._internal.execution.storage import _pyarrow_fs_copy_files

    from doctune.store.paths import scratch_dir

    fs = store.pyarrow_fs()
    weed, me = psutil.Process(weed_pid), psutil.Process()
    # a fresh weed allocates its volumes on the first writes (seconds): do that before timing, as a stack
    # that has run jobs already has
    store.put_bytes("bench/upload/warm", os.urandom(64 * MB))
    store.delete_prefix("bench/upload/")
    rows = []
    for size_mb in UPLOAD_SIZES_MB:
        data = os.urandom(size_mb * MB)  # incompressible, as model weights are to a byte stream
        with tempfile.TemporaryDirectory(prefix="doctune-bench-upload-", dir=scratch_dir()) as tmp:
            src = Path(tmp) / "ckpt"
            src.mkdir()
            (src / "mp_rank_00_model_states.pt").write_bytes(data)  # a checkpoint folder of one file
            runs: dict[str, list[tuple[float, float, float]]] = {}

            def timed(path: str, fn) -> None:
                w, c, t = _cpu_s(weed), _cpu_s(me), time.perf_counter()
                fn()
                runs.setdefault(path, []).append((time.perf_counter() - t, _cpu_s(me) - c, _cpu_s(weed) - w))

            def post_to_filer(key: str) -> None:
                with open(src / "mp_rank_00_model_states.pt", "rb") as f:
                    httpx.post(f"{filer_url}/{key}/", files={"file": ("ckpt", f)}, timeout=600).raise_for_status()

            for i in range(UPLOAD_REPS):
                key = f"bench/upload/{size_mb}mb-{i}"
                timed("disk", lambda: _disk_write(data, Path(tmp) / f"copy{i}"))
                os.remove(Path(tmp) / f"copy{i}")
                # Ray Train's persist of a reported checkpoint (what save_checkpoint's report goes through)
                timed("ray", lambda: _pyarrow_fs_copy_files(str(src), f"{store.bucket}/{key}/ray",
                                                            source_filesystem=pyarrow.fs.LocalFileSystem(),
                                                            destination_filesystem=fs))
                # ObjectStore.upload_file (minio fput_object): exports, datasets
                timed("minio", lambda: store.upload_file(src / "mp_rank_00_model_states.pt",
                                                         f"{key}/minio/mp_rank_00_model_states.pt"))
                timed("filer", lambda: post_to_filer(f"bench-filer/{size_mb}mb-{i}"))
                assert store.size_of(f"{key}/minio/mp_rank_00_model_states.pt") == len(data)
                assert store.size_of(f"{key}/ray/mp_rank_00_model_states.pt") == len(data)
                store.delete_prefix(f"{key}/")
        del data
        med = {k: [statistics.median(x[j] for x in v) for j in range(3)] for k, v in runs.items()}
        mbps = {k: size_mb / m[0] for k, m in med.items()}
        rows.append({"size_mb": size_mb, "disk_mb_s": mbps["disk"], "ray_checkpoint_mb_s": mbps["ray"],
                     "minio_mb_s": mbps["minio"], "filer_http_mb_s": mbps["filer"],
                     "ray_ratio": mbps["ray"] / mbps["disk"], "minio_ratio": mbps["minio"] / mbps["disk"],
                     # CPU seconds per GiB moved: the uploading process, and weed
                     "cpu_s_per_gib": {k: {"uploader": m[1] * 1024 / size_mb, "weed": m[2] * 1024 / size_mb}
                                       for k, m in med.items()},
                     "seconds": {k: [x[0] for x in v] for k, v in runs.items()}})
        print(f"P7 {size_mb} MB: disk {mbps['disk']:.0f} MB/s, ray checkpoint {mbps['ray']:.0f} MB/s, "
              f"minio {mbps['minio']:.0f} MB/s, weed filer over HTTP {mbps['filer']:.0f} MB/s", flush=True)
    from doctune.store.objects import PART_SIZE

    return {"rows": rows, "part_size_mb": PART_SIZE / MB, "parallel_parts_minio": 3,
            "ratio": min(min(r["ray_ratio"], r["minio_ratio"]) for r in rows)}


# ------------------------------------------------------------------ P8: submit -> first step
def _status_times(client, job_id: str) -> dict[str, float]:
    events = client.request("GET", f"/v1/jobs/{job_id}/events", params={"after": 0, "limit": 500})["events"]
    out: dict[str, float] = {}
    for e in events:
        name = e["status"] if e["kind"] == "status" else e["kind"]
        out.setdefault(name, _ts(e["at"]))  # the first of each
    return out


PHASES = [  # (name, from, to): the milestones are job events or the loop's progress.timeline
    ("queue (submit → dispatched)", "created", "starting"),
    ("Ray job start (dispatched → driver running)", "starting", "running"),
    ("worker start (driver → train function on rank 0)", "running", "worker_started"),
    ("process group (gloo) ready", "worker_started", "process_group_ready"),
    ("model load (data, tokenizer, model, DeepSpeed engine)", "process_group_ready", "model_loaded"),
    ("baseline evaluation (dev + test, untrained head)", "model_loaded", "training_started"),
    ("first batch (→ first optimizer step)", "training_started", "first_step"),
]


def first_step_bench(client, dataset_id: str) -> dict:
    runs = []
    _, warm, _ = _run_job(client, _demo_spec(dataset_id, seed=1))  # warms the stack: Ray workers, caches
    for rep in range(P8_REPS):
        plan, job, submitted = _run_job(client, _demo_spec(dataset_id, seed=2 + rep))
        marks = {"submit_call": submitted, "created": _ts(job["created_at"]), **_status_times(client, job["id"]),
                 **(job["progress"].get("timeline") or {})}
        phases = {name: marks[b] - marks[a] for name, a, b in PHASES if a in marks and b in marks}
        runs.append({"job_id": job["id"], "total_s": marks["first_step"] - marks["created"], "load_avg_1m": os.getloadavg()[0],
                     "from_submit_call_s": marks["first_step"] - submitted, "phases": phases,
                     "plan": plan_accuracy(plan, job)})
        print(f"P8 rep {rep + 1}: {runs[-1]['total_s']:.1f} s to the first step: "
              + ", ".join(f"{k.split(' (')[0]} {v:.1f}" for k, v in phases.items()), flush=True)
    best = min(runs, key=lambda r: r["total_s"])
    return {"runs": runs, "warm_job_id": warm["id"], "median_s": statistics.median(r["total_s"] for r in runs),
            "phases_median": {name: statistics.median(r["phases"].get(name, float("nan")) for r in runs)
                              for name, _, _ in PHASES},
            "fastest_job_id": best["job_id"],
            "settings": "MiniLM-L6, LoRA r=8, ZeRO-2, 2 workers × 1 CPU, micro-batch 8 × accumulation 4, seq 128, "
                        "BBC classification (240 train / 30 dev / 30 test)"}


# ------------------------------------------------------------------ measure / render
def measure(parts: tuple[str, ...] = ("p8", "p3", "p7")) -> dict:
    """Bring up a fresh embedded stack, run the measurements ``parts`` on it, take it down. The result
    holds the parts measured (each with its date) and ``plan``, the plan accuracy of their jobs."""
    import platform as _platform

    from doctune.client import DoctuneClient
    from doctune.corpora import load_bbc_news
    from doctune.data import to_jsonl
    from doctune.local import LocalStack, find_free_port_base
    from doctune.store.objects import ObjectStore

    from doctune.config import load_settings

    # BENCH_STACK_HOME: a stack that `doctune up` already started there, with nothing run on it yet (on a
    # loaded machine `ray start` can time out); it is taken down at the end like the bench's own
    given = os.environ.get("BENCH_STACK_HOME")
    home = Path(given) if given else Path(tempfile.mkdtemp(prefix="doctune-bench-resources-"))
    os.environ["DOCTUNE_HOME"] = str(home)
    stack = (LocalStack.of(load_settings(home), num_cpus=4) if given
             else LocalStack(home=home, base=find_free_port_base(start=42000), num_cpus=4))
    result: dict = {"date": time.strftime("%Y-%m-%d"), "machine": f"{os.cpu_count()} cores, {_platform.machine()}",
                    "goals": GOALS}
    try:
        s = _up(stack)
        admin = DoctuneClient(s.api_url, s.admin_key)
        client = DoctuneClient(s.api_url, admin.create_tenant("bench")["api_key"])
        bbc60 = client.upload_dataset("bbc-60", "classification", {"data": to_jsonl(load_bbc_news(limit_per_class=60))},
                                      seed=42)
        bbc20 = client.upload_dataset("bbc-20", "classification", {"data": to_jsonl(load_bbc_news(limit_per_class=20))},
                                      seed=42)
        for part, run in (("p8", lambda: first_step_bench(client, bbc60["id"])),
                          ("p3", lambda: memory_bench(client, bbc20["id"])),
                          ("p7", lambda: upload_bench(ObjectStore(stack.settings()),
                                                      int((stack.run_dir / "weed.pid").read_text()),
                                                      f"http://127.0.0.1:{stack.ports.filer}"))):
            if part not in parts:
                continue
            try:
                result[part] = {**run(), "date": result["date"], "load_avg_after": os.getloadavg()}
            except Exception as exc:  # noqa: BLE001 - one part failing leaves the others' figures
                traceback.print_exc()
                result[part] = {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        stack.down(echo=print)
    return result


def _up(stack, tries: int = 5):
    """``stack.up()``, tried again on a loaded machine: `ray start` gives its raylet 30 s to register."""
    for attempt in range(1, tries + 1):
        try:
            return stack.up(echo=print)
        except Exception as exc:  # noqa: BLE001 - DoctuneError from `ray start`, retried whole
            if attempt == tries:
                raise
            print(f"stack start failed ({exc}); trying again", flush=True)
            stack.down(echo=print)
            time.sleep(30)


def plan_summary(r: dict) -> dict:
    """Every job's measured ÷ predicted ratios, by quantity: the worst (farthest from 1) of each."""
    rows = [(f"P8 rep {i + 1} (MiniLM LoRA ZeRO-2)", run["plan"]) for i, run in enumerate(r.get("p8", {}).get("runs", []))]
    rows += [(f"P3 {name.replace('_', ' + ')} (Gemma full)", r["p3"][name]["plan"]) for name, _ in GEMMA_CASES
             if "plan" in r.get("p3", {}).get(name, {})]
    if "plan" in r.get("p3", {}).get("zero0_1worker", {}):
        rows.append(("P3 zero0, 1 worker (Gemma full)", r["p3"]["zero0_1worker"]["plan"]))
    table = [{"job": name, **{q: acc[q]["ratio"] for q in ("memory_mb", "tokens", "time_s")}} for name, acc in rows]
    worst = {}
    for q in ("memory_mb", "tokens", "time_s"):
        vals = [row[q] for row in table if row[q] is not None]
        worst[q] = max(vals, key=lambda v: abs(v - 1)) if vals else None
    return {"rows": table, "worst": worst}


def _met(ok: bool | None) -> str:
    return "n/a" if ok is None else ("yes" if ok else "**no**")


def _within(v: float | None) -> bool | None:
    return None if v is None else abs(v - 1) <= GOALS["plan_within"]


def _fmt(v: float | None, spec: str = ".2f") -> str:
    return "–" if v is None else format(v, spec)


def _p3_lines(p3: dict) -> list[str]:
    done = [(n, p3[n]) for n, _ in GEMMA_CASES if "peak_train_mb" in p3.get(n, {})]
    lines = [
        f"**P3** ({p3['settings']}): peak resident memory per worker while training (the loop's VmHWM, largest rank),",
        "beside the largest RSS psutil sampled from the job's worker processes over the whole job (test evaluation",
        "and export included) and the runtime every worker holds before any model is loaded.",
        "",
        "| ZeRO | peak while training (MiB) | sampled over the job (MiB) | runtime at start (MiB) | plan (MiB) | steps/s |",
        "| --- | --- | --- | --- | --- | --- |",
        *[f"| {name.replace('_', ' + ')} | {c['peak_train_mb']:,.0f} | {_fmt(max(c['sampled_peak_mb'], default=None), ',.0f')} "
          f"| {c['start_mb']:,.0f} | {c['plan']['memory_mb']['predicted']:,.0f} | {_fmt(c['steps_per_s'], '.3f')} |"
          for name, c in done],
        *[f"| {n.replace('_', ' + ')} | not measured: {str(p3[n]['error'])[:160]}… | | | | |" for n, _ in GEMMA_CASES
          if "error" in p3.get(n, {})],
        "",
    ]
    loads = [f"{p3[n]['load_avg_1m']:.1f}" for n, _ in GEMMA_CASES if "load_avg_1m" in p3.get(n, {})]
    if loads:
        lines += [f"1-minute load average as each job ended (2 cores, shared): {', '.join(loads)}.", ""]
    if p3.get("state_ratio") is not None:
        lines += [f"Without the runtime (what ZeRO can shard), ZeRO-3 ÷ ZeRO-0 is {p3['state_ratio']:.2f}.", ""]
    one = p3.get("zero0_1worker")
    if one:
        lines += ["ZeRO-0 with 2 workers did not fit in the memory free on this shared machine; with 1 worker (the same "
                  "parameters, gradients and AdamW state per worker, without the gradient all-reduce) "
                  + (f"its peak was {one['peak_train_mb']:,.0f} MiB (plan {one['plan']['memory_mb']['predicted']:,.0f})"
                     if "peak_train_mb" in one else f"it was not measured either: {one['error']}")
                  + (f": ZeRO-3 ÷ that ≈ {p3['ratio_vs_1worker']:.2f}" if p3.get("ratio_vs_1worker") else "")
                  + (f", with offload ≈ {p3['ratio_offload_vs_1worker']:.2f}" if p3.get("ratio_offload_vs_1worker")
                     else "") + ".", ""]
    for rerun in p3.get("reruns", []):  # single cases measured again after a change, beside the run above
        lines += [f"Re-measured {rerun['date']}, {rerun['case']} only, after {rerun['after']}: peak "
                  f"{rerun['peak_train_mb']:,.0f} MiB per worker (plan {rerun['plan_mb']:,.0f})"
                  + (f", ≈ {rerun['peak_train_mb'] / one['peak_train_mb']:.2f} of the 1-worker ZeRO-0 peak"
                     if one and "peak_train_mb" in one else "") + ".", ""]
    return lines


def _p7_lines(p7: dict) -> list[str]:
    return [
        f"**P7**: one file of each size, random bytes; medians of {len(p7['rows'][0]['seconds']['disk'])}. "
        "Ray Train's checkpoint persist is pyarrow's S3 filesystem (`_pyarrow_fs_copy_files`, what `save_checkpoint` "
        f"reports go through); `ObjectStore.upload_file` is the minio SDK ({p7['part_size_mb']:.0f} MiB parts, "
        f"{p7['parallel_parts_minio']} in parallel).",
        "",
        "| size (MB) | local write + fsync (MB/s) | Ray checkpoint persist (MB/s) | ÷ disk | minio upload_file (MB/s) | ÷ disk |",
        "| --- | --- | --- | --- | --- | --- |",
        *[f"| {x['size_mb']:,} | {x['disk_mb_s']:.0f} | {x['ray_checkpoint_mb_s']:.0f} | {x['ray_ratio']:.2f} "
          f"| {x['minio_mb_s']:.0f} | {x['minio_ratio']:.2f} |" for x in p7["rows"]],
        "",
        *(["Where the time goes: CPU seconds per GiB moved (the uploading process + weed; the machine has 2 cores), and "
           "weed's filer written to directly over HTTP (no S3 gateway, no request signing) for reference:",
           "",
           "| size (MB) | local write + fsync | Ray checkpoint persist | minio upload_file | weed filer over HTTP (MB/s) |",
           "| --- | --- | --- | --- | --- |",
           *[f"| {x['size_mb']:,} | " + " | ".join(f"{c[k]['uploader']:.1f} + {c[k]['weed']:.1f}"
                                                  for c in [x['cpu_s_per_gib']] for k in ("disk", "ray", "minio"))
             + f" | {x['filer_http_mb_s']:.0f} ({x['cpu_s_per_gib']['filer']['uploader']:.1f} + "
               f"{x['cpu_s_per_gib']['filer']['weed']:.1f} CPU s/GiB) |" for x in p7["rows"]],
           ""] if "cpu_s_per_gib" in p7["rows"][0] else []),
    ]


def _p8_lines(p8: dict) -> list[str]:
    return [
        f"**P8** ({p8['settings']}), after one job of the same spec warmed the stack; seconds, median of "
        f"{len(p8['runs'])} runs (from the job's events and the loop's `progress.timeline`):",
        "",
        "| phase | s |",
        "| --- | --- |",
        *[f"| {name} | {v:.1f} |" for name, v in p8["phases_median"].items()],
        f"| **submit → first optimizer step** | **{p8['median_s']:.1f}** |",
        "",
        "Each run: " + "; ".join(f"{x['total_s']:.1f} s (1-minute load average {_fmt(x.get('load_avg_1m'), '.1f')} "
                                 "on the 2 cores)" for x in p8["runs"]) + ".",
        "",
    ]


def render(r: dict) -> str:
    p3, p7, p8 = (r.get(k) or {"error": "not measured yet"} for k in ("p3", "p7", "p8"))
    plan = r["plan"]
    worst = plan["worst"]
    ratio = p3.get("ratio") if p3.get("ratio") is not None else p3.get("ratio_vs_1worker")
    off = p3.get("ratio_offload") if p3.get("ratio_offload") is not None else p3.get("ratio_offload_vs_1worker")
    bound = "≈ " if p3.get("ratio") is None and p3.get("ratio_vs_1worker") is not None else ""
    mib = lambda name: _fmt(p3.get(name, {}).get("peak_train_mb"), ",.0f")  # noqa: E731
    denominator = (mib("zero0") if not bound
                   else _fmt(p3["zero0_1worker"]["peak_train_mb"], ",.0f") + " (ZeRO-0 with 1 worker)")
    lines = [
        "## Resources (issue 17 §3)",
        "",
        f"`python -m tests.bench.resources` ({r['machine']}, CPU only, {r['date']}): real jobs through the REST API",
        "on a fresh embedded stack (Ray, weed S3, SQLite).",
        "",
        "| measure | goal | figure | met |",
        "| --- | --- | --- | --- |",
        f"| P3 peak memory per worker, ZeRO-3 ÷ ZeRO-0 (Gemma-3-270M full, 2 workers) | ≤ {GOALS['p3']} "
        f"| {bound}{_fmt(ratio)} ({mib('zero3')} ÷ {denominator} MiB) "
        f"| {_met(None if ratio is None else ratio <= GOALS['p3'])} |",
        f"| P3 with parameters and optimizer offloaded, ÷ ZeRO-0 | ≤ {GOALS['p3']} | {bound if off else ''}{_fmt(off)} "
        f"({mib('zero3_offload')} MiB) | {_met(None if off is None else off <= GOALS['p3'])} |",
        f"| P7 checkpoint upload to weed ÷ local write + fsync (worst size and path) | ≥ {GOALS['p7']} "
        f"| {_fmt(p7.get('ratio'))} | {_met(None if 'ratio' not in p7 else p7['ratio'] >= GOALS['p7'])} |",
        f"| P8 submit → first optimizer step, warm stack (median of {len(p8.get('runs', []))}) | ≤ {GOALS['p8_s']:.0f} s "
        f"| {_fmt(p8.get('median_s'), '.1f')} s | {_met(None if 'median_s' not in p8 else p8['median_s'] <= GOALS['p8_s'])} |",
        *[f"| plan accuracy, {label} (worst measured ÷ predicted) | 0.7 – 1.3 | {_fmt(worst[q])} | {_met(_within(worst[q]))} |"
          for q, label in (("memory_mb", "memory per worker"), ("tokens", "tokens"), ("time_s", "time"))],
        "",
    ]
    for name, part, more in (("P3", p3, _p3_lines), ("P7", p7, _p7_lines), ("P8", p8, _p8_lines)):
        lines += [f"**{name}** failed: {part['error']}", ""] if "error" in part else more(part)
    lines += [
        "**Plan accuracy**: each job's plan, made just before it was submitted, measured ÷ predicted "
        "(time: driver start → finish, the span the plan's estimate covers; – where the plan had no estimate).",
        "",
        "| job | memory per worker | tokens | time |",
        "| --- | --- | --- | --- |",
        *[f"| {row['job']} | {_fmt(row['memory_mb'])} | {_fmt(row['tokens'])} | {_fmt(row['time_s'])} |"
          for row in plan["rows"]],
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    # BENCH_RESOURCES_PARTS=p8 (say) measures that part again and keeps the others' last figures
    wanted = tuple(os.environ.get("BENCH_RESOURCES_PARTS", "p8,p3,p7").split(","))
    result = {**(json.loads(OUT.read_text()) if OUT.exists() else {}), **measure(wanted)}
    result["plan"] = plan_summary(result)
    OUT.write_text(json.dumps(result, indent=2, ensure_ascii=False))
    print(render(result))
    print(f"wrote {OUT}")
