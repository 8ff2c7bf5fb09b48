"""Training: the Ray Train trainer and its per-worker loop, the DeepSpeed config, PEFT
wiring, checkpoints, evaluation, early stopping, export and the progress channel to the
driver.

``doctune.drivers.job`` builds a job's trainer with :func:`doctune.train.trainer.build_trainer`;
the per-worker loop lives in :mod:`doctune.train.loop` and calls the units beside it
(:mod:`~doctune.train.checkpoints`, :mod:`~doctune.train.evaluation`,
:mod:`~doctune.train.early_stopping`, :mod:`~doctune.train.export`,
:mod:`~doctune.train.progress`). Nothing here imports the services: the workers get
everything they need through the trainer's config.
"""

from doctune.train.ds_config import build_deepspeed_config

__all__ = ["build_deepspeed_config"]
