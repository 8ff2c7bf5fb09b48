"""Shared by task plugins that fine-tune a decoder LM to write text (summaries, documents).

A record becomes a prompt (the plugin's ``prompt_parts``: a head, a body that may be
cut to fit, a tail) followed by the target text and the end-of-sequence token. The
loss is on the target tokens only, and only their logits are computed: batches are
left-padded so every target sits at the end of its row, and ``logits_to_keep``
selects the last positions (a 262k-token vocabulary makes full-sequence logits the
largest cost of a small decoder). Evaluation generates from the prompt alone and
scores the text with ROUGE (characters for Chinese, stemmed words otherwise);
perplexity comes from the same forward pass as the loss.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field

from doctune.errors import DoctuneError
from doctune.tasks._records import HAN

IGNORE = -100
CJK = re.compile(f"[{HAN}]")
_ZH_TOKEN = re.compile(f"[{HAN}]|[a-z0-9]+")
_SENTENCE = re.compile(r"(?<=[.!?。！？])\s+|(?<=[。！？])")
MAX_INPUTS_CHARS = 20_000


def lead(text: str, n: int) -> str:
    """The first ``n`` sentences of ``text`` (Chinese sentences end with 。！？ and join without spaces)."""
    sentences = [s.strip() for s in _SENTENCE.split(text.strip()) if s.strip()]
    return ("" if is_chinese(text) else " ").join(sentences[:n])


def is_chinese(text: str) -> bool:
    """Text whose words are characters: any CJK character decides (a Chinese headline may hold Latin names)."""
    return bool(CJK.search(text))


class _CharTokenizer:
    """rouge-score tokenizer for Chinese: each CJK character a token, Latin words and numbers whole."""

    def tokenize(self, text: str) -> list[str]:
        return _ZH_TOKEN.findall(text.lower())


def rouge(predicted: list[str], references: list[str], kinds: tuple[str, ...] = ("rouge1", "rouge2", "rougeL")) -> dict[str, float]:
    """Mean ROUGE F-measures (0..1); Chinese references are scored on characters."""
    from rouge_score import rouge_scorer

    words = rouge_scorer.RougeScorer(list(kinds), use_stemmer=True)
    chars = rouge_scorer.RougeScorer(list(kinds), tokenizer=_CharTokenizer())
    totals = dict.fromkeys(kinds, 0.0)
    for p, r in zip(predicted, references):
        scores = (chars if is_chinese(r) else words).score(r, p)
        for k in kinds:
            totals[k] += scores[k].fmeasure
    n = max(len(references), 1)
    return {k: v / n for k, v in totals.items()}


def check_causal_lm(base_path: str, task: str) -> None:
    """Refuse an encoder (e.g. MiniLM) for a text-writing task, naming the field and the fix."""
    config = json.loads((Path(base_path) / "config.json").read_text())
    archs = config.get("architectures") or []
    if not any(a.endswith(("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")) for a in archs):
        raise DoctuneError(
            f"task {task!r} needs a decoder language model that writes text; base_model is a "
            f"{'/'.join(archs) or config.get('model_type', 'non-generative')} encoder. Use base_model "
            "'gemma-3-270m' (English and Chinese)",
            "invalid_spec",
            field="base_model",
        )


def build_causal_lm(base_path: str, task: str, pretrained: bool) -> Any:
    import transformers

    check_causal_lm(base_path, task)
    if not pretrained:
        return transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.from_pretrained(base_path))
    return transformers.AutoModelForCausalLM.from_pretrained(base_path)


def load_causal_lm(path: str) -> Any:
    """An exported model for serving: a merged model, or an unmerged adapter over its base."""
    if (Path(path) / "adapter_config.json").exists():
        from peft import AutoPeftModelForCausalLM

        return AutoPeftModelForCausalLM.from_pretrained(path).eval()
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path).eval()


def encode_prompt(tokenizer: Any, head: str, body: str, tail: str, budget: int) -> list[int]:
    """Token ids of ``head + body + tail`` (with the tokenizer's BOS), the body cut at the end to fit ``budget``."""
    # always lead with BOS: decoders like Gemma need it, and some converted tokenizers do not add it themselves
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    h = tokenizer(head, add_special_tokens=False)["input_ids"] if head else []
    t = tokenizer(tail, add_special_tokens=False)["input_ids"]
    room = budget - len(bos) - len(h) - len(t)
    if room < 1:
        raise DoctuneError(f"max_seq_length {budget} leaves no room for the document after the prompt and the "
                           f"target; raise max_seq_length", "invalid_spec", field="max_seq_length")
    b = tokenizer(body, add_special_tokens=False)["input_ids"][:room]
    return bos + h + b + t


def encode_examples(records: list[dict[str, Any]], tokenizer: Any, max_len: int, max_target: int,
                    parts: Any, target: Any) -> list[dict[str, Any]]:
    """``parts(record) -> (head, body, tail)``, ``target(record) -> str``: prompt ids, target ids (+ EOS), reference text."""
    out = []
    for r in records:
        ref = target(r)
        tgt = tokenizer(ref, add_special_tokens=False)["input_ids"][:max_target] + [tokenizer.eos_token_id]
        out.append({"prompt_ids": encode_prompt(tokenizer, *parts(r), budget=max_len - len(tgt)), "target_ids": tgt,
                    "reference": ref})
    return out


def _left_pad(rows: list[list[int]], pad: int) -> tuple[Any, Any, Any]:
    import torch

    width = max(len(r) for r in rows)
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], dtype=torch.long)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], dtype=torch.long)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # real tokens count from 0 whatever the padding
    return ids, mask, positions


