"""Which words drove a classification: per-word attributions for the endpoint's ``explain: true``.

Two ways, both with captum, both over the model's word-piece embeddings and then merged back to the
words of the text (the tokenizer's own words: whitespace- and punctuation-split, one word per Chinese
character), each word with its character span:

* :func:`integrated_gradients` (the endpoint's way): ``LayerIntegratedGradients`` from a baseline of
  ``[PAD]`` word pieces (special tokens kept) to the input, ``N_STEPS`` steps, one batched forward and
  backward pass. A word-piece's attribution is the sum over its embedding dimensions.
* :func:`occlusion` (measured beside it by ``tests/bench/explain.py``): each word's pieces replaced by
  ``[PAD]`` in turn, the drop in the label's probability. Forward passes only, so it also works on an
  int8-quantized model, whose linear layers have no gradients: the endpoint uses it there.

Scores explain the answered label (a multi-label model: its most probable label) and are scaled so
that the largest magnitude in a text is 1; positive words speak for the label, negative against it.
"""

from __future__ import annotations

from typing import Any

N_STEPS = 16  # integration steps; tests/bench/explain.py reports how many top-5 words 16 and 64 steps share

__all__ = ["N_STEPS", "explain", "integrated_gradients", "occlusion"]


def _encode(tokenizer: Any, texts: list[str], max_len: int) -> Any:
    return tokenizer(texts, truncation=True, max_length=max_len, padding=True, return_tensors="pt",
                     return_offsets_mapping=True)


def _baseline(enc: Any, tokenizer: Any) -> Any:
    """The inputs with every word piece (not [CLS], [SEP] or padding) replaced by the pad token."""
    import torch

    special = torch.tensor([tokenizer.get_special_tokens_mask(ids, already_has_special_tokens=True)
                            for ids in enc["input_ids"].tolist()], dtype=torch.bool)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return torch.where(special, enc["input_ids"], torch.full_like(enc["input_ids"], pad))


def _words(enc: Any, row: int, text: str) -> list[tuple[int, int, list[int]]]:
    """(start, end, token positions) of each word the tokenizer cut row ``row`` into, in order."""
    words: dict[int, tuple[int, int, list[int]]] = {}
    offsets = enc["offset_mapping"][row].tolist()
    for pos, word in enumerate(enc.word_ids(row)):
        if word is None:
            continue
        start, end = offsets[pos]
        if word in words:
            s, e, positions = words[word]
            words[word] = (min(s, start), max(e, end), positions + [pos])
        else:
            words[word] = (start, end, [pos])
    return [words[w] for w in sorted(words)]


def _merge(enc: Any, texts: list[str], token_scores: list[list[float]]) -> list[list[dict[str, Any]]]:
    """Word-piece scores summed per word, scaled to a largest magnitude of 1."""
    out = []
    for row, text in enumerate(texts):
        words = [(s, e, sum(token_scores[row][p] for p in positions)) for s, e, positions in _words(enc, row, text)]
        top = max((abs(score) for *_, score in words), default=0.0) or 1.0
        out.append([{"word": text[s:e], "start": s, "end": e, "score": round(score / top, 4)} for s, e, score in words])
    return out


def _forward(model: Any, multi: bool):
    def probabilities(input_ids: Any, attention_mask: Any) -> Any:
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
        return logits.sigmoid() if multi else logits.softmax(-1)
    return probabilities


def integrated_gradients(model: Any, tokenizer: Any, texts: list[str], targets: list[int], max_len: int,
                         multi: bool = False, n_steps: int = N_STEPS) -> list[list[dict[str, Any]]]:
    """Per-word attributions of each text's ``targets`` label by integrated gradients (see the module)."""
    import torch
    from captum.attr import LayerIntegratedGradients

    enc = _encode(tokenizer, texts, max_len)
    ig = LayerIntegratedGradients(_forward(model, multi), model.get_input_embeddings())
    with torch.enable_grad():
        attr = ig.attribute(inputs=enc["input_ids"], baselines=_baseline(enc, tokenizer), target=targets,
                            additional_forward_args=(enc["attention_mask"],), n_steps=n_steps,
                            internal_batch_size=n_steps * len(texts))
    return _merge(enc, texts, attr.sum(-1).detach().tolist())


def occlusion(model: Any, tokenizer: Any, texts: list[str], targets: list[int], max_len: int,
              multi: bool = False) -> list[list[dict[str, Any]]]:
    """Per-word attributions: the label's probability minus its probability with the word padded out."""
    import torch

    enc = _encode(tokenizer, texts, max_len)
    forward, pad = _forward(model, multi), _baseline(enc, tokenizer)
    scores: list[list[float]] = []
    with torch.inference_mode():
        for row in range(len(texts)):
            words = _words(enc, row, texts[row])
            ids = enc["input_ids"][row].repeat(len(words) + 1, 1)
            for i, (_, _, positions) in enumerate(words, 1):
                ids[i, positions] = pad[row, positions]
            mask = enc["attention_mask"][row].repeat(len(words) + 1, 1)
            probs = forward(ids, mask)[:, targets[row]].tolist()
            row_scores = [0.0] * ids.shape[1]
            for i, (_, _, positions) in enumerate(words, 1):
                row_scores[positions[0]] = probs[0] - probs[i]  # the word's drop, on its first piece
            scores.append(row_scores)
    return _merge(enc, texts, scores)


def explain(model: Any, tokenizer: Any, texts: list[str], targets: list[int], max_len: int,
            multi: bool = False) -> list[list[dict[str, Any]]]:
    """Integrated gradients, or occlusion for a model without gradients (int8 dynamic quantization)."""
    quantized = any("quantized" in type(m).__module__ for m in model.modules())
    if quantized:
        return occlusion(model, tokenizer, texts, targets, max_len, multi)
    return integrated_gradients(model, tokenizer, texts, targets, max_len, multi)
