"""The pre-flight plan's arithmetic: what each ZeRO stage, tuning method and offload
changes, step counts that match the training loop, token counting."""

from __future__ import annotations

import math

import pytest
from torch.utils.data import DataLoader, DistributedSampler

from doctune.services.plans import steps_schedule
from doctune.spec import JobSpec
from doctune.tasks import get_task
from doctune.base_models import resolve_base_model
from doctune.train.plan import (ALLOCATOR_OVERHEAD, RUNTIME_MB_CPU, ModelShape, count_tokens, estimate_memory,
                                 model_shape)

SHAPE = ModelShape(params_total=100_000_000, params_trainable=100_000_000, hidden=768, layers=12, heads=12,
                   intermediate=3072, vocab=30522, lm_head=False, memory_efficient_attention=True)


def spec(**kw) -> JobSpec:
    base = {"tenant": "a", "task": "classification", "dataset": {"id": "d"}, "max_steps": 10}
    return JobSpec.model_validate({**base, **kw})


def test_zero_stages_shard_what_they_promise():
    big = ModelShape(**{**SHAPE.__dict__, "params_total": 1_000_000_000, "params_trainable": 1_000_000_000})
    # fp32 pinned: `auto` is bf16 on a CPU with bf16 units, which adds a bf16 copy of the weights
    mem = {z: estimate_memory(big, spec(num_workers=4, precision="fp32", deepspeed={"zero_stage": z}), on_gpu=False)
           for z in range(4)}
    # stage 1 shards optimizer states, 2 adds gradients, 3 adds parameters
    assert mem[1].optimizer_mb < mem[0].optimizer_mb
    assert mem[1].gradients_mb == mem[0].gradients_mb
    assert mem[2].gradients_mb < mem[1].gradients_mb
    assert mem[2].parameters_mb == mem[1].parameters_mb
    assert mem[3].parameters_mb < mem[2].parameters_mb / 3
    assert mem[3].total_mb < mem[2].total_mb < mem[1].total_mb < mem[0].total_mb
    # fp32 on the CPU: the weights plus the loaded checkpoint's pages; AdamW's two moments
    # plus its step temporaries at stage 0, all times the allocator's overhead
    assert mem[0].parameters_mb == pytest.approx(2 * 1e9 * 4 / 2**20 * ALLOCATOR_OVERHEAD)
    assert mem[0].optimizer_mb == pytest.approx(1e9 * (8 + 8) / 2**20 * ALLOCATOR_OVERHEAD)
    assert mem[0].runtime_mb == RUNTIME_MB_CPU and mem[0].total_mb == pytest.approx(mem[0].training_state_mb + RUNTIME_MB_CPU)


def test_lora_shrinks_gradients_and_optimizer_not_activations():
    lora = ModelShape(**{**SHAPE.__dict__, "params_trainable": 1_000_000})
    # ZeRO-0: no reduce bucket, whose size is capped (ZeRO-2's gradients are not proportional past the cap)
    full_m, lora_m = (estimate_memory(s, spec(deepspeed={"zero_stage": 0}), on_gpu=False) for s in (SHAPE, lora))
    assert lora_m.optimizer_mb == pytest.approx(full_m.optimizer_mb / 100)
    assert lora_m.gradients_mb == pytest.approx(full_m.gradients_mb / 100)
    assert lora_m.activations_mb == full_m.activations_mb


def test_activations_grow_with_batch_and_sequence():
    a = estimate_memory(SHAPE, spec(micro_batch_size=4, max_seq_length=128), on_gpu=False).activations_mb
    b = estimate_memory(SHAPE, spec(micro_batch_size=8, max_seq_length=128), on_gpu=False).activations_mb
    c = estimate_memory(SHAPE, spec(micro_batch_size=8, max_seq_length=256), on_gpu=False).activations_mb
    assert b == pytest.approx(2 * a, rel=0.05) and c > 1.9 * b
    decoder = ModelShape(**{**SHAPE.__dict__, "lm_head": True, "vocab": 262144})
    assert estimate_memory(decoder, spec(), on_gpu=False).activations_mb > 2 * estimate_memory(SHAPE, spec(), on_gpu=False).activations_mb


def test_offload_moves_state_to_the_host_on_gpus_only():
    plain = estimate_memory(SHAPE, spec(num_workers=2, deepspeed={"zero_stage": 2}), on_gpu=True)
    off = estimate_memory(SHAPE, spec(num_workers=2, deepspeed={"zero_stage": 2, "offload_optimizer": True}), on_gpu=True)
    assert off.accelerator_mb == pytest.approx(plain.accelerator_mb - plain.optimizer_mb)
    assert off.host_mb == pytest.approx(plain.host_mb + plain.optimizer_mb)
    assert off.total_mb == pytest.approx(plain.total_mb)
    cpu = estimate_memory(SHAPE, spec(num_workers=2, deepspeed={"zero_stage": 2, "offload_optimizer": True}), on_gpu=False)
    assert cpu.accelerator_mb == 0 and cpu.host_mb == cpu.total_mb


@pytest.mark.parametrize("n,workers,mbs,gas", [(1780, 2, 8, 4), (100, 1, 8, 1), (7, 2, 4, 4), (1001, 3, 5, 2)])
def test_step_counts_match_the_training_loop(n, workers, mbs, gas):
    s = spec(num_workers=workers, micro_batch_size=mbs, gradient_accumulation_steps=gas, epochs=2, max_steps=None)
    loader = DataLoader(list(range(n)), batch_size=mbs, sampler=DistributedSampler(list(range(n)), num_replicas=workers, rank=0))
    per_epoch = max(1, len(loader) // gas)  # what doctune.train.loop computes
    assert steps_schedule(n, s) == (per_epoch, max(1, math.ceil(2 * per_epoch)))


def test_model_shape_counts_the_parameters_the_loop_trains():
    base = resolve_base_model("all-minilm-l6-v2")
    info = {"labels": ["a", "b", "c"]}
    full = model_shape(spec(tuning={"method": "full"}), get_task("classification"), base, info)
    lora = model_shape(spec(tuning={"method": "lora", "lora": {"r": 8}}), get_task("classification"), base, info)
    assert 22_000_000 < full.params_total < 23_500_000 and full.params_trainable == full.params_total
    # LoRA r=8 on query/value of 6 layers (2 x 8 x (384 + 384) each) + the classifier head (full copy)
    assert 0 < lora.params_trainable < 0.02 * lora.params_total
    assert (full.hidden, full.layers, full.heads) == (384, 6, 12)
    # adapters on query, key, value and the three dense layers of each layer (and the pooler's
    # dense) keep their own inputs
    assert lora.adapter_inputs == (6 * (4 * 384 + 384 + 1536) + 384) // 6 and full.adapter_inputs == 0
    # attention dropout on the CPU means SDPA's math path: the seq x seq matrix is kept
    assert full.memory_efficient_attention is False


def test_count_tokens_truncates_and_flags_unknown_script():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolve_base_model("all-minilm-l6-v2"))
    en = count_tokens(["short text", "word " * 300], tok, 128)
    assert en["truncated_documents"] == 1 and en["tokens_per_epoch"] == 4 + 128
    assert en["unknown_token_fraction"] == 0
    # the English MiniLM vocabulary lacks most Chinese characters: the plan must notice
    zh = count_tokens(["合同双方应当按照约定全面履行自己的义务。北京时间周一，腾讯公司发布了第三季度财报。"], tok, 128)
    assert zh["unknown_token_fraction"] > 0.3
