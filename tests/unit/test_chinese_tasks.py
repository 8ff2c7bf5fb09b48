"""Chinese works for every task on Gemma-3-270M, whose tokenizer covers it: each plugin
validates Chinese records, builds its model over a Gemma backbone (a shrunken copy of the
real config, with the real tokenizer), and one LoRA step has a finite loss and gradients."""

from __future__ import annotations

import math

import pytest

from doctune.spec import parse_job_spec
from doctune.tasks import get_task
from doctune.base_models import resolve_base_model
from doctune.train.tuning import apply_tuning

RECORDS = {
    "classification": [{"text": "本协议自双方签字之日起生效。", "label": "contract"},
                       {"text": "上海证券交易所今日收盘上涨。", "label": "news"}],
    "ner": [{"tokens": list("马化腾创立了腾讯"), "tags": ["B-person", "I-person", "I-person", "O", "O", "O", "B-org", "I-org"]},
            {"tokens": list("李彦宏在北京"), "tags": ["B-person", "I-person", "I-person", "O", "B-loc", "I-loc"]}],
    "summarization": [{"text": "北京时间周一，腾讯公司发布了第三季度财报。营收同比增长百分之十。", "summary": "腾讯发布财报"},
                      {"text": "气象台发布暴雨预警，提醒市民注意出行安全。", "summary": "暴雨预警"}],
    "generation": [{"fields": {"城市": "北京", "天气": "晴"}, "text": "北京今天晴。"},
                   {"fields": {"城市": "上海", "天气": "小雨"}, "text": "上海今天有小雨。"}],
    "retrieval": [{"query": "腾讯财报", "document": "腾讯公司发布了第三季度财报。"},
                  {"query": "暴雨预警", "document": "气象台发布暴雨预警。"}],
}


@pytest.fixture(scope="module")
def tiny_gemma(tmp_path_factory):
    """Gemma-3's real tokenizer and architecture, two narrow layers: fast to build and run."""
    from transformers import AutoConfig, AutoTokenizer

    base = resolve_base_model("gemma-3-270m")
    out = tmp_path_factory.mktemp("tiny-gemma")
    cfg = AutoConfig.from_pretrained(base)
    cfg.update({"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                "num_key_value_heads": 1, "head_dim": 16, "layer_types": ["sliding_attention", "full_attention"]})
    cfg.save_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(base)
    tokenizer.save_pretrained(out)
    return str(out), tokenizer


@pytest.mark.parametrize("task", sorted(RECORDS))
def test_a_lora_step_on_chinese_records(task, tiny_gemma):
    import torch

    path, tokenizer = tiny_gemma
    plugin = get_task(task)
    records = [plugin.validate_record(r, f"data line {i}") for i, r in enumerate(RECORDS[task], 1)]
    info = plugin.check_splits({"train": records, "dev": records, "test": records})
    spec = parse_job_spec({"tenant": "t", "task": task, "dataset": {"id": "d"}, "max_steps": 1, "base_model": "gemma-3-270m",
                           "tuning": {"method": "lora", "lora": {"r": 2, "alpha": 4, "target_modules": ["q_proj", "v_proj"]}}})
    torch.manual_seed(0)
    model = apply_tuning(plugin.build_model(path, info, pretrained=False), spec, plugin, 1)
    batch = plugin.collate(plugin.encode(records, tokenizer, info, 48), tokenizer)
    assert tokenizer.unk_token_id not in batch[next(k for k in batch if k.endswith("input_ids"))].flatten().tolist()
    loss = model(**batch).loss
    loss.backward()
    assert math.isfinite(loss.item())
    grads = [p.grad for n, p in model.named_parameters() if "lora_" in n and p.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads)


def test_gemma_token_classifier_starts_from_the_pretrained_backbone():
    """transformers has no Gemma-3 token-classification class; ours must load the real weights."""
    import torch
    from safetensors import safe_open

    base = resolve_base_model("gemma-3-270m")
    ner = get_task("ner")
    info = ner.check_splits({s: RECORDS["ner"] for s in ("train", "dev", "test")})
    model = ner.build_model(base, info)
    assert type(model).__name__ == "Gemma3TextForTokenClassification"
    with safe_open(f"{base}/model.safetensors", "pt") as f:
        name = next(k for k in f.keys() if k.endswith("layers.0.self_attn.q_proj.weight"))
        assert torch.equal(model.model.layers[0].self_attn.q_proj.weight, f.get_tensor(name))


def _lora_targets(model) -> set[str]:
    return {n.split(".lora_A.")[0].split(".")[-1] for n, _ in model.named_parameters() if ".lora_A." in n}


def test_lora_targets_follow_the_base_model_when_the_spec_names_none(tiny_gemma):
    """A spec that changes only base_model still trains: LoRA's default targets are the base
    model's attention projections (q/k/v/o_proj on Gemma, query/key/value/dense on MiniLM)."""
    path, _ = tiny_gemma
    plugin = get_task("ner")
    info = plugin.check_splits({s: RECORDS["ner"] for s in ("train", "dev", "test")})
    gemma = parse_job_spec({"tenant": "t", "task": "ner", "dataset": {"id": "d"}, "max_steps": 1, "base_model": "gemma-3-270m"})
    assert gemma.tuning.method == "lora" and gemma.tuning.lora.target_modules is None
    model = apply_tuning(plugin.build_model(path, info, pretrained=False), gemma, plugin, 1)
    assert _lora_targets(model) == {"q_proj", "k_proj", "v_proj", "o_proj"}

    minilm = gemma.model_copy(update={"base_model": "all-minilm-l6-v2"})
    model = apply_tuning(plugin.build_model(resolve_base_model("all-minilm-l6-v2"), info, pretrained=False), minilm,
                         plugin, 1)
    assert _lora_targets(model) == {"query", "key", "value", "dense"}


def test_all_linear_adapts_the_feed_forward_layers_too_but_not_the_head(tiny_gemma):
    path, _ = tiny_gemma
    plugin = get_task("ner")
    info = plugin.check_splits({s: RECORDS["ner"] for s in ("train", "dev", "test")})
    spec = parse_job_spec({"tenant": "t", "task": "ner", "dataset": {"id": "d"}, "max_steps": 1, "base_model": "gemma-3-270m",
                           "tuning": {"method": "lora", "lora": {"target_modules": ["all-linear"]}}})
    model = apply_tuning(plugin.build_model(path, info, pretrained=False), spec, plugin, 1)
    assert _lora_targets(model) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert any("modules_to_save" in n and "score" in n for n, p in model.named_parameters() if p.requires_grad)


def test_gemma_ner_reads_the_words_after_each_token(tiny_gemma):
    """Token classification on a decoder drops the causal mask: the first character's tag
    scores change when only the last character changes."""
    import torch

    path, tokenizer = tiny_gemma
    plugin = get_task("ner")
    info = plugin.check_splits({s: RECORDS["ner"] for s in ("train", "dev", "test")})
    torch.manual_seed(0)
    model = plugin.build_model(path, info, pretrained=False).eval()
    assert model.config.use_bidirectional_attention
    a, b = (tokenizer(t, return_tensors="pt") for t in ("李彦宏在北京", "李彦宏在南京"))
    with torch.inference_mode():
        first_a, first_b = model(**a).logits[0, 1], model(**b).logits[0, 1]
    assert not torch.allclose(first_a, first_b)