def collate(batch: list[dict[str, Any]], tokenizer: Any) -> dict[str, Any]:
    """Left-padded prompt + target rows; labels and logits only for the last K positions, where
    K = longest target + 1 (the last prompt token predicts the first target token)."""
    import torch

    rows = [b["prompt_ids"] + b["target_ids"] for b in batch]
    ids, mask, positions = _left_pad(rows, tokenizer.pad_token_id)
    width, k = ids.shape[1], max(len(b["target_ids"]) for b in batch) + 1
    labels = torch.full((len(batch), k), IGNORE, dtype=torch.long)
    for i, b in enumerate(batch):
        n = len(b["target_ids"])
        labels[i, k - n :] = torch.tensor(b["target_ids"])
    return {"input_ids": ids, "attention_mask": mask, "position_ids": positions, "labels": labels,
            "logits_to_keep": torch.arange(width - k, width)}


def token_nll(logits: Any, labels: Any) -> tuple[list[float], list[int]]:
    """Per-example summed negative log-likelihood of the target tokens, and their count
    (logits at window position j predict the label at j + 1)."""
    import torch.nn.functional as F

    shift_logits, shift_labels = logits[:, :-1].float(), labels[:, 1:]
    nll = F.cross_entropy(shift_logits.transpose(1, 2), shift_labels, ignore_index=IGNORE, reduction="none")
    counts = (shift_labels != IGNORE).sum(-1)
    return nll.sum(-1).tolist(), counts.tolist()


def generate(model: Any, tokenizer: Any, prompts: list[list[int]], *, max_new_tokens: int, temperature: float = 0.0,
             top_p: float = 1.0, synced: bool = False) -> list[str]:
    """Continue each prompt; greedy when ``temperature`` is 0. ``synced``: every rank calls this together
    (ZeRO-3 gathers parameters collectively, so ranks keep generating until all are done)."""
    import torch

    ids, mask, _ = _left_pad(prompts, tokenizer.pad_token_id)
    device = next(model.parameters()).device
    sample = temperature > 0
    kw: dict[str, Any] = {"do_sample": sample, "max_new_tokens": max_new_tokens, "pad_token_id": tokenizer.pad_token_id,
                          "eos_token_id": tokenizer.eos_token_id}
    if sample:
        kw.update(temperature=temperature, top_p=top_p, top_k=0)
    else:
        kw.update(temperature=None, top_p=None, top_k=None)
    if synced:
        kw["synced_gpus"] = True
    with torch.no_grad():
        out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), **kw)
    return [tokenizer.decode(row[ids.shape[1] :], skip_special_tokens=True).strip() for row in out.cpu()]


