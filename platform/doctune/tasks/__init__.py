"""Task plugins, registered by name: all that doctune knows about a task lives in its plugin.

A plugin is an object satisfying :class:`TaskPlugin`: data checks, model, metrics, serving
(request parsing, predictions, the endpoint's request/response models and examples, built
from :mod:`doctune.tasks.serving`), capabilities (``multiplexable``, ``quantizable``, checked
by :func:`check_can_serve`) and which record fields are text (``text_fields``). Nothing
outside this package names a task to decide what to do.

Where plugins come from, in every process that asks (API, CLI, Ray job drivers, Ray Train
workers, Serve replicas):

* the built-in plugins: each folder ``doctune/tasks/<task>/`` (its ``__init__`` exposes
  ``PLUGIN``); adding a folder adds a task;
* the modules named in the environment variable ``DOCTUNE_TASK_PLUGINS`` (comma-separated
  importable module names, e.g. ``DOCTUNE_TASK_PLUGINS=tests.toy_task``), each exposing
  ``PLUGIN``: a plugin that lives outside the package. Set it (and make the modules importable,
  e.g. on ``PYTHONPATH``) in the environment the stack starts in, so every process inherits it:
  ``doctune up`` passes its environment to the Ray head, whose workers and replicas inherit it.
  A process reads it once, when it first asks for a task; the module only defines ``PLUGIN``
  (it does not call :func:`register_task` itself);
* :func:`register_task`, for the calling process only (tests, notebooks).

Each is checked when it is registered (:func:`register_task`): a duplicate name or a missing
attribute is refused with a DoctuneError listing every problem. Plugins do not import each
other; what several share lives in this package's private modules (``_causal``, ``_tagging``,
``_hf``, ``_records``). ``doctune.spec`` sits below this package, so a JobSpec's task is
checked against the registry by :func:`check_job_task` (``doctune.services.jobs.check_spec``
calls it for every door).
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import re
from functools import cache
from typing import Any, Protocol

from pydantic import BaseModel

from doctune.tasks._capabilities import check_can_serve, multiplex_refusal, quantize_refusal

__all__ = [
    "LOWER_IS_BETTER",
    "PLUGINS_ENV",
    "TaskPlugin",
    "check_can_serve",
    "check_job_task",
    "check_metric",
    "get_task",
    "metric_label",
    "metric_mode",
    "multiplex_refusal",
    "quantize_refusal",
    "register_task",
    "task_names",
    "task_texts",
]

PLUGINS_ENV = "DOCTUNE_TASK_PLUGINS"


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

    metric_labels: dict[str, str]
    """How reports print each metric (``macro_f1`` -> ``macro-F1``); optional (see :func:`metric_label`)."""
    text_fields: tuple[str, ...]
    """The record fields (as :meth:`validate_record` returns them) that hold text the model reads, e.g.
    ``("text",)``; a field may hold a list of words. :func:`task_texts` reads them unless ``plan_texts`` applies."""

    # -- serving: the endpoint's OpenAPI document (doctune.serve.schemas) -------------------------
    request_model: type[BaseModel]
    """The pydantic model of ``POST /predict``'s body (built from :mod:`doctune.tasks.serving`)."""
    response_model: type[BaseModel]
    """The pydantic model of its 200 answer: ``{"model_id", "predictions": [...]}``."""
    endpoint_summary: str
    """What ``POST /predict`` does, in a few words (e.g. "Classify documents")."""
    endpoint_description: str
    """What each input gets, in a sentence or three."""
    request_examples: dict[str, dict[str, Any]]
    """Named OpenAPI examples of the body: ``{name: {"summary": ..., "value": body}}``, at least two."""
    response_example: dict[str, Any]
    """An example 200 answer."""

    # -- serving: capabilities (check_can_serve) --------------------------------------------------------
    multiplexable: bool
    """Whether adapter models of this task can share one base model (``multiplex: true``)."""
    multiplex_refusal: str | None
    """Why not, where ``multiplexable`` is False (told to the tenant); None otherwise."""
    quantizable: bool
    """Whether int8 serving (``quantize: int8``) can be offered: its accuracy change measured honestly."""
    quantize_refusal: str | None
    """Why not, where ``quantizable`` is False; None otherwise."""

    def load_model(self, path: str) -> Any:
        """Serving: the exported model at ``path`` (written by ``save_pretrained``), in eval mode."""

    def head_modules(self) -> list[str]:
        """Names of the freshly initialised task-head modules, trained in full under LoRA."""

    # Optional hooks (looked up with getattr):
    #   plan_texts(records) -> list[str]: the text the pre-flight plan counts tokens of, when reading
    #       ``text_fields`` is not it (e.g. a prompt built from several fields).
    #   metric_labels: {metric: label}: how reports print a metric (``macro_f1`` -> ``macro-F1``).
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
    #   redact_record(record, redactor) -> record: the validated record with personal data replaced
    #       (dataset upload with redact_pii; ``redactor`` is a doctune.pii.Redactor: .text(str),
    #       .value(field value), .tokens(words), .text_with_spans(text, spans)), for records whose text
    #       is not only their ``text_fields`` (spans into the text, fields feeding a prompt). Without
    #       it, each ``text_fields`` field is redacted: a string as text, a list of words word by word.

    def parse_request(self, body: Any) -> list[Any]:
        """Serving: validate a request body into the inputs :meth:`predict` takes."""

    def predict(self, model: Any, tokenizer: Any, inputs: list[Any], info: dict[str, Any], max_len: int) -> list[dict[str, Any]]:
        """Serving: raw request inputs to JSON-ready predictions."""


