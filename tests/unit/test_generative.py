"""Summarization and generation: the shared decoder-LM pieces (prompt, target-only loss,
ROUGE on characters for Chinese) and each plugin's validation and request checks."""

from __future__ import annotations

import pytest

from doctune.errors import DoctuneError
from doctune.tasks import _causal, get_task
from doctune.tasks.generation import bbc_openings, render_fields
from doctune.tasks.summarization import bbc_headlines, lead
from doctune.base_models import resolve_base_model

SUM, GEN = get_task("summarization"), get_task("generation")


@pytest.fixture(scope="module")
def gemma_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_base_model("gemma-3-270m"))


def test_rouge_scores_chinese_on_characters_and_english_on_stemmed_words():
    zh = _causal.rouge(["腾讯发布财报"], ["腾讯发布第三季度财报"])
    # 6 of the reference's 10 characters, all 6 predicted ones right: F1 = 2*0.6*1/(1.6)
    assert zh["rouge1"] == pytest.approx(0.75)
    assert _causal.rouge(["profits jumped"], ["profit jumps"])["rouge1"] == pytest.approx(1.0)
    assert _causal.rouge(["nothing alike"], ["Ad sales boost profit"])["rougeL"] == 0.0


def test_lead_takes_the_first_sentences_in_either_language():
    assert lead("One. Two! Three? Four.", 3) == "One. Two! Three?"
    assert lead("第一句。第二句！第三句。", 2) == "第一句。第二句！"


def test_summarization_records_are_checked_by_line_and_field():
    with pytest.raises(DoctuneError) as e:
        SUM.validate_record({"text": "a", "abstract": "b"}, "data line 3")
    assert e.value.field == "abstract" and "data line 3" in e.value.message
    with pytest.raises(DoctuneError) as e:
        SUM.validate_record({"text": "a doc", "summary": "  "}, "data line 4")
    assert e.value.field == "summary"


def test_generation_fields_must_be_an_object_of_plain_values():
    ok = GEN.validate_record({"fields": {"topic": "sport", "tags": ["a", 1]}, "text": "x"}, "data line 1")
    assert ok["fields"]["tags"] == ["a", 1]
    with pytest.raises(DoctuneError) as e:
        GEN.validate_record({"fields": {"price": {"eur": 3}}, "text": "x"}, "data line 2")
    assert e.value.field == "fields.price" and "data line 2" in e.value.message
    with pytest.raises(DoctuneError) as e:
        GEN.validate_record({"fields": {}, "text": "x"}, "data line 5")
    assert e.value.field == "fields"
    assert render_fields({"topic": "sport", "tags": ["a", "b"]}) == "topic: sport\ntags: a, b"


def test_an_encoder_is_refused_for_text_writing_tasks():
    with pytest.raises(DoctuneError) as e:
        SUM.check_base_model(resolve_base_model("all-minilm-l6-v2"))
    assert e.value.field == "base_model" and "gemma-3-270m" in e.value.message
    GEN.check_base_model(resolve_base_model("gemma-3-270m"))  # a decoder passes


def test_prompt_keeps_bos_and_tail_when_the_document_is_cut(gemma_tokenizer):
    tok = gemma_tokenizer
    [ex] = SUM.encode([{"text": "word " * 500, "summary": "A short headline"}], tok, {}, 64)
    assert len(ex["prompt_ids"]) + len(ex["target_ids"]) == 64
    assert ex["prompt_ids"][0] == tok.bos_token_id
    assert tok.decode(ex["prompt_ids"]).endswith("Summary:")
    assert ex["target_ids"][-1] == tok.eos_token_id and tok.decode(ex["target_ids"][:-1]) == "A short headline"
    with pytest.raises(DoctuneError) as e:
        SUM.encode([{"text": "doc", "summary": "s " * 60}], tok, {}, 16)
    assert e.value.field == "max_seq_length"


