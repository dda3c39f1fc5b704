#!/usr/bin/env bash
# One command on a GPU machine: vLLM vs transformers completions/s/GPU (difficulty, k = 16, 30-s clips)
# and GRPO step time (G = 8), on a random-weight Qwen2-Audio replica of 7B size (hidden 3584 x 28 layers x 28 heads,
# the real tokenizer and 30-s window). Needs `pip install -e '.[vllm]'` beside a CUDA torch. Last line: JSON.
set -euo pipefail
cd "$(dirname "$0")/../.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
python bench/bench_vllm.py --hidden-size 3584 --layers 28 --heads 28 --intermediate-size 18944 --prompts 32 "$@"
