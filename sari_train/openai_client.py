"""The one OpenAI-compatible client of the toolkit: the LLM stages of `sari-data` (captions, questions,
chains of thought, blind test) and the rollout endpoint engine (`sari-data difficulty --endpoint`,
`sari-train eval --endpoint`) all send their requests through `LLMClient`, over the official async
`openai` SDK, to any compatible server (OpenAI, vLLM, SGLang, llama.cpp server, Ollama).

    client = LLMClient(config, RequestCache(ws.root / "llm_cache.jsonl"))
    outcome = await client.ask(messages, schema=Chain, check=ends_on_gold)
    reply = await client.chat(messages, n=4, seed=7, temperature=1.0)    # reply_texts(reply): the 4 answers

What it adds to the SDK, and why:
  * bounded concurrency (a semaphore), so a big corpus does not open thousands of connections;
  * the SDK's retries (408/409/429/5xx, timeouts, dropped connections; 0.5 s doubling to 8 s; Retry-After
    up to 2 min), seen attempt by attempt by the httpx client we give it (`_attempt`), which counts
    them (`x-stainless-retry-count`) and stops the run with an EndpointError the SDK passes on as-is;
  * the key read only from an environment variable whose *name* is configured, so no recipe, run
    record or cache ever holds it; the server's own error message kept in every error;
  * structured outputs: a pydantic schema is sent as `response_format` json_schema, and the reply
    is validated here whatever the server did; a reply that fails (malformed JSON, a schema
    violation, a refusal, a stage check such as "the chain ends on the gold option") is re-asked
    with the error, a bounded number of times, then reported as a failure with a reason code;
  * an optional persistent request cache (anything with `get(key)` and `put(key, reply)`, e.g.
    `sari_data.llm.cache.RequestCache`): an exchange that ended in a usable reply is never sent
    again; a failed one is not cached, so a re-run asks again; identical requests in flight share one reply;
  * early stops: an endpoint that cannot be reached, that accepts connections but lets attempt after
    attempt time out, that says it cannot take the input (e.g. audio on a text-only server; a 5xx
    saying so is not retried), or a run past its total deadline (retry waits included) ends with one
    line; server-side failures (connection errors, timeouts, 5xx) are reported per item and
    `check_transport` fails a run where most requests hit them (a 200 that is no chat completion,
    `bad_response`, is not retried);
  * token and cost accounting, reported in the run's provenance.
Audio goes into a chat as an `input_audio` part holding a base64 16-bit WAV (`audio_part`).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import os
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from corpus.provenance import RunFailed, redact_url

if TYPE_CHECKING:
    import openai

ENV_BASE_URL = ("SARI_LLM_BASE_URL", "OPENAI_BASE_URL")
ENV_MODEL = ("SARI_LLM_MODEL",)


class LLMConfig(BaseModel):
    """Endpoint, model and request policy (the `llm:` block of a recipe for the LLM stages).

    The API key is never a field: only the *name* of the environment variable that holds it."""

    model_config = ConfigDict(extra="forbid")

    base_url: str | None = Field(None, description="e.g. http://localhost:8000/v1; env SARI_LLM_BASE_URL or OPENAI_BASE_URL")
    model: str | None = Field(None, description="model name the endpoint serves; env SARI_LLM_MODEL")
    api_key_env: str = Field("OPENAI_API_KEY", description="name of the environment variable holding the key")
    concurrency: int = Field(16, ge=1, description="requests in flight at once")
    timeout_s: float = Field(120.0, gt=0, description="per-attempt timeout; a timeout is retried")
    max_timeouts_in_a_row: int | None = Field(None, ge=1, description=(
        "stop the run after this many attempts in a row timed out with no answer between (default: "
        "concurrency + 2: every request in flight, then two retries)"))
    deadline_s: float | None = Field(None, gt=0, description="stop the run after this many seconds in all (none: no limit)")
    max_retries: int = Field(6, ge=0, description="the SDK's retries on 408/409/429/5xx, timeouts and dropped "
                                                  "connections (waits 0.5 s doubling to 8 s, or the Retry-After)")
    max_reasks: int = Field(2, ge=0, description="re-asks with the validation error before an item is recorded failed")
    temperature: float = Field(0.7, ge=0)
    max_tokens: int = Field(1024, ge=1)
    json_schema: bool = Field(True, description="ask for response_format json_schema (we validate either way)")
    price_input_per_mtok: float = Field(0.0, ge=0, description="USD per million prompt tokens, for the cost report")
    price_output_per_mtok: float = Field(0.0, ge=0, description="USD per million completion tokens")

    @model_validator(mode="before")
    @classmethod
    def _no_backoff(cls, data: Any) -> Any:
        if isinstance(data, dict) and {"backoff_s", "max_backoff_s"} & set(data):
            raise ValueError("backoff_s and max_backoff_s are gone (the openai SDK's retries wait 0.5 s doubling to "
                             "8 s, or the server's Retry-After): delete them; max_retries still sets how many")
        return data

    def resolved(self) -> LLMConfig:
        """This config with base URL and model filled from the environment where unset."""
        return self.model_copy(update={"base_url": self.base_url or _first_env(ENV_BASE_URL),
                                       "model": self.model or _first_env(ENV_MODEL)})

    @property
    def configured(self) -> bool:
        return bool(self.base_url and self.model)

    def api_key(self) -> str:
        # Keyless local servers accept any token; "EMPTY" is the vLLM convention.
        return os.environ.get(self.api_key_env) or "EMPTY"


class EndpointOptions(BaseModel):
    """Where a served audio LM answers (vLLM, SGLang): the endpoint settings of `sari-data difficulty`
    and `sari-train eval`; the served model's name is their `model`."""

    endpoint: str | None = Field(None, description="base URL of an OpenAI-compatible server that takes audio "
                                                   "(e.g. http://127.0.0.1:8000/v1); the model is its served name")
    api_key_env: str = Field("OPENAI_API_KEY", description="endpoint: name of the environment variable holding the key")
    concurrency: int = Field(8, ge=1, description="endpoint: requests in flight")
    retries: int = Field(3, ge=0, description="endpoint: retries per request (the SDK's backoff, honouring Retry-After)")
    timeout: float = Field(120.0, gt=0, description="endpoint: seconds per request")


