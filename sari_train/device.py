"""Where a model command runs: one rule for every command that loads a model (eval, difficulty,
captions --local-model), and the rank/world of a process started by `accelerate launch` or `torchrun`.

    --device auto   cuda:<LOCAL_RANK> when a GPU is there, else cpu
    --dtype auto    bfloat16 on a GPU, float32 on a CPU
"""

from __future__ import annotations

import os
from typing import Literal

DeviceName = str  # "auto", "cpu", "cuda", "cuda:1", "mps" ...
DtypeName = Literal["auto", "float32", "bfloat16", "float16"]
DTYPES = ("auto", "float32", "bfloat16", "float16")


def resolve_device(device: DeviceName = "auto") -> str:
    """`auto` is this process's GPU (cuda:LOCAL_RANK under a launcher) when CUDA is there, else cpu."""
    import torch

    if device != "auto":
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"--device {device}: CUDA is not available on this machine; use --device cpu or auto")
        return device
    return f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if torch.cuda.is_available() else "cpu"


def resolve_dtype(dtype: DtypeName = "auto", device: str = "cpu") -> str:
    """`auto` is bfloat16 on a GPU (what the hub checkpoints are stored in) and float32 on a CPU."""
    if dtype not in DTYPES:
        raise ValueError(f"--dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    if dtype != "auto":
        return dtype
    return "bfloat16" if device.startswith("cuda") else "float32"


def pick(device: DeviceName = "auto", dtype: DtypeName = "auto") -> tuple[str, str]:
    """(device, dtype) names for `AudioLM.load`, with `auto` resolved."""
    device = resolve_device(device)
    return device, resolve_dtype(dtype, device)


AttentionName = Literal["auto", "sdpa", "eager", "flash_attention_2"]


def resolve_attention(attention: AttentionName = "auto", device: str = "cpu", dtype: str = "float32") -> str:
    """`auto` is flash_attention_2 where it can run (the flash-attn package, a CUDA device, 16-bit
    compute), else PyTorch's sdpa; an explicit flash_attention_2 without the package is refused."""
    import importlib.util

    installed = importlib.util.find_spec("flash_attn") is not None
    if attention == "flash_attention_2" and not installed:
        raise ValueError("attn_implementation flash_attention_2 needs the flash-attn package (pip install flash-attn "
                         "--no-build-isolation, on a CUDA machine); or use sdpa")
    if attention != "auto":
        return attention
    return "flash_attention_2" if installed and device.startswith("cuda") and dtype != "float32" else "sdpa"


def launched() -> tuple[int, int] | None:
    """(rank, world size) under torchrun / accelerate launch with more than one process, else None."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return (int(os.environ.get("RANK", "0")), world) if world > 1 else None


def gather_in_order(local: list, shard: tuple[int, int]) -> list | None:
    """Undo a strided split (`items[rank::world]`): rank 0 gets every rank's results back in the
    original order, the other ranks get None. Uses gloo, so it runs on CPU and GPU machines alike."""
    from datetime import timedelta

    import torch.distributed as dist

    rank, world = shard
    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=timedelta(hours=24))
    parts: list | None = [None] * world if rank == 0 else None
    dist.gather_object(local, parts, dst=0)
    if rank != 0:
        return None
    total = sum(len(p) for p in parts)
    return [parts[i % world][i // world] for i in range(total)]
