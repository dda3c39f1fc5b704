"""The LLM stages against a misbehaving server (the local OpenAI-compatible test server): contradictory
chains, error bodies, unsupported input, unreachable or restarting endpoints, the cache, the schema."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from faults_helpers import SilentServer, audio_workspace, closed_port_url, one_line_error, run_cli

from corpus.store import Workspace
from corpus.testing import dummy_item
from sari_data.cli import main as sari_data
from sari_data.llm.captions import run_captions
from sari_data.llm.cot import chain_problem, run_cot
from sari_data.llm.testing import FakeChatServer, Reply
from sari_train.openai_client import EndpointError, LLMConfig

HIGH = dummy_item(0, answer="high", answer_index=0)  # options high / low
SWEEP = dummy_item(1, choices=["rising", "falling"], answer="falling", answer_index=1)
DOG = dummy_item(2, choices=["a dog barking", "a dog barking loudly"], answer="a dog barking loudly", answer_index=1)


def sections(summary: str, reasoning: str = "It sits far above 1 kHz.") -> str:
    return (f"<planning>Judge the pitch.</planning><caption>A steady tone.</caption>"
            f"<reasoning>{reasoning}</reasoning><summary>{summary}</summary>")


@pytest.mark.parametrize("item, text, style, reason", [
    (HIGH, "It is a tone. The answer is high, but the pitch of the tone is indeed low.", "free", "contradictory_conclusion"),
    (HIGH, "The answer is high, but the pitch of the tone is indeed low.", "free", "no_reasoning"),
    (HIGH, "The answer is high.", "free", "no_reasoning"),
    (HIGH, sections("The tone is high, not low."), "structured", "contradictory_conclusion"),
    (HIGH, sections("The tone is high.", reasoning=" "), "structured", "empty_sections"),
    (HIGH, "<planning>p</planning><summary>The tone is high.</summary>", "structured", "sections_missing_or_out_of_order"),
    (SWEEP, sections("The sweep is rising, not falling."), "structured", "contradictory_conclusion"),
    (SWEEP, "The pitch moves down over the clip. The sweep is falling.", "free", None),
    (DOG, "A dog barks, louder each time. It is a dog barking loudly.", "free", None),  # the gold holds a distractor
    (HIGH, sections("The tone is high."), "structured", None),
])
def test_conclusion_check_rejects_contradictions_and_chains_without_reasoning(item, text, style, reason):
    problem = chain_problem(text, item, style)
    assert (problem[0] if problem else None) == reason


def config(base_url: str, **overrides) -> LLMConfig:
    fields = dict(base_url=base_url, model="test-model", api_key_env="SARI_TEST_KEY", concurrency=4, timeout_s=5.0,
                  max_retries=3, max_reasks=1)
    return LLMConfig(**(fields | overrides))


def chain_reply(body: dict, contradict: bool = False) -> Reply:
    """A structured or free chain for the prompt's gold answer (`high`), optionally self-contradicting."""
    gold = "high"
    ending = f"The answer is {gold}, but the pitch is indeed low." if contradict else f"The answer is {gold}."
    if "four sections" in body["messages"][1]["content"]:  # the first user turn (a re-ask follows it)
        thinking = sections(ending)
    else:
        thinking = f"The tone sits far above 1 kHz. {ending}"
    return Reply(content=json.dumps({"thinking": thinking, "answer": gold}))


def high_items(root: Path, n: int) -> Path:
    with Workspace(root, create=True) as ws:
        ws.upsert([dummy_item(i, answer="high", answer_index=0, caption=f"A tone at {2000 + i} Hz.") for i in range(n)])
    return root


def cots(root: Path):
    with Workspace(root, read_only=True) as ws:
        return ws.frame("cots")


def test_a_self_contradicting_chain_is_stored_invalid(tmp_path):
    high_items(tmp_path, 2)
    with FakeChatServer(lambda body: chain_reply(body, contradict=True)) as server:
        run_cot(tmp_path, config=config(server.base_url), writer="llm", progress=False)
    frame = cots(tmp_path)
    assert len(frame) == 4 and not frame.valid.any()
    assert set(frame.reason.str.split(":").str[0]) == {"contradictory_conclusion"}


