"""Evaluation of the model a training worker holds, on one split, across all ranks.

The worker loop (:mod:`doctune.train.loop`) evaluates on dev every ``eval_interval``
steps, and on dev and test for the baseline and at the end. Every rank takes an equal
share of the examples and runs the same number of forward passes (ZeRO-3 gathers
parameters collectively, so every rank must call in the same order); the predictions
are gathered to every rank and scored by the task plugin. :class:`Evaluator` also keeps
the time evaluation took, for the run's timing.
"""

from __future__ import annotations

import math
import time
from typing import Any

__all__ = ["Evaluator", "evaluate"]


def _shard_for_eval(n: int, rank: int, world: int) -> list[int]:
    """Equal-length shards (padded with -1) so every rank runs the same number of
    forward passes, which ZeRO-3's collective parameter gathers require."""
    mine = list(range(rank, n, world))
    per = math.ceil(n / world)
    return mine + [-1] * (per - len(mine))


def evaluate(engine, examples, plugin, tokenizer, info, batch_size: int) -> dict[str, Any]:
    """The task's metrics (plus ``loss`` and ``n``) over ``examples``; a collective call:
    every rank must make it, with the same examples."""
    import torch
    import torch.distributed as dist

    rank, world = dist.get_rank(), dist.get_world_size()
    idx = _shard_for_eval(len(examples), rank, world)
    local: list[tuple[int, Any, Any]] = []
    losses = []
    engine.eval()
    custom = getattr(plugin, "evaluate_batch", None)  # e.g. generative tasks: loss, then generate
    with torch.no_grad():
        for i in range(0, len(idx), batch_size):
            chunk = idx[i : i + batch_size]
            items = [examples[j if j >= 0 else 0] for j in chunk]
            if custom is not None:
                pred, gold, loss = custom(engine, items, tokenizer, info, synced=world > 1)
            else:
                batch = plugin.collate(items, tokenizer)
                batch = {k: v.to(engine.device) for k, v in batch.items()}
                out = engine(**batch)
                pred, gold = plugin.predictions(out, batch)
                loss = float(out.loss)
            for j, pr, g in zip(chunk, pred, gold):
                if j >= 0:
                    local.append((j, pr, g))
            losses.append(loss)
    engine.train()
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, (local, losses))
    rows = sorted((r for part, _ in gathered for r in part), key=lambda r: r[0])
    all_losses = [l for _, part in gathered for l in part]
    metrics = plugin.metrics([r[1] for r in rows], [r[2] for r in rows], info)
    metrics["loss"] = sum(all_losses) / max(len(all_losses), 1)
    metrics["n"] = len(rows)
    return metrics


class Evaluator:
    """Evaluates the engine on a named split of ``encoded`` and counts the time it takes
    (``seconds``) and the examples it scored (``examples``) over the whole run."""

    def __init__(self, engine, encoded: dict[str, list[Any]], plugin, tokenizer, info, batch_size: int) -> None:
        self.engine, self.encoded, self.plugin = engine, encoded, plugin
        self.tokenizer, self.info, self.batch_size = tokenizer, info, batch_size
        self.seconds = 0.0
        self.examples = 0

    def run(self, split: str) -> dict[str, Any]:
        began = time.monotonic()
        out = evaluate(self.engine, self.encoded[split], self.plugin, self.tokenizer, self.info, self.batch_size)
        self.seconds += time.monotonic() - began
        self.examples += len(self.encoded[split])
        return out
