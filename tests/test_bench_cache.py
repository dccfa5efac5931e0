"""recpack.bench.cache: each eviction method and the page-cache residency check (no root needed)."""

from __future__ import annotations

import os
from pathlib import Path

from recpack.bench import cache

MiB = 1 << 20


def test_evict_methods_and_cached_fraction(tmp_path: Path) -> None:
    f = tmp_path / "f.bin"
    f.write_bytes(os.urandom(4 * MiB))
    assert cache.evict([tmp_path], warm=True) == "warm"
    assert cache.evict([f], direct=True) == "o_direct"
    how = cache.evict([tmp_path], drop_all=False)
    assert how in ("fadvise", "none")
    frac = cache.cached_fraction(f)
    if how == "fadvise" and frac is not None:
        assert frac < 0.5
        f.read_bytes()
        assert cache.cached_fraction(f) == 1.0
    assert list(cache.iter_files([tmp_path, tmp_path / "missing"])) == [str(f)]
    assert set(cache.METHODS) >= {"drop_caches", "fadvise", "o_direct", "warm", "none"}