# -- the registry ----------------------------------------------------------------------------------
_METHODS = ("validate_record", "check_splits", "stratify_key", "build_model", "encode", "collate", "predictions",
            "metrics", "load_model", "head_modules", "parse_request", "predict")
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")  # stored in 32-character columns; part of Serve app names


def _problems(plugin: Any) -> list[str]:
    """Everything missing or malformed in ``plugin`` (empty: it may be registered)."""
    out = []
    name = getattr(plugin, "name", None)
    if not isinstance(name, str) or not _NAME.match(name):
        out.append(f"name must be 1-32 lowercase letters, digits, '_' or '-', starting with a letter; got {name!r}")
    out += [f"{m}() is missing" for m in _METHODS if not callable(getattr(plugin, m, None))]
    if not hasattr(plugin, "peft_task_type"):
        out.append("peft_task_type is missing (a peft TaskType name, or None)")
    metrics = getattr(plugin, "metric_names", None)
    if not isinstance(metrics, (tuple, list)) or not metrics or not all(isinstance(m, str) for m in metrics):
        out.append("metric_names must be a non-empty tuple of metric names")
    elif getattr(plugin, "primary_metric", None) not in metrics:
        out.append(f"primary_metric must be one of metric_names; got {getattr(plugin, 'primary_metric', None)!r}")
    fields = getattr(plugin, "text_fields", None)
    if not isinstance(fields, (tuple, list)) or not fields or not all(isinstance(f, str) for f in fields):
        out.append("text_fields must be a non-empty tuple of record field names, e.g. (\"text\",)")
    for attr in ("request_model", "response_model"):
        model = getattr(plugin, attr, None)
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            out.append(f"{attr} must be a pydantic model class; got {model!r}"[:200])
    for attr in ("endpoint_summary", "endpoint_description"):
        if not isinstance(getattr(plugin, attr, None), str) or not getattr(plugin, attr).strip():
            out.append(f"{attr} must be a non-empty string")
    examples = getattr(plugin, "request_examples", None)
    if not isinstance(examples, dict) or not examples or not all(
            isinstance(e, dict) and "value" in e for e in examples.values()):
        out.append('request_examples must map example names to {"summary": ..., "value": body}')
    if not isinstance(getattr(plugin, "response_example", None), dict):
        out.append('response_example must be an example answer, {"model_id": ..., "predictions": [...]}')
    for flag, reason in (("multiplexable", "multiplex_refusal"), ("quantizable", "quantize_refusal")):
        value = getattr(plugin, flag, None)
        if not isinstance(value, bool):
            out.append(f"{flag} must be True or False; got {value!r}")
        elif not value and not (isinstance(getattr(plugin, reason, None), str) and getattr(plugin, reason).strip()):
            out.append(f"{reason} must say why, since {flag} is False")
    return out


