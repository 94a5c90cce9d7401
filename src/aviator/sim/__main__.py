"""``python -m aviator.sim``: the simulator process without the ``aviator`` command.

Same flags and defaults as ``aviator sim`` (a test holds the two option sets equal). Parsed with
argparse because this package must not import ``aviator.cli`` (import-linter: "the simulator
stands alone"); both front ends end in ``aviator.sim.process.run``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from aviator.sim import options as defaults
from aviator.sim.options import SimOptions
from aviator.sim.process import run

__all__ = ["main", "parser"]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m aviator.sim",
        description="Run the built-in vLLM-compatible inference simulator "
        "(OpenAI API, SSE streaming, vLLM Prometheus metrics) until SIGTERM or Ctrl-C.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=8000, help="port to listen on; 0 picks a free one")
    p.add_argument("--model", required=True, help="served model name clients put in `model`")
    p.add_argument(
        "--ttft-ms",
        type=float,
        default=defaults.DEFAULT_TTFT_MS,
        help="time to first token after scheduling, ms",
    )
    p.add_argument(
        "--itl-ms", type=float, default=defaults.DEFAULT_ITL_MS, help="inter-token latency, ms"
    )
    p.add_argument(
        "--max-num-seqs",
        type=int,
        default=defaults.DEFAULT_MAX_NUM_SEQS,
        help="sequences running at once; later requests wait",
    )
    p.add_argument(
        "--max-waiting",
        type=int,
        default=defaults.DEFAULT_MAX_WAITING,
        help="waiting-queue bound; beyond it requests get 503",
    )
    p.add_argument(
        "--time-scale",
        type=float,
        default=defaults.DEFAULT_TIME_SCALE,
        help="multiplier for every latency (0.1 = ten times faster)",
    )
    p.add_argument(
        "--seed", type=int, default=defaults.DEFAULT_SEED, help="seed mixed into generated text"
    )
    p.add_argument(
        "--max-model-len",
        type=int,
        default=defaults.DEFAULT_MAX_MODEL_LEN,
        help="context window: prompt + max_tokens above it get 400",
    )
    p.add_argument(
        "--kv-cache-blocks",
        type=int,
        default=defaults.DEFAULT_KV_CACHE_BLOCKS,
        help=f"nominal KV-cache size in {defaults.BLOCK_SIZE}-token blocks",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    try:
        options = SimOptions(
            model=args.model,
            ttft_ms=args.ttft_ms,
            itl_ms=args.itl_ms,
            max_num_seqs=args.max_num_seqs,
            max_waiting=args.max_waiting,
            time_scale=args.time_scale,
            seed=args.seed,
            max_model_len=args.max_model_len,
            kv_cache_blocks=args.kv_cache_blocks,
        )
    except ValueError as exc:
        p.error(str(exc))
    if not 0 <= args.port <= 65535:
        p.error("--port: must be 0-65535")
    return run(options, host=args.host, port=args.port)


if __name__ == "__main__":
    sys.exit(main())
