"""The block pool: allocation, reference counts, the prefix-cache index and LRU eviction."""

from __future__ import annotations

import pytest

from aviator.sim.kvcache import NONE_HASH, BlockPool, NoFreeBlocks, hash_blocks


def ids(n: int, start: int = 0) -> list[int]:
    return list(range(start, start + n))


def test_only_full_blocks_are_hashed_and_hashes_chain_on_the_parent() -> None:
    assert hash_blocks(ids(15)) == []
    [one] = hash_blocks(ids(31))
    assert one == hash((NONE_HASH, tuple(range(16))))
    two = hash_blocks(ids(32))
    assert two[0] == one and two[1] == hash((one, tuple(range(16, 32))))
    # The same tokens after a different first block hash differently: a hash names a prefix.
    other = hash_blocks([*ids(16, start=100), *ids(16, start=16)])
    assert other[0] != one and other[1] != two[1]


def test_hashes_are_stable_across_processes() -> None:
    # Tuples of ints hash without PYTHONHASHSEED: a literal, so a salted hash would fail here.
    assert hash_blocks(ids(16)) == [hash((NONE_HASH, tuple(range(16))))]
    assert hash((1, (2, 3))) == hash((1, (2, 3)))


def test_allocate_and_release_count_references() -> None:
    pool = BlockPool(4)
    assert (pool.num_free, pool.usage) == (4, 0.0)
    blocks = pool.allocate(3)
    assert [b.ref_cnt for b in blocks] == [1, 1, 1]
    assert (pool.num_free, pool.usage) == (1, 0.75)
    with pytest.raises(NoFreeBlocks):
        pool.allocate(2)
    pool.release(blocks)
    assert pool.num_free == 4
    assert all(b.ref_cnt == 0 for b in blocks)


def test_a_shared_block_is_free_only_when_its_last_holder_lets_go() -> None:
    pool = BlockPool(2)
    [block] = pool.allocate(1)
    pool.cache(block, 7)
    hits = pool.lookup([7])
    assert hits == [block]
    pool.take(hits)
    assert block.ref_cnt == 2
    pool.release([block])
    assert (block.ref_cnt, pool.num_free) == (1, 1)
    pool.release([block])
    assert (block.ref_cnt, pool.num_free) == (0, 2)
    assert pool.evictable() == [block]  # free, still cached
    assert pool.lookup([7]) == [block]
    pool.take([block])  # a hit on a free block takes it out of the LRU
    assert (pool.num_free, pool.evictable()) == (1, [])


def test_lookup_stops_at_the_first_miss() -> None:
    pool = BlockPool(4)
    a, b, c = pool.allocate(3)
    for block, h in ((a, 1), (b, 2), (c, 4)):
        pool.cache(block, h)
    assert pool.lookup([1, 2, 3, 4]) == [a, b]
    assert pool.lookup([9, 1]) == []


def test_uncached_blocks_go_first_then_the_least_recently_released_cached_ones() -> None:
    pool = BlockPool(4)
    first = pool.allocate(2)  # one request: blocks 0, 1
    second = pool.allocate(2)  # another: blocks 2, 3
    for block, h in zip(first + second, (10, 11, 20, 21), strict=True):
        pool.cache(block, h)
    pool.release(first)  # released last-to-first: 1 then 0
    pool.release(second)  # 3 then 2
    assert [b.block_id for b in pool.evictable()] == [1, 0, 3, 2]
    [evicted] = pool.allocate(1)
    assert evicted.block_id == 1 and evicted.block_hash is None
    assert pool.lookup([10, 11]) == [first[0]]  # the prompt's head survives its tail
    assert pool.num_evictions == 1
    pool.release([evicted])  # never cached since: goes to the uncached stack
    [again] = pool.allocate(1)
    assert again is evicted  # an uncached free block is taken before evicting another
    assert pool.num_cached == 3


def test_a_duplicate_hash_stays_unindexed() -> None:
    pool = BlockPool(2)
    a, b = pool.allocate(2)
    pool.cache(a, 5)
    pool.cache(b, 5)  # computed twice (two requests at once): only the first is indexed
    assert (a.block_hash, b.block_hash) == (5, None)
    pool.release([a, b])
    assert pool.evictable() == [a]


def test_can_allocate_counts_free_hits_as_taken() -> None:
    pool = BlockPool(3)
    [a] = pool.allocate(1)
    pool.cache(a, 1)
    pool.release([a])
    hits = pool.lookup([1])
    assert pool.num_free == 3
    assert pool.can_allocate(2, hits)
    assert not pool.can_allocate(3, hits)  # taking the hit leaves 2 free


def test_caching_off_indexes_nothing() -> None:
    pool = BlockPool(2, enable_caching=False)
    [a] = pool.allocate(1)
    pool.cache(a, 1)
    assert a.block_hash is None and pool.lookup([1]) == []


def test_blocks_are_made_on_first_use() -> None:
    pool = BlockPool(1_000_000)
    assert pool.blocks == [] and pool.num_free == 1_000_000
    pool.release(pool.allocate(3))
    pool.allocate(2)
    assert len(pool.blocks) == 3