def evaluate_batch(engine: Any, items: list[dict[str, Any]], tokenizer: Any, max_new_tokens: int,
                   synced: bool) -> tuple[list[dict[str, Any]], list[str], float]:
    """Loss and per-example likelihood from one forward pass, then greedy generation from the prompts,
    up to ``max_new_tokens`` and no further than the batch's longest reference plus 8 tokens (an
    untuned model rarely stops by itself, and decoding is most of an evaluation's time)."""
    batch = {k: v.to(engine.device) for k, v in collate(items, tokenizer).items()}
    out = engine(**batch)
    nll, counts = token_nll(out.logits, batch["labels"])
    budget = min(max_new_tokens, max(len(it["target_ids"]) for it in items) + 8)
    texts = generate(engine.module, tokenizer, [it["prompt_ids"] for it in items], max_new_tokens=budget, synced=synced)
    preds = [{"text": t, "nll": a, "tokens": c} for t, a, c in zip(texts, nll, counts)]
    return preds, [it["reference"] for it in items], float(out.loss)


def text_metrics(predicted: list[dict[str, Any]], gold: list[str]) -> dict[str, Any]:
    """ROUGE-1/2/L of the generated text and the perplexity of the reference text."""
    texts = [p["text"] for p in predicted]
    tokens = sum(p["tokens"] for p in predicted)
    out: dict[str, Any] = rouge(texts, gold)
    out["perplexity"] = math.exp(min(sum(p["nll"] for p in predicted) / max(tokens, 1), 50.0))
    out["examples"] = [{"generated": t, "reference": g} for t, g in list(zip(texts, gold))[:5]]
    return out


# -- serving ------------------------------------------------------------------
# the request schema of the ``parameters`` that parse_parameters reads (see each plugin's schemas.py)
Temperature = Annotated[float, Field(ge=0, le=2, description="0 (the default) writes greedily, the most likely "
                                                              "token each time; above 0 (up to 2) samples, more "
                                                              "varied as it rises. Typical 0.7.")]
TopP = Annotated[float, Field(gt=0, le=1, description="Nucleus sampling when temperature > 0: sample from the "
                                                       "smallest set of tokens whose probability reaches top_p "
                                                       "(0 < top_p <= 1; 1 keeps every token).")]
PARAMETERS = "Optional; the same for every input of the request."


def parse_parameters(body: dict[str, Any], default_new_tokens: int) -> dict[str, Any]:
    """``parameters``: max_new_tokens (1..512), temperature (0 = greedy, up to 2), top_p (0 < p <= 1)."""
    params = body.get("parameters", {})
    if not isinstance(params, dict):
        raise DoctuneError('"parameters" must be an object, e.g. {"max_new_tokens": 32, "temperature": 0.7, "top_p": 0.9}',
                           "invalid_request", field="parameters")
    unknown = sorted(set(params) - {"max_new_tokens", "temperature", "top_p"})
    if unknown:
        raise DoctuneError(f"unknown parameter(s) {unknown}; allowed: max_new_tokens, temperature, top_p",
                           "invalid_request", field=f"parameters.{unknown[0]}")
    n = params.get("max_new_tokens", default_new_tokens)
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 512:
        raise DoctuneError(f"max_new_tokens must be an integer from 1 to 512; got {n!r}", "invalid_request",
                           field="parameters.max_new_tokens")
    t = params.get("temperature", 0.0)
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 <= t <= 2:
        raise DoctuneError(f"temperature must be a number from 0 (greedy) to 2; got {t!r}", "invalid_request",
                           field="parameters.temperature")
    p = params.get("top_p", 1.0)
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p <= 1:
        raise DoctuneError(f"top_p must be a number in (0, 1]; got {p!r}", "invalid_request", field="parameters.top_p")
    return {"max_new_tokens": n, "temperature": float(t), "top_p": float(p)}


