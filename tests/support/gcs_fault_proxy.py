"""A fault-injecting HTTP proxy on loopback, in front of the GCS emulator.

Point ``STORAGE_EMULATOR_HOST`` at the proxy and every GCS request of the
product (this process, Beam subprocesses, Airflow tasks) goes through it. It
forwards requests to the emulator, except that, deterministically:

* every ``error_every``-th request (counting from ``error_offset``) is
  answered with ``error_status`` (429 or 503) and a JSON error body, without
  reaching the emulator;
* every ``drop_every``-th request has its connection closed without an answer;
* requests whose path matches ``fail_path`` (a regex; with ``fail_method``, only
  that method; with ``fail_body``, only requests whose body matches that regex
  too, e.g. the object name in a multipart upload's metadata) fail every time:
  a persistent outage of part of the API;
* ``before(method, path)``, when set, runs before a request is forwarded: a
  test makes another client's change land at an exact moment (between a
  read of an object's metadata and its download, say) with ``emulator_write``
  and ``emulator_delete``, which talk to the emulator directly.

``stats`` counts what was forwarded and what was injected, so a test can
check that faults really happened.
"""

from __future__ import annotations

import http.client
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import quote, urlparse

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "host",
}


@dataclass
class Faults:
    error_every: int = 0
    error_offset: int = 0
    error_status: int = 503
    drop_every: int = 0
    fail_path: str | None = None
    fail_method: str | None = None
    fail_body: str | None = None
    before: Callable[[str, str], None] | None = None
    stats: dict[str, int] = field(
        default_factory=lambda: {
            "requests": 0,
            "forwarded": 0,
            "errors": 0,
            "drops": 0,
            "persistent": 0,
        }
    )
    lock: threading.Lock = field(default_factory=threading.Lock)

    def decide(self, method: str, path: str, body: bytes = b"") -> str:
        with self.lock:
            self.stats["requests"] += 1
            n = self.stats["requests"]
            if (
                self.fail_path
                and re.search(self.fail_path, path)
                and (self.fail_method is None or self.fail_method == method)
                and (self.fail_body is None or re.search(self.fail_body.encode(), body))
            ):
                self.stats["persistent"] += 1
                return "error"
            if self.drop_every and n % self.drop_every == 0:
                self.stats["drops"] += 1
                return "drop"
            if self.error_every and (n + self.error_offset) % self.error_every == 0:
                self.stats["errors"] += 1
                return "error"
            self.stats["forwarded"] += 1
            return "forward"


class FaultProxy:
    """Run with ``with FaultProxy(upstream, Faults(...)) as proxy: proxy.url``."""

    def __init__(self, upstream: str, faults: Faults) -> None:
        u = urlparse(upstream)
        self.upstream_host, self.upstream_port = u.hostname, u.port
        self.faults = faults
        self.hook_errors: list[BaseException] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                action = proxy.faults.decide(self.command, self.path, body)
                if action == "drop":
                    self.close_connection = True
                    self.connection.close()
                    return
                if action == "error":
                    status = proxy.faults.error_status
                    payload = json.dumps(
                        {
                            "error": {
                                "code": status,
                                "message": "injected fault",
                                "errors": [{"reason": "backendError", "message": "injected fault"}],
                            }
                        }
                    ).encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                if proxy.faults.before is not None:
                    try:
                        proxy.faults.before(self.command, self.path)
                    except BaseException as err:  # surfaced when the proxy closes
                        proxy.hook_errors.append(err)
                        raise
                conn = http.client.HTTPConnection(
                    proxy.upstream_host, proxy.upstream_port, timeout=120
                )
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                headers["Host"] = f"{proxy.upstream_host}:{proxy.upstream_port}"
                conn.request(self.command, self.path, body=body or None, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                if "json" in (resp.getheader("Content-Type") or ""):
                    # Object resources carry absolute URLs (mediaLink): a client that
                    # downloads by mediaLink must come back through the proxy too.
                    data = data.replace(
                        f"{proxy.upstream_host}:{proxy.upstream_port}".encode(),
                        f"127.0.0.1:{proxy.port}".encode(),
                    )
                self.send_response(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    if k.lower() not in HOP_BY_HOP:
                        # The emulator writes absolute URLs (Location of resumable
                        # uploads, mediaLink): keep clients talking to the proxy.
                        v = v.replace(
                            f"{proxy.upstream_host}:{proxy.upstream_port}",
                            f"127.0.0.1:{proxy.port}",
                        )
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle

        class Server(ThreadingHTTPServer):
            def handle_error(self, request, client_address) -> None:
                pass  # dropped connections are the point, not news

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FaultProxy":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        if self.hook_errors:
            raise RuntimeError("a test's before() hook failed") from self.hook_errors[0]


def _emulator_request(upstream: str, method: str, path: str, body: bytes | None = None) -> int:
    u = urlparse(upstream)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    try:
        conn.request(
            method,
            path,
            body=body,
            headers={"Content-Type": "application/octet-stream"} if body is not None else {},
        )
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def emulator_write(upstream: str, bucket: str, name: str, data: bytes) -> None:
    """Write an object on the emulator directly (another client's write)."""
    status = _emulator_request(
        upstream,
        "POST",
        f"/upload/storage/v1/b/{bucket}/o?uploadType=media&name={quote(name, safe='')}",
        data,
    )
    assert status == 200, status


def emulator_delete(upstream: str, bucket: str, name: str) -> None:
    """Delete an object on the emulator directly (another client's delete)."""
    status = _emulator_request(
        upstream, "DELETE", f"/storage/v1/b/{bucket}/o/{quote(name, safe='')}"
    )
    assert status in (200, 204), status
