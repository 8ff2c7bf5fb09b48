"""The DeepSpeed config carries the spec's ZeRO stage, offload, accumulation and schedule."""

from doctune.spec import parse_job_spec
from doctune.train import build_deepspeed_config

BASE = {"tenant": "demo", "task": "classification", "dataset": {"id": "ds-1"}, "max_steps": 100}


def test_zero2_with_accumulation():
    spec = parse_job_spec({**BASE, "micro_batch_size": 8, "gradient_accumulation_steps": 4})
    cfg = build_deepspeed_config(spec, world_size=2, total_steps=100)
    assert cfg["zero_optimization"]["stage"] == 2
    assert cfg["train_batch_size"] == 8 * 4 * 2
    assert cfg["gradient_accumulation_steps"] == 4
    assert cfg["scheduler"]["params"]["total_num_steps"] == 100
    assert cfg["scheduler"]["params"]["warmup_num_steps"] == 10
    assert cfg["optimizer"]["params"]["torch_adam"] is True  # CPU: no fused-kernel build


def test_zero3_offload():
    spec = parse_job_spec({**BASE, "deepspeed": {"zero_stage": 3, "offload_optimizer": True, "offload_params": True}})
    cfg = build_deepspeed_config(spec, world_size=1, total_steps=5)
    z = cfg["zero_optimization"]
    assert z["stage"] == 3 and z["offload_param"]["device"] == "cpu" and z["offload_optimizer"]["device"] == "cpu"
    assert cfg["scheduler"]["params"]["warmup_num_steps"] >= 1


def test_gpu_uses_bf16_and_torch_adamw_so_no_node_compiles_an_optimizer():
    """DeepSpeed's FusedAdam is compiled with nvcc at a GPU worker's first step (and DeepSpeed 0.19
    fails to parse an H200's "9.0a" architecture while doing so: seen on a lent GPU)."""
    spec = parse_job_spec(BASE)
    cfg = build_deepspeed_config(spec, 8, 10, on_gpu=True)
    assert cfg["bf16"] == {"enabled": True} and cfg["optimizer"]["params"]["torch_adam"] is True


def test_zero3_releases_gathered_parameters_of_a_small_model():
    """DeepSpeed's defaults keep up to 1e9 gathered parameters live under ZeRO-3: all of a 270M model,
    so ZeRO-3 saved no memory. Buckets and the live limit are sized for models of this platform."""
    from deepspeed.runtime.zero.config import DeepSpeedZeroConfig

    spec = parse_job_spec({**BASE, "deepspeed": {"zero_stage": 3}})
    z = DeepSpeedZeroConfig(**build_deepspeed_config(spec, world_size=2, total_steps=5)["zero_optimization"])
    assert z.max_live_parameters <= 100_000_000 < 270_000_000 and z.reduce_bucket_size <= 50_000_000
    z2 = DeepSpeedZeroConfig(**build_deepspeed_config(parse_job_spec(BASE), world_size=2, total_steps=5)["zero_optimization"])
    assert z2.reduce_bucket_size <= 50_000_000 and z2.allgather_bucket_size <= 50_000_000
