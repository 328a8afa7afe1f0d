"""A latency- and bandwidth-simulating HTTP proxy in front of the GCS emulator.

Point ``STORAGE_EMULATOR_HOST`` at it and every GCS request of the product
goes through it: each answer is held back by a per-request latency (uniform
in ``[lo, hi]`` seconds, seeded) plus the time its body takes at a
per-connection bandwidth cap (an HTTP/1.1 connection carries one request at
a time, so per request is per connection); an upload's body counts against
the cap too. Everything else is forwarded to the emulator as it is (the same
JSON API the product speaks to GCS), with the ``Location`` of resumable
uploads rewritten to the proxy.

The emulator answers one request at a time (about 400 ranged reads/s here),
far below what GCS serves a worker, so it would be the bottleneck the
benchmark measures, not the worker. Object reads (``alt=media``) are
therefore answered by the proxy from a copy of the object it fetched from the
emulator once (GCS objects are immutable per generation; the benchmark's
sources are never rewritten), ranged or whole, with the emulator's headers.
This is the tests' fault-injecting proxy's job (``tests/support/gcs_fault_proxy.py``)
done on asyncio (aiohttp): hundreds of reads in flight cost sleeping
coroutines, not threads, on a 2-core machine that also runs the client.

Run: ``python -m benchmarks.latency_proxy --upstream http://127.0.0.1:PORT
--latency_ms 30,80 --bandwidth_mbps 100`` prints ``listening on PORT`` and
serves until killed; ``GET /__proxy_stats`` returns its counters as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from urllib.parse import parse_qs, quote, urlsplit

from aiohttp import ClientSession, ClientTimeout, web

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
    "content-encoding",
    "accept-encoding",
}
RANGE_RE = re.compile(r"bytes=(\d+)-(\d*)")


@dataclass
class Stats:
    requests: int = 0
    reads_served: int = 0  # alt=media answered from the proxy's copy
    forwarded: int = 0
    bytes_out: int = 0
    bytes_in: int = 0
    objects_cached: int = 0
    seconds_held: float = 0.0  # latency + transfer time added, summed over requests
    upstream_store_seconds: float = 0.0  # the emulator storing finished uploads (not simulated)
    per_method: dict[str, int] = field(default_factory=dict)
    media_bytes: dict[str, int] = field(default_factory=dict)  # object path -> bytes read from it


class LatencyProxy:
    def __init__(
        self, upstream: str, latency_s: tuple[float, float], bandwidth_bps: float, seed: int = 0
    ) -> None:
        u = urlsplit(upstream)
        self.upstream = f"{u.scheme}://{u.netloc}"
        self.upstream_netloc = u.netloc
        self.latency = latency_s
        self.bandwidth = bandwidth_bps
        self.rng = random.Random(seed)
        self.stats = Stats()
        self._objects: dict[str, tuple[bytes, dict[str, str]]] = {}
        self._fetching: dict[str, asyncio.Future] = {}
        self.session: ClientSession | None = None
        self.port = 0
        self._uploads: dict[str, dict] = {}
        self._sessions = 0

    def hold(self, nbytes: int) -> float:
        """Seconds an answer of ``nbytes`` is held: latency plus transfer time."""
        lo, hi = self.latency
        return self.rng.uniform(lo, hi) + (nbytes / self.bandwidth if self.bandwidth else 0.0)

    async def _object(self, key: str, path_qs: str) -> tuple[bytes, dict[str, str]] | None:
        """The whole object and the emulator's headers, fetched once; None when the
        emulator does not serve it (the request is then forwarded as it is)."""
        if key not in self._objects:
            if key not in self._fetching:
                self._fetching[key] = asyncio.ensure_future(self._fetch(path_qs))
            got = await self._fetching[key]
            if got is None:
                self._fetching.pop(key, None)
                return None
            if key not in self._objects:
                self._objects[key] = got
                self.stats.objects_cached += 1
        return self._objects[key]

    async def _fetch(self, path_qs: str) -> tuple[bytes, dict[str, str]] | None:
        assert self.session is not None
        async with self.session.get(self.upstream + path_qs) as r:
            data = await r.read()
            if r.status != 200:
                return None
            return data, {k: v for k, v in r.headers.items() if k.lower() not in HOP_BY_HOP}

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.path == "/__proxy_stats":
            return web.json_response(asdict(self.stats))
        body = await request.read()
        s = self.stats
        s.requests += 1
        s.per_method[request.method] = s.per_method.get(request.method, 0) + 1
        s.bytes_in += len(body)
        query = parse_qs(request.query_string)
        if request.method == "GET" and query.get("alt") == ["media"]:
            key = request.path + "?generation=" + ",".join(query.get("generation", []))
            got = await self._object(key, request.path_qs)
            if got is not None:
                data, headers = got[0], dict(got[1])
                status, out = 200, data
                m = RANGE_RE.fullmatch(request.headers.get("Range", "").strip())
                if m:
                    start = int(m.group(1))
                    end = min(int(m.group(2)) if m.group(2) else len(data) - 1, len(data) - 1)
                    out, status = data[start : end + 1], 206
                    headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
                s.reads_served += 1
                s.media_bytes[request.path] = s.media_bytes.get(request.path, 0) + len(out)
                return await self._answer(status, headers, out, len(body))
        if query.get("uploadType") == ["resumable"]:
            return await self._resumable(request, query, body)
        s.forwarded += 1
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        assert self.session is not None
        async with self.session.request(
            request.method,
            self.upstream + request.path_qs,
            headers=headers,
            data=body or None,
            allow_redirects=False,
        ) as r:
            data = await r.read()
            out_headers = {}
            for k, v in r.headers.items():
                if k.lower() not in HOP_BY_HOP:
                    # Resumable uploads and media links name the emulator: keep clients here.
                    out_headers[k] = v.replace(self.upstream_netloc, f"127.0.0.1:{self.port}")
            return await self._answer(r.status, out_headers, data, len(body))

    async def _resumable(
        self, request: web.Request, query: dict[str, list[str]], body: bytes
    ) -> web.Response:
        """Resumable uploads, held here and stored with one request when complete.

        The client's protocol is GCS's (start; 308 "Range" after each chunk;
        the object's resource after the last), each step held back like any
        other request; the emulator, slow at assembling resumable uploads
        (about 27 MB/s here), receives each finished object as one multipart
        upload instead, with the session's metadata and preconditions."""
        s = self.stats
        if request.method == "POST":  # start a session
            self._sessions += 1
            sid = f"proxy-{self._sessions}"
            params = {k: v[0] for k, v in query.items() if k != "uploadType"}
            self._uploads[sid] = {
                "path": request.path,
                "params": params,
                "meta": json.loads(body or b"{}"),
                "chunks": [],
            }
            location = (
                f"http://127.0.0.1:{self.port}{request.path}?uploadType=resumable&upload_id={sid}"
            )
            return await self._answer(200, {"Location": location}, b"", len(body))
        sid = (query.get("upload_id") or [""])[0]
        up = self._uploads.get(sid)
        if up is None:
            return await self._answer(404, {}, b"no such upload session", len(body))
        if request.method == "DELETE":
            del self._uploads[sid]
            return await self._answer(499, {}, b"", 0)
        m = re.fullmatch(
            r"bytes (?:(\d+)-(\d+)|\*)/(\d+|\*)", request.headers.get("Content-Range", "").strip()
        )
        if m is None:
            return await self._answer(400, {}, b"bad Content-Range", len(body))
        if body:
            up["chunks"].append(body)
        received = sum(map(len, up["chunks"]))
        if m.group(3) == "*":  # more to come
            return await self._answer(
                308, {"Range": f"bytes=0-{received - 1}"} if received else {}, b"", len(body)
            )
        del self._uploads[sid]
        data = b"".join(up["chunks"])
        meta = dict(up["meta"])
        name = meta.pop("name", None) or up["params"].get("name")
        content_type = meta.pop("contentType", None) or "application/octet-stream"
        params = {**up["params"], "uploadType": "media", "name": name}
        assert self.session is not None
        s.forwarded += 1
        t0 = time.perf_counter()
        async with self.session.post(
            self.upstream + up["path"],
            params=params,
            data=data,
            headers={"Content-Type": content_type},
        ) as r:
            out = await r.read()
            status = r.status
            headers = {k: v for k, v in r.headers.items() if k.lower() not in HOP_BY_HOP}
        s.upstream_store_seconds += time.perf_counter() - t0
        if status == 200 and meta:  # the rest of the session's metadata
            bucket_path = up["path"].replace("/upload/storage/v1/", "/storage/v1/", 1)
            async with self.session.patch(
                f"{self.upstream}{bucket_path}/{quote(name, safe='')}", json=meta
            ) as r:
                out, status = await r.read(), r.status
        return await self._answer(status, headers, out, len(body))

    async def _answer(
        self, status: int, headers: dict[str, str], data: bytes, uploaded: int
    ) -> web.Response:
        held = self.hold(len(data) + uploaded)
        self.stats.seconds_held += held
        self.stats.bytes_out += len(data)
        await asyncio.sleep(held)
        return web.Response(status=status, headers=headers, body=data)

    async def serve(self, port: int = 0) -> web.AppRunner:
        self.session = ClientSession(timeout=ClientTimeout(total=300), auto_decompress=False)
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", port, backlog=1024)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return runner


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.latency_proxy", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--upstream", required=True, help="the GCS emulator, http://127.0.0.1:PORT")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--latency_ms", default="30,80", help="per-request latency range, ms (lo,hi)")
    p.add_argument(
        "--bandwidth_mbps",
        type=float,
        default=100.0,
        help="per-connection bandwidth cap, MB/s (0: none)",
    )
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    lo, hi = (float(x) / 1000 for x in a.latency_ms.split(","))
    proxy = LatencyProxy(a.upstream, (lo, hi), a.bandwidth_mbps * 1e6, a.seed)

    async def run() -> None:
        await proxy.serve(a.port)
        print(f"listening on {proxy.port}", flush=True)
        await asyncio.Event().wait()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