def _first_env(names: tuple[str, ...]) -> str | None:
    return next((os.environ[n] for n in names if os.environ.get(n)), None)


T = TypeVar("T")
TRANSPORT = ("connection_error", "timeout")  # with http_5xx: the server, not the reply, failed
RETRIES_UNTIL_CONNECTED = 2  # an endpoint that never answered is most likely down: give up early
UNSUPPORTED_INPUT = re.compile(
    r"\b(audio|image|video|input_audio|multimodal|modalit\w*)\b[^.]*\b(not supported|unsupported|"
    r"not support|cannot|can't)|\b(not supported|unsupported|does not support|doesn't support)\b[^.]*"
    r"\b(audio|image|video|input_audio|multimodal|modalit\w*)\b", re.I)
Check = Callable[[Any], "tuple[str, str] | None"]  # a value -> None, or (reason code, message)


class EndpointError(RuntimeError):
    """The endpoint cannot serve this run at all (not configured, unreachable, bad key, unknown model,
    input it cannot take): stop; the message says which and what to do."""


class Cache(Protocol):
    def get(self, key: str) -> dict[str, Any] | None: ...
    def put(self, key: str, reply: dict[str, Any]) -> None: ...


class NoCache:
    """Every request is sent (rollouts: a sampled answer is not to be replayed)."""

    def get(self, key: str) -> dict[str, Any] | None:
        return None

    def put(self, key: str, reply: dict[str, Any]) -> None:
        pass


