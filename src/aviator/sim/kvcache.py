"""The paged KV cache: a pool of ``BLOCK_SIZE``-token blocks with vLLM's automatic prefix caching.

Pure and synchronous; the engine owns one ``BlockPool`` and decides when sequences take and give
back blocks. The model follows vLLM V1 (``docs/design/prefix_caching.md``, calibration.md §4):

- A sequence holds the blocks its tokens' KV lives in, in order. Blocks are reference-counted: a
  block that hit the prefix cache is shared by every sequence that uses it.
- Only *full* blocks are cached. A block's hash chains the hash of the block before it with the
  block's token ids (``hash_blocks``), so equal hashes mean equal prefixes up to that block.
- A block whose last user lets go stays in the cache, evictable, in a free list ordered from least
  to most recently released. A sequence releases its blocks last-to-first, so the most specific
  suffix of a prompt is evicted before the shared beginning.
- Allocation takes never-cached free blocks first and evicts a cached one (the least recently
  released) only when no other block is free. vLLM keeps a single queue and may evict a cached
  block while an uncached one sits further back; taking the uncached one first keeps more hits
  and changes nothing else.
- ``lookup`` walks a sequence's block hashes from the first and stops at the first miss: the
  longest cached prefix, as ``KVCacheManager.get_computed_blocks`` does.

Usage (``vllm:kv_cache_usage_perc``) is the share of blocks some sequence holds: cached blocks
nobody holds are free, as in vLLM.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence

from aviator.sim.options import BLOCK_SIZE

__all__ = ["NONE_HASH", "Block", "BlockPool", "NoFreeBlocks", "hash_blocks"]

NONE_HASH = 0x5A17_F00D_C0FF_EE00
"""The parent hash of a sequence's first block (vLLM seeds it from ``PYTHONHASHSEED``)."""


def hash_blocks(token_ids: Sequence[int], *, parent: int = NONE_HASH) -> list[int]:
    """The chained hashes of the full ``BLOCK_SIZE``-token blocks of ``token_ids``, the first one
    chained on ``parent``. A partial last block gets no hash.

    Python's hash of a tuple of ints does not depend on ``PYTHONHASHSEED``, so the same ids hash
    the same in every process (no salt: this is a simulator, not a shared cache)."""
    hashes: list[int] = []
    for start in range(0, len(token_ids) - BLOCK_SIZE + 1, BLOCK_SIZE):
        parent = hash((parent, tuple(token_ids[start : start + BLOCK_SIZE])))
        hashes.append(parent)
    return hashes


class NoFreeBlocks(Exception):
    """``allocate`` asked for more blocks than are free (the caller checks ``num_free`` first)."""


class Block:
    """One block of KV-cache memory."""

    __slots__ = ("block_hash", "block_id", "ref_cnt")

    def __init__(self, block_id: int) -> None:
        self.block_id = block_id
        self.ref_cnt = 0
        """Sequences holding this block; 0 means it is free (and evictable, if cached)."""
        self.block_hash: int | None = None
        """The hash it is cached under, or None."""

    def __repr__(self) -> str:
        return f"Block({self.block_id}, ref_cnt={self.ref_cnt}, hash={self.block_hash})"


class BlockPool:
    """``num_blocks`` blocks, their reference counts, and the prefix-cache index."""

    def __init__(self, num_blocks: int, *, enable_caching: bool = True) -> None:
        if num_blocks < 1:
            raise ValueError("num_blocks must be at least 1")
        self.num_blocks = num_blocks
        self.enable_caching = enable_caching
        self.blocks: list[Block] = []
        """Every block used so far, by id (made on first use: a big pool costs nothing until
        it fills)."""
        self._uncached: list[Block] = []  # released blocks that were never cached: a stack
        self._evictable: OrderedDict[int, Block] = OrderedDict()  # block_id -> block, LRU first
        self._cached: dict[int, Block] = {}  # hash -> the block cached under it
        self.num_free = num_blocks
        """Blocks no sequence holds (never used, released uncached, or evictable)."""
        self.num_evictions = 0

    # -- reading

    @property
    def num_cached(self) -> int:
        """Blocks in the prefix-cache index, held or evictable."""
        return len(self._cached)

    @property
    def usage(self) -> float:
        """Share of blocks some sequence holds."""
        return 1.0 - self.num_free / self.num_blocks

    def evictable(self) -> list[Block]:
        """Cached blocks nobody holds, next to be evicted first."""
        return list(self._evictable.values())

    def lookup(self, hashes: Iterable[int]) -> list[Block]:
        """The cached blocks of the longest prefix of ``hashes`` (stops at the first miss)."""
        if not self.enable_caching:
            return []
        cached = self._cached
        hits: list[Block] = []
        for block_hash in hashes:
            block = cached.get(block_hash)
            if block is None:
                break
            hits.append(block)
        return hits

    def can_allocate(self, count: int, hits: Sequence[Block] = ()) -> bool:
        """Whether ``count`` new blocks fit once ``hits`` (from ``lookup``) are taken too: a free
        hit block stops being free when taken."""
        free = self.num_free
        if count > free:
            return False
        return not hits or count <= free - sum(1 for block in hits if block.ref_cnt == 0)

    # -- changing

    def take(self, hits: Iterable[Block]) -> None:
        """Hold blocks found by ``lookup`` (one more reference each; free ones leave the LRU)."""
        evictable = self._evictable
        for block in hits:
            if block.ref_cnt == 0:
                del evictable[block.block_id]
                self.num_free -= 1
            block.ref_cnt += 1

    def allocate(self, count: int) -> list[Block]:
        """``count`` fresh blocks, each held once: never-cached ones first, then the least
        recently released cached ones, evicted from the cache. Raises ``NoFreeBlocks``."""
        if count > self.num_free:
            raise NoFreeBlocks(f"{count} blocks asked, {self.num_free} free")
        self.num_free -= count
        uncached, blocks = self._uncached, self.blocks
        if count == 1 and uncached:  # the common case: a sequence grows by one block
            block = uncached.pop()
            block.ref_cnt = 1
            return [block]
        out: list[Block] = []
        while len(out) < count and uncached:
            block = uncached.pop()
            block.ref_cnt = 1
            out.append(block)
        while len(out) < count and len(blocks) < self.num_blocks:
            block = Block(len(blocks))
            blocks.append(block)
            block.ref_cnt = 1
            out.append(block)
        while len(out) < count:
            _, block = self._evictable.popitem(last=False)
            self._evict(block)
            block.ref_cnt = 1
            out.append(block)
        return out

    def release(self, blocks: Sequence[Block]) -> None:
        """Drop one reference to each of ``blocks`` (a sequence's blocks, in order). Blocks
        nobody holds any more become free, released last-to-first so that the end of a sequence
        is evicted before its beginning."""
        uncached, evictable = self._uncached, self._evictable
        for block in reversed(blocks):
            block.ref_cnt -= 1
            if block.ref_cnt == 0:
                self.num_free += 1
                if block.block_hash is None:
                    uncached.append(block)
                else:
                    evictable[block.block_id] = block

    def cache(self, block: Block, block_hash: int) -> None:
        """Index a held, now full, ``block`` under ``block_hash``. When another block already
        holds that hash, ``block`` stays unindexed (a duplicate until it is freed, as in vLLM)."""
        if not self.enable_caching or block.block_hash is not None:
            return
        if block_hash not in self._cached:
            self._cached[block_hash] = block
            block.block_hash = block_hash

    def _evict(self, block: Block) -> None:
        block_hash = block.block_hash
        if block_hash is not None:
            del self._cached[block_hash]
            block.block_hash = None
            self.num_evictions += 1
