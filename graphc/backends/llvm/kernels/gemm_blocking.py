"""Cache sizes and the GEMM's block sizes derived from them.

The packed GEMM (:mod:`.gemm`) walks K in blocks of ``kc`` and rows in blocks of ``mc``, as
BLIS's loops around its micro-kernel do, so that each level of the cache holds what is reused
from it:

- L1: the panel of B the micro-kernel streams (``kc x NR`` floats) is reused for every
  micro-tile of a row block: it takes twice L1, ``kc = 2 * L1 / (NR * 4)``, in steps of 16, between
  64 and 512. Each K block is one more pass over C (its partial sums read and written back), so
  deeper blocks win even though the rows of A then push part of the panel out to L2, from where
  it streams in order: measured on the Xeon (48 KiB L1, NR = 32), kc = 384 (L1 full) ran 5 % faster
  than half of L1 (192) at M = N = K = 1024 and 12 % at 2048; on Zen 4 (32 KiB L1, NR = 32),
  kc = 512 (twice L1) 1.02x faster than 256 at 1024 and 2048, 1.01-1.04x on the products of
  512-4096 deep in Keras models, whole models within 1 % (`python -m benchmarks.switch_models
  GRAPHC_GEMM_KC=256`). The Xeon's 512 (from twice its L1, above 384) is not measured there.
- B computed at run time (:func:`.gemm.emit_runtime_gemm`) is packed once per work item and K block,
  a chunk of panels at a time (at most ``b_block`` bytes, an eighth of L3, per thread), then reused
  by every row block of the item; its K blocks are deep (``kc_packed``: as deep as leaves two
  micro-tiles of A in a quarter of L2, at most 2048), as C is read and written back once per K
  block over the whole item, not over one row block as with a packed weight. Measured on Zen 4 at
  M = N = K = 2048, one thread: packing B per row block (as before) cost 7-9 % of the time; with it
  packed per item, K blocks of 512 ran at 84-86 % of the peak and of 1024-2048 at 88-92 % (4096 no
  faster at 4096).
- L2: the row block of A packed into the thread's tile (``mc x (kc + 16)`` floats) is reused for
  every panel, so it stays in L2 while the panels of B stream through it: it takes an eighth of
  L2, ``mc = L2 / 8 / ((kc + 16) * 4)``, whole micro-tiles (BLIS takes about half; measured on a
  2 MiB-L2 Xeon shared with other work, tiles of 1 MiB ran about 10 % slower than tiles of 256 KiB,
  and smaller row blocks also give the threads more of them to share).
- L3: the K block of B read for one row block (``kc x nc`` floats) takes at most half of the
  last-level cache: wider products are split into column chunks of at most ``nc`` columns.

Rows of A read where they lie (a Dense's rows, an implicit GEMM's pixels) are ``stride`` bytes
apart; where that is a multiple of L1's way size (4 KiB on x86: K = 1024, 2048, 3072 floats) every row
of a micro-tile falls into the same L1 set, and more rows than the set has ways evict each other at
every step of k. :func:`rows_conflict_in_l1` tells; such tiles are copied into the padded tile
instead. Measured on Zen 4 (32 KiB 8-way L1, 12-row tiles): K = 1024, 2048, 3072 over 49-784 rows
1.03-1.11x faster copied, K = 512, 768, 1000, 1536 0.98-1.00x (6 rows or fewer per set); on the Xeon
(48 KiB 12-way) 12 rows in one set still fit, and reading in place was 1.06x faster at K = 1024.

The sizes are those of the machine graphc runs on (Linux sysfs,
``/sys/devices/system/cpu/cpu0/cache/index*``) when code is generated for the host CPU; a cross
target or a portable CPU level gets :data:`DEFAULT_CACHES` (a common x86-64 / AArch64 server
core), and ``GRAPHC_GEMM_CACHES`` (``"l1=32K,l2=1M,l3=16M,l1_ways=8"``, any of the four) gives them
explicitly for either. ``GRAPHC_GEMM_KC`` / ``GRAPHC_GEMM_MC`` override the derived sizes.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

from graphc.backends.llvm import switches
from graphc.backends.llvm.cache import parse_size

SYSFS_CACHES = Path("/sys/devices/system/cpu/cpu0/cache")
ENV_CACHES = switches.GEMM_CACHES.name


@dataclass(frozen=True)
class CacheSizes:
    """Bytes of one core's L1 data cache and L2, and of the last-level cache; L1's associativity."""

    l1: int
    l2: int
    l3: int
    l1_ways: int = 8


DEFAULT_CACHES = CacheSizes(l1=32 << 10, l2=1 << 20, l3=16 << 20, l1_ways=8)
LINE = 64  # bytes per cache line


def parse_caches(spec: str, base: CacheSizes = DEFAULT_CACHES) -> CacheSizes:
    """``"l1=32K,l2=1M,l3=16M,l1_ways=8"`` (any subset) over ``base``."""
    sizes = {"l1": base.l1, "l2": base.l2, "l3": base.l3, "l1_ways": base.l1_ways}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        key, _, value = part.partition("=")
        key = key.strip().lower()
        if key not in sizes or not value:
            raise ValueError(f"{ENV_CACHES}={spec!r}: expected l1=SIZE, l2=SIZE, l3=SIZE and/or l1_ways=N, "
                             f"got {part!r}")
        if key == "l1_ways":
            if not value.strip().isdigit() or int(value) < 1:
                raise ValueError(f"{ENV_CACHES}={spec!r}: l1_ways must be a positive whole number, got {value!r}")
            sizes[key] = int(value)
        else:
            sizes[key] = parse_size(value, f"{ENV_CACHES} {key}")
    return CacheSizes(**sizes)


def read_sysfs_caches(root: Path = SYSFS_CACHES) -> CacheSizes | None:
    """The caches sysfs lists for one CPU (None where it lists no L1 data cache or no L2)."""
    found: dict[str, int] = {}
    for index in sorted(root.glob("index*")):
        try:
            level = int((index / "level").read_text())
            kind = (index / "type").read_text().strip()
            size = parse_size((index / "size").read_text(), f"{index}/size")
        except (OSError, ValueError):
            continue
        if kind == "Instruction" or level not in (1, 2, 3):
            continue
        found[f"l{level}"] = max(found.get(f"l{level}", 0), size)
        if level == 1:
            try:
                found["l1_ways"] = int((index / "ways_of_associativity").read_text())
            except (OSError, ValueError):
                pass
    if "l1" not in found or "l2" not in found:
        return None
    ways = found.get("l1_ways", 0)
    return CacheSizes(l1=found["l1"], l2=found["l2"], l3=found.get("l3", found["l2"]),
                      l1_ways=ways if ways > 0 else DEFAULT_CACHES.l1_ways)


@cache
def host_caches() -> CacheSizes:
    return read_sysfs_caches() or DEFAULT_CACHES


def caches_for(host: bool) -> CacheSizes:
    """The caches to block for: the host's when generating code for it, else the defaults; either
    overridden by ``GRAPHC_GEMM_CACHES``."""
    base = host_caches() if host else DEFAULT_CACHES
    spec = switches.GEMM_CACHES.raw()
    return parse_caches(spec, base) if spec else base


KC_PACKED_MOST = 2048  # the deepest K block of B packed at run time (4096 ran no faster at M = N = K = 4096)


@dataclass(frozen=True)
class Blocking:
    """The GEMM's block sizes: ``kc`` (K block), ``mc`` (rows per block, whole micro-tiles) and
    ``nc`` (columns per chunk, whole panels)."""

    kc: int
    kc_packed: int  # the deepest K block where B is packed at run time
    mc: int
    nc: int
    l2: int  # bytes of L2: packed weights larger than half of it are prefetched as they stream
    l1: int = DEFAULT_CACHES.l1
    l1_ways: int = DEFAULT_CACHES.l1_ways
    b_block: int = DEFAULT_CACHES.l3 // 8  # bytes of B computed at run time that a thread packs at once
    l3: int = DEFAULT_CACHES.l3


def rows_conflict_in_l1(stride_bytes: int, rows: int, bl: Blocking) -> bool:
    """Whether ``rows`` rows ``stride_bytes`` apart put more lines into one L1 set than it has ways
    (see the module docstring)."""
    sets = max(1, bl.l1 // bl.l1_ways // LINE)
    per_set: dict[int, int] = {}
    for line in {i * stride_bytes // LINE for i in range(rows)}:  # rows within one line share it
        per_set[line % sets] = per_set.get(line % sets, 0) + 1
    return max(per_set.values(), default=0) > bl.l1_ways


def blocking(caches: CacheSizes, mr: int, nr: int) -> Blocking:
    """Block sizes for an ``mr x nr`` micro-tile (see the module docstring)."""
    kc = max(64, min(512, 2 * caches.l1 // (nr * 4) // 16 * 16))
    kc = switches.GEMM_KC.integer(kc)
    two_tiles = caches.l2 // 4 // (2 * mr * 4) // 16 * 16 - 16  # two micro-tiles of A in a quarter of L2
    kc_packed = switches.GEMM_KC.integer(max(64, min(KC_PACKED_MOST, two_tiles)))
    mc = max(mr, caches.l2 // 8 // ((kc + 16) * 4) // mr * mr)
    mc = switches.GEMM_MC.integer(mc)
    nc = max(nr, caches.l3 // 2 // (kc * 4) // nr * nr)
    return Blocking(kc=kc, kc_packed=kc_packed, mc=mc, nc=nc, l2=caches.l2, l1=caches.l1,
                    l1_ways=caches.l1_ways, b_block=caches.l3 // 8, l3=caches.l3)


def even_block(K: int, most: int) -> int:
    """K blocks of at most ``most``, evened out (the last is not tiny)."""
    n = -(-K // most)
    return -(-K // n) if K else 1


def runtime_blocks(bl: Blocking, K, mr: int) -> tuple[int, int]:
    """(K block, rows per row block) of a product whose B is computed at run time: K blocks of at most
    ``kc_packed`` (evened out where K is known), and as many whole micro-tiles of A as take a quarter of
    L2 at that depth (``GRAPHC_GEMM_MC`` overrides the rows)."""
    kc = bl.kc_packed
    if isinstance(K, int) and K >= 1:
        kc = even_block(K, kc)
    rows = max(mr, bl.l2 // 4 // ((kc + 16) * 4) // mr * mr)
    return kc, switches.GEMM_MC.integer(rows)
