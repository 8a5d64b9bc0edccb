"""A local webhook receiver on 127.0.0.1: records every request, checks signatures, deduplicates on
the event id the way the README tells receivers to, and can hold a request or answer with failures."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    event_id: str
    event: str
    attempt: int
    body: dict[str, Any]
    signature_ok: bool


@dataclass
class Receiver:
    secrets: list[str] = field(default_factory=list)
    requests: list[Received] = field(default_factory=list)
    # Event ids processed, in order: what a receiver that deduplicates on the id acts on.
    processed: list[str] = field(default_factory=list)
    # Answer these status codes to the next requests, in order (then 200).
    failures: list[int] = field(default_factory=list)
    # When set, the first request is held (after it was recorded) until `release` is set.
    hold_first: bool = False
    held: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""
    truncated: int = 0

    def start(self) -> str:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                try:
                    raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                    json.loads(raw)
                except (OSError, ValueError):
                    # A sender killed mid-request leaves a cut-off body: nothing to act on (it is sent again).
                    with receiver.lock:
                        receiver.truncated += 1
                    return
                signature = self.headers.get("X-Executor-Signature", "")
                ok = any(
                    hmac.compare_digest(signature, "sha256=" + hmac.new(s.encode(), raw, hashlib.sha256).hexdigest())
                    for s in receiver.secrets
                )
                body = json.loads(raw)
                event_id = self.headers.get("X-Executor-Event-Id", "")
                with receiver.lock:
                    receiver.requests.append(
                        Received(event_id, body["event"], int(self.headers.get("X-Executor-Attempt", "0")), body, ok)
                    )
                    first = len(receiver.requests) == 1
                    status = receiver.failures.pop(0) if receiver.failures else 200
                    if status == 200 and ok and event_id == body["id"] and event_id not in receiver.processed:
                        receiver.processed.append(event_id)
                if first and receiver.hold_first:
                    receiver.held.set()
                    receiver.release.wait(60)
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass  # the sender is gone (killed mid-request)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"
        return self.url

    def stop(self) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()

    def ids(self) -> list[str]:
        with self.lock:
            return [r.event_id for r in self.requests]
