"""JobSpec.precision: what ``auto`` means on a worker, a model trained under CPU bf16 autocast
(outputs in fp32, weights fp32, close to the fp32 model), and the plan's memory for it."""

from __future__ import annotations

import pytest
import torch

from doctune.train.ds_config import build_deepspeed_config
from doctune.train.plan import estimate_memory
from doctune.train.precision import cpu_has_bf16_units, resolve_precision, train_in_cpu_bf16
from tests.unit.test_plan import SHAPE, spec


def tiny_classifier():
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    return BertForSequenceClassification(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1,
                                                    num_attention_heads=2, intermediate_size=64, num_labels=3))


def test_auto_is_bf16_on_a_gpu_and_follows_the_cpu_units_elsewhere():
    assert resolve_precision("auto", use_gpu=True) == "bf16"
    assert resolve_precision("auto", use_gpu=False) == ("bf16" if cpu_has_bf16_units() else "fp32")
    assert resolve_precision("fp32", use_gpu=True) == "fp32"
    assert resolve_precision("bf16", use_gpu=False) == "bf16"


def test_an_unknown_precision_is_refused_naming_the_field():
    with pytest.raises(ValueError, match="precision"):
        spec(precision="fp8")


def test_fp32_turns_deepspeed_bf16_off_on_a_gpu():
    assert build_deepspeed_config(spec(), 1, 10, on_gpu=True)["bf16"] == {"enabled": True}
    assert "bf16" not in build_deepspeed_config(spec(precision="fp32"), 1, 10, on_gpu=True)
    assert "bf16" not in build_deepspeed_config(spec(precision="bf16"), 1, 10, on_gpu=False)  # autocast instead


def test_a_bf16_model_answers_in_fp32_close_to_the_fp32_model_and_keeps_fp32_weights():
    model = tiny_classifier().eval()
    ids = torch.randint(0, 100, (4, 16))
    with torch.no_grad():
        want = model(input_ids=ids).logits
        got = train_in_cpu_bf16(model)(input_ids=ids, labels=torch.tensor([0, 1, 2, 0]))
    assert got.logits.dtype == torch.float32 and got.loss.dtype == torch.float32
    assert torch.allclose(got.logits, want, atol=0.05)
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_a_bf16_step_gives_fp32_gradients():
    model = train_in_cpu_bf16(tiny_classifier().train())
    model(input_ids=torch.randint(0, 100, (2, 8)), labels=torch.tensor([0, 1])).loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)


def test_the_plan_counts_the_bf16_weight_copies_and_halves_activations():
    fp32 = estimate_memory(SHAPE, spec(precision="fp32"), on_gpu=False)
    bf16 = estimate_memory(SHAPE, spec(precision="bf16"), on_gpu=False)
    assert 0.4 * fp32.activations_mb < bf16.activations_mb < 0.6 * fp32.activations_mb
    # fp32 weights and the checkpoint read (8 bytes a parameter), plus a bf16 copy (2 bytes)
    assert bf16.parameters_mb == pytest.approx(1.25 * fp32.parameters_mb)


def test_apply_precision_wraps_only_a_cpu_bf16_model():
    from doctune.train.precision import apply_precision

    for requested, use_gpu in (("fp32", False), ("bf16", True), ("auto", True)):
        model = tiny_classifier()
        forward = model.forward
        assert apply_precision(model, requested, use_gpu).forward == forward
    bf16 = apply_precision(tiny_classifier(), "bf16", use_gpu=False)
    assert bf16(input_ids=torch.randint(0, 100, (2, 8))).logits.dtype == torch.float32
    assert bf16.config._attn_implementation == "eager"
