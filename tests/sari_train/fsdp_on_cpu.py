"""`sari-train` with accelerate switched to FSDP2 on CPU processes (for tests).

accelerate picks FSDP only for GPU launches: on CPU, `accelerate launch --use_fsdp` quietly runs
DDP over gloo. torch's `fully_shard` itself works on a CPU mesh, so this shim sets the state to
FSDP2 (as `--use_fsdp --fsdp_version 2` would on GPUs: in the process-wide state too, which every
later `AcceleratorState()` copies, so `is_fsdp2` stays true after `prepare`) and runs the CLI:

    torchrun --nproc_per_node 2 tests/sari_train/fsdp_on_cpu.py sft --config ...
"""

import sys

from accelerate.state import PartialState
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

import sari_train.grpo.train
import sari_train.sft
import sari_train.training
from sari_train.cli import main

make_accelerator = sari_train.training.make_accelerator


def fsdp2_accelerator(dtype: str = "float32"):
    accelerator = make_accelerator(dtype)
    plugin = FullyShardedDataParallelPlugin(fsdp_version=2, auto_wrap_policy="transformer_based_wrap",
                                            reshard_after_forward=True, state_dict_type="FULL_STATE_DICT")
    if accelerator.state.mixed_precision != "no":
        plugin.set_mixed_precision(accelerator.state.mixed_precision)
    accelerator.state.distributed_type = PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    accelerator.state.fsdp_plugin = plugin
    assert accelerator.is_fsdp2
    return accelerator


sari_train.sft.make_accelerator = sari_train.grpo.train.make_accelerator = fsdp2_accelerator

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