def test_target_only_logits_give_the_same_loss_as_the_full_sequence(gemma_tokenizer):
    """The window trick (left padding + logits_to_keep) must not change the loss."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.from_pretrained(resolve_base_model("gemma-3-270m"))
    cfg.update({"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                "num_key_value_heads": 1, "head_dim": 16, "layer_types": ["sliding_attention", "full_attention"]})
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    recs = [{"text": "Quarterly profits at US media giant TimeWarner jumped.", "summary": "Ad sales boost profit"},
            {"text": "The dollar has hit its highest level.", "summary": "Dollar gains on Greenspan speech today"}]
    batch = SUM.collate(SUM.encode(recs, gemma_tokenizer, {}, 48), gemma_tokenizer)
    k = batch["labels"].shape[1]
    assert batch["logits_to_keep"].tolist() == list(range(batch["input_ids"].shape[1] - k, batch["input_ids"].shape[1]))
    full_labels = torch.full(batch["input_ids"].shape, -100)
    full_labels[:, -k:] = batch["labels"]
    with torch.no_grad():
        windowed = model(**batch)
        full = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                     position_ids=batch["position_ids"], labels=full_labels)
    assert windowed.logits.shape[1] == k < full.logits.shape[1]
    assert float(windowed.loss) == pytest.approx(float(full.loss), rel=1e-5)
    nll, counts = _causal.token_nll(windowed.logits, batch["labels"])
    assert counts == [len(gemma_tokenizer(r["summary"], add_special_tokens=False)["input_ids"]) + 1 for r in recs]
    assert sum(nll) / sum(counts) == pytest.approx(float(full.loss), rel=1e-4)


def test_text_metrics_report_rouge_and_perplexity():
    import math

    m = SUM.metrics([{"text": "Ad sales boost profit", "nll": 2.0, "tokens": 2}], ["Ad sales boost profit"], {})
    assert m["rougeL"] == pytest.approx(1.0) and m["perplexity"] == pytest.approx(math.e)
    assert m["examples"] == [{"generated": "Ad sales boost profit", "reference": "Ad sales boost profit"}]


def test_lead_baselines_are_measured_on_dev_and_test():
    splits = {s: [{"text": "Profits rose. Shares fell.", "summary": "Profits rose"}] for s in ("train", "dev", "test")}
    refs = SUM.reference_baselines(splits, {})
    assert refs["lead_1"]["test"]["rouge1"] == pytest.approx(1.0) and refs["lead_3"]["dev"]["rouge1"] < 1.0
    gen = GEN.reference_baselines({s: [{"fields": {"a": "x y"}, "text": "x y"}] for s in ("dev", "test")}, {})
    assert gen["fields_as_text"]["test"]["rougeL"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    "body, field",
    [
        ({"inputs": "one doc"}, "inputs"),
        ({"inputs": ["doc"], "parameters": {"temperature": 3}}, "parameters.temperature"),
        ({"inputs": ["doc"], "parameters": {"top_p": 0}}, "parameters.top_p"),
        ({"inputs": ["doc"], "parameters": {"max_new_tokens": 0}}, "parameters.max_new_tokens"),
        ({"inputs": ["doc"], "parameters": {"beams": 2}}, "parameters.beams"),
        ({"inputs": ["x" * 20_001]}, "inputs"),
    ],
)
def test_summarization_requests_name_the_bad_field(body, field):
    with pytest.raises(DoctuneError) as e:
        SUM.parse_request(body)
    assert e.value.field == field and e.value.code == "invalid_request"


def test_generation_requests_carry_fields_and_parameters():
    [(record, params)] = GEN.parse_request({"inputs": [{"topic": "sport"}], "parameters": {"temperature": 0.7}})
    assert record == {"fields": {"topic": "sport"}} and params == {"max_new_tokens": 128, "temperature": 0.7, "top_p": 1.0}
    with pytest.raises(DoctuneError) as e:
        GEN.parse_request({"inputs": [{"topic": {"nested": 1}}]})
    assert e.value.field == "inputs[0].topic"


def test_bbc_loaders_give_real_articles():
    heads = bbc_headlines()
    assert len(heads) > 2000 and heads[0]["summary"] == "Ad sales boost Time Warner profit"
    assert all(r["summary"] not in r["text"][:10] for r in heads[:50])
    openings = bbc_openings(limit_per_class=5)
    assert len(openings) == 25 and set(openings[0]["fields"]) == {"topic", "headline"}
