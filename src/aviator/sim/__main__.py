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
        default=None,
        help="sequences running at once; later requests wait (default: the device profile's "
        f"vLLM default, else {defaults.DEFAULT_MAX_NUM_SEQS})",
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
        default=None,
        help=f"KV-cache size in {defaults.BLOCK_SIZE}-token blocks (default: what the device "
        f"profile leaves for KV, else {defaults.DEFAULT_KV_CACHE_BLOCKS})",
    )
    p.add_argument(
        "--enable-prefix-caching",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="automatic prefix caching, as vLLM V1 (default: on)",
    )
    g = p.add_argument_group("device profile (vLLM's step loop instead of constant latencies)")
    g.add_argument(
        "--device-profile",
        default=None,
        help="time vLLM's steps like this device: a key of aviator.placement.profiles.PROFILES, "
        "e.g. h100-sxm-80gb (--ttft-ms and --itl-ms are then ignored)",
    )
    g.add_argument(
        "--model-class",
        default=None,
        help=f"model size class on the profile: 8b, 70b or 70b-fp8 "
        f"(default {defaults.DEFAULT_MODEL_CLASS})",
    )
    g.add_argument(
        "--tensor-parallel",
        type=int,
        default=None,
        help="devices one replica spans: 1, 2, 4 or 8 (default: the smallest that fits)",
    )
    g.add_argument(
        "--max-num-batched-tokens",
        type=int,
        default=None,
        help="token budget of one engine step (default: vLLM's for the device)",
    )
    f = p.add_argument_group("failure injection (off by default)")
    f.add_argument(
        "--error-rate",
        type=float,
        default=0.0,
        help="share of requests answered 500 before any byte (0-1)",
    )
    f.add_argument(
        "--spike-rate",
        type=float,
        default=0.0,
        help="share of requests delayed by --spike-ms before any byte (0-1)",
    )
    f.add_argument(
        "--spike-ms",
        type=float,
        default=defaults.DEFAULT_SPIKE_MS,
        help="length of a latency spike, ms",
    )
    f.add_argument(
        "--crash-after",
        type=int,
        default=None,
        help="serve this many completion requests, then exit abruptly on the next one",
    )
    f.add_argument(
        "--allow-fault-headers",
        action="store_true",
        help="honour the x-sim-fail request header (error[=STATUS], spike[=MS], crash)",
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
            enable_prefix_caching=args.enable_prefix_caching,
            device_profile=args.device_profile,
            model_class=args.model_class,
            tensor_parallel=args.tensor_parallel,
            max_num_batched_tokens=args.max_num_batched_tokens,
            error_rate=args.error_rate,
            spike_rate=args.spike_rate,
            spike_ms=args.spike_ms,
            crash_after=args.crash_after,
            allow_fault_headers=args.allow_fault_headers,
        )
    except ValueError as exc:
        p.error(str(exc))
    if not 0 <= args.port <= 65535:
        p.error("--port: must be 0-65535")
    return run(options, host=args.host, port=args.port)


if __name__ == "__main__":
    sys.exit(main())
