"""`sari-data blind`: text-only pass rates, rollouts, failures and quarantine of answerable items."""

from __future__ import annotations

from llm_helpers import config_for, make_workspace, synthetic_item

from corpus.records import Difficulty
from corpus.store import Workspace
from sari_data.llm.blind import run_blind
from sari_data.llm.testing import FakeChatServer, Reply, last_user_text


def test_blind_pass_rates(tmp_path):
    items = [synthetic_item(i) for i in (0, 2, 4, 1)]  # high, low, high, count_beeps
    make_workspace(tmp_path, items)

    def respond(body):
        text, seed = last_user_text(body), body["seed"]
        assert isinstance(body["messages"][1]["content"], str)  # text only: no audio part
        if "How many" in text:
            return Reply(status=500, content="down", headers={"retry-after-ms": "1"})
        answer = "high" if seed < 3 else "low"  # seeds 0..2 say high, seed 3 says low
        return Reply(content=f"I guess. <answer>{answer}</answer>")

    with FakeChatServer(respond) as server:
        results = run_blind(tmp_path, config=config_for(server, max_retries=1), k=4, max_pass_rate=0.5,
                            progress=False)
    assert all(r["body"]["temperature"] == 1.0 for r in server.requests)
    assert results["pass_rates"] == {"1/4": 1, "3/4": 2} and results["failed"] == 1
    assert list(results["failures"].values())[0].startswith("http_500")
    with Workspace(tmp_path, read_only=True) as ws:
        diff = {d.item_id: d for d in ws.records(Difficulty)}
        rollouts = ws.frame("rollouts")
        quarantine = ws.frame("quarantine")
        left = ws.item_ids()
    assert diff[items[0].id].pass_rate == 0.75 and diff[items[1].id].pass_rate == 0.25
    assert diff[items[0].id].model == "blind:test-model" and items[3].id not in diff
    assert len(rollouts) == 12 and rollouts["correct"].sum() == 3 + 1 + 3
    # High-answer items were right 3/4 > 0.5: quarantined with the item kept in the message.
    assert set(quarantine["locator"]) == {items[0].id, items[2].id}
    assert set(quarantine["reason"]) == {"answerable_without_audio"} and '"answer":"high"' in quarantine["message"][0]
    assert left == {items[1].id, items[3].id}
