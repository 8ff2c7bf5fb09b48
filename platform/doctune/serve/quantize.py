"""int8 dynamic quantization for CPU serving, and what it costs in accuracy.

A deployment with ``quantize: int8`` is refused at creation
(``doctune.tasks.check_can_serve``, called by ``doctune.services.deployments``) when its
task's accuracy change cannot be measured honestly: the task plugin says so
(``quantizable``), or it is not evaluated by one forward pass. Otherwise ``ray_jobs.deploy``
calls :func:`measure_deployment` before ``serve.run``: the registered model is
evaluated on its own dataset's test split as exported (fp32) and quantized, on the
CPU, through the task plugin's encode/collate/predictions/metrics, and the record
is stored on the deployment (the API shows it as ``quantization``). Each replica
(``doctune.serve.app``) then calls :func:`quantize_int8` on the model it loaded.
"""

from __future__ import annotations

import json
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from doctune.errors import DoctuneError
from doctune.store.paths import scratch_dir
from doctune.tasks import check_can_serve, get_task

__all__ = [
    "EVAL_BATCH_SIZE",
    "evaluate_model",
    "measure_deployment",
    "measure_quantization",
    "quantize_int8",
]

EVAL_BATCH_SIZE = 16


def quantize_int8(model: Any, inplace: bool = False) -> Any:
    """``model`` with every ``torch.nn.Linear`` replaced by an int8 dynamically quantized one
    (weights int8 with one scale per output channel, activations quantized per batch); CPU only.
    Per-channel scales kept BBC accuracy within 0.01 of fp32 where one scale per tensor lost 0.011, at
    the same speed (docs/benchmarks.md, "Serving backends"). An unmerged LoRA-style adapter
    (exported with merge_adapter: false) is merged first: peft's adapter layers read their
    linear layers' float weights, which a quantized layer no longer has. ``inplace=False``
    leaves ``model`` as it was."""
    import copy

    import torch

    if not isinstance(model, torch.nn.Module):
        raise DoctuneError(f"int8 quantization needs a torch module; this task serves a {type(model).__name__}. "
                           "Deploy with quantize: none", "invalid_spec", field="quantize")
    if not inplace:
        model = copy.deepcopy(model)
    config = getattr(model, "active_peft_config", None)
    if config is not None and not config.is_prompt_learning:  # prefix tuning keeps its adapter: it has no linear layers
        model = model.merge_and_unload()
    with warnings.catch_warnings():
        # torch.ao.quantization is deprecated in favour of torchao, and still torch's eager CPU path
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*")
        qd = torch.ao.quantization
        return qd.quantize_dynamic(model, {torch.nn.Linear: qd.per_channel_dynamic_qconfig}, dtype=torch.qint8,
                                   inplace=True)


def evaluate_model(model: Any, plugin: Any, tokenizer: Any, examples: list[dict[str, Any]], info: dict[str, Any],
                   batch_size: int = EVAL_BATCH_SIZE) -> dict[str, Any]:
    """The plugin's metrics for ``model`` on encoded ``examples``, on the CPU, without DeepSpeed."""
    import torch

    predicted: list[Any] = []
    gold: list[Any] = []
    model.eval()
    with torch.inference_mode():
        for i in range(0, len(examples), batch_size):
            batch = plugin.collate(examples[i : i + batch_size], tokenizer)
            pred, g = plugin.predictions(model(**batch), batch)
            predicted += pred
            gold += g
    return plugin.metrics(predicted, gold, info)


def measure_quantization(model: Any, plugin: Any, tokenizer: Any, records: list[dict[str, Any]], info: dict[str, Any],
                         max_len: int, batch_size: int = EVAL_BATCH_SIZE) -> dict[str, Any]:
    """Evaluate ``model`` on ``records`` as it is and int8-quantized (a copy; ``model`` is left as
    it was); returns ``{"metric", "fp32", "int8", "change", "examples", "seconds"}`` with the
    plugin's primary metric, ``change`` = int8 - fp32 and ``seconds`` for both evaluations."""
    check_can_serve(plugin, quantize="int8")
    if not records:
        raise DoctuneError("the model's dataset has an empty test split, so the accuracy change of int8 cannot be "
                           "measured; deploy with quantize: none", "invalid_spec", field="quantize")
    began = time.monotonic()
    examples = plugin.encode(records, tokenizer, info, max_len)
    metric = plugin.primary_metric
    fp32 = float(evaluate_model(model, plugin, tokenizer, examples, info, batch_size)[metric])
    int8 = float(evaluate_model(quantize_int8(model), plugin, tokenizer, examples, info, batch_size)[metric])
    return {"metric": metric, "fp32": fp32, "int8": int8, "change": int8 - fp32, "examples": len(examples),
            "seconds": round(time.monotonic() - began, 3)}


def measure_deployment(p: Any, model: Any) -> dict[str, Any]:
    """:func:`measure_quantization` for a registered model (a ``Model`` row) on the test split of
    the dataset its job trained on (Model.job_id -> Job.spec.dataset.id -> Dataset.uri), at the
    sequence length it serves with."""
    from transformers import AutoTokenizer

    from doctune.store.db import Dataset, Job

    plugin = get_task(model.task)
    with p.db.session() as s:
        job = s.get(Job, model.job_id)
        dataset_id = ((job.spec or {}).get("dataset") or {}).get("id") if job is not None else None
        dataset = s.get(Dataset, dataset_id) if dataset_id else None
    if dataset is None:
        raise DoctuneError(f"model {model.id}'s dataset ({dataset_id or 'unknown'}) is no longer stored, so the "
                           "accuracy change of int8 cannot be measured; deploy with quantize: none",
                           "invalid_spec", field="quantize")
    store = p.objects
    blob = store.get_bytes(f"{store.key_of(dataset.uri)}/test.jsonl")
    records = [json.loads(line) for line in blob.decode().splitlines() if line.strip()]
    with tempfile.TemporaryDirectory(prefix="doctune-quantize-", dir=scratch_dir()) as tmp:
        store.download_dir(store.key_of(model.uri), Path(tmp))
        meta = json.loads((Path(tmp) / "doctune.json").read_text())
        tokenizer = AutoTokenizer.from_pretrained(tmp)
        return measure_quantization(plugin.load_model(tmp), plugin, tokenizer, records, dataset.info or {},
                                    int(meta.get("max_seq_length", 256)))
