"""Rollout engines side by side behind one contract (contract.py): transformers in this process
(local.py), an OpenAI-compatible server (endpoint.py) and vLLM colocated in this process
(vllm_engine.py, the `[vllm]` extra). The endpoint and vLLM engines are imported from their modules
(they pull in a client or vLLM); the contract and the local engine are re-exported here."""

from sari_train.rollout.contract import (Engine, Generated, Rollouts, SamplingSettings, completion_mask,  # noqa: F401
                                         strip_stop)
from sari_train.rollout.local import (LocalEngine, generation_kwargs, inverse_cdf, lean_sampling_applies,  # noqa: F401
                                      row_uniforms, sample_after_prefill)