def request_key(model: str, messages: list[dict[str, Any]], params: dict[str, Any], schema: dict | None) -> str:
    """A request's identity (cache key, sharing of identical requests in flight): a hash of everything
    that shapes the answer (the schema hash is its version)."""
    payload = {"model": model, "messages": messages, "params": params, "schema": schema}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def wav_base64(samples: np.ndarray, sample_rate: int = 16000) -> str:
    """Float samples in [-1, 1] as a base64 16-bit PCM WAV file."""
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, np.asarray(samples, dtype=np.float32), sample_rate, format="WAV", subtype="PCM_16")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def audio_part(samples: np.ndarray, sample_rate: int = 16000) -> dict[str, Any]:
    """A clip as an OpenAI chat content part (what vLLM, SGLang and OpenAI's audio models read)."""
    return {"type": "input_audio", "input_audio": {"data": wav_base64(samples, sample_rate), "format": "wav"}}


class RequestFailed(Exception):
    """One request failed for good (retries spent, or a non-retryable status)."""

    def __init__(self, reason: str, message: str):
        super().__init__(f"{reason}: {message}")
        self.reason, self.message = reason, message


@dataclass
class Outcome(Generic[T]):
    """The result of `ask`: a validated value, or the reason it could not be had."""

    value: T | None
    reason: str = ""
    message: str = ""
    asks: int = 0  # 1 + re-asks
    raw: str = ""  # the last reply's text, kept with a failure so it can be inspected

    @property
    def ok(self) -> bool:
        return self.value is not None

    @property
    def transient(self) -> bool:
        """The request never got a usable answer from the server (down, restarting, overloaded): such
        an item is not stored, so the next run asks again."""
        return is_transport_failure(self.reason)


def is_transport_failure(reason: str) -> bool:
    return reason in TRANSPORT or reason.startswith("http_5")


@dataclass
class Usage:
    """What a run cost: requests sent, cache hits, retries, tokens, failures by reason."""

    sent: int = 0
    cache_hits: int = 0
    retries: int = 0
    reasks: int = 0
    asks: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    failures: Counter = field(default_factory=Counter)

    def report(self, config: LLMConfig) -> dict[str, Any]:
        cost = (self.prompt_tokens * config.price_input_per_mtok
                + self.completion_tokens * config.price_output_per_mtok) / 1e6
        return {"model": config.model, "base_url": redact_url(config.base_url or ""), "asks": self.asks,
                "requests_sent": self.sent, "cache_hits": self.cache_hits, "retries": self.retries, "reasks": self.reasks,
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "cost_usd": round(cost, 6), "failures": dict(self.failures)}


