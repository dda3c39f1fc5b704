"""The LLM client against a real HTTP server through the real SDK: retries, re-asks, cache, accounting."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from llm_helpers import config_for
from pydantic import BaseModel, ConfigDict

from sari_data.llm.cache import RequestCache
from sari_data.llm.testing import FakeChatServer, Reply
from sari_data.recipe import RecipeError, load_recipe
from sari_train.openai_client import EndpointError, LLMClient, parse_reply, request_key

MESSAGES = [{"role": "user", "content": "Name a colour."}]


class Colour(BaseModel):
    model_config = ConfigDict(extra="forbid")
    colour: str


def script(*replies: Reply):
    """A responder that plays `replies` in order, then repeats the last one."""
    state = {"i": 0}

    def respond(body: dict) -> Reply:
        reply = replies[min(state["i"], len(replies) - 1)]
        state["i"] += 1
        return reply
    return respond


def ask(server: FakeChatServer, cache: RequestCache | None = None, schema=Colour, check=None, **overrides):
    async def go():
        client = LLMClient(config_for(server, **overrides), cache if cache is not None else RequestCache(None))
        try:
            return await client.ask(MESSAGES, schema=schema, check=check), client.usage
        finally:
            await client.close()
    return asyncio.run(go())


GOOD = Reply(content=json.dumps({"colour": "red"}))


def test_well_formed_reply_is_parsed_and_sent_with_the_schema():
    with FakeChatServer(script(GOOD)) as server:
        outcome, usage = ask(server)
    assert outcome.ok and outcome.value == Colour(colour="red") and outcome.asks == 1
    body = server.requests[0]["body"]
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"]["required"] == ["colour"]
    assert usage.sent == 1 and usage.prompt_tokens > 0 and usage.completion_tokens == len(GOOD.content) // 4


@pytest.mark.parametrize("bad, reason", [
    (Reply(content="colour: red"), "malformed_json"),
    (Reply(content=json.dumps({"color": "red"})), "schema_violation"),
    (Reply(content=None, refusal="I can't help with that."), "refusal"),
    (Reply(content=""), "empty_reply"),
    (Reply(content=json.dumps({"colour": "re"}), finish_reason="length"), "truncated"),
])
def test_bad_replies_are_reasked_with_the_error_then_given_up(bad, reason):
    with FakeChatServer(script(bad, GOOD)) as server:
        outcome, usage = ask(server)
    assert outcome.ok and outcome.asks == 2 and usage.reasks == 1
    reask = server.requests[1]["body"]["messages"]
    assert reask[-1]["role"] == "user" and reason in reask[-1]["content"]
    with FakeChatServer(script(bad)) as server:
        outcome, usage = ask(server, max_reasks=2)
    assert not outcome.ok and outcome.reason == reason and outcome.asks == 3
    assert len(server.requests) == 3 and usage.failures == {reason: 1}


def test_fenced_json_is_accepted():
    value, problem = parse_reply({"content": 'Sure:\n```json\n{"colour": "blue"}\n```'}, Colour, None)
    assert problem is None and value.colour == "blue"


def test_stage_check_failure_is_reasked():
    check = lambda c: None if c.colour == "green" else ("wrong_colour", "say green")  # noqa: E731
    with FakeChatServer(script(GOOD, Reply(content='{"colour": "green"}'))) as server:
        outcome, _ = ask(server, check=check)
    assert outcome.value.colour == "green" and outcome.asks == 2
    assert "wrong_colour" in server.requests[1]["body"]["messages"][-1]["content"]


def test_retry_after_is_honoured_by_the_sdk_and_its_retries_counted():
    slow = Reply(status=429, content="slow down", headers={"retry-after": "0.8"})
    quick = Reply(status=503, content="busy", headers={"retry-after-ms": "50"})
    with FakeChatServer(script(slow, quick, GOOD)) as server:
        outcome, usage = ask(server, max_retries=5)
    # The SDK's own backoff would wait 0.375-0.5 s, then 0.75-1 s: the gaps show the server's waits were used.
    gaps = [b["t"] - a["t"] for a, b in zip(server.requests, server.requests[1:])]
    assert gaps[0] >= 0.8 and 0.05 <= gaps[1] < 0.5
    assert outcome.ok and usage.retries == 2 and len(server.requests) == 3 and usage.sent == 1
    assert [r["headers"]["x-stainless-retry-count"] for r in server.requests] == ["0", "1", "2"]


@pytest.mark.parametrize("status", [500, 503, 408, 409])
def test_server_errors_are_retried_then_fail_with_the_status(status):
    with FakeChatServer(script(Reply(status=status, content="boom", headers={"retry-after-ms": "1"}))) as server:
        outcome, usage = ask(server, max_retries=3)
    assert not outcome.ok and outcome.reason == f"http_{status}" and len(server.requests) == 4
    assert outcome.message == f"http_{status} on all 4 attempts: boom" and usage.retries == 3 and usage.sent == 0


def test_non_retryable_4xx_fails_at_once_and_auth_errors_stop_the_run():
    with FakeChatServer(script(Reply(status=422, content="unprocessable"))) as server:
        outcome, _ = ask(server)
    assert outcome.reason == "http_422" and len(server.requests) == 1
    with FakeChatServer(script(Reply(status=404, content="no such model"))) as server, \
            pytest.raises(EndpointError, match="404"):
        ask(server)


def test_slow_reply_past_the_timeout_is_retried():
    with FakeChatServer(script(Reply(content='{"colour": "red"}', delay_s=1.0), GOOD)) as server:
        outcome, usage = ask(server, timeout_s=0.2)
    assert outcome.ok and usage.retries == 1 and len(server.requests) == 2
    with FakeChatServer(script(Reply(content="x", delay_s=0.5))) as server:
        outcome, _ = ask(server, timeout_s=0.1, max_retries=1)
    assert outcome.reason == "timeout"


def test_server_without_structured_outputs_falls_back_to_our_validation():
    def respond(body):
        if "response_format" in body:
            return Reply(status=400, content="response_format is not supported")
        return GOOD
    with FakeChatServer(respond) as server:
        outcome, _ = ask(server)
    assert outcome.ok and [("response_format" in r["body"]) for r in server.requests] == [True, False]


def test_cache_replays_finished_requests_across_processes(tmp_path):
    path = tmp_path / "cache.jsonl"
    with FakeChatServer(script(Reply(content="not json"), GOOD)) as server:
        first, usage = ask(server, RequestCache(path))
        assert len(server.requests) == 2
        again, usage2 = ask(server, RequestCache(path))
    assert again.value == first.value and len(server.requests) == 2
    assert usage2.sent == 0 and usage2.cache_hits == 2 and usage2.prompt_tokens == 0


def test_cache_skips_a_line_cut_short_by_a_kill(tmp_path):
    path = tmp_path / "cache.jsonl"
    cache = RequestCache(path)
    cache.put("a", {"content": "x"})
    cache.close()
    with path.open("a") as f:
        f.write('{"key": "b", "content": "trunc')  # a kill mid-write
    reopened = RequestCache(path)
    assert reopened.get("a") == {"key": "a", "content": "x"} and reopened.get("b") is None
    assert reopened.skipped_lines == 1
    reopened.put("c", {"content": "y"})
    reopened.close()
    assert RequestCache(path).get("c")["content"] == "y"


def test_request_key_changes_with_every_part():
    base = request_key("m", MESSAGES, {"temperature": 0}, {"type": "object"})
    assert base == request_key("m", [dict(MESSAGES[0])], {"temperature": 0}, {"type": "object"})
    assert len({base, request_key("m2", MESSAGES, {"temperature": 0}, {"type": "object"}),
                request_key("m", MESSAGES, {"temperature": 1}, {"type": "object"}),
                request_key("m", MESSAGES, {"temperature": 0}, None),
                request_key("m", MESSAGES + MESSAGES, {"temperature": 0}, {"type": "object"})}) == 5


def test_the_deadline_cuts_the_sdks_wait_between_retries():
    storm = Reply(status=429, content="slow down", headers={"retry-after": "60"})
    with FakeChatServer(script(storm)) as server:
        start = time.monotonic()
        with pytest.raises(EndpointError, match="reached its deadline of 0.3 s"):
            ask(server, deadline_s=0.3)
    assert time.monotonic() - start < 2 and len(server.requests) == 1


def test_removed_backoff_settings_fail_with_a_clear_message(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("name: r\nsources: [{kind: synthetic}]\nllm: {model: m, max_retries: 2, backoff_s: 0.5}\n")
    with pytest.raises(RecipeError, match=r"llm: backoff_s and max_backoff_s are gone \(the openai SDK's retries"):
        load_recipe(recipe)


def test_concurrency_is_bounded():
    with FakeChatServer(lambda body: Reply(content=json.dumps({"colour": "red"}), delay_s=0.05)) as server:
        async def go():
            client = LLMClient(config_for(server, concurrency=3), RequestCache(None))
            msgs = [[{"role": "user", "content": f"q{i}"}] for i in range(12)]
            await asyncio.gather(*(client.ask(m, schema=Colour) for m in msgs))
            await client.close()
        asyncio.run(go())
    # Requests overlapping in time: never more than 3 within one 50 ms window of arrivals.
    times = sorted(r["t"] for r in server.requests)
    assert len(times) == 12
    assert max(sum(1 for t in times if s <= t < s + 0.04) for s in times) <= 3
