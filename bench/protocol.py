"""`python -m bench protocol`: what the service's HTTP protocol (web/http.py: the request head's
size and time limits) costs per request against uvicorn's own httptools protocol, in-process.

Each round feeds 20,000 keep-alive requests (a single-event POST as a tracker sends it) through a
protocol on a fake transport, to a trivial ASGI app, and takes the CPU time per request; rounds
alternate between the two protocols, and the medians are printed with their difference. By hand
only (not in `make bench`).
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from uvicorn.config import Config  # noqa: E402
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol  # noqa: E402
from uvicorn.server import ServerState  # noqa: E402

from analytics.web.http import GuardedHttpToolsProtocol  # noqa: E402

REQUEST = (b"POST /api/events/ HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nContent-Type: application/json\r\n"
           b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120 Safari/537.36\r\n"
           b"Accept: */*\r\nContent-Length: 60\r\n\r\n"
           + b'{"page": "/pricing", "session_id": "s-1", "duration": 12}'.ljust(60))


async def _app(scope, receive, send) -> None:
    await receive()
    await send({"type": "http.response.start", "status": 201, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b"{}"})


class _Transport:
    def __init__(self) -> None:
        self.closing = False

    def get_extra_info(self, key, default=None):
        return {"peername": ("127.0.0.1", 5000), "sockname": ("127.0.0.1", 8000)}.get(key, default)

    def write(self, data) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _per_request_us(cls, n: int) -> float:
    config = Config(app=_app, log_level="warning")
    config.load()
    protocol = cls(config=config, server_state=ServerState(), app_state={})
    transport = _Transport()
    protocol.connection_made(transport)
    t = time.process_time()
    for _ in range(n):
        protocol.data_received(REQUEST)
        await asyncio.sleep(0)  # the app's task runs and answers
        await asyncio.sleep(0)
    spent = (time.process_time() - t) / n * 1e6
    assert not transport.closing, "the protocol closed a well-formed keep-alive connection"
    protocol.connection_lost(None)
    return spent


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench protocol")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--requests", type=int, default=20_000)
    args = ap.parse_args(argv)

    async def run() -> dict[str, list[float]]:
        out: dict[str, list[float]] = {"uvicorn's httptools protocol": [], "the service's (web/http.py)": []}
        for _ in range(args.rounds):
            out["uvicorn's httptools protocol"].append(await _per_request_us(HttpToolsProtocol, args.requests))
            out["the service's (web/http.py)"].append(await _per_request_us(GuardedHttpToolsProtocol, args.requests))
        return out

    res = asyncio.run(run())
    medians = {k: statistics.median(v) for k, v in res.items()}
    for k, v in medians.items():
        print(f"{k:32} {v:7.2f} us of CPU per request (median of {args.rounds} rounds of {args.requests:,})")
    base, guarded = medians.values()
    print(f"difference: {guarded - base:+.2f} us per request (x{guarded / base:.2f} of the HTTP layer alone)")
    return 0
