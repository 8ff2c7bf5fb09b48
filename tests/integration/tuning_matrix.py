"""Run every tuning method under every ZeRO stage for a few optimizer steps with
gradient accumulation, in one process (DeepSpeed over gloo, world size 1), and print
the loss curve of each as JSON. Used by test_tuning_methods.py; run it alone with
``python -m tests.integration.tuning_matrix``.

The pieces are the training loop's own: the task plugin, ``apply_tuning`` and
``build_deepspeed_config``; only Ray Train is left out, so 24 combinations fit in a
couple of minutes on 2 cores.
"""

from __future__ import annotations

import json
import os
import sys

METHODS = {  # method -> (tuning settings, learning rate)
    "full": ({"method": "full"}, 5e-5),
    "lora": ({"method": "lora", "lora": {"r": 8, "target_modules": ["query", "value"]}}, 2e-3),
    "adalora": ({"method": "adalora", "adalora": {"init_r": 8, "target_r": 4, "target_modules": ["query", "value"]}}, 2e-3),
    "prefix": ({"method": "prefix", "prefix": {"num_virtual_tokens": 8}}, 1e-2),
    "ia3": ({"method": "ia3"}, 1e-2),
    "freeze": ({"method": "freeze", "freeze": {"trainable_layers": 1}}, 1e-4),
}
STEPS, GAS, MBS, SEQ = 6, 2, 4, 48


def run(method: str, stage: int, records, info, tokenizer, base) -> dict:
    import deepspeed
    import torch

    from doctune.spec import JobSpec
    from doctune.tasks import get_task
    from doctune.train.ds_config import build_deepspeed_config, zero3_context
    from doctune.train.tuning import adalora_step, apply_tuning

    tuning, lr = METHODS[method]
    spec = JobSpec.model_validate({
        "tenant": "t", "task": "classification", "dataset": {"id": "d"}, "tuning": tuning,
        "deepspeed": {"zero_stage": stage}, "micro_batch_size": MBS, "gradient_accumulation_steps": GAS,
        "max_steps": STEPS, "learning_rate": lr, "warmup_ratio": 0.0, "max_seq_length": SEQ, "num_workers": 1,
    })
    torch.manual_seed(0)
    plugin = get_task("classification")
    ds_config = build_deepspeed_config(spec, 1, STEPS)
    hf_ds = zero3_context(ds_config)  # noqa: F841 - kept alive while the model is built
    model = apply_tuning(plugin.build_model(base, info), spec, plugin, STEPS)
    size = lambda p: getattr(p, "ds_numel", p.numel())  # noqa: E731 - ZeRO-3 parameters are partitioned
    trainable = sum(size(p) for p in model.parameters() if p.requires_grad)
    total = sum(size(p) for p in model.parameters())
    engine, *_ = deepspeed.initialize(model=model, model_parameters=[p for p in model.parameters() if p.requires_grad],
                                      config=ds_config, dist_init_required=False)
    examples = plugin.encode(records, tokenizer, info, SEQ)
    batches = [plugin.collate(examples[i : i + MBS], tokenizer) for i in range(0, GAS * MBS, MBS)]
    losses = []
    engine.train()
    while engine.global_steps < STEPS:
        step_loss = 0.0
        for batch in batches:  # the same GAS micro-batches every step: the loss must fall
            loss = engine(**batch).loss
            engine.backward(loss)
            if method == "adalora" and engine.is_gradient_accumulation_boundary():
                adalora_step(engine.module, engine.global_steps)
            engine.step()
            step_loss += float(loss) / GAS
        losses.append(step_loss)
    return {"method": method, "stage": stage, "losses": losses, "trainable": trainable, "total": total}


def main() -> None:
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": os.environ.get("MATRIX_PORT", "29533"),
                       "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1"})
    import logging

    import deepspeed
    import torch
    from transformers import AutoTokenizer

    from doctune.corpora import load_bbc_news
    from doctune.base_models import resolve_base_model

    logging.getLogger("DeepSpeed").setLevel(logging.ERROR)
    torch.set_num_threads(int(os.environ.get("MATRIX_THREADS", "2")))
    deepspeed.init_distributed("gloo")
    base = resolve_base_model("all-minilm-l6-v2")
    tokenizer = AutoTokenizer.from_pretrained(base)
    records = load_bbc_news(limit_per_class=2)[: GAS * MBS]
    info = {"labels": sorted({r["label"] for r in records})}
    methods = sys.argv[1].split(",") if len(sys.argv) > 1 else list(METHODS)
    for method in methods:
        for stage in range(4):
            print("RESULT " + json.dumps(run(method, stage, records, info, tokenizer, base)), flush=True)


if __name__ == "__main__":
    main()