class LLMClient:
    def __init__(self, config: LLMConfig, cache: Cache | None = None):
        import openai  # here, not at the top: loading a recipe must not pay for the SDK

        config = config.resolved()
        if not config.configured:
            raise EndpointError("no LLM endpoint configured: pass --base-url and --model, set SARI_LLM_BASE_URL "
                                "and SARI_LLM_MODEL, or add an `llm:` block to the recipe")
        self.config = config
        self.cache = cache if cache is not None else NoCache()
        self.usage = Usage()
        self.use_json_schema = config.json_schema
        self._semaphore = asyncio.Semaphore(config.concurrency)
        self._in_flight: dict[str, asyncio.Future] = {}
        self._connected = False  # set by the first answer of any kind from the server
        self._timeouts_in_a_row = 0  # reset by any answer
        self._stopped: str | None = None  # why the run stops: no attempt is sent after it
        self._stop_at = time.monotonic() + config.deadline_s if config.deadline_s else None

        class Watched(openai.DefaultAsyncHttpxClient):  # the SDK's defaults; every attempt goes through _attempt
            async def send(http, request: Any, **kwargs: Any) -> Any:
                return await self._attempt(request, partial(super().send, request, **kwargs))

        self._sdk = openai.AsyncOpenAI(base_url=config.base_url, api_key=config.api_key(), timeout=config.timeout_s,
                                       max_retries=config.max_retries, http_client=Watched())

    async def close(self) -> None:
        await self._sdk.close()

    # --- one validated answer ----------------------------------------------------------------

    async def ask(self, messages: list[dict[str, Any]], *, schema: type[BaseModel] | None = None,
                  check: Check | None = None, **params: Any) -> Outcome:
        """A reply parsed into `schema` (or the text) that passes `check`; re-asked with the error
        up to `max_reasks` times, then given up with the last reason. Only an exchange that ends in a
        usable reply is cached (all its replies, so a re-run replays it): a failure is asked again."""
        self.usage.asks += 1
        convo = list(messages)
        reason = message = raw = ""
        fresh: list[tuple[str, dict[str, Any]]] = []  # (cache key, reply) of replies sent in this exchange
        for ask in range(1, self.config.max_reasks + 2):
            try:
                key, reply, sent = await self.chat_uncached(convo, schema=schema, **params)
            except RequestFailed as err:
                self.usage.failures[err.reason] += 1
                return Outcome(None, err.reason, err.message, ask)
            if sent:
                fresh.append((key, reply))
            value, problem = parse_reply(reply, schema, check)
            if problem is None:
                for key, reply in fresh:
                    self.cache.put(key, reply)
                return Outcome(value, asks=ask)
            reason, message = problem
            raw = reply.get("content") or reply.get("refusal") or ""
            if ask <= self.config.max_reasks:
                self.usage.reasks += 1
                convo = convo + [
                    {"role": "assistant", "content": raw},
                    {"role": "user", "content": f"Your reply was rejected ({reason}): {message} "
                                                "Answer again, following the instructions exactly."},
                ]
        self.usage.failures[reason] += 1
        return Outcome(None, reason, message, self.config.max_reasks + 1, raw)

    def check_transport(self) -> None:
        check_transport(self.usage.report(self.config))

    # --- one request, cached -------------------------------------------------------------------

    async def chat(self, messages: list[dict[str, Any]], *, schema: type[BaseModel] | None = None,
                   **params: Any) -> dict[str, Any]:
        """The reply to one request (content, refusal, finish reason, usage), from the cache if finished
        before; a fresh reply is cached at once (`ask` caches only replies that pass its checks)."""
        key, reply, sent = await self.chat_uncached(messages, schema=schema, **params)
        if sent:
            self.cache.put(key, reply)
        return reply

    async def chat_uncached(self, messages: list[dict[str, Any]], *, schema: type[BaseModel] | None = None,
                            **params: Any) -> tuple[str, dict[str, Any], bool]:
        """(cache key, reply, whether it was sent now): a cached reply, or one sent and not yet cached."""
        params = {"temperature": self.config.temperature, "max_tokens": self.config.max_tokens, **params}
        schema_json = schema.model_json_schema() if schema else None
        key = request_key(self.config.model, messages, params, schema_json)
        cached = self.cache.get(key)
        if cached is not None:
            self.usage.cache_hits += 1
            return key, cached, False
        if key in self._in_flight:  # the same request already on its way: share its reply
            self.usage.cache_hits += 1
            return key, await asyncio.shield(self._in_flight[key]), False
        self._in_flight[key] = asyncio.ensure_future(self._send_counted(messages, params, schema, schema_json))
        try:
            return key, await asyncio.shield(self._in_flight[key]), True
        finally:
            self._in_flight.pop(key, None)

    async def _send_counted(self, messages: list[dict[str, Any]], params: dict[str, Any],
                            schema: type[BaseModel] | None, schema_json: dict | None) -> dict[str, Any]:
        async with self._semaphore:
            reply = await self._send(messages, params, schema, schema_json)
        self.usage.sent += 1
        self.usage.prompt_tokens += reply["usage"]["prompt_tokens"]
        self.usage.completion_tokens += reply["usage"]["completion_tokens"]
        return reply

    async def _send(self, messages: list[dict[str, Any]], params: dict[str, Any],
                    schema: type[BaseModel] | None, schema_json: dict | None) -> dict[str, Any]:
        import openai

        kwargs = dict(model=self.config.model, messages=messages, **params)
        if schema is not None and self.use_json_schema:
            kwargs["response_format"] = {"type": "json_schema", "json_schema": {
                "name": schema.__name__, "schema": schema_json, "strict": True}}
        left = None if self._stop_at is None else self._stop_at - time.monotonic()
        try:
            if left is not None and left <= 0:
                raise TimeoutError  # past the deadline: not sent
            async with asyncio.timeout(left):  # the deadline, the SDK's waits between retries included
                return reply_dict(await self._sdk.chat.completions.create(**kwargs))
        except TimeoutError:
            if left is None:  # not the deadline's
                raise
            raise EndpointError(f"the run reached its deadline of {self.config.deadline_s:g} s "
                                f"({redact_url(self.config.base_url or '')}); what finished is stored: re-run "
                                "to continue, or raise the deadline") from None
        except openai.APIStatusError as err:
            status, detail = err.status_code, server_message(err)
            if status in (401, 403, 404):
                raise EndpointError(f"{redact_url(self.config.base_url or '')} answered {status} for model "
                                    f"{self.config.model!r} ({detail}): check the model name and the key in "
                                    f"${self.config.api_key_env}") from None
            if status == 400 and "response_format" in kwargs and self.use_json_schema:
                self.use_json_schema = False  # the server does not do structured outputs: validate ourselves
                return await self._send(messages, params, schema, schema_json)
            if status in (400, 415, 422, 500, 501) and UNSUPPORTED_INPUT.search(detail):
                raise EndpointError(f"{redact_url(self.config.base_url or '')} (model {self.config.model!r}) "
                                    f"cannot take this input: HTTP {status} \"{detail}\"; use a model/server "
                                    "that accepts it (for captions: one with audio input)") from None
            if status not in (408, 409, 429) and status < 500:  # not retried
                raise RequestFailed(f"http_{status}", detail) from None
            reason, said, request = f"http_{status}", f": {detail}", err.request
        except openai.APIConnectionError as err:  # the SDK's retries spent (APITimeoutError included)
            reason, said = "timeout" if isinstance(err, openai.APITimeoutError) else "connection_error", ""
            request = err.request
        except (ValueError, TypeError, AttributeError, IndexError) as err:  # a 200 that is not a chat completion
            raise RequestFailed("bad_response", f"bad_response ({_short(str(err), 80)})") from None
        attempts = int(request.headers["x-stainless-retry-count"]) + 1
        raise RequestFailed(reason, f"{reason} on all {attempts} attempts{said}")

    async def _attempt(self, request: Any, send: Callable[[], Any]) -> Any:
        """One attempt of the SDK's, numbered by its `x-stainless-retry-count` header. An EndpointError
        raised here reaches `_send` as it is: the SDK neither retries nor wraps it."""
        import httpx2  # the SDK's HTTP library

        if self._stopped:
            raise EndpointError(self._stopped)
        retry = int(request.headers["x-stainless-retry-count"])
        self.usage.retries += retry > 0
        try:
            response = await send()
        except httpx2.TimeoutException:
            self._count_timeout()
            raise
        except httpx2.TransportError as err:
            if not self._connected and retry >= min(self.config.max_retries, RETRIES_UNTIL_CONNECTED):
                raise EndpointError(f"cannot reach the endpoint {redact_url(self.config.base_url or '')} "
                                    f"({_short(str(err), 120)}); start the server or fix the endpoint URL") from None
            raise
        self._connected, self._timeouts_in_a_row = True, 0
        if response.status_code >= 500 and UNSUPPORTED_INPUT.search(response.text):
            response.headers["x-should-retry"] = "false"  # the input, not the server, failed: the SDK stops at once
        return response

    def _count_timeout(self) -> None:
        """A server that accepts connections but never answers would cost every request all its
        retries (27 items x 7 attempts x the timeout): stop once this many attempts time out in a row."""
        self._timeouts_in_a_row += 1
        limit = self.config.max_timeouts_in_a_row or self.config.concurrency + 2
        if self._timeouts_in_a_row >= limit and not self._stopped:
            self._stopped = (f"{redact_url(self.config.base_url or '')} accepted the connection but did not answer "
                             f"{self._timeouts_in_a_row} requests in a row within {self.config.timeout_s:g} s; check "
                             "that the server is up and not overloaded, or raise --timeout")
        if self._stopped:
            raise EndpointError(self._stopped) from None


