"""The price table in force, reloaded when its file changes; a broken file never replaces it."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from .errors import PricingError
from .pricing import PriceTable, load_pricing

log = logging.getLogger(__name__)

RELOAD_INTERVAL_SECONDS = 0.5


class PriceBook:
    """Holds the current `PriceTable`; `watch()` polls its file and swaps in valid changes.

    Polling the file's identity (inode, size, mtime) twice a second is cheap and also sees
    the symlink swap with which Kubernetes updates a mounted ConfigMap.
    """

    def __init__(self, path: Path, table: PriceTable) -> None:
        self.path = path
        self.current = table
        self._seen = _identity(path)

    @classmethod
    def open(cls, path: Path) -> PriceBook:
        """Load the file now; raises `PricingError` so a bad file stops startup with its lines."""
        return cls(path, load_pricing(path))

    def reload_if_changed(self) -> bool:
        """Load the file if it changed since last seen; True when new prices took effect."""
        identity = _identity(self.path)
        if identity == self._seen:
            return False
        self._seen = identity
        if identity is None:
            log.warning("pricing file %s is gone; the prices in force stay (version %s)", self.path,
                        self.current.version)
            return False
        try:
            table = load_pricing(self.path)
        except PricingError as exc:
            log.error("pricing file %s refused, the prices in force stay (version %s):\n%s", self.path,
                      self.current.version, exc)
            return False
        if table.version == self.current.version:
            return False
        self.current = table
        log.info("pricing reloaded from %s: %d models, version %s", self.path, len(table.models), table.version)
        return True

    async def watch(self, interval: float = RELOAD_INTERVAL_SECONDS) -> None:
        """Reload on change until cancelled."""
        while True:
            await asyncio.sleep(interval)
            await asyncio.to_thread(self.reload_if_changed)


def _identity(path: Path) -> tuple[int, int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_size, stat.st_mtime_ns