def _add(registry: dict[str, TaskPlugin], plugin: Any, source: str) -> None:
    from doctune.errors import DoctuneError

    problems = _problems(plugin)
    if problems:
        raise DoctuneError(f"task plugin from {source} cannot be registered: {'; '.join(problems)}", "internal",
                           errors=[{"field": "plugin", "message": p} for p in problems])
    if plugin.name in registry:
        raise DoctuneError(f"task plugin from {source} cannot be registered: a task named {plugin.name!r} is "
                           "registered already; give the plugin another name", "internal", field="task")
    registry[plugin.name] = plugin


def _import_plugin(module: str) -> Any:
    """``module``'s ``PLUGIN``, for a module named in DOCTUNE_TASK_PLUGINS."""
    from doctune.errors import DoctuneError

    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise DoctuneError(f"{PLUGINS_ENV} names {module!r}, which cannot be imported ({exc}); install it or put it "
                           "on PYTHONPATH in every doctune process", "internal") from None
    if not hasattr(mod, "PLUGIN"):
        raise DoctuneError(f"{PLUGINS_ENV} names {module!r}, which has no PLUGIN; a task plugin module exposes its "
                           "plugin as PLUGIN", "internal")
    return mod.PLUGIN


@cache
def _registry() -> dict[str, TaskPlugin]:
    out: dict[str, TaskPlugin] = {}
    for mod in pkgutil.iter_modules(__path__):
        if mod.ispkg and not mod.name.startswith("_"):
            module = f"{__name__}.{mod.name}"
            _add(out, importlib.import_module(module).PLUGIN, module)
    for module in filter(None, (m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(","))):
        _add(out, _import_plugin(module), module)
    return out


def register_task(plugin: TaskPlugin) -> TaskPlugin:
    """Add a task plugin to this process's registry (for every process, name its module in
    DOCTUNE_TASK_PLUGINS instead). Refuses a name already registered or a plugin missing a
    required attribute, with a DoctuneError listing what is wrong. Returns ``plugin``."""
    _add(_registry(), plugin, f"register_task({type(plugin).__name__})")
    return plugin


def task_names() -> list[str]:
    return sorted(_registry())


def get_task(name: str) -> TaskPlugin:
    from doctune.errors import DoctuneError

    try:
        return _registry()[name]
    except KeyError:
        raise DoctuneError(f"unknown task {name!r}; choose one of: {', '.join(task_names())}", "invalid_spec", field="task") from None


def check_job_task(spec: Any) -> TaskPlugin:
    """The plugin of a JobSpec's ``task``; an unknown task is refused (422, field ``task``, naming the
    tasks there are). ``doctune.spec`` cannot check it (it sits below the task plugins); every door
    reaches this through ``doctune.services.jobs.check_spec``."""
    return get_task(spec.task)


# -- what callers read from a plugin ---------------------------------------------------------------
def task_texts(plugin: TaskPlugin, records: list[dict[str, Any]]) -> list[str]:
    """The text of records that the model reads, for token counts and language checks: the
    plugin's ``plan_texts`` hook, else its ``text_fields`` of every record, field by field (a
    list of words is joined with spaces)."""
    fn = getattr(plugin, "plan_texts", None)
    if fn:
        return fn(records)
    values = (r.get(f) for f in plugin.text_fields for r in records)
    return [" ".join(map(str, v)) if isinstance(v, list) else v for v in values if v is not None]


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


def metric_label(plugin: TaskPlugin, metric: str) -> str:
    """How reports print a metric (``macro_f1`` -> ``macro-F1``): the plugin's ``metric_labels``."""
    return (getattr(plugin, "metric_labels", None) or {}).get(metric, metric)
