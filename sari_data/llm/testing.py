"""A small OpenAI-compatible chat-completions server on 127.0.0.1, for tests and benchmarks.

A `responder(request_body) -> Reply` decides each answer, so a test can script well-formed
replies, malformed JSON, refusals, 429 storms, 500s with an error message, slow replies and dropped
connections (a server restarting), all through the real SDK.
Every request is logged (body, headers, arrival time and whether it carried the expected bearer token).

    python -m sari_data.llm.testing --latency 0.2     # prints the base URL, serves until killed
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    content: str | None = "ok"
    status: int = 200
    refusal: str | None = None
    delay_s: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None  # send these bytes as the body instead of a chat completion
    finish_reason: str = "stop"
    drop: bool = False  # close the connection without answering (a server going down mid-run)


Responder = Callable[[dict[str, Any]], Reply]


def completion_body(reply: Reply, model: str, prompt_chars: int) -> dict[str, Any]:
    content = reply.content or ""
    return {
        "id": "chatcmpl-test", "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "finish_reason": reply.finish_reason, "logprobs": None,
                     "message": {"role": "assistant", "content": reply.content, "refusal": reply.refusal}}],
        # Rough token counts (4 characters a token), enough for the accounting to be checked.
        "usage": {"prompt_tokens": prompt_chars // 4, "completion_tokens": len(content) // 4,
                  "total_tokens": prompt_chars // 4 + len(content) // 4},
    }


def last_user_text(body: dict[str, Any]) -> str:
    """The text of the last user turn (text parts joined), what most responders key on."""
    for message in reversed(body.get("messages", [])):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            return "\n".join(p.get("text", "") for p in content if p.get("type") == "text")
    return ""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # the default backlog (5) stalls 64 clients connecting at once


class FakeChatServer:
    """`with FakeChatServer(responder) as server: ... server.base_url ... server.requests`."""

    def __init__(self, responder: Responder | None = None, *, api_key: str | None = None):
        self.responder = responder or (lambda body: Reply())
        self.api_key = api_key
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._httpd = _Server(("127.0.0.1", 0), self._handler())
        self._httpd.handle_error = lambda request, address: None  # a client killed mid-request is expected
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.02,), daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def __enter__(self) -> FakeChatServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real servers do
            disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms ACK stall

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                auth_ok = server.api_key is None or self.headers.get("authorization") == f"Bearer {server.api_key}"
                with server._lock:
                    server.requests.append({"body": body, "auth_ok": auth_ok, "t": time.time(),
                                            "headers": dict(self.headers)})
                reply = Reply(status=401, content=None) if not auth_ok else server.responder(body)
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                if reply.drop:
                    self.close_connection = True
                    return
                if reply.raw is not None:
                    payload = reply.raw
                elif reply.status == 200:
                    payload = json.dumps(completion_body(reply, body.get("model", "?"), len(json.dumps(body)))).encode()
                else:
                    payload = json.dumps({"error": {"message": reply.content or f"status {reply.status}",
                                                    "type": "test", "code": str(reply.status)}}).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(payload)))
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

        return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description="serve fixed chat completions after a fixed latency")
    parser.add_argument("--latency", type=float, default=0.2, help="seconds before each reply")
    args = parser.parse_args()
    with FakeChatServer(lambda body: Reply(content="ok", delay_s=args.latency)) as server:
        print(server.base_url, flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()
