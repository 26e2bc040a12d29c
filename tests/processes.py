"""The proxy as a real `tokenmeter-proxy serve` process, for end-to-end and fault tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from conftest import ADMIN_TOKEN, PRICING, free_port

EXECUTABLE = str(Path(sys.executable).with_name("tokenmeter-proxy"))
KEY = "sk-end-to-end-secret"


class Proxy:
    """A running `tokenmeter-proxy serve` process."""

    def __init__(self, workdir: Path, upstream: str, *, database_url: str | None = None,
                 environ: dict[str, str] | None = None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.database = workdir / "usage.db"
        self.url = f"http://127.0.0.1:{free_port()}"
        url = database_url or f"sqlite:///{self.database}"
        environ = {key: value for key, value in os.environ.items() if not key.startswith("TOKENMETER_")} | {
            "TOKENMETER_ADMIN_TOKEN": ADMIN_TOKEN, "TOKENMETER_PRICING": str(workdir / "pricing.yaml"),
            **(environ or {})}
        (workdir / "pricing.yaml").write_text(PRICING)
        subprocess.run([EXECUTABLE, "migrate", "--database-url", url], env=environ, check=True, capture_output=True)
        self.log = workdir / f"proxy-{self.url.rsplit(':', 1)[1]}.log"
        with open(self.log, "wb") as log:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(
                [EXECUTABLE, "serve", "--port", self.url.rsplit(":", 1)[1], "--upstream", f"{upstream}/v1",
                 "--database-url", url], env=environ, cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{self.url}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert self.process.poll() is None and time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.05)

    def admin(self, path: str, method: str = "GET", json: Any = None, **params: Any) -> Any:
        response = httpx.request(method, f"{self.url}{path}", params=params, json=json,
                                 headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
        assert response.status_code in (200, 201, 204), response.text
        return response.json() if response.content else None

    def session(self, session_id: str, records: int = 1) -> Any:
        """The session once it holds `records` records (they are written just after the response)."""
        deadline = time.monotonic() + 5
        while True:
            response = httpx.get(f"{self.url}/api/usage/sessions/{session_id}",
                                 headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
            if response.status_code == 200 and len(response.json()["records"]) >= records:
                return response.json()
            assert time.monotonic() < deadline, f"session {session_id} has no {records} records: {response.text}"
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.process.send_signal(sig)
        return self.process.wait(30)


