"""A throwaway PostgreSQL cluster of our own (initdb + pg_ctl on a free port), for tests that
stop the database and start it again. The shared server on 5432 is never touched."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from conftest import free_port

BIN = Path("/usr/lib/postgresql/15/bin")


def available() -> bool:
    return (BIN / "initdb").exists() and (os.geteuid() != 0 or shutil.which("runuser") is not None)


class Cluster:
    """`start()`, `stop()`, `url`; `destroy()` removes everything."""

    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="tokenmeter-pg-"))
        self.data = self.directory / "data"
        self.port = free_port()
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            shutil.chown(self.directory, "postgres", "postgres")
        self._run(BIN / "initdb", "-D", self.data, "-A", "trust", "-U", "postgres", "--no-sync")
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        self._run(BIN / "pg_ctl", "-D", self.data, "-l", self.directory / "server.log", "-w", "start",
                  "-o", f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off")

    def stop(self) -> None:
        self._run(BIN / "pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop")

    def destroy(self) -> None:
        subprocess.run(self._as_owner(BIN / "pg_ctl", "-D", self.data, "-m", "immediate", "stop"),
                       capture_output=True)
        shutil.rmtree(self.directory, ignore_errors=True)

    def _run(self, *command: object) -> None:
        subprocess.run(self._as_owner(*command), check=True, capture_output=True)

    @staticmethod
    def _as_owner(*command: object) -> list[str]:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        return prefix + [str(part) for part in command]
