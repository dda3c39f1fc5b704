"""`sari-train` with accelerate switched to FSDP2 on CPU processes (for tests).

accelerate picks FSDP only for GPU launches: on CPU, `accelerate launch --use_fsdp` quietly runs
DDP over gloo. torch's `fully_shard` itself works on a CPU mesh, so this shim sets the state to
FSDP2 (as `--use_fsdp --fsdp_version 2` would on GPUs: in the process-wide state too, which every
later `AcceleratorState()` copies, so `is_fsdp2` stays true after `prepare`) and runs the CLI:

    torchrun --nproc_per_node 2 tests/sari_train/fsdp_on_cpu.py sft --config ...

`Run.checkpoint`, `Run.restore` and `Run.finish` check that they run on a model sharded by FSDP2
with `is_fsdp2` true (their FSDP2 branches), and the GRPO reference model that it is sharded too;
each prints a line saying so, which the tests count.
"""

import sys

from accelerate.state import PartialState
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin
from torch.distributed.fsdp import FSDPModule

import sari_train.grpo.reference
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


def on_fsdp2(method):
    def checked(run, *args):
        assert run.accelerator.is_fsdp2 and isinstance(run.model, FSDPModule), f"{method.__name__} is not under FSDP2"
        print(f"fsdp_on_cpu: {method.__name__} under FSDP2", flush=True)
        return method(run, *args)
    return checked


def sharded_reference(config, accelerator):
    reference = sari_train.grpo.reference.load_reference(config, accelerator)
    if reference is not None:
        assert isinstance(reference.model, FSDPModule), "the reference model is not sharded"
        local = sum(p.to_local().numel() * p.element_size() for p in reference.model.parameters())
        print(f"fsdp_on_cpu: reference under FSDP2, {local} bytes on this rank", flush=True)
    return reference


sari_train.sft.make_accelerator = sari_train.grpo.train.make_accelerator = fsdp2_accelerator
sari_train.grpo.train.load_reference = sharded_reference
Run = sari_train.training.Run
Run.checkpoint, Run.restore, Run.finish = on_fsdp2(Run.checkpoint), on_fsdp2(Run.restore), on_fsdp2(Run.finish)

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
