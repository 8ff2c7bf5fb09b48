"""Training: the Ray Train loop, its DeepSpeed config, PEFT wiring, checkpoints.

``run_job`` (in ``doctune.train.run``) is what a Ray job driver calls; the
per-worker loop lives in ``doctune.train.loop``.
"""

from doctune.train.ds_config import build_deepspeed_config

__all__ = ["build_deepspeed_config"]
