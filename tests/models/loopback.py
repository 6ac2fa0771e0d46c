"""A loopback HTTP server for the download tests: serves a payload, honours Range, can fail, drop or stall."""
from __future__ import annotations

import hashlib
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PAYLOAD = bytes(range(256)) * 10_000 + b"tail"  # ~2.4 MiB: several read chunks
PAYLOAD_MD5 = hashlib.md5(PAYLOAD).hexdigest()
WRONG_MD5_PREFIX = format((int(PAYLOAD_MD5[:6], 16) + 1) % 16**6, "06x")


class _Handler(BaseHTTPRequestHandler):
    """Serves ``server.payload``, honouring ``Range`` unless told not to; can fail, or drop or stall mid-body."""

    server: LoopbackServer

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        srv = self.server
        srv.range_headers.append(self.headers.get("Range"))
        if srv.fail_with is not None:
            self.send_error(srv.fail_with)
            return
        data, start = srv.payload, 0
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match and srv.honour_range:
            start = max(int(match.group(1)) - srv.range_skew, 0)
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if srv.stall_after is not None:
            self.wfile.write(body[: srv.stall_after])
            self.wfile.flush()
            srv.release.wait(timeout=10)  # hold the connection open, silent, until the test ends
            return
        self.wfile.write(body if srv.drop_after is None else body[: srv.drop_after])
        self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (http.server API)
        pass


class LoopbackServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.payload = PAYLOAD
        self.honour_range = True
        self.drop_after: int | None = None
        self.fail_with: int | None = None
        self.range_skew = 0  # serve a range starting this many bytes before the requested one
        self.stall_after: int | None = None
        self.release = threading.Event()
        self.range_headers: list[str | None] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/sam_vit_x_000000.pth"
