"""The pricing and routes files in force, each reloaded when its file changes; a broken file
never replaces the one in force (its problems are logged, line by line)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Generic, Protocol, TypeVar

from .config import DEFAULT_ROUTES, environment_value
from .errors import FileRefused, RoutesError
from .pricing import PriceTable, load_pricing
from .routes import RouteTable, parse_routes

log = logging.getLogger(__name__)

RELOAD_INTERVAL_SECONDS = 0.5


class _Versioned(Protocol):
    @property
    def version(self) -> str: ...


T = TypeVar("T", bound=_Versioned)
# Told of a file refused on reload: its path and its problems (`file:line: message`).
OnRefused = Callable[[Path, list[str]], None]


class WatchedFile(Generic[T]):
    """Holds what a file says (`current`); `watch()` polls the file and swaps in valid changes.

    Polling the file's identity (inode, size, mtime) twice a second is cheap and also sees
    the symlink swap with which Kubernetes updates a mounted ConfigMap.
    """

    what = "file"

    def __init__(self, path: Path, load: Callable[[Path], T]) -> None:
        """Load the file now; raises `FileRefused` so a bad file stops startup with its lines."""
        self.path = path
        self.load = load
        self._seen = _identity(path)
        self.current = load(path)

    def reload_if_changed(self, on_refused: OnRefused | None = None) -> bool:
        """Load the file if it changed since last seen; True when its new contents took effect.
        A refused file is logged, and told to `on_refused`."""
        identity = _identity(self.path)
        if identity == self._seen:
            return False
        self._seen = identity
        if identity is None:
            log.warning("%s %s is gone; the one in force stays (version %s)", self.what, self.path,
                        self.current.version)
            return False
        try:
            loaded = self.load(self.path)
        except FileRefused as exc:
            log.error("%s %s refused, the one in force stays (version %s):\n%s", self.what, self.path,
                      self.current.version, exc)
            if on_refused is not None:
                on_refused(self.path, exc.problems)
            return False
        if loaded.version == self.current.version:
            return False
        self.current = loaded
        log.info("%s reloaded from %s: version %s", self.what, self.path, loaded.version)
        return True

    async def watch(self, interval: float = RELOAD_INTERVAL_SECONDS, *, on_refused: OnRefused | None = None) -> None:
        """Reload on change until cancelled (`on_refused`, called from a thread: see `reload_if_changed`)."""
        while True:
            await asyncio.sleep(interval)
            await asyncio.to_thread(self.reload_if_changed, on_refused)


class PriceBook(WatchedFile[PriceTable]):
    """The pricing file in force."""

    what = "pricing file"

    @classmethod
    def open(cls, path: Path) -> PriceBook:
        return cls(path, load_pricing)


class RouteBook(WatchedFile[RouteTable]):
    """The routes file in force (no file: no routes but the built-in `/v1`)."""

    what = "routes file"

    @classmethod
    def open(cls, path: Path | None) -> RouteBook:
        """The routes of `path`; None: no file, so no routes but the built-in one until one appears
        at the default place (config/routes.yaml)."""
        return cls(path or DEFAULT_ROUTES, load_routes if path is not None else _routes_if_any)


def load_routes(path: Path) -> RouteTable:
    """Read and validate a routes file (`RoutesError` with every problem and its line); the
    problems that do not refuse it are logged."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RoutesError([f"{path}: cannot read the routes file: {exc}"]) from None
    table = parse_routes(text, source=str(path), environment=environment_value)
    for warning in table.warnings:
        log.warning("%s", warning)
    return table


def _routes_if_any(path: Path) -> RouteTable:
    return load_routes(path) if path.exists() else RouteTable()


def _identity(path: Path) -> tuple[int, int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_size, stat.st_mtime_ns