def check_transport(report: dict[str, Any]) -> None:
    """Raise RunFailed when most of a run's asks (a usage report) failed on the server's side (down,
    restarting): their items were left unstored, so the next run retries them."""
    reasons = sorted(r for r in report["failures"] if is_transport_failure(r))
    failed = sum(report["failures"][r] for r in reasons)
    if failed and failed * 2 > report["asks"]:
        raise RunFailed(f"{failed} of {report['asks']} requests to {report['base_url']} failed on the server's side "
                        f"({', '.join(reasons)}); nothing was stored for them: check the server, then run the same "
                        "command again")


def reply_dict(completion: Any) -> dict[str, Any]:
    """The parts of a chat completion we keep (and cache): the first choice, and the texts of the
    others when `n` asked for more (`reply_texts`)."""
    choices = sorted(completion.choices, key=lambda c: c.index or 0)
    choice = choices[0]
    usage = completion.usage
    reply = {"content": choice.message.content, "refusal": getattr(choice.message, "refusal", None),
             "finish_reason": choice.finish_reason,
             "usage": {"prompt_tokens": int(getattr(usage, "prompt_tokens", 0) or 0),
                       "completion_tokens": int(getattr(usage, "completion_tokens", 0) or 0)}}
    if len(choices) > 1:
        reply["more"] = [c.message.content or "" for c in choices[1:]]
    return reply


