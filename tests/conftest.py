"""Offline test settings, and a fake Hub on 127.0.0.1 speaking the endpoints a push uses
(`sari-data publish`, `sari-train push`)."""

import base64
import hashlib
import json
import os
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

import pytest

# Hub look-ups hang ~50 s before failing on an offline machine; never try.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# trackio reads its folder once, when first imported (by whichever test comes first): one per session.
os.environ["TRACKIO_DIR"] = tempfile.mkdtemp(prefix="sari-tests-trackio-")


class FakeHub:
    """Stores repos (datasets and models) as {path: bytes}; every file is a regular (non-LFS) git blob."""

    def __init__(self, token: str):
        self.token = token
        self.repos: dict[str, dict[str, bytes]] = {}
        self.private: dict[str, bool] = {}
        self.types: dict[str, str] = {}  # repo -> dataset | model
        self.commits: list[list[str]] = []  # paths added or deleted per commit
        self.auth_seen: list[str] = []
        self.fail_commits_from: int | None = None  # answer 500 to this commit (0-based) and every later one
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _send(self, status: int, body, headers: dict | None = None):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _repo(self, parts: list[str]) -> str:
                return f"{parts[2]}/{parts[3]}"

            def _authorised(self) -> bool:
                auth = self.headers.get("Authorization", "")
                hub.auth_seen.append(auth)
                if auth != f"Bearer {hub.token}":
                    self._send(401, {"error": "Invalid credentials"})
                    return False
                return True

            def do_GET(self):
                parts = urlparse(self.path).path.strip("/").split("/")
                if not self._authorised():
                    return
                if parts[0] == "api" and parts[1] in ("datasets", "models"):
                    repo = self._repo(parts)
                    if repo not in hub.repos:
                        return self._send(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
                    if len(parts) == 4 or parts[4] == "revision":  # repo_info: after an upload that changed nothing
                        sha = hashlib.sha1(str(len(hub.commits)).encode()).hexdigest()
                        return self._send(200, {"id": repo, "sha": sha, "private": hub.private[repo]})
                    if parts[4] == "tree":
                        files = [{"type": "file", "path": p, "size": len(b), "oid": git_blob_id(b)}
                                 for p, b in sorted(hub.repos[repo].items())]
                        return self._send(200, files)
                self._send(404, {"error": f"no route {self.path}"})

            def do_POST(self):
                parts = urlparse(self.path).path.strip("/").split("/")
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if not self._authorised():
                    return
                if parts == ["api", "repos", "create"]:
                    payload = json.loads(body)
                    repo = f"{payload['organization']}/{payload['name']}"
                    hub.repos.setdefault(repo, {})
                    hub.private.setdefault(repo, payload.get("visibility") == "private" or payload.get("private") is True)
                    hub.types.setdefault(repo, payload.get("type", "model"))
                    return self._send(200, {"url": f"{hub.endpoint}/datasets/{repo}"})
                if parts == ["api", "validate-yaml"]:
                    return self._send(200, {})
                repo = self._repo(parts)
                if parts[4] == "preupload":
                    files = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                              "oid": git_blob_id(hub.repos[repo][f["path"]]) if f["path"] in hub.repos[repo] else None}
                             for f in json.loads(body)["files"]]
                    return self._send(200, {"files": files})
                if parts[4] == "commit":
                    if hub.fail_commits_from is not None and len(hub.commits) >= hub.fail_commits_from:
                        hub.commits.append([])
                        return self._send(500, {"error": "simulated outage"})
                    touched = []
                    for line in body.splitlines():
                        op = json.loads(line)
                        if op["key"] == "file":
                            hub.repos[repo][op["value"]["path"]] = base64.b64decode(op["value"]["content"])
                        elif op["key"] == "deletedFile":
                            del hub.repos[repo][op["value"]["path"]]
                        if op["key"] != "header":
                            touched.append(op["value"]["path"])
                    hub.commits.append(touched)
                    oid = hashlib.sha1(str(len(hub.commits)).encode()).hexdigest()
                    url = f"{hub.endpoint}/datasets/{repo}/commit/{oid}"
                    return self._send(200, {"commitUrl": url, "commitOid": oid, "pullRequestUrl": None})
                self._send(404, {"error": f"no route {self.path}"})

        return Handler


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\x00" % len(data) + data).hexdigest()


@pytest.fixture
def fake_hub(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # the suite runs offline
    hub = FakeHub(token="hf_TestSecret0123456789abcdef")
    thread = threading.Thread(target=hub.server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield hub
    hub.server.shutdown()
    hub.server.server_close()

@pytest.fixture(scope="session")
def replica_dirs(tmp_path_factory):
    """Both hub-repo replicas (real tokenizer, templates, configs; small random weights), built once
    per test session on first use: {"qwen2-audio": folder, "qwen2.5-omni": folder}."""
    from sari_train.models.replica import REPLICAS

    built = {}

    def get(name: str):
        if name not in built:
            built[name] = REPLICAS[name](tmp_path_factory.mktemp(name.replace(".", "")))
        return built[name]

    return get
