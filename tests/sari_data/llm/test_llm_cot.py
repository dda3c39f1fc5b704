"""`sari-data cot`: chain checks, the template writer, every failure path, and resuming after SIGKILL."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from llm_helpers import config_for, gold_of, good_chain, make_workspace, synthetic_item

from corpus.store import Workspace
from sari_data.llm.cot import chain_problem, run_cot, templated_chains
from sari_data.sources.synthetic import scene_caption
from sari_data.llm.testing import FakeChatServer, Reply, last_user_text
from sari_train.prompts import structured_sections

ITEM = synthetic_item(0)  # gold "high"
GOOD_STRUCTURED = ("<planning>p</planning><caption>c</caption><reasoning>r</reasoning>"
                   "<summary>The answer is high.</summary>")


@pytest.mark.parametrize("text, style, reason", [
    (GOOD_STRUCTURED, "structured", None),
    ("<caption>c</caption><planning>p</planning><reasoning>r</reasoning><summary>high</summary>", "structured",
     "sections_missing_or_out_of_order"),
    ("<planning>p</planning><caption>c</caption><summary>high</summary>", "structured",
     "sections_missing_or_out_of_order"),
    (GOOD_STRUCTURED.replace("is high", "is low"), "structured", "wrong_conclusion"),
    (GOOD_STRUCTURED.replace("is high", "is highest"), "structured", "wrong_conclusion"),  # whole words only
    ("It is loud and bright. The answer is high.", "free", None),
    ("The answer is high. Actually, it sounds low.", "free", "wrong_conclusion"),
    ("<planning>p</planning> The answer is high.", "free", "tags_in_free_chain"),
    ("Think. <answer>high</answer>", "free", "stray_tags"),
])
def test_chain_problem(text, style, reason):
    problem = chain_problem(text, ITEM, style)
    assert (problem[0] if problem else None) == reason


def test_template_chains_are_valid_and_use_the_scene():
    for i in range(8):
        item = synthetic_item(i)
        chains = {c.style: c for c in templated_chains(item)}
        assert all(c.valid and c.generator == "template" for c in chains.values())
        sections = structured_sections(chains["structured"].text)
        assert sections["caption"] == scene_caption(item.caption) and item.answer in sections["summary"]
        assert " s to " not in sections["caption"] and "SNR" not in sections["caption"]
        assert chains["free"].text.endswith(f"the answer is {item.answer}.")
    beeps = {c.style: c for c in templated_chains(synthetic_item(3))}  # count_beeps, 5 beeps
    assert "5 in all" in beeps["structured"].text


def test_no_endpoint_uses_the_template_writer_and_says_so(tmp_path, monkeypatch):
    for var in ("SARI_LLM_BASE_URL", "OPENAI_BASE_URL", "SARI_LLM_MODEL"):
        monkeypatch.delenv(var, raising=False)
    make_workspace(tmp_path, [synthetic_item(i) for i in range(6)] + [synthetic_item(9, split="test")])
    results = run_cot(tmp_path, split="train", progress=False)
    assert results["template"] == 6 and results["llm"] == 0
    assert "no LLM endpoint configured" in results["notes"][0]
    with Workspace(tmp_path, read_only=True) as ws:
        frame = ws.frame("cots")
    assert len(frame) == 12 and frame["valid"].all() and set(frame["generator"]) == {"template"}
    assert run_cot(tmp_path, split="train", progress=False)["skipped_done"] == 6


def scripted_cot_server() -> FakeChatServer:
    """Per item (keyed by its caption), one behaviour: good, wrong-then-good, always wrong, refusal, 500s,
    sections out of order, malformed JSON then good, schema violation forever, slow then good."""
    seen: dict[str, int] = {}

    def respond(body: dict) -> Reply:
        text = last_user_text(body)
        first = body["messages"][1]["content"]
        mode = int(first.split("MODE")[1][:1]) if "MODE" in first else 0
        key = first + str("four sections" in first)
        seen[key] = seen.get(key, 0) + 1
        n, gold = seen[key], gold_of({"messages": body["messages"][:2]})
        wrong = "low" if gold == "high" else "high"
        if mode == 1 and n == 1 or mode == 2:
            return Reply(content=good_chain({"messages": body["messages"][:2]}, answer=wrong))
        if mode == 3:
            return Reply(content=None, refusal="I won't write that.")
        if mode == 4:
            return Reply(status=500, content="internal error", headers={"retry-after-ms": "1"})
        if mode == 5:
            return Reply(content=json.dumps({"thinking": "<summary>x</summary><planning>p</planning>", "answer": gold}))
        if mode == 6 and n == 1:
            return Reply(content="{thinking: oops")
        if mode == 7:
            return Reply(content=json.dumps({"reasoning": "no", "final": gold}))
        if mode == 8 and n == 1:
            return Reply(content=good_chain({"messages": body["messages"][:2]}), delay_s=1.0)
        del text
        return Reply(content=good_chain({"messages": body["messages"][:2]}))
    return FakeChatServer(respond)


def test_every_item_ends_valid_or_failed_with_a_reason(tmp_path):
    items = [synthetic_item(i * 4).model_copy(update={"caption": f"MODE{i} A tone at 2000 Hz."}) for i in range(9)]
    items = [it.model_copy(update={"id": f"synthetic-m{i}", "caption_source": "dataset"}) for i, it in enumerate(items)]
    make_workspace(tmp_path, items)
    with scripted_cot_server() as server:
        results = run_cot(tmp_path, config=config_for(server, timeout_s=0.3), progress=False)
        with Workspace(tmp_path, read_only=True) as ws:
            frame = ws.frame("cots")
        outcome = {(r.item_id[-2:], r.style): (r.valid, r.reason.split(":")[0]) for r in frame.itertuples()}
        for mode in (0, 1, 6, 8):
            assert outcome[(f"m{mode}", "structured")] == (True, "") and outcome[(f"m{mode}", "free")] == (True, "")
        expected = {2: "wrong_conclusion", 3: "refusal", 7: "schema_violation"}
        assert ("m4", "structured") not in outcome and ("m4", "free") not in outcome  # 500s: left for a re-run
        for mode, reason in expected.items():
            assert outcome[(f"m{mode}", "structured")] == (False, reason)
            assert outcome[(f"m{mode}", "free")] == (False, reason)
        assert outcome[("m5", "structured")] == (False, "sections_missing_or_out_of_order")
        assert outcome[("m5", "free")] == (False, "tags_in_free_chain")
        assert len(frame) == 16 and results["llm"] == 9
        assert frame.loc[frame["valid"], "generator"].eq("llm:test-model").all()
        usage = results["llm_usage"]
        assert usage["requests_sent"] > 18 and usage["retries"] >= 4 and usage["reasks"] >= 6
        # A re-run skips the items with valid chains and asks again for every failed one (failures are
        # never cached), the 500s included.
        before = len(server.requests)
        again = run_cot(tmp_path, config=config_for(server, timeout_s=0.3), progress=False)
        resent = {m.split("MODE")[1][0] for m in (r["body"]["messages"][1]["content"] for r in server.requests[before:])}
    assert again["skipped_done"] == 4 and resent == {"2", "3", "4", "5", "7"}


def _cot_command(workspace: Path, server: FakeChatServer) -> list[str]:
    return [sys.executable, "-m", "sari_data.cli", "cot", "--workspace", str(workspace), "--base-url",
            server.base_url, "--model", "test-model", "--concurrency", "4", "--quiet"]


def _tables(workspace: Path):
    with Workspace(workspace, read_only=True) as ws:
        return ws.frame("cots").to_dict("records")


@pytest.mark.slow
def test_sigkill_at_random_points_then_rerun_equals_an_uninterrupted_run(tmp_path):
    items = [synthetic_item(i).model_copy(update={"caption_source": "dataset"}) for i in range(60)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[3]), "SARI_TEST_KEY": "k"}
    respond = lambda body: Reply(content=good_chain(body), delay_s=0.03)  # noqa: E731
    with FakeChatServer(respond) as server:
        make_workspace(tmp_path / "straight", items)
        run_cot(tmp_path / "straight", config=config_for(server), progress=False)
        straight_requests = len(server.requests)
        server.requests.clear()
        make_workspace(tmp_path / "killed", items)
        rng = random.Random(0)
        kills = 0
        for _ in range(3):
            # Kill at a random point among the requests: once the server has seen a random number more.
            target = len(server.requests) + rng.randint(5, 30)
            proc = subprocess.Popen(_cot_command(tmp_path / "killed", server), env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            while proc.poll() is None and len(server.requests) < target:
                time.sleep(0.002)
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
            proc.wait()
        subprocess.run(_cot_command(tmp_path / "killed", server), env=env, check=True, capture_output=True)
        # a request the kill cut before its body was sent reaches the server as an empty body
        bodies = [json.dumps(r["body"], sort_keys=True) for r in server.requests if r["body"]]
    assert kills >= 1
    assert _tables(tmp_path / "killed") == _tables(tmp_path / "straight")
    assert straight_requests == 120
    # Only requests unfinished at a kill may be seen twice: those on the wire (at most `concurrency`)
    # and those answered whose exchange was not yet written to the cache (the client caches an
    # exchange once its reply passed the checks, so at most `concurrency` more).
    repeats = len(bodies) - len(set(bodies))
    assert repeats <= 2 * 4 * kills and len(set(bodies)) == 120
