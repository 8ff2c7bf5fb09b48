"""Quality against the cheap baselines (issue "chinese-quality"): the page's section and plots.

The figures come from runs recorded in ``docs/quality_runs.jsonl``: one JSON line per run of
``tests/bench/levers.py`` (a plain single-rank loop over doctune's plugin code, for NER and
classification), each with its curve of dev F1 against training minutes. ``make bench`` renders them; rerun a lever with the
command its row names.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
RUNS = REPO / "docs" / "quality_runs.jsonl"
# (corpus, metric): (goal text, the check on (fine-tuned, best baseline))
GOALS = {
    "msra": ("entity F1 ≥ 0.85 and ≥ gazetteer + 0.10, within 30 min of training",
             lambda tuned, base, minutes: tuned >= 0.85 and tuned >= base + 0.10 and minutes <= 30),
    "wnut16": ("entity F1 ≥ gazetteer + 0.10", lambda tuned, base, minutes: tuned >= base + 0.10),
    "chinese-reviews": ("macro-F1 ≥ TF-IDF + LR + 0.05", lambda tuned, base, minutes: tuned >= base + 0.05),
}


def load_runs(path: Path = RUNS) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def plot_curves(runs: list[dict[str, Any]], corpus: str, out: Path) -> None:
    """Dev F1 against training minutes, one line per lever setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for run in runs:
        xs = [0.0] + [p["minutes"] for p in run["curve"]]
        ys = [0.0] + [p["dev_f1"] for p in run["curve"]]
        ax.plot(xs, ys, marker="o", label=run["label"])
    baseline = runs[0].get("baseline", {}).get("test_f1")
    if baseline is not None:
        ax.axhline(baseline, color="grey", linestyle="--", label=f"{runs[0]['baseline']['name']} (test)")
    ax.set_xlabel("training minutes (2 cores)")
    ax.set_ylabel("dev F1")
    ax.set_title(f"{corpus}: F1 against training minutes, per lever")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def _metric(run: dict[str, Any]) -> str:
    return "macro_f1" if run.get("task") == "classification" else "f1"


def best_score(run: dict[str, Any]) -> float:
    """The run's test score as doctune reports it: for NER the Viterbi (valid BIO) decoding when
    measured, which the ner plugin uses."""
    return run.get("test_viterbi", run["test"])[_metric(run)]


def _row(run: dict[str, Any]) -> str:
    metric, base = _metric(run), run.get("baseline", {})
    viterbi = run.get("test_viterbi", {}).get(metric)
    errors = run.get("wrong_spans", {})
    per_type = ", ".join(f"{k} {v:.3f}" for k, v in sorted(run.get("per_type_f1", {}).items()))
    return (f"| {run['label']} | {run['train_minutes']:.1f} | {run['steps']} | {run['test'][metric]:.3f} | "
            f"{'–' if viterbi is None else f'{viterbi:.3f}'} | {base.get('name', '–')} {base.get('test_f1', float('nan')):.3f} | "
            f"{best_score(run) - base.get('test_f1', float('nan')):+.3f} | {per_type or '–'} | "
            f"{', '.join(f'{k} {v}' for k, v in sorted(errors.items())) or '–'} |")


def gpu_lines(docs: Path) -> list[str]:
    """MSRA on a lent GPU (tests/device/msra_gpu.py, recorded in docs/device/msra_gpu_*.json): the
    same recipe with more compute than 30 minutes of this machine's two cores."""
    runs = [r for path in sorted((docs / "device").glob("msra_gpu_*.json")) for r in json.loads(path.read_text())]
    if not runs:
        return []
    return ["#### msra on a lent GPU (same recipe, more compute)", "",
            f"`tests/device/msra_gpu.py` on one {runs[0]['gpu']}, {runs[0]['date']}: Gemma-3-270M with its vocabulary cut to",
            "the tokens MSRA uses (so that it fits the GPU machine's transfers), LoRA r=16 on q/k/v/o, bf16 autocast;",
            "dev = 300 train sentences, test = MSRA's 5,000.", "",
            "| run | batch | lr | steps | sentences seen (epochs) | seconds | test F1, argmax | test F1, Viterbi | gazetteer | margin | per-type F1 (argmax) |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
            *[f"| {r['label']} | {r['batch']} | {r['lr']:g} | {r['steps']} | {r['sentences_seen']:,} ({r['epoch_fraction']:.2f}) | "
              f"{r['train_seconds']:.0f} | {r['test']['f1']:.3f} | {r['test_viterbi']['f1']:.3f} | {r['baseline']['test_f1']:.3f} | "
              f"{r['test_viterbi']['f1'] - r['baseline']['test_f1']:+.3f} | "
              f"{', '.join(f'{k} {v:.3f}' for k, v in sorted(r['per_type_f1'].items()))} |" for r in runs], ""]


def report_lines(runs: list[dict[str, Any]] | None = None, docs: Path = REPO / "docs") -> list[str]:
    runs = load_runs() if runs is None else runs
    if not runs:
        return []
    lines = ["## Quality against the cheap baselines", "",
             "Each row is one run of a lever setting (`python -m tests.bench.levers --corpus ...`, the",
             "settings in the row's label): a plain",
             "single-rank loop over doctune's own plugin code (model, encoding, metrics) and tuning code,",
             "on 2 CPU cores, so that each lever is compared on the same loop. The baseline is the best",
             "cheap one on the same split (the gazetteer of the train entities for NER, TF-IDF + logistic",
             "regression for classification), as every job's report now shows it.", ""]
    for corpus in dict.fromkeys(r["corpus"] for r in runs):
        group = [r for r in runs if r["corpus"] == corpus]
        plot = docs / f"quality_{corpus}.png"
        plot_curves(group, corpus, plot)
        goal, check = GOALS.get(corpus, ("–", lambda *a: False))
        best = max(group, key=best_score)
        met = check(best_score(best), best.get("baseline", {}).get("test_f1", 1.0), best["train_minutes"])
        lines += [f"### {corpus} (test n={best['test_sentences']}, {best['date']})", "",
                  "| lever setting | training min | steps | test F1, argmax | test F1, valid BIO (Viterbi) | "
                  "best cheap baseline (test) | margin | per-type F1 (argmax) | wrong spans (argmax) |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
                  *[_row(r) for r in group], "",
                  f"Goal: {goal}. Best run `{best['label']}`: **{'met' if met else 'not met'}**.", "",
                  f"![dev F1 against training minutes]({plot.name})", ""]
        if corpus == "msra":
            lines += gpu_lines(docs)
    return lines
