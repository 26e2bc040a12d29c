"""A real webhook receiver on a port of its own, in a thread, that keeps what it received and
verifies signatures with the Standard Webhooks library:

    /ok/...     answers 200
    /flaky/...  answers 500 to the first attempt of each webhook-id, 200 after
    /hang/...   reads the request and never answers (until the receiver stops)
"""

from __future__ import annotations

import base64
import contextlib
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook

SECRET = "whsec_" + base64.b64encode(b"tokenmeter-test-webhook-secret!!").decode()


class Receiver:
    """What arrived (`got`: path, headers, body, time), and how to wait for it."""

    def __init__(self) -> None:
        self.got: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.seen_ids: set[str] = set()
        self.open_hangs = 0
        self.most_open_hangs = 0
        self.closing = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                headers = {key.lower(): value for key, value in self.headers.items()}
                with receiver.lock:
                    receiver.got.append({"path": self.path, "headers": headers, "body": body, "at": time.monotonic()})
                    first = headers.get("webhook-id") not in receiver.seen_ids
                    receiver.seen_ids.add(headers.get("webhook-id", ""))
                if self.path.startswith("/hang"):
                    with receiver.lock:
                        receiver.open_hangs += 1
                        receiver.most_open_hangs = max(receiver.most_open_hangs, receiver.open_hangs)
                    receiver.closing.wait(60)
                    with receiver.lock:
                        receiver.open_hangs -= 1
                    return
                self.send_response(500 if self.path.startswith("/flaky") and first else 200)
                self.send_header("content-length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_port}"

    def deliveries(self, path: str | None = None, kind: str | None = None) -> list[dict[str, Any]]:
        """What arrived (on `path`, of type `kind`), oldest first, each with its verified `payload`."""
        with self.lock:
            got = [dict(item) for item in self.got if path is None or item["path"] == path]
        for item in got:
            item["payload"] = Webhook(SECRET).verify(item["body"], item["headers"])  # raises if the signature is wrong
        return [item for item in got if kind is None or item["payload"]["type"] == kind]

    def wait(self, path: str, kind: str, count: int = 1, timeout: float = 10.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            found = self.deliveries(path, kind)
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.05)


@contextlib.contextmanager
def receiver() -> Iterator[Receiver]:
    hooks = Receiver()
    thread = threading.Thread(target=hooks.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hooks
    finally:
        hooks.closing.set()
        hooks.server.shutdown()
        hooks.server.server_close()
