"""The `sari-data view` HTTP server: a read-only browser for one workspace (stdlib only).

    sari-data view workspaces/demo                  # http://127.0.0.1:8765/
    sari-data view workspaces/demo --port 0         # any free port

Routes (GET/HEAD only): `/` and `/static/*` (the page), `/api/facets`, `/api/items?filters`,
`/api/items/<id>`, `/api/quarantine`, `/api/stats`, `/api/runs`, `/stats.png` (drawn into a temp
dir: the workspace is opened read-only and never written), `/audio/<path>` (clips under the
workspace's audio/ dir only, with Range support so players can seek).
"""

from __future__ import annotations

import ipaddress
import json
import sys
import tempfile
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote

from corpus.store import Workspace, WorkspaceError
from sari_data.view import api

STATIC_DIR = Path(__file__).parent / "static"
STATIC = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
          "style.css": "text/css; charset=utf-8"}
AUDIO_TYPES = {".wav": "audio/wav", ".flac": "audio/flac", ".mp3": "audio/mpeg", ".ogg": "audio/ogg"}
# Nothing but our own files: no inline script or style, no other origins, no framing.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; media-src 'self'; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
CHUNK = 1 << 16


class HTTPError(Exception):
    def __init__(self, status: HTTPStatus, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.headers = status, headers or {}


def resolve_clip(audio_dir: Path, relative: str) -> Path:
    """The clip file for a URL path below /audio/; 403 for anything resolving outside the audio
    dir (../, encoded dots, absolute paths, symlinks out), 404 for what is not a clip there."""
    base = audio_dir.resolve()
    try:
        target = (base / unquote(relative)).resolve()
    except (ValueError, OSError):  # NUL bytes, loops
        raise HTTPError(HTTPStatus.NOT_FOUND, "no such clip") from None
    if not target.is_relative_to(base):
        raise HTTPError(HTTPStatus.FORBIDDEN, "outside the workspace's audio folder")
    if not target.is_file() or target.suffix.lower() not in AUDIO_TYPES:
        raise HTTPError(HTTPStatus.NOT_FOUND, "no such clip")
    return target


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(first, last) byte of a single `Range: bytes=...` request, or None for the whole file.
    Malformed or multi-range headers are ignored (RFC 9110 allows that); unsatisfiable is 416."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    first_text, _, last_text = header.removeprefix("bytes=").strip().partition("-")
    try:
        if first_text == "":  # suffix: the last N bytes
            first, last = max(0, size - int(last_text)), size - 1
        else:
            first, last = int(first_text), min(int(last_text), size - 1) if last_text else size - 1
    except ValueError:
        return None
    if first < 0 or first > last or first >= size:
        raise HTTPError(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, "range not satisfiable",
                        {"Content-Range": f"bytes */{size}"})
    return first, last


class Viewer:
    """One read-only workspace and what the routes need: a DB lock (one DuckDB connection shared by
    the request threads) and a temp dir for the stats chart."""

    def __init__(self, root: Path):
        self.ws = Workspace(root, read_only=True)
        self.lock = threading.Lock()
        self.tmp = tempfile.TemporaryDirectory(prefix="sari-view-")
        self.chart: Path | None = None

    def close(self) -> None:
        self.ws.close()
        self.tmp.cleanup()

    def api(self, route: str, query: dict[str, list[str]]) -> Any:
        with self.lock:
            if route == "/api/facets":
                return api.facets(self.ws)
            if route == "/api/items":
                return api.items(self.ws, query)
            if route.startswith("/api/items/"):
                found = api.item_detail(self.ws, unquote(route.removeprefix("/api/items/")))
                if found is None:
                    raise HTTPError(HTTPStatus.NOT_FOUND, "no such item")
                return found
            if route == "/api/quarantine":
                return api.quarantine(self.ws)
            if route == "/api/stats":
                return api.stats(self.ws)
            if route == "/api/runs":
                return {"runs": api.runs(self.ws)}
        raise HTTPError(HTTPStatus.NOT_FOUND, f"no route {route}")

    def stats_png(self) -> Path:
        """`sari-data stats`'s chart, drawn once into the temp dir."""
        from sari_data.stats import summary_tables, write_chart

        with self.lock:
            if self.chart is None:
                tables = summary_tables(self.ws)
                if not any(len(table) for table in tables.values()):
                    raise HTTPError(HTTPStatus.NOT_FOUND, "nothing to chart: the workspace has no items")
                self.chart = write_chart(tables, Path(self.tmp.name) / "stats.png")
            return self.chart


class Handler(BaseHTTPRequestHandler):
    server: ViewServer
    protocol_version = "HTTP/1.1"
    send_body = True
    disable_nagle_algorithm = True  # headers and body go out as two writes: no 40 ms delayed-ACK stall

    def do_GET(self) -> None:
        self._respond(send_body=True)

    def do_HEAD(self) -> None:
        self._respond(send_body=False)

    def _refuse(self) -> None:
        self.close_connection = True  # the request body, if any, is left unread
        self._send_error(HTTPError(HTTPStatus.METHOD_NOT_ALLOWED, "read-only: GET and HEAD only", {"Allow": "GET, HEAD"}))

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse

    def _respond(self, send_body: bool) -> None:
        self.send_body = send_body
        # Split by hand: urlsplit would read `//etc/passwd` as a host name.
        raw_path, _, raw_query = self.path.partition("?")
        try:
            self._check_host()
            self._route(raw_path, parse_qs(raw_query, keep_blank_values=False))
        except HTTPError as err:
            self._send_error(err)
        except (api.BadRequest, WorkspaceError) as err:
            self._send_error(HTTPError(HTTPStatus.BAD_REQUEST, str(err)))
        except (BrokenPipeError, ConnectionResetError):
            pass  # players abort requests when they seek; nothing to answer
        except Exception as err:  # a bug: answer 500 without internals, keep serving
            print(f"sari-data view: error on {raw_path}: {err!r}", file=sys.stderr)
            self._send_error(HTTPError(HTTPStatus.INTERNAL_SERVER_ERROR, f"internal error ({type(err).__name__})"))

    def _check_host(self) -> None:
        """On loopback, answer only requests addressed to it, so a web page cannot reach the corpus
        through DNS rebinding."""
        allowed = self.server.allowed_hosts
        if allowed and (self.headers.get("Host") or "").lower() not in allowed:
            raise HTTPError(HTTPStatus.FORBIDDEN, "unexpected Host header")

    def _route(self, path: str, query: dict[str, list[str]]) -> None:
        viewer = self.server.viewer
        if path in ("/", "/index.html"):
            self._send_file(STATIC_DIR / "index.html", STATIC["index.html"])
        elif path.startswith("/static/") and path.removeprefix("/static/") in STATIC:
            name = path.removeprefix("/static/")
            self._send_file(STATIC_DIR / name, STATIC[name])
        elif path.startswith("/api/"):
            body = json.dumps(viewer.api(path, query), allow_nan=False).encode()
            self._send(HTTPStatus.OK, "application/json", body)
        elif path == "/favicon.ico":
            self._send(HTTPStatus.NO_CONTENT, "image/x-icon", b"")
        elif path == "/stats.png":
            self._send_file(viewer.stats_png(), "image/png")
        elif path.startswith("/audio/"):
            clip = resolve_clip(viewer.ws.audio_dir, path.removeprefix("/audio/"))
            self._send_file(clip, AUDIO_TYPES[clip.suffix.lower()], ranges=True)
        else:
            raise HTTPError(HTTPStatus.NOT_FOUND, f"no route {path}")

    def _headers(self, status: HTTPStatus, content_type: str, length: int, extra: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in {"Content-Type": content_type, "Content-Length": str(length),
                            "Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                            "Referrer-Policy": "no-referrer", "Cache-Control": "no-store", **extra}.items():
            self.send_header(name, value)
        self.end_headers()

    def _send(self, status: HTTPStatus, content_type: str, body: bytes, extra: dict[str, str] | None = None) -> None:
        self._headers(status, content_type, len(body), extra or {})
        if self.send_body:
            self.wfile.write(body)

    def _send_error(self, err: HTTPError) -> None:
        body = json.dumps({"error": str(err), "status": int(err.status)}).encode()
        self._send(err.status, "application/json", body, err.headers)

    def _send_file(self, path: Path, content_type: str, ranges: bool = False) -> None:
        size = path.stat().st_size
        span = byte_range(self.headers.get("Range"), size) if ranges else None
        first, last = span or (0, size - 1)
        extra = {"Accept-Ranges": "bytes"} if ranges else {}
        if span:
            extra["Content-Range"] = f"bytes {first}-{last}/{size}"
        self._headers(HTTPStatus.PARTIAL_CONTENT if span else HTTPStatus.OK, content_type, last - first + 1, extra)
        if not self.send_body:
            return
        with path.open("rb") as f:
            f.seek(first)
            left = last - first + 1
            while left > 0:
                chunk = f.read(min(CHUNK, left))
                if not chunk:
                    break
                self.wfile.write(chunk)
                left -= len(chunk)

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            super().log_message(format, *args)


class ViewServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512  # listen backlog: the default 5 stalls a page that opens many connections at once

    def __init__(self, root: Path, host: str = "127.0.0.1", port: int = 8765, verbose: bool = False):
        self.viewer = Viewer(root)  # fails with a WorkspaceError before binding if there is no workspace
        self.verbose = verbose
        super().__init__((host, port), Handler)
        port = self.server_address[1]
        self.allowed_hosts = {f"{h}:{port}" for h in ("127.0.0.1", "localhost", "[::1]")} if is_loopback(host) else set()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}/"

    def server_close(self) -> None:
        super().server_close()
        self.viewer.close()


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure_warning(host: str, port: int) -> str | None:
    if is_loopback(host):
        return None
    return (f"warning: serving on {host}: anyone who can reach this machine on port {port} can read this "
            f"corpus (no authentication); use --host 127.0.0.1 to keep it local")


def serve(root: Path, host: str = "127.0.0.1", port: int = 8765, verbose: bool = False) -> None:
    """Serve until Ctrl-C, printing the workspace's size and the URL."""
    try:
        server = ViewServer(root, host, port, verbose)
    except OSError as err:
        raise WorkspaceError(f"cannot listen on {host}:{port} ({err.strerror}); pick another --port (0 = any free one)") from None
    if warning := exposure_warning(host, server.server_address[1]):
        print(warning, file=sys.stderr)
    ws = server.viewer.ws
    counts = {table: ws.count(table) for table in ("items", "cots", "rollouts", "difficulty", "quarantine", "runs")}
    print("  ".join(f"{table} {n}" for table, n in counts.items()))
    print(f"serving {root} read-only at {server.url}  (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
