"""The files of a dataset version: what the services and a job's training workers read.

A dataset's version 1 is its upload, ``<dataset uri>/{train,dev,test}.jsonl``; each append stores
only the records it added, under a prefix of its own (``<dataset uri>/v<k>-<hex>/``). A version's
split is every part's split up to that version, concatenated in version order, so the records of
an earlier version are always the first ones of a later version's split and never move to
another split (``doctune.services.dataset_versions``).
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["SPLITS", "read_part", "read_split"]

SPLITS = ("train", "dev", "test")


def read_part(store: Any, uri: str, split: str) -> list[dict[str, Any]]:
    """The records of one part (one version's own files) of ``split``."""
    blob = store.get_bytes(f"{store.key_of(uri).rstrip('/')}/{split}.jsonl")
    return [json.loads(line) for line in blob.decode().splitlines() if line.strip()]


def read_split(store: Any, parts: list[str], split: str) -> list[dict[str, Any]]:
    """A version's ``split``: the records of each part in ``parts`` (version 1's uri first), in order."""
    out: list[dict[str, Any]] = []
    for uri in parts:
        out += read_part(store, uri, split)
    return out
