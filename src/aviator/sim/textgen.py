"""Deterministic output text: the same prompt (and seed) always gets the same answer.

An answer is a list of token pieces that the simulator's ``Tokenizer`` splits back into exactly the
same pieces, so ``usage.completion_tokens`` equals the tokenizer's count of the returned text and a
streamed answer can send one piece per chunk. The text is plain English-looking filler: sentences
of 6-14 words drawn from a fixed word list, with commas and full stops. At import a fixed corpus of
such sentences is built once (an immutable tuple); an answer is the window of the corpus that starts
at the sentence the prompt's key selects, so producing one costs a slice, not a loop per word.

How long an answer "wants" to be is also a function of the prompt: ``natural_length`` is uniform in
``[MIN_NATURAL, MAX_NATURAL]``. A request stops there (finish reason ``stop``) unless ``max_tokens``
cuts it first (``length``) or it asked for ``ignore_eos``.
"""

from __future__ import annotations

import zlib

from aviator.sim.tokenizer import CHUNK

__all__ = ["MAX_NATURAL", "MIN_NATURAL", "generate", "natural_length", "prompt_key"]

MIN_NATURAL = 32
MAX_NATURAL = 512
"""Answers a model would end by itself are 32-512 tokens long (mean ≈ 270, the order of ShareGPT
replies); anything asking for 32 tokens or fewer is therefore always cut at ``max_tokens``."""

_MASK = (1 << 64) - 1

_TEXT = (
    "the of and to in is that it for as with was on be by this are from at or an have not which "
    "but all they one can there their has more were will about if would when what so out up into "
    "time only some could them other than then now also after use two how our work first well way "
    "even new want because any these give day most us system model request token cache latency "
    "throughput scheduler replica gateway cluster accelerator memory prefix decode prefill batch "
    "queue policy agent deployment inference controller placement device network storage metric "
    "signal routing capacity budget window context sequence stream response answer question "
    "simple careful reliable measured declarative portable governed observable international"
)
_WORDS = tuple(_TEXT.split())


def _word_pieces(word: str) -> tuple[str, ...]:
    """The pieces of ``" " + word``, split as the tokenizer splits a word run."""
    return (" " + word[:CHUNK], *(word[i : i + CHUNK] for i in range(CHUNK, len(word), CHUNK)))


_LOWER = tuple(_word_pieces(w) for w in _WORDS)
_CAPITAL = tuple(_word_pieces(w.capitalize()) for w in _WORDS)


def _splitmix(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def prompt_key(data: bytes, *, seed: int, request_seed: int | None = None) -> int:
    """A stable 64-bit key for a prompt (its bytes), the server's seed and the request's."""
    mixed = seed & _MASK
    if request_seed is not None:
        mixed ^= _splitmix(request_seed & _MASK)
    return _splitmix(((zlib.crc32(data) << 32) | (len(data) & 0xFFFFFFFF)) ^ mixed)


def natural_length(key: int) -> int:
    """Tokens the answer for ``key`` has when nothing cuts it short."""
    return MIN_NATURAL + _splitmix(key ^ 0x5A5A) % (MAX_NATURAL - MIN_NATURAL + 1)


def _corpus(size: int) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """``size``-odd pieces of filler sentences (ending with a full stop) and where each begins."""
    pieces: list[str] = []
    starts: list[int] = []
    words = len(_LOWER)
    state = 0x243F6A8885A308D3
    sentence_left = 0
    in_sentence = 0
    while True:
        state = (state * 6364136223846793005 + 1442695040888963407) & _MASK  # Knuth's MMIX LCG
        draw = state >> 24  # the high bits are the good ones
        if sentence_left == 0:
            if pieces:
                pieces.append(".")
                if len(pieces) >= size:
                    break
            sentence_left = 6 + draw % 9
            in_sentence = 0
            starts.append(len(pieces))
            word = _CAPITAL[(draw >> 8) % words]
        else:
            if in_sentence >= 3 and sentence_left > 2 and (draw >> 24) % 7 == 0:
                pieces.append(",")
            word = _LOWER[(draw >> 8) % words]
        sentence_left -= 1
        in_sentence += 1
        pieces.extend(word)
    pieces[0] = pieces[0][1:]  # the corpus starts without a leading space
    return tuple(pieces), tuple(starts)


_CORPUS, _STARTS = _corpus(16_384)


def generate(key: int, count: int) -> list[str]:
    """Exactly ``count`` token pieces of the answer for ``key``: the corpus from the sentence
    ``key`` selects on (wrapping around), without the leading space of its first piece."""
    start = _STARTS[key % len(_STARTS)]
    out = list(_CORPUS[start : start + count])
    while len(out) < count:
        out.extend(_CORPUS[: count - len(out)])
    if out and out[0][0] == " ":
        out[0] = out[0][1:]
    return out
