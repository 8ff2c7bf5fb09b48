"""`make bench`, explain part: what the classification endpoint's ``explain: true`` costs, in-process
(no Ray), on MiniLM with the head ``tests/unit/test_explain.py`` fits, 1 torch thread as in a replica.

For BBC test articles at 64 and 128 tokens, one article per call: the median time of a plain
prediction, of an explained one by integrated gradients (``N_STEPS`` steps, the endpoint's way) and
by occlusion (one forward pass per word: the int8 endpoint's way); the ratios to the plain call; and
how far 16-step attributions agree with 64-step ones (shared words among the top 5).

Run alone: ``python -m tests.bench.explain``. Timings are measured here, never asserted.
"""

from __future__ import annotations

import statistics
import time

ARTICLES = 4


def _median_s(fn, reps: int = 3) -> float:
    times = []
    for _ in range(reps):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def _top(words: list[dict], n: int = 5) -> set[int]:
    return {w["start"] for w in sorted(words, key=lambda w: -w["score"])[:n]}


def explain_bench() -> dict:
    import torch

    from doctune.corpora import load_bbc_news
    from doctune.tasks.classification import PLUGIN, ExplainedText
    from doctune.tasks.classification.explain import N_STEPS, integrated_gradients, occlusion
    from tests.unit.test_explain import fitted

    torch.set_num_threads(1)
    model, tokenizer, info = fitted()
    docs = [r["text"] for r in load_bbc_news(limit_per_class=45)[40::45][:5]]  # unseen by the fitted head
    docs = (docs * ARTICLES)[:ARTICLES]
    out = {"n_steps": N_STEPS, "articles": len(docs), "by_length": {}}
    for seq in (64, 128):
        plain, ig, occ, agree = [], [], [], []
        for doc in docs:
            plain.append(_median_s(lambda: PLUGIN.predict(model, tokenizer, [doc], info, seq)))
            ig.append(_median_s(lambda: PLUGIN.predict(model, tokenizer, [ExplainedText(doc)], info, seq)))
            target = PLUGIN.predict(model, tokenizer, [doc], info, seq)[0]["label"]
            label = info["labels"].index(target)
            occ.append(_median_s(lambda: occlusion(model, tokenizer, [doc], [label], seq), reps=1))
            [fine] = integrated_gradients(model, tokenizer, [doc], [label], seq, n_steps=64)
            [coarse] = integrated_gradients(model, tokenizer, [doc], [label], seq, n_steps=N_STEPS)
            agree.append(len(_top(fine) & _top(coarse)))
        p = statistics.median(plain)
        out["by_length"][str(seq)] = {
            "plain_ms": 1000 * p, "ig_ms": 1000 * statistics.median(ig), "occlusion_ms": 1000 * statistics.median(occ),
            "ig_ratio": statistics.median(ig) / p, "occlusion_ratio": statistics.median(occ) / p,
            "top5_shared_16_vs_64": statistics.mean(agree)}
    return out


def report_lines(r: dict) -> list[str]:
    lines = [
        "## Explaining a classification (`explain: true`)",
        "",
        f"In-process on MiniLM-L6 (1 torch thread, as in a replica), one BBC article per call, {r['articles']} calls,",
        "median of 3 each (`tests/bench/explain.py`). *Integrated gradients* is what the endpoint runs",
        f"({r['n_steps']} steps, one batched forward and backward pass); *occlusion* (one forward pass per word) is what",
        "it runs for an int8 model, which has no gradients. The ratio is to a plain prediction of the same article.",
        "",
        "| tokens | plain (ms) | integrated gradients (ms) | ratio | occlusion (ms) | ratio | top-5 words shared, 16 vs 64 steps |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for seq, m in r["by_length"].items():
        lines.append(f"| {seq} | {m['plain_ms']:.1f} | {m['ig_ms']:.1f} | **{m['ig_ratio']:.1f}×** | {m['occlusion_ms']:.1f} "
                     f"| {m['occlusion_ratio']:.1f}× | {m['top5_shared_16_vs_64']:.1f} of 5 |")
    if r.get("note"):
        lines += ["", r["note"]]
    return lines + [""]


if __name__ == "__main__":
    import json

    result = explain_bench()
    print(json.dumps(result, indent=2))
    print("\n".join(report_lines(result)))
