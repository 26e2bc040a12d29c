"""tiktoken's vocabularies primed from the files bpe-openai ships, so counting works offline."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tokenmeter_proxy.errors import ConfigError
from tokenmeter_proxy.vocabularies import prime_offline_cache

OFFLINE_LOAD = """
import tiktoken, tiktoken.load

def no_downloads(url):
    raise AssertionError(f"tiktoken tried to download {url}")

tiktoken.load.read_file = no_downloads
print(tiktoken.get_encoding("o200k_base").encode("hello world"))
print(tiktoken.get_encoding("cl100k_base").encode("hello world"))
"""


def test_primed_cache_loads_without_internet(tmp_path: Path) -> None:
    prime_offline_cache(tmp_path)

    # A fresh interpreter, so no encoding already loaded in this process can stand in.
    result = subprocess.run(
        [sys.executable, "-c", OFFLINE_LOAD],
        env={**os.environ, "TIKTOKEN_CACHE_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["[24912, 2375]", "[15339, 1917]"]


def test_priming_keeps_a_good_file_and_replaces_a_damaged_one(tmp_path: Path) -> None:
    url = "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"
    cached = tmp_path / hashlib.sha1(url.encode()).hexdigest()
    prime_offline_cache(tmp_path)
    inode = cached.stat().st_ino

    prime_offline_cache(tmp_path)
    assert cached.stat().st_ino == inode

    cached.write_bytes(b"truncated")
    prime_offline_cache(tmp_path)
    assert hashlib.sha256(cached.read_bytes()).hexdigest().startswith("446a9538")
    assert sorted(path.name.endswith(".tmp") for path in tmp_path.iterdir()) == [False, False]


def test_an_unwritable_cache_is_a_config_error(tmp_path: Path) -> None:
    not_a_directory = tmp_path / "cache"
    not_a_directory.write_text("a file")

    with pytest.raises(ConfigError, match="TIKTOKEN_CACHE_DIR"):
        prime_offline_cache(not_a_directory)


def test_processes_may_prime_at_once(tmp_path: Path) -> None:
    errors: list[BaseException] = []

    def prime() -> None:
        try:
            prime_offline_cache(tmp_path / "shared")
        except BaseException as exc:  # collected and asserted on below
            errors.append(exc)

    threads = [threading.Thread(target=prime) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert len(list((tmp_path / "shared").iterdir())) == 2
