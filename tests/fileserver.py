"""A real HTTP file server on 127.0.0.1 for download tests and the download benchmark.

Serves files from a folder with Range support, and can misbehave on purpose: drop the connection after N bytes,
answer 5xx a number of times, ignore Range, or emulate a login-protected site (Cityscapes' form login + MD5 page).
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse


class FileServer:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.drop_after: dict[str, int] = {}  # path -> bytes to send before closing, once
        self.fail_times: dict[str, tuple[int, int]] = {}  # path -> (status, remaining times)
        self.ignore_range = False
        self.rate_limit: float | None = None  # bytes/s per response, to stand in for a real network link
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        self.login: tuple[str, str] | None = None  # (user, password) for /login-protected packages
        self.sessions: set[str] = set()
        self.hits: dict[str, int] = defaultdict(int)
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                server._get(self)

            def do_POST(self) -> None:
                server._post(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> FileServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _reply(self, h: BaseHTTPRequestHandler, status: int, body: bytes = b"", headers: dict[str, str] | None = None):
        h.send_response(status)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def _authorised(self, h: BaseHTTPRequestHandler) -> bool:
        cookie = h.headers.get("Cookie", "")
        return any(f"session={s}" in cookie for s in self.sessions)

    def _post(self, h: BaseHTTPRequestHandler) -> None:
        body = h.rfile.read(int(h.headers.get("Content-Length", 0))).decode()
        form = {k: v[0] for k, v in parse_qs(body).items()}
        self.requests.append(("POST", h.path, None))
        if self.login and (form.get("username"), form.get("password")) == self.login:
            token = hashlib.md5(os.urandom(8)).hexdigest()
            self.sessions.add(token)
            self._reply(h, 302, headers={"Location": "/", "Set-Cookie": f"session={token}; Path=/"})
        else:
            self._reply(h, 200, b"login form again")

    def _get(self, h: BaseHTTPRequestHandler) -> None:
        parsed = urlparse(h.path)
        rng = h.headers.get("Range")
        self.requests.append(("GET", h.path, rng))
        self.hits[parsed.path] += 1
        if parsed.path == "/login":
            return self._reply(h, 200, b"<form>")
        if parsed.path in ("/file-handling/", "/md5-sum/"):
            if not self._authorised(h):
                return self._reply(h, 302, headers={"Location": "/login"})
            name = {"1": "gtFine_trainvaltest.zip", "3": "leftImg8bit_trainvaltest.zip"}[parse_qs(parsed.query)["packageID"][0]]
            if parsed.path == "/md5-sum/":
                md5 = hashlib.md5((self.root / name).read_bytes()).hexdigest()
                return self._reply(h, 200, f"{md5}  {name}\n".encode())
            return self._send_file(h, self.root / name, rng, parsed.path)
        status = self.fail_times.get(parsed.path)
        if status and status[1] > 0:
            self.fail_times[parsed.path] = (status[0], status[1] - 1)
            return self._reply(h, status[0], b"try later")
        path = self.root / parsed.path.lstrip("/")
        if not path.is_file():
            return self._reply(h, 404, b"not found")
        self._send_file(h, path, rng, parsed.path)

    def _send_file(self, h: BaseHTTPRequestHandler, path: Path, rng: str | None, key: str) -> None:
        size = path.stat().st_size
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", rng or "")
        if match and not self.ignore_range:
            start = int(match.group(1))
            if start >= size:
                return self._reply(h, 416, headers={"Content-Range": f"bytes */{size}"})
        h.send_response(206 if start else 200)
        h.send_header("Content-Length", str(size - start))
        h.send_header("Accept-Ranges", "bytes")
        if start:
            h.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        h.end_headers()
        limit = self.drop_after.pop(key, None)
        with open(path, "rb") as fh:
            fh.seek(start)
            if limit is not None:
                h.wfile.write(fh.read(limit))
                h.wfile.flush()
                h.close_connection = True
                h.connection.shutdown(2)
                return
            started, sent = time.monotonic(), 0
            while chunk := fh.read(1 << 20):
                h.wfile.write(chunk)
                sent += len(chunk)
                if self.rate_limit:
                    time.sleep(max(0.0, sent / self.rate_limit - (time.monotonic() - started)))
