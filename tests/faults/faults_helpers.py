"""Helpers of the fault-injection suite: run a CLI in-process and read its one-line error, a port
nothing listens on, a small workspace with audio."""

from __future__ import annotations

import re
import socket
from pathlib import Path

from corpus.clips import save_clip
from corpus.store import Workspace
from corpus.testing import dummy_clip, dummy_item


def run_cli(main, argv: list[str], capsys) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `main(argv)`; an exception other than SystemExit fails the test
    with its traceback, which is exactly what these tests guard against."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_:  # argparse usage errors
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line_error(err: str, prog: str) -> str:
    """The error line of a CLI's stderr (argparse may print its usage above it); no traceback."""
    assert "Traceback" not in err, err
    lines = [line.strip() for line in err.replace("\r", "\n").splitlines()
             if line.strip() and not re.search(r"\d+%\|", line)]  # progress bars share stderr
    assert lines and lines[-1].startswith(prog) and ": error: " in lines[-1], err
    assert len(lines) == 1 or lines[0].startswith("usage:"), err
    return lines[-1]


def closed_port_url() -> str:
    """An http base URL on 127.0.0.1 where nothing listens (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def audio_workspace(root: Path, n: int = 4, split: str = "test") -> Path:
    """`n` items with 1-s tones (300, 400, ... Hz) and no caption, in a new workspace."""
    with Workspace(root, create=True) as ws:
        items = [dummy_item(i, audio=save_clip(ws.audio_dir, dummy_clip(1.0, 300.0 + 100 * i), 16000), split=split)
                 for i in range(n)]
        ws.upsert(items)
    return root


class SilentServer:
    """Accepts connections and reads requests, but never answers: a hung model server."""

    def __init__(self):
        import threading

        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(256)
        self.accepted: list[socket.socket] = []
        self.base_url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/v1"
        self.thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:  # closed
                return
            self.accepted.append(connection)

    def __enter__(self) -> SilentServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.listener.close()
        for connection in self.accepted:
            connection.close()