def reply_texts(reply: dict[str, Any]) -> list[str]:
    """Every choice's text, in the server's order."""
    return [reply.get("content") or "", *reply.get("more", [])]


def server_message(err: openai.APIStatusError) -> str:
    """What the server said: the `error.message` of an OpenAI-style body, else the body's text."""
    body = err.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        text = inner.get("message") if isinstance(inner, dict) else inner
        if text:
            return _short(str(text))
    return _short(err.message)


def parse_reply(reply: dict[str, Any], schema: type[BaseModel] | None,
                check: Check | None) -> tuple[Any, tuple[str, str] | None]:
    """(value, None) for a usable reply, else (None, (reason code, message for the re-ask))."""
    content = reply.get("content")
    if reply.get("refusal"):
        return None, ("refusal", f"the model refused: {_short(reply['refusal'])}")
    if not content or not content.strip():
        return None, ("empty_reply", "the reply was empty")
    if reply.get("finish_reason") == "length":
        return None, ("truncated", "the reply hit the token limit; be more concise")
    value: Any = content.strip()
    if schema is not None:
        try:
            data = json.loads(_json_text(content))
        except ValueError as err:
            return None, ("malformed_json", f"the reply is not valid JSON ({_short(str(err))})")
        try:
            value = schema.model_validate(data)
        except ValidationError as err:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'reply'}: {e['msg']}" for e in err.errors()[:5])
            return None, ("schema_violation", f"the JSON does not match the schema ({problems})")
    problem = check(value) if check else None
    return (None, problem) if problem else (value, None)


def _json_text(content: str) -> str:
    """The JSON object in a reply, without the ```json fences some models add."""
    fenced = re.search(r"```(?:json)?\s*(.*?)```", content, flags=re.DOTALL)
    text = fenced.group(1) if fenced else content
    start, end = text.find("{"), text.rfind("}")
    return text[start:end + 1] if start >= 0 and end > start else text


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + "…"


def schema_instructions(schema: type[BaseModel]) -> str:
    """The schema spelled out in the prompt too, for servers that ignore `response_format`."""
    return f"Reply with one JSON object only, matching this JSON schema: {json.dumps(schema.model_json_schema())}"
