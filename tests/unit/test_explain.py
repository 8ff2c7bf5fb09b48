"""The classification endpoint's ``explain: true``, run in-process on the bundled MiniLM (no Ray): a head
fitted in seconds on BBC News answers a clear sport article "sport", and the words that drove it are
sport words; every word of the text gets one attribution with its span (Chinese: one per character);
the request option is checked like every other field; an int8 model is explained by occlusion; and an
explanation costs a bounded number of plain predictions (the measured factor is in docs/benchmarks.md,
from ``tests/bench/explain.py``; this bound is deliberately loose)."""

from __future__ import annotations

import statistics
import time
from functools import cache

import pytest

from doctune.errors import DoctuneError
from doctune.tasks import get_task
from doctune.tasks.classification import ExplainedText
from doctune.tasks.classification.explain import integrated_gradients, occlusion

PLUGIN = get_task("classification")
SPORT = ("British sprinter Jones won the 200m gold medal at the European Indoor Championships, breaking the world "
         "record in the final race.")
SPORT_WORDS = {"sprinter", "won", "200m", "gold", "medal", "indoor", "championships", "breaking", "world", "record",
               "final", "race"}
COST_BOUND = 60  # explain / plain, per document: loose on purpose (a shared 2-core machine); the bench measures it


@cache
def fitted():
    """(model, tokenizer, info): MiniLM with its pooler and classifier head fitted on the [CLS] states of
    40 BBC articles per class (the encoder frozen: seconds on a CPU), enough for clear articles. (The
    corpus's first 40 sport articles are athletics, hence the test's article.)"""
    import torch
    from transformers import AutoTokenizer

    from doctune.base_models import resolve_base_model
    from doctune.corpora import load_bbc_news

    torch.manual_seed(0)
    records = load_bbc_news(limit_per_class=40)
    info = {"labels": sorted({r["label"] for r in records}), "max_seq_length": 64}
    path = resolve_base_model("all-minilm-l6-v2")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = PLUGIN.build_model(path, info).eval()
    enc = tokenizer([r["text"] for r in records], truncation=True, max_length=64, padding=True, return_tensors="pt")
    with torch.no_grad():
        cls = model.bert(**enc).last_hidden_state[:, :1]
    gold = torch.tensor([info["labels"].index(r["label"]) for r in records])
    head = torch.nn.Sequential(model.bert.pooler, model.classifier)
    opt = torch.optim.AdamW(head.parameters(), lr=3e-3, weight_decay=0.1)
    for _ in range(100):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(head(cls), gold).backward()
        opt.step()
    return model, tokenizer, info


def _explain(texts: list[str]) -> list[dict]:
    model, tokenizer, info = fitted()
    return PLUGIN.predict(model, tokenizer, PLUGIN.parse_request({"inputs": texts, "explain": True}), info, 64)


def test_a_sport_article_is_explained_by_sport_words():
    [pred] = _explain([SPORT])
    assert pred["label"] == "sports", pred["probabilities"]
    words = pred["attributions"]
    top = [w["word"].lower() for w in sorted(words, key=lambda w: -w["score"])[:5]]
    assert len(SPORT_WORDS.intersection(top)) >= 2, top
    assert max(abs(w["score"]) for w in words) == pytest.approx(1.0)


def test_every_word_gets_one_attribution_with_its_span():
    text = "Shares in the bank fell, after profits missed forecasts."
    [pred] = _explain([text])
    words = pred["attributions"]
    assert [w["word"] for w in words] == ["Shares", "in", "the", "bank", "fell", ",", "after", "profits", "missed",
                                          "forecasts", "."]
    assert all(text[w["start"]:w["end"]] == w["word"] for w in words)
    assert all(-1 <= w["score"] <= 1 for w in words)


def test_chinese_text_is_explained_character_by_character():
    text = "曼联在比赛中进了两个球"
    [pred] = _explain([text])
    assert "".join(w["word"] for w in pred["attributions"]) == text
    assert all(w["end"] - w["start"] == 1 for w in pred["attributions"])


def test_only_inputs_that_ask_are_explained_and_the_answer_is_unchanged():
    model, tokenizer, info = fitted()
    plain = PLUGIN.predict(model, tokenizer, PLUGIN.parse_request({"text": SPORT}), info, 64)
    [explained] = _explain([SPORT])
    assert "attributions" not in plain[0]
    assert explained["label"] == plain[0]["label"]
    assert explained["score"] == pytest.approx(plain[0]["score"], abs=1e-5)
    mixed = PLUGIN.predict(model, tokenizer, [SPORT, ExplainedText("The match ended.")], info, 64)
    assert "attributions" not in mixed[0] and mixed[1]["attributions"]


@pytest.mark.parametrize("body", [{"text": "x", "explain": "yes"}, {"inputs": ["x"], "explain": 1},
                                  {"inputs": ["x"], "explain": None}])
def test_explain_must_be_a_boolean(body):
    with pytest.raises(DoctuneError) as e:
        PLUGIN.parse_request(body)
    assert e.value.field == "explain" and e.value.code == "invalid_request"


def test_an_int8_model_is_explained_by_occlusion_and_agrees_on_the_top_words():
    from doctune.serve.quantize import quantize_int8

    model, tokenizer, info = fitted()
    label = info["labels"].index("sports")
    [by_ig] = integrated_gradients(model, tokenizer, [SPORT], [label], 64)
    [by_occlusion] = occlusion(model, tokenizer, [SPORT], [label], 64)
    assert [w["word"] for w in by_ig] == [w["word"] for w in by_occlusion]
    top = {w["word"].lower() for w in sorted(by_occlusion, key=lambda w: -w["score"])[:5]}
    assert SPORT_WORDS & top, top
    [pred] = PLUGIN.predict(quantize_int8(model, inplace=False), tokenizer, [ExplainedText(SPORT)], info, 64)
    assert pred["label"] == "sports" and len(pred["attributions"]) == len(by_ig)


def _median_s(fn, reps: int = 3) -> float:
    times = []
    for _ in range(reps):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def test_an_explanation_costs_a_bounded_number_of_predictions():
    model, tokenizer, info = fitted()
    plain = _median_s(lambda: PLUGIN.predict(model, tokenizer, [SPORT], info, 64))
    explained = _median_s(lambda: PLUGIN.predict(model, tokenizer, [ExplainedText(SPORT)], info, 64))
    assert explained <= COST_BOUND * plain, (explained, plain)