def test_failures_are_not_cached_so_a_rerun_asks_again(tmp_path):
    high_items(tmp_path, 2)
    behaviour = {"contradict": True}
    with FakeChatServer(lambda body: chain_reply(body, **behaviour)) as server:
        run_cot(tmp_path, config=config(server.base_url), writer="llm", progress=False)
        assert not cots(tmp_path).valid.any()
        assert (tmp_path / "llm_cache.jsonl").read_text() == ""  # nothing failed is kept
        behaviour["contradict"] = False  # the model (or the prompt) got better
        run_cot(tmp_path, config=config(server.base_url), writer="llm", progress=False)
        assert cots(tmp_path).valid.all() and len(cots(tmp_path)) == 4
        sent = len(server.requests)
        run_cot(tmp_path, config=config(server.base_url), writer="llm", redo=True, progress=False)
        assert len(server.requests) == sent  # --redo replays the cached successes
    assert len((tmp_path / "llm_cache.jsonl").read_text().splitlines()) == 4


def dominant_hz(body: dict) -> float:
    import base64
    import io

    import soundfile as sf

    part = next(p for p in body["messages"][0]["content"] if p["type"] == "input_audio")
    samples, rate = sf.read(io.BytesIO(base64.b64decode(part["input_audio"]["data"])))
    return float(np.argmax(np.abs(np.fft.rfft(samples))) * rate / len(samples))


def test_the_server_error_message_is_kept_in_the_reason(tmp_path):
    audio_workspace(tmp_path, n=3)  # tones at 300, 400, 500 Hz; the 300 Hz one always fails

    def respond(body: dict) -> Reply:
        if dominant_hz(body) < 350:
            return Reply(status=500, content="KV cache exhausted: reduce the context size",
                         headers={"retry-after-ms": "1"})
        return Reply(content="A steady tone, clear and quiet.")

    with FakeChatServer(respond) as server:
        results = run_captions(tmp_path, config=config(server.base_url, max_retries=2), progress=False)
    assert results["captioned"] == 2
    (reason,) = results["failures"].values()
    assert reason.startswith("http_500") and "on all 3 attempts: KV cache exhausted: reduce the context size" in reason


def test_an_endpoint_that_cannot_take_audio_stops_the_captions_at_once(tmp_path, capsys):
    audio_workspace(tmp_path, n=4)
    refuse = Reply(status=500, content="audio input is not supported - hint: if this is unexpected, update your server")
    with FakeChatServer(lambda body: refuse) as server:
        with pytest.raises(EndpointError, match="audio input is not supported"):
            run_captions(tmp_path, config=config(server.base_url, max_retries=6), progress=False)
        assert len(server.requests) <= 4  # at most one per clip in flight, never 7 each
        code, _, err = run_cli(sari_data, ["captions", "--workspace", tmp_path, "--base-url", server.base_url,
                                           "--model", "text-only", "--quiet"], capsys)
    line = one_line_error(err, "sari-data captions")
    assert code == 2 and "cannot take this input" in line and "audio input is not supported" in line


def test_an_unreachable_endpoint_stops_the_run_in_one_line(tmp_path, capsys):
    high_items(tmp_path, 6)
    url = closed_port_url()
    code, _, err = run_cli(sari_data, ["cot", "--workspace", tmp_path, "--writer", "llm", "--base-url", url,
                                       "--model", "m", "--quiet"], capsys)
    line = one_line_error(err, "sari-data cot")
    assert code == 2 and f"cannot reach the endpoint {url}" in line and "start the server" in line
    assert len(cots(tmp_path)) == 0  # no failed chains stored
    with Workspace(tmp_path, read_only=True) as ws:
        assert ws.frame("runs").status.tolist() == ["failed"]