def predict(model: Any, tokenizer: Any, inputs: list[tuple[Any, dict[str, Any]]], max_len: int,
            parts: Any, key: str) -> list[dict[str, Any]]:
    """``inputs``: (record, parameters) pairs; requests with the same parameters are generated together."""
    groups: dict[tuple, list[int]] = {}
    for i, (_, params) in enumerate(inputs):
        groups.setdefault(tuple(sorted(params.items())), []).append(i)
    out: list[dict[str, Any]] = [{} for _ in inputs]
    for params_key, idx in groups.items():
        params = dict(params_key)
        prompts = [encode_prompt(tokenizer, *parts(inputs[i][0]), budget=max(max_len - params["max_new_tokens"], max_len // 2))
                   for i in idx]
        texts = generate(model, tokenizer, prompts, **params)
        for i, text in zip(idx, texts):
            out[i] = {key: text}
    return out


class CausalTextTask:
    """The model half of a text-writing plugin; a subclass sets ``name``, ``max_target_tokens``
    and how a record becomes (prompt parts, target text), and adds data checks and serving."""

    name: str
    max_target_tokens: int
    peft_task_type = "CAUSAL_LM"
    primary_metric = "rougeL"
    metric_names = ("rougeL", "rouge1", "rouge2", "perplexity", "loss")
    metric_labels = {"rougeL": "ROUGE-L", "rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "perplexity": "perplexity",
                     "loss": "loss"}
    baseline_kind = "untuned_base_model"
    # serving capabilities (see doctune.tasks.check_can_serve)
    multiplexable = True
    multiplex_refusal = None
    quantizable = False
    quantize_refusal = ("they are evaluated by generating text (the plugin's evaluate_batch hook), not by one "
                        "forward pass, so the accuracy change of int8 is not measured for them")

    def parts(self, record: dict[str, Any]) -> tuple[str, str, str]:
        """(head, body, tail) of the prompt; the body is what gets cut to fit."""
        raise NotImplementedError

    def target(self, record: dict[str, Any]) -> str:
        raise NotImplementedError

    def check_base_model(self, base_path: str) -> None:
        check_causal_lm(base_path, self.name)

    def build_model(self, base_path: str, info: dict[str, Any], pretrained: bool = True) -> Any:
        return build_causal_lm(base_path, self.name, pretrained)

    def load_model(self, path: str) -> Any:
        return load_causal_lm(path)

    def head_modules(self) -> list[str]:
        return []  # no fresh head: the LM head is pretrained

    def plan_texts(self, records: list[dict[str, Any]]) -> list[str]:
        return ["".join(self.parts(r)) + " " + self.target(r) for r in records]

    def encode(self, records: list[dict[str, Any]], tokenizer: Any, info: dict[str, Any], max_len: int) -> list[dict[str, Any]]:
        return encode_examples(records, tokenizer, max_len, self.max_target_tokens, self.parts, self.target)

    def collate(self, batch: list[dict[str, Any]], tokenizer: Any) -> dict[str, Any]:
        return collate(batch, tokenizer)

    def evaluate_batch(self, engine: Any, items: list[dict[str, Any]], tokenizer: Any, info: dict[str, Any],
                       synced: bool) -> tuple[list[Any], list[Any], float]:
        return evaluate_batch(engine, items, tokenizer, info.get("max_new_tokens", self.max_target_tokens), synced)

    def predictions(self, outputs: Any, batch: dict[str, Any]) -> tuple[list[Any], list[Any]]:
        raise NotImplementedError(f"{self.name} evaluates through evaluate_batch (it generates text)")

    def metrics(self, predicted: list[Any], gold: list[Any], info: dict[str, Any]) -> dict[str, Any]:
        return text_metrics(predicted, gold)

    def predict(self, model: Any, tokenizer: Any, inputs: list[Any], info: dict[str, Any], max_len: int) -> list[dict[str, Any]]:
        return predict(model, tokenizer, inputs, max_len, self.parts, self.output_key)

    output_key: str
    """The response field holding the generated text."""
