"""Shared record checks for task plugins: unknown and missing fields, named with the fix."""

from __future__ import annotations

from typing import Any

from doctune.errors import DoctuneError

HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
"""Chinese (CJK unified ideograph) ranges, for regex character classes: words are characters in Chinese."""


def check_fields(record: dict[str, Any], where: str, task: str, required: tuple[str, ...],
                 optional: tuple[str, ...], example: str) -> None:
    """Raise for a field the task does not know (a misspelt ``lable`` is caught at upload,
    not at training) or a required field that is missing, naming ``where`` and the field."""
    article = "an" if task[0] in "aeiou" else "a"
    unknown = sorted(set(record) - set(required) - set(optional))
    if unknown:
        raise DoctuneError(
            f"{where}: unknown field(s) {unknown}; {article} {task} record has "
            f"{' and '.join(repr(f) for f in required)} (optional {', '.join(repr(f) for f in optional)})",
            "invalid_dataset",
            field=unknown[0],
        )
    for name in required:
        if name not in record:
            raise DoctuneError(f"{where}: missing {name!r}; every {task} record needs it, e.g. {example}",
                               "invalid_dataset", field=name)
