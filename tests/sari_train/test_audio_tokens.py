"""Our audio-token count per clip is transformers' own arithmetic, for every mel frame count of a
30-s window (not only the even ones the processor tests happen to use)."""

import torch

from sari_train.models.adapter import audio_token_count


def test_audio_token_count_is_transformers_arithmetic_over_every_length():
    from transformers.models.qwen2_5_omni.processing_qwen2_5_omni import _get_feat_extract_output_lengths
    from transformers.models.qwen2_audio.modeling_qwen2_audio import Qwen2AudioEncoder

    frames = torch.arange(1, 3001)
    _, qwen2_audio = Qwen2AudioEncoder._get_feat_extract_output_lengths(None, frames)
    omni = _get_feat_extract_output_lengths(frames)
    ours = torch.tensor([audio_token_count(int(n)) for n in frames])
    assert torch.equal(ours, qwen2_audio) and torch.equal(ours, omni)
    assert [audio_token_count(n) for n in (100, 101, 102, 103, 104)] == [25, 25, 25, 26, 26]
