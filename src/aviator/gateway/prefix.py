"""The approximate prefix index: which replica was recently sent which prompt prefix. Pure.

A replica keeps the KV cache of prompts it has served (vLLM's automatic prefix caching), so a
request whose prompt starts like one it was sent recently skips most of its prefill there. Like
llm-d's ``approx-prefix-cache-producer``, the gateway does not ask the replicas what they hold; it
remembers what it sent where:

- The prompt (chat messages with their roles, or the completion prompt) is cut into blocks of
  :data:`BLOCK_CHARS` characters, about 64 tokens of English text at ~4 characters per token
  (llm-d clamps its block size to ≥ 64 tokens too). Only full blocks count, as in vLLM.
- Block ``i``'s hash chains the hash of block ``i - 1`` with the block's text, so equal hashes mean
  equal prefixes up to and including that block.
- Per replica, an LRU of the block hashes it was sent, at most ``capacity`` entries (llm-d's
  ``lruCapacityPerServer`` is 31,250): memory is bounded by replicas * capacity however many
  prompts pass.
- A candidate's match is the number of leading blocks of the prompt found in its LRU; the score is
  that over the prompt's blocks.

Character blocks are an approximation: a tokenizer maps equal text to equal tokens, so equal
leading characters mean equal leading tokens, but block boundaries fall at different places. The
engine's cache works in 16-token blocks, finer than these, so a hit here is (nearly) a hit there.
Hashes use Python's ``hash``, salted per process: an index lives as long as its gateway.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["BLOCK_CHARS", "MAX_BLOCKS", "PrefixIndex", "prompt_blocks", "prompt_text"]

BLOCK_CHARS = 256
MAX_BLOCKS = 2048
"""Blocks looked at per prompt (llm-d's ``maxPrefixBlocksToMatch``); later text cannot matter
much once 512 Ki characters matched."""
DEFAULT_CAPACITY = 31_250


def prompt_text(operation: str, body: Mapping[str, Any]) -> str:
    """The text an engine's prefix cache would see first, from an OpenAI request body."""
    if operation == "chat":
        parts: list[str] = []
        for message in body.get("messages") or ():
            # (``type(...) is dict`` first: a parsed body holds plain dicts, and the ABC check
            # alone costs more than the rest of the loop.)
            if type(message) is not dict and not isinstance(message, Mapping):
                continue
            parts.append(f"<|{message.get('role', '')}|>")
            content = message.get("content")
            if type(content) is str or isinstance(content, str):
                parts.append(content)
            elif isinstance(content, list):
                parts.extend(
                    str(part.get("text", ""))
                    for part in content
                    if isinstance(part, Mapping) and part.get("type") == "text"
                )
        return "\n".join(parts)
    prompt = body.get("prompt" if operation == "text_completion" else "input")
    if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int):
        prompt = prompt[0]  # a batch: route on its first prompt
    if isinstance(prompt, list):  # token ids: equal ids, equal text
        return ",".join(str(t) for t in prompt)
    return prompt if isinstance(prompt, str) else ""


def prompt_blocks(text: str) -> tuple[int, ...]:
    """The chained hashes of ``text``'s full blocks (at most :data:`MAX_BLOCKS`)."""
    count = min(len(text) // BLOCK_CHARS, MAX_BLOCKS)
    hashes: list[int] = []
    parent = 0
    for i in range(count):
        parent = hash((parent, text[i * BLOCK_CHARS : (i + 1) * BLOCK_CHARS]))
        hashes.append(parent)
    return tuple(hashes)


class PrefixIndex:
    """Per replica key, an LRU of the block hashes recently sent there."""

    __slots__ = ("_capacity", "_replicas")

    def __init__(self, *, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._capacity = capacity
        self._replicas: dict[str, OrderedDict[int, None]] = {}

    def match(self, key: str, blocks: Sequence[int]) -> int:
        """How many leading ``blocks`` replica ``key`` was sent."""
        seen = self._replicas.get(key)
        if not seen:
            return 0
        matched = 0
        for block in blocks:
            if block not in seen:
                break
            matched += 1
        return matched

    def record(self, key: str, blocks: Sequence[int]) -> None:
        """``blocks`` were sent to replica ``key``: the most recently used now."""
        if not blocks:
            return
        seen = self._replicas.setdefault(key, OrderedDict())
        # Last block first: a prompt's head ends up most recent, so eviction takes tails first
        # (as vLLM frees a sequence's blocks tail first) and shared prefixes stay.
        for block in reversed(blocks):
            if block in seen:
                seen.move_to_end(block)
            else:
                seen[block] = None
        while len(seen) > self._capacity:
            seen.popitem(last=False)

    def retain(self, keys: Iterable[str]) -> None:
        """Forget replicas not in ``keys`` (they left the table)."""
        keep = set(keys)
        for key in [k for k in self._replicas if k not in keep]:
            del self._replicas[key]

    def size(self, key: str | None = None) -> int:
        """Blocks remembered for ``key``, or for all replicas."""
        if key is not None:
            return len(self._replicas.get(key, ()))
        return sum(len(seen) for seen in self._replicas.values())
