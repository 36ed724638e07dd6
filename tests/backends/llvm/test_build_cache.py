"""The build cache: a size limit with least-recently-used eviction, and the test session's own cache."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from graphc.backends.llvm import cache, compile_library, export_files
from graphc.backends.llvm.toolchain import ToolchainError
from graphc.ir.graph import Graph
from graphc.ir.types import TensorType
from graphc.ops import OpBuilder


def _entry(root: Path, kind: str, key: str, nbytes: int, age_s: float) -> Path:
    d = root / kind / key
    d.mkdir(parents=True)
    (d / "blob").write_bytes(b"x" * nbytes)
    t = time.time() - age_s
    os.utime(d, (t, t))
    return d


@pytest.fixture
def cache_root(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path / "cache"))
    return cache.cache_dir()


def test_the_test_session_never_writes_to_the_users_cache():
    directory = Path(os.environ["GRAPHC_CACHE_DIR"]).resolve()
    assert directory != (Path.home() / ".cache" / "graphc").resolve()
    assert cache.cache_dir().resolve() == directory


@pytest.mark.parametrize("text, nbytes", [("2G", 2 << 30), ("500M", 500 << 20), ("1.5k", 1536), ("4096", 4096),
                                          ("3GiB", 3 << 30), ("0", 0)])
def test_sizes(text, nbytes):
    assert cache.parse_size(text) == nbytes


@pytest.mark.parametrize("text", ["lots", "-1G", "2X"])
def test_bad_sizes_are_refused(text):
    with pytest.raises(cache.CacheConfigError, match="GRAPHC_CACHE_SIZE"):
        cache.parse_size(text)


def test_trim_removes_least_recently_used_entries_first(cache_root):
    old = _entry(cache_root, "native/lib", "a" * 32, 1000, age_s=3000)
    mid = _entry(cache_root, "native/code", "b" * 32, 1000, age_s=2000)
    new = _entry(cache_root, "runtime", "c" * 32, 1000, age_s=1000)
    building = cache_root / "native" / "lib" / ("d" * 32 + ".tmp123")  # a build in progress: not an entry
    building.mkdir()
    removed = cache.trim(2500)
    assert [e.path for e in removed] == [old]
    assert not old.exists() and mid.exists() and new.exists() and building.exists()
    cache.trim(1000)
    assert not mid.exists() and new.exists()


def test_trim_spares_recent_and_kept_entries(cache_root):
    recent = _entry(cache_root, "native/lib", "a" * 32, 1000, age_s=1)
    kept = _entry(cache_root, "native/lib", "b" * 32, 1000, age_s=5000)
    assert cache.trim(0, keep=(kept,)) == []
    assert recent.exists() and kept.exists()
    cache.trim(0, grace_s=0)
    assert not recent.exists() and not kept.exists()


def test_info_and_clear(cache_root):
    _entry(cache_root, "native/lib", "a" * 32, 100, age_s=10)
    _entry(cache_root, "runtime", "b" * 32, 50, age_s=20)
    summary = cache.info()
    assert summary["bytes"] == 150 and summary["entries"]["native/lib"] == (1, 100)
    assert summary["entries"]["runtime"] == (1, 50) and summary["oldest"] < summary["newest"]
    assert cache.clear() == (2, 150)
    assert cache.info()["bytes"] == 0


def _tiny_graph(name: str, scale: float) -> Graph:
    g = Graph(name)
    x = g.add_input("x", TensorType("float32", ("batch", 3)))
    w = g.add_constant("w", np.full((3, 2), scale, np.float32))
    y = OpBuilder(g, layer="dense").matmul(x, w)
    g.set_outputs([y])
    return g


def test_builds_stay_under_the_limit_and_a_hit_counts_as_a_use(cache_root, monkeypatch):
    monkeypatch.setattr(cache, "GRACE_S", 0.0)
    first = compile_library(_tiny_graph("cache_a", 1.0))
    one_build = sum(e.nbytes for e in cache.entries())
    monkeypatch.setenv("GRAPHC_CACHE_SIZE", str(int(one_build * 1.2)))
    old = time.time() - 100
    for e in cache.entries():
        os.utime(e.path, (old, old))
    again = compile_library(_tiny_graph("cache_a", 1.0))  # a hit: its entries become the most recent
    assert again.directory == first.directory and time.time() - first.directory.stat().st_mtime < 50
    compile_library(_tiny_graph("cache_a", 2.0))  # new weights: a new library entry, the code is shared
    total = sum(e.nbytes for e in cache.entries())
    assert total <= int(one_build * 1.2)
    assert not first.directory.exists()  # the older library went first


@pytest.mark.parametrize("evicted", ["native/lib", "native/code"])
def test_exporting_a_build_the_cache_evicted_says_so(cache_root, tmp_path, monkeypatch, evicted):
    """A LibraryFiles held while the cache evicted its entry: a clear error naming the build, nothing copied."""
    monkeypatch.setattr(cache, "GRACE_S", 0.0)
    files = compile_library(_tiny_graph("cache_gone", 1.0))
    gone = files.directory if evicted == "native/lib" else files.objects["model"].parent
    for e in cache.entries():
        os.utime(e.path, (0, 0))
    os.utime(gone, (1, 1))  # the oldest entry besides the runtime's ...
    kind = [e for e in cache.entries() if e.kind == evicted]
    assert [e.path for e in kind] == [gone]
    cache.trim(cache.info()["bytes"] - 1, keep=tuple(e.path for e in cache.entries() if e.path != gone))
    assert not gone.exists()  # ... evicted by the size limit
    out = tmp_path / "out"
    with pytest.raises(ToolchainError, match=r"'cache_gone' is no longer in the cache .*compile the model again"):
        export_files(files, out)
    assert not out.exists()
    again = compile_library(_tiny_graph("cache_gone", 1.0))  # compiling again rebuilds the entry
    assert set(export_files(again, out)) == {"shared", "static", "header"}


def test_a_cache_directory_with_quotes_and_backslashes_in_its_path(tmp_path, monkeypatch):
    """The weights blob is included by path into generated assembly: the path is escaped."""
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path / 'we"ird\\dir \x01'))
    files = compile_library(_tiny_graph("cache_quotes", 3.0))
    assert files.shared.exists() and '"' in str(files.shared)


def test_the_gemm_block_sizes_are_part_of_the_code_key(cache_root, monkeypatch):
    """Code blocked for one cache hierarchy is not served to a build that blocks for another."""
    monkeypatch.setenv("GRAPHC_GEMM_CACHES", "l1=32K,l2=1M,l3=16M")
    small = compile_library(_tiny_graph("cache_blocks", 1.0))
    again = compile_library(_tiny_graph("cache_blocks", 1.0))
    monkeypatch.setenv("GRAPHC_GEMM_CACHES", "l1=48K,l2=2M,l3=64M")
    large = compile_library(_tiny_graph("cache_blocks", 1.0))
    assert again.directory == small.directory
    assert large.directory != small.directory
    assert large.objects["model"].parent != small.objects["model"].parent


@pytest.mark.parametrize("source", ["backends/llvm/kernels/conv.py", "ops/conv.py", "ir/dims.py",
                                    "memory/liveness.py", "bench/op_cost.py"])
def test_the_code_key_follows_the_sources_that_decide_the_code(source, monkeypatch):
    """A change to any module that decides what a model compiles to (symbolic dims' expressions become item
    counts in the code) gives another code key: a build made before it is never served after it."""
    from graphc.backends.llvm import native

    digest = native._codegen_digest.__wrapped__  # (the build caches it per process)
    before = digest()
    target = (Path(native.__file__).resolve().parents[2] / source).resolve()
    read = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda p: read(p) + (b"#" if p.resolve() == target else b""))
    assert digest() != before
