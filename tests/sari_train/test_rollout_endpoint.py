import base64
import io
import socket

import numpy as np
import pytest
import soundfile as sf

from corpus.clips import to_pcm16
from corpus.testing import noise_clips
from sari_train.fake_endpoint import serve
from sari_train.prompts import PromptStyle, messages
from sari_train.rollout import SamplingSettings
from sari_train.rollout.endpoint import EndpointEngine, EndpointError, openai_messages

OPTIONS = ["first", "second", "third"]
PROMPTS = [messages(f"Question {i}?", OPTIONS) for i in range(3)]
SETTINGS = SamplingSettings(k=4, temperature=0.8, top_p=0.9, max_new_tokens=12, seed=5)


def test_audio_goes_inline_as_a_wav_part_next_to_the_text():
    pcm16 = to_pcm16(noise_clips(1, seconds=0.5)[0])
    clip = pcm16.astype(np.float32) / 32768  # what load_clip returns for a stored 16-bit clip
    chat = openai_messages(messages("Q?", OPTIONS, PromptStyle(system="Be brief.")), clip, 16000)
    assert [turn["role"] for turn in chat] == ["system", "user"]
    audio, text = chat[1]["content"]
    assert text == {"type": "text", "text": messages("Q?", OPTIONS)[0]["content"][1]["text"]}
    assert audio["type"] == "input_audio" and audio["input_audio"]["format"] == "wav"
    pcm, rate = sf.read(io.BytesIO(base64.b64decode(audio["input_audio"]["data"])), dtype="int16")
    assert rate == 16000 and np.array_equal(pcm, pcm16)  # bit-exact


def test_one_request_per_prompt_with_n_k_and_the_prompt_seed():
    with serve() as server:
        engine = EndpointEngine(server.url, "served-model", concurrency=2)
        out = engine.sample(PROMPTS, noise_clips(3), SETTINGS, seeds=[11, 12, 13])
    assert len(out.texts) == 3 and all(len(group) == 4 for group in out.texts)
    assert all(t.removeprefix("<answer>").removesuffix("</answer>") in OPTIONS for g in out.texts for t in g)
    sent = sorted(server.requests, key=lambda r: r["seed"])
    assert [(r["n"], r["seed"], r["model"]) for r in sent] == [(4, 11, "served-model"), (4, 12, "served-model"),
                                                               (4, 13, "served-model")]
    assert sent[0]["temperature"] == 0.8 and sent[0]["top_p"] == 0.9 and sent[0]["max_tokens"] == 12


def test_a_prompt_answers_the_same_whatever_shares_its_call():
    clips = noise_clips(3)
    with serve() as server:
        engine = EndpointEngine(server.url, "m", concurrency=3)
        together = engine.sample(PROMPTS, clips, SETTINGS, seeds=[1, 2, 3]).texts
        alone = [engine.sample([p], [c], SETTINGS, seeds=[s]).texts[0] for p, c, s in zip(PROMPTS, clips, [1, 2, 3])]
    assert together == alone and len({tuple(g) for g in together}) > 1


def test_k_requests_of_one_for_servers_without_n():
    with serve() as server:
        out = EndpointEngine(server.url, "m", n_per_request=False).sample(PROMPTS[:1], noise_clips(1), SETTINGS)
    assert len(out.texts[0]) == 4
    assert sorted((r["n"], r["seed"]) for r in server.requests) == [(1, 5), (1, 6), (1, 7), (1, 8)]


def test_server_errors_are_retried_by_the_shared_client():
    with serve(fail_first=2) as server, EndpointEngine(server.url, "m", retries=2) as engine:
        out = engine.sample(PROMPTS[:1], noise_clips(1), SETTINGS)
        usage = engine.usage
    assert len(out.texts[0]) == 4 and len(server.requests) == 3
    assert usage["retries"] == 2 and usage["requests_sent"] == 1 and usage["completion_tokens"] == 4


def test_an_unreachable_endpoint_is_one_clear_error():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    engine = EndpointEngine(f"http://127.0.0.1:{port}/v1", "m", retries=0, timeout=5)
    with pytest.raises(EndpointError, match=rf"cannot reach the endpoint http://127.0.0.1:{port}/v1 .*start the server"):
        engine.sample(PROMPTS[:1], noise_clips(1), SETTINGS)


def test_a_refusing_server_is_reported_with_its_status():
    with serve(fail_first=5) as server:
        with pytest.raises(EndpointError, match="http_500 on all 1 attempts: try again"):  # the server's words
            EndpointEngine(server.url, "m", retries=0).sample(PROMPTS[:1], noise_clips(1), SETTINGS)
