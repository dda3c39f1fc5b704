"""LLM client throughput against a local chat server with a fixed 200 ms latency.

    python bench/bench_llm_throughput.py

For each concurrency c, 8*c distinct requests go through the full client path (semaphore,
retry loop, response parsing, validation, the persistent cache written per request). The
latency-bound ideal is ceil(n/c) * 200 ms; the ratio ideal/measured is printed (target >= 0.8
at c=32). The server runs in its own process so it does not share the GIL with the client.
"""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sari_data.llm.cache import RequestCache
from sari_train.openai_client import LLMClient, LLMConfig

LATENCY_S = 0.2
CONCURRENCY = (1, 8, 32, 64)


async def measure(base_url: str, concurrency: int, cache_path: Path) -> tuple[int, float, int]:
    config = LLMConfig(base_url=base_url, model="bench", concurrency=concurrency, max_retries=0, json_schema=False)
    client = LLMClient(config, RequestCache(cache_path))
    n = 8 * concurrency
    messages = [[{"role": "user", "content": f"request {concurrency}-{i}"}] for i in range(n)]
    await client.chat([{"role": "user", "content": f"warm-up {concurrency}"}])  # connect once, outside the timing
    t0 = time.perf_counter()
    outcomes = await asyncio.gather(*(client.ask(m) for m in messages))
    seconds = time.perf_counter() - t0
    await client.close()
    client.cache.close()
    return n, seconds, sum(o.ok for o in outcomes)


def main() -> None:
    server = subprocess.Popen([sys.executable, "-m", "sari_data.llm.testing", "--latency", str(LATENCY_S)],
                              stdout=subprocess.PIPE, text=True)
    try:
        base_url = server.stdout.readline().strip()
        print(f"server {base_url}, fixed latency {LATENCY_S * 1000:.0f} ms")
        print(f"{'concurrency':>11} {'requests':>8} {'seconds':>8} {'req/s':>7} {'ideal req/s':>11} {'ratio':>6}")
        with tempfile.TemporaryDirectory() as tmp:
            for c in CONCURRENCY:
                n, seconds, ok = asyncio.run(measure(base_url, c, Path(tmp) / f"cache{c}.jsonl"))
                ideal = math.ceil(n / c) * LATENCY_S
                assert ok == n, f"{n - ok} requests failed"
                print(f"{c:>11} {n:>8} {seconds:>8.2f} {n / seconds:>7.1f} {n / ideal:>11.1f} {ideal / seconds:>6.2f}")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
