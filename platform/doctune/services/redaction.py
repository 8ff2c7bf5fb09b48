"""PII redaction at dataset upload: personal data replaced by typed placeholders before anything is stored.

Called by :func:`doctune.services.datasets.upload_dataset` and
:func:`doctune.services.documents.upload_documents` with the parsed, split records, before the
cross-split checks and before any byte reaches the object store: only the redacted records are
checked, counted against the storage quota and written. It runs when the upload asks for it
(``redact_pii``) or the tenant's setting is on (``PUT /v1/tenants/{id}/settings``); an upload cannot
turn a tenant's setting off. What is found and how: :mod:`doctune.pii`.

Which fields are text is the task plugin's to say: its ``redact_record`` hook when it has one
(extraction moves its spans, generation redacts its field values), otherwise every field in its
``text_fields`` (a string as text, a list of words word by word, so NER tags stay aligned). Each
redacted record is validated again by its plugin, so a redaction never stores a record the task
would refuse.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from doctune.errors import DoctuneError
from doctune.pii import Redactor
from doctune.services import Platform
from doctune.services.tenants import get_tenant
from doctune.tasks import get_task

Splits = dict[str, list[dict[str, Any]]]


def redaction_reasons(p: Platform, tenant: str, asked: bool) -> list[str]:
    """Why this upload is redacted: ``"upload"`` (it asked), ``"tenant"`` (the tenant's setting); [] if not."""
    row = get_tenant(p, tenant)
    return [why for why, on in (("upload", asked), ("tenant", bool(row is not None and row.redact_pii))) if on]


def redact_upload(p: Platform, tenant: str, task: str, splits: Splits, asked: bool,
                  documents_report: dict[str, Any] | None = None) -> tuple[Splits, dict[str, Any]]:
    """``(splits, info)``: the splits with personal data replaced when the upload asked for it or the
    tenant's setting is on, and ``{"pii_redaction": report}`` to merge into the dataset's info (``{}``
    and the splits unchanged otherwise). The report counts replacements by type. A documents upload's
    ``documents_report`` quotes the documents' text (spans that moved); its strings are redacted in
    place (what was replaced in the records is replaced there too), not counted."""
    reasons = redaction_reasons(p, tenant, asked)
    if not reasons:
        return splits, {}
    plugin = get_task(task)
    redactor = Redactor()
    changed = 0
    out: Splits = {}
    for split, records in splits.items():
        out[split] = []
        for i, record in enumerate(records, 1):
            redacted = _redact_record(plugin, record, redactor, f"{split} record {i}")
            changed += redacted != record
            out[split].append(redacted)
    if documents_report is not None:
        _redact_strings(documents_report, redactor)
    return out, {"pii_redaction": {"requested_by": reasons, **redactor.report(), "records_changed": changed,
                                   "detector": DETECTOR}}


def _detector() -> str:
    try:
        presidio = f"presidio-analyzer {version('presidio-analyzer')}"
    except PackageNotFoundError:  # pragma: no cover - a dependency of doctune
        presidio = "presidio-analyzer"
    return (f"{presidio} pattern recognizers with check digits (Luhn, mod 97, GB 11643) and doctune's Chinese "
            "ones; person names by title, label and honorific heuristics only (no NER model)")


DETECTOR = _detector()


def _redact_record(plugin: Any, record: dict[str, Any], redactor: Redactor, where: str) -> dict[str, Any]:
    hook = getattr(plugin, "redact_record", None)
    if hook is not None:
        redacted = hook(record, redactor)
    else:
        redacted = dict(record)
        for field in plugin.text_fields:
            value = record.get(field)
            if isinstance(value, str):
                redacted[field] = redactor.text(value)
            elif isinstance(value, list) and all(isinstance(v, str) for v in value):
                redacted[field] = redactor.tokens(value)
    try:
        return plugin.validate_record(redacted, where)
    except DoctuneError as exc:
        raise DoctuneError(f"{where}: after PII redaction the record fails the {plugin.name} checks ({exc.message}); "
                           "this is a platform bug, please report it; upload without redact_pii meanwhile",
                           "internal", field=exc.field) from None


def _redact_strings(value: Any, redactor: Redactor) -> Any:
    """Every string inside ``value`` (dicts and lists, changed in place) redacted as a quote of the
    records (:meth:`Redactor.quoted`: what was replaced in them is replaced here); dict keys stay."""
    if isinstance(value, dict):
        for k, v in value.items():
            value[k] = _redact_strings(v, redactor)
    elif isinstance(value, list):
        value[:] = [_redact_strings(v, redactor) for v in value]
    elif isinstance(value, str):
        return redactor.quoted(value)
    return value