def test_a_server_going_down_mid_run_leaves_those_items_for_the_next_run(tmp_path, capsys):
    high_items(tmp_path, 6)  # 12 chains
    answered = {"n": 0, "down": True}

    def respond(body: dict) -> Reply:
        answered["n"] += 1
        if answered["down"] and answered["n"] > 2:
            return Reply(drop=True)  # the server restarts: connections are cut
        return chain_reply(body)

    with FakeChatServer(respond) as server:
        recipe = tmp_path / "recipe.yaml"
        recipe.write_text(json.dumps({"name": "r", "sources": [{"kind": "synthetic"}], "llm": {
            "base_url": server.base_url, "model": "m", "concurrency": 1, "max_retries": 0}}))
        args = ["cot", "--workspace", tmp_path, "--writer", "llm", "--recipe", recipe, "--quiet"]
        code, _, err = run_cli(sari_data, args, capsys)
        line = one_line_error(err, "sari-data cot")
        assert code == 1 and "10 of 12 requests" in line and "connection_error" in line and "run the same" in line
        frame = cots(tmp_path)
        assert len(frame) == 2 and frame.valid.all()  # the cut ones are not stored as failed chains
        answered["down"] = False
        code, out, _ = run_cli(sari_data, args, capsys)
    assert code == 0 and len(cots(tmp_path)) == 12 and cots(tmp_path).valid.all()


def test_the_questions_schema_declares_its_counts(tmp_path):
    from sari_data.llm.questions import run_questions

    clips = tmp_path / "clips.jsonl"
    clips.write_text(json.dumps({"source": "s", "source_id": "1", "caption": "A dog barks twice, then a car passes."})
                     + "\n")
    with FakeChatServer(lambda body: Reply(content="{}")) as server:
        run_questions(tmp_path / "ws", clips, config=config(server.base_url, max_reasks=0), per_clip=2,
                      progress=False)
    schema = server.requests[0]["body"]["response_format"]["json_schema"]["schema"]
    questions = schema["properties"]["questions"]
    assert (questions["minItems"], questions["maxItems"]) == (2, 2)
    choices = schema["$defs"]["GeneratedQuestion"]["properties"]["choices"]
    assert (choices["minItems"], choices["maxItems"]) == (4, 4)


def test_a_server_that_never_answers_stops_the_run_after_a_few_timeouts(tmp_path, capsys):
    """27 items x 7 attempts x the timeout, before: the run stops once every request in flight
    and two more timed out in a row, in one line, and the run record says why."""
    high_items(tmp_path, 6)  # 12 requests
    with SilentServer() as server:
        with pytest.raises(EndpointError, match="did not answer 6 requests in a row within 0.2 s"):
            run_cot(tmp_path, config=config(server.base_url, timeout_s=0.2, max_retries=6), writer="llm", progress=False)
        assert len(server.accepted) <= 2 * 4 + 2  # the first wave, its retries; not 12 x 7
        code, _, err = run_cli(sari_data, ["cot", "--workspace", tmp_path, "--writer", "llm", "--base-url",
                                           server.base_url, "--model", "m", "--timeout", "0.2", "--concurrency", "2",
                                           "--quiet"], capsys)
    line = one_line_error(err, "sari-data cot")
    assert code == 2 and "accepted the connection but did not answer 4 requests in a row" in line
    assert "raise --timeout" in line and len(cots(tmp_path)) == 0
    with Workspace(tmp_path, read_only=True) as ws:
        records = [json.loads(p) for p in ws.frame("runs").provenance]
    assert [r["status"] for r in records] == ["failed", "failed"] and "did not answer" in records[-1]["error"]


def test_a_deadline_stops_a_slow_run_and_keeps_what_finished(tmp_path, capsys):
    import time

    high_items(tmp_path, 8)  # 16 requests of 0.1 s, one at a time: 1.6 s without a deadline
    with FakeChatServer(lambda body: time.sleep(0.1) or chain_reply(body)) as server:
        code, _, err = run_cli(sari_data, ["cot", "--workspace", tmp_path, "--writer", "llm", "--base-url",
                                           server.base_url, "--model", "m", "--concurrency", "1", "--deadline", "0.55",
                                           "--quiet"], capsys)
        sent = len(server.requests)
    line = one_line_error(err, "sari-data cot")
    assert code == 2 and "reached its deadline of 0.55 s" in line and "re-run to continue" in line
    assert 3 <= sent <= 7
    assert 2 <= len(cots(tmp_path)) <= sent  # the chains that finished are stored
