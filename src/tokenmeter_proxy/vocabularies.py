"""tiktoken's vocabularies without internet: the copies the bpe-openai package ships, put where
tiktoken looks for an earlier download, after which `tiktoken.get_encoding` works offline (with
internet, tiktoken's own download path is untouched)."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import importlib.util
import os
import tempfile
import zlib
from pathlib import Path
from typing import Final

from .errors import ConfigError
from .tokens import CL100K_BASE, O200K_BASE

# Where tiktoken downloads each vocabulary from (its cache key is the SHA-1 of this URL) and the
# SHA-256 it checks the bytes against (tiktoken_ext/openai_public.py).
_DOWNLOAD_URL: Final = "https://openaipublic.blob.core.windows.net/encodings/{}.tiktoken"
_SHIPPED: Final = (
    (O200K_BASE, "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"),
    (CL100K_BASE, "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"),
)


def prime_offline_cache(cache_dir: Path) -> None:
    """Put the vocabularies bpe-openai ships where tiktoken looks for a previous download.

    `cache_dir` must be the directory tiktoken will use: $TIKTOKEN_CACHE_DIR, else
    $DATA_GYM_CACHE_DIR, else `<tempdir>/data-gym-cache`. A file already there with the right
    SHA-256 is kept; a missing or damaged one is written to a temporary file and renamed into
    place, so processes priming at once, or tiktoken reading meanwhile, never see half a file.
    Raises `ConfigError` when the directory is not writable or bpe-openai's data is missing.
    """
    for name, sha256 in _SHIPPED:
        target = cache_dir / _cache_key(name)
        if _holds(target, sha256):
            continue
        data = _shipped_vocabulary(name, sha256)
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            _write_atomically(target, data)
        except OSError as exc:
            raise ConfigError(
                f"cannot write tiktoken's cache in {cache_dir} ({exc.strerror or exc}); "
                "point TIKTOKEN_CACHE_DIR at a writable directory"
            ) from exc


def _cache_key(encoding_name: str) -> str:
    url = _DOWNLOAD_URL.format(encoding_name)
    return hashlib.sha1(url.encode(), usedforsecurity=False).hexdigest()


def _holds(path: Path, sha256: str) -> bool:
    try:
        data = path.read_bytes()
    except OSError:
        return False
    return hashlib.sha256(data).hexdigest() == sha256


def _shipped_vocabulary(name: str, sha256: str) -> bytes:
    # find_spec locates the package without importing it: importing bpe_openai builds its own
    # tokenizers, which takes over half a second we do not need.
    spec = importlib.util.find_spec("bpe_openai")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location) / "data" / f"{name}.tiktoken.gz"
        try:
            data = gzip.decompress(path.read_bytes())
        except (OSError, EOFError, zlib.error):
            continue
        if hashlib.sha256(data).hexdigest() == sha256:
            return data
    raise ConfigError(
        f"the {name} vocabulary shipped with bpe-openai is missing or not the one tiktoken expects; "
        "reinstall it with `pip install --force-reinstall bpe-openai`"
    )


def _write_atomically(target: Path, data: bytes) -> None:
    fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        # mkstemp makes the file private; tiktoken in other users' processes must read it too.
        os.chmod(temporary, 0o644)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
