"""Task plugins, registered by name.

A plugin is a module under ``doctune.tasks`` exposing ``PLUGIN``, an object
satisfying :class:`TaskPlugin`. Adding a task means adding a folder here;
nothing else changes.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache
from typing import Any, Protocol

__all__ = ["TaskPlugin", "check_metric", "get_task", "task_names", "task_texts"]


class TaskPlugin(Protocol):
    name: str

    def validate_record(self, record: dict[str, Any], where: str) -> dict[str, Any]:
        """Check one parsed JSONL record; raise DoctuneError naming ``where`` (file:line) and the field."""

    def check_splits(self, splits: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
        """Cross-split checks (labels in dev/test seen in train); returns dataset info (e.g. labels)."""

    def stratify_key(self, record: dict[str, Any]) -> Any:
        """Value to stratify splits on."""

    def build_model(self, base_path: str, info: dict[str, Any], pretrained: bool = True) -> Any:
        """The trainable transformers model for this task, with a fresh head (``pretrained=False``:
        the same architecture without reading weights, for the pre-flight plan)."""

    def encode(self, records: list[dict[str, Any]], tokenizer: Any, info: dict[str, Any], max_len: int) -> list[dict[str, Any]]:
        """Tokenized examples ready for :meth:`collate`."""

    def collate(self, batch: list[dict[str, Any]], tokenizer: Any) -> dict[str, Any]:
        """Pad a batch into tensors."""

    def predictions(self, outputs: Any, batch: dict[str, Any]) -> tuple[list[Any], list[Any]]:
        """(predicted, gold) for a batch, as plain Python values."""

    def metrics(self, predicted: list[Any], gold: list[Any], info: dict[str, Any]) -> dict[str, float]:
        """Evaluation metrics (at least the ones early stopping can watch)."""

    peft_task_type: str | None
    """peft ``TaskType`` name for LoRA on this task's model (e.g. ``SEQ_CLS``, ``TOKEN_CLS``, ``CAUSAL_LM``);
    None wraps a custom module in a plain ``PeftModel`` that passes every keyword through."""
    primary_metric: str
    """The headline test metric (reports, leaderboards); one of ``metric_names``."""
    metric_names: tuple[str, ...]
    """Scalar metrics :meth:`metrics` returns (plus ``loss``): what early stopping may watch."""

    def load_model(self, path: str) -> Any:
        """Serving: the exported model at ``path`` (written by ``save_pretrained``), in eval mode."""

    def head_modules(self) -> list[str]:
        """Names of the freshly initialised task-head modules, trained in full under LoRA."""

    # Optional hooks (looked up with getattr):
    #   plan_texts(records) -> list[str]: the text the pre-flight plan counts tokens of (default: r["text"]).
    #   export_extras(model, tokenizer, info, splits, max_len, out_dir) -> dict | None: write extra files
    #       beside the exported model (e.g. a search index); the dict is merged into doctune.json.
    #   evaluate_batch(engine, examples, tokenizer, info, synced) -> (predicted, gold, loss): evaluate a
    #       batch of encoded examples itself (e.g. generate text); replaces collate + forward + predictions
    #       in evaluation. ``synced``: several ranks run it together (ZeRO-3 generation must stay in step).
    #   check_request(inputs, info): serving, per request before batching: refuse inputs the served model
    #       (its doctune.json ``info``) cannot take, e.g. raw text sent to a relation model.
    #   check_base_model(path): raise DoctuneError (field base_model) when the task cannot use this model.
    #   baseline_kind: str: what the step-0 evaluation measures (default "untrained_head").
    #   reference_baselines(splits, info) -> {name: {"dev": metrics, "test": metrics}}: model-free
    #       baselines (e.g. lead-N sentences for summaries), reported beside the fine-tuned metrics.

    def parse_request(self, body: Any) -> list[Any]:
        """Serving: validate a request body into the inputs :meth:`predict` takes."""

    def predict(self, model: Any, tokenizer: Any, inputs: list[Any], info: dict[str, Any], max_len: int) -> list[dict[str, Any]]:
        """Serving: raw request inputs to JSON-ready predictions."""


@cache
def _registry() -> dict[str, TaskPlugin]:
    out: dict[str, TaskPlugin] = {}
    for mod in pkgutil.iter_modules(__path__):
        if mod.ispkg and not mod.name.startswith("_"):
            plugin = importlib.import_module(f"{__name__}.{mod.name}").PLUGIN
            out[plugin.name] = plugin
    return out


def task_texts(plugin: TaskPlugin, records: list[dict[str, Any]]) -> list[str]:
    """The text of records that the model reads, for token counts and language checks: the
    plugin's ``plan_texts`` hook, else each record's ``text`` field."""
    fn = getattr(plugin, "plan_texts", None)
    return fn(records) if fn else [r["text"] for r in records]


def check_metric(plugin: TaskPlugin, metric: str, field: str, code: str = "invalid_spec") -> None:
    """Refuse a metric the task does not report (early stopping, sweeps, leaderboards), naming ``field``."""
    if metric not in plugin.metric_names:
        from doctune.errors import DoctuneError

        raise DoctuneError(f"{field} {metric!r} is not a {plugin.name} metric; choose one of: {', '.join(plugin.metric_names)}",
                           code, field=field)


LOWER_IS_BETTER = ("loss", "perplexity")


def metric_mode(metric: str) -> str:
    """"min" when a lower ``metric`` is better (loss, perplexity), else "max"."""
    return "min" if metric in LOWER_IS_BETTER else "max"


def task_names() -> list[str]:
    return sorted(_registry())


def get_task(name: str) -> TaskPlugin:
    from doctune.errors import DoctuneError

    try:
        return _registry()[name]
    except KeyError:
        raise DoctuneError(f"unknown task {name!r}; choose one of: {', '.join(task_names())}", "invalid_spec", field="task") from None


def metric_label(plugin: TaskPlugin, metric: str) -> str:
    """How reports print a metric (``macro_f1`` -> ``macro-F1``): the plugin's ``metric_labels``."""
    return (getattr(plugin, "metric_labels", None) or {}).get(metric, metric)
