"""The approximate prefix index: chained block hashes, per-replica LRU, bounded memory."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from aviator.gateway.prefix import BLOCK_CHARS, MAX_BLOCKS, PrefixIndex, prompt_blocks, prompt_text

SYSTEM = "You are a careful assistant for the ACME support desk. " * 40  # ~2,200 characters


def chat(*messages: tuple[str, str]) -> dict[str, object]:
    return {"messages": [{"role": r, "content": c} for r, c in messages]}


def test_only_full_blocks_count_and_hashes_chain() -> None:
    assert prompt_blocks("x" * (BLOCK_CHARS - 1)) == ()
    one, two = prompt_blocks("a" * BLOCK_CHARS), prompt_blocks("a" * (2 * BLOCK_CHARS + 5))
    assert len(one) == 1 and len(two) == 2 and two[0] == one[0]
    # equal second blocks after different first blocks hash differently: the chain carries it
    assert (
        prompt_blocks("a" * BLOCK_CHARS + "c" * BLOCK_CHARS)[1]
        != prompt_blocks("b" * BLOCK_CHARS + "c" * BLOCK_CHARS)[1]
    )
    assert len(prompt_blocks("z" * BLOCK_CHARS * (MAX_BLOCKS + 10))) == MAX_BLOCKS


def test_shared_system_prompts_share_leading_blocks() -> None:
    a = prompt_blocks(
        prompt_text("chat", chat(("system", SYSTEM), ("user", "Where is my parcel?")))
    )
    b = prompt_blocks(prompt_text("chat", chat(("system", SYSTEM), ("user", "Cancel my order."))))
    shared = len(SYSTEM) // BLOCK_CHARS
    assert a[:shared] == b[:shared] and shared >= 8


def test_prompt_text_per_operation() -> None:
    parts = {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"},
                                                       {"type": "image_url", "image_url": {}}]}]}  # fmt: skip
    assert prompt_text("chat", parts) == "<|user|>\nhi"
    assert prompt_text("text_completion", {"prompt": "abc"}) == "abc"
    assert prompt_text("text_completion", {"prompt": ["first", "second"]}) == "first"
    assert prompt_text("text_completion", {"prompt": [1, 2, 3]}) == "1,2,3"
    assert prompt_text("embeddings", {"input": "vec"}) == "vec"
    assert prompt_text("chat", {"messages": "nonsense"}) == ""
    assert prompt_text("text_completion", {"prompt": 7}) == ""


def test_match_counts_leading_blocks_only() -> None:
    index = PrefixIndex()
    blocks = prompt_blocks("q" * BLOCK_CHARS * 6)
    index.record("r1", blocks[:4])
    assert index.match("r1", blocks) == 4
    assert index.match("r2", blocks) == 0
    assert index.match("r1", (123, *blocks)) == 0


def test_lru_evicts_tails_of_the_least_recent_prompt_first() -> None:
    index = PrefixIndex(capacity=6)
    old = prompt_blocks("o" * BLOCK_CHARS * 4)
    new = prompt_blocks("n" * BLOCK_CHARS * 4)
    index.record("r", old)
    index.record("r", new)
    assert index.size("r") == 6
    assert index.match("r", new) == 4
    assert index.match("r", old) == 2  # its head stays, its tail went


def test_retain_forgets_departed_replicas() -> None:
    index = PrefixIndex()
    index.record("a", (1, 2))
    index.record("b", (1,))
    index.retain(["b"])
    assert index.size() == 1 and index.match("a", (1, 2)) == 0


@given(
    st.integers(1, 50),
    st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.lists(st.integers(0, 200), max_size=30)),
             max_size=60),
)  # fmt: skip
def test_memory_stays_bounded(capacity: int, records: list[tuple[str, list[int]]]) -> None:
    index = PrefixIndex(capacity=capacity)
    for key, blocks in records:
        index.record(key, blocks)
        assert index.size(key) <= capacity
    assert index.size() <= 3 * capacity
