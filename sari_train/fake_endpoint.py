"""A tiny OpenAI-compatible chat server on 127.0.0.1 that "answers" audio questions, for tests and
offline smoke runs of `EndpointEngine` (no model: answers are seeded picks among the options).

It reads what a real audio server reads (the text part with the options list, the `input_audio`
WAV) and answers in the R1-AQA format. Each choice is drawn from (seed, choice index, the clip's
bytes), so a prompt answers the same way whatever other prompts share a batch; a silent clip is
answered "nothing" (always wrong), which gives the silence probe something to find.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import io
import json
import random
import re
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import numpy as np
import soundfile as sf


class FakeEndpoint:
    def __init__(self, fail_first: int = 0):
        self.requests: list[dict[str, Any]] = []
        self.fail_first = fail_first  # answer HTTP 500 to this many requests first (to exercise retries)
        self.lock = threading.Lock()
        self.url = ""
        self.server: ThreadingHTTPServer | None = None

    def stop(self) -> None:
        """Stop listening: later requests are refused, as by a server that went away."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def answer(self, body: dict[str, Any]) -> dict[str, Any]:
        parts = [p for turn in body["messages"] if isinstance(turn["content"], list) for p in turn["content"]]
        text = " ".join(p["text"] for p in parts if p["type"] == "text")
        audio = next(p["input_audio"]["data"] for p in parts if p["type"] == "input_audio")
        options = ast.literal_eval(re.search(r"options: (\[.*?\])\.", text).group(1))
        pcm, _ = sf.read(io.BytesIO(base64.b64decode(audio)), dtype="int16")
        silent = not np.any(pcm)
        clip = hashlib.sha256(pcm.tobytes()).hexdigest()[:16]
        n, seed = body.get("n", 1), body.get("seed", 0)
        picks = ["nothing" if silent else random.Random(f"{seed}:{i}:{clip}").choice(options) for i in range(n)]
        return {"id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": [{"index": i, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": f"<answer>{pick}</answer>"}}
                            for i, pick in enumerate(picks)],
                "usage": {"prompt_tokens": 1, "completion_tokens": n, "total_tokens": 1 + n}}


@contextmanager
def serve(fail_first: int = 0) -> Iterator[FakeEndpoint]:
    """Run a FakeEndpoint on a free port; `endpoint.url` is the base URL (…/v1)."""
    endpoint = FakeEndpoint(fail_first)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with endpoint.lock:
                endpoint.requests.append(body)
                failing = endpoint.fail_first > 0
                endpoint.fail_first -= failing
            status, payload = (500, {"error": {"message": "try again"}}) if failing else (200, endpoint.answer(body))
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if failing:
                self.send_header("Retry-After-Ms", "1")  # retry at once (the client's default waits 0.5 s and up)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:  # keep test output clean
            pass

    server = endpoint.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    endpoint.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield endpoint
    finally:
        endpoint.stop()
