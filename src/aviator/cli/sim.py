"""``aviator sim``: run the built-in vLLM-compatible inference simulator in the foreground.

The local runtime starts replicas of engine ``sim`` as ``python -m aviator sim --host H --port P
--model NAME [--ttft-ms …]``; people run it by hand to have an OpenAI endpoint without a GPU.
"""

from __future__ import annotations

import typer

from aviator.sim import options as defaults
from aviator.sim.options import SimOptions


def sim(
    model: str = typer.Option(
        ..., "--model", help="Served model name: the `model` value clients must send."
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(
        8000, "--port", min=0, max=65535, help="Port to listen on; 0 picks a free one."
    ),
    ttft_ms: float = typer.Option(
        defaults.DEFAULT_TTFT_MS,
        "--ttft-ms",
        min=0.0,
        help="Time to first token once a request is scheduled, in ms (queueing comes on top).",
    ),
    itl_ms: float = typer.Option(
        defaults.DEFAULT_ITL_MS,
        "--itl-ms",
        min=0.0,
        help="Inter-token latency, in ms.",
    ),
    max_num_seqs: int | None = typer.Option(
        None,
        "--max-num-seqs",
        min=1,
        help="Sequences decoded at once (vLLM --max-num-seqs); later requests wait in FIFO order. "
        f"Default: the device profile's vLLM default, else {defaults.DEFAULT_MAX_NUM_SEQS}.",
    ),
    max_waiting: int = typer.Option(
        defaults.DEFAULT_MAX_WAITING,
        "--max-waiting",
        min=0,
        help="Waiting-queue bound; a request that finds it full gets 503.",
    ),
    time_scale: float = typer.Option(
        defaults.DEFAULT_TIME_SCALE,
        "--time-scale",
        min=0.0,
        help="Multiplier for every latency: 0.1 runs ten times faster than real time, 0 removes "
        "latency (benchmarks of the gateway itself).",
    ),
    seed: int = typer.Option(
        defaults.DEFAULT_SEED,
        "--seed",
        help="Mixed into the prompt hash that seeds the generated text.",
    ),
    max_model_len: int = typer.Option(
        defaults.DEFAULT_MAX_MODEL_LEN,
        "--max-model-len",
        min=1,
        help="Context window: prompt plus max_tokens above it is refused with 400.",
    ),
    kv_cache_blocks: int | None = typer.Option(
        None,
        "--kv-cache-blocks",
        min=1,
        help=f"KV-cache size in {defaults.BLOCK_SIZE}-token blocks. Default: what the device "
        f"profile leaves for KV, else {defaults.DEFAULT_KV_CACHE_BLOCKS}.",
    ),
    enable_prefix_caching: bool = typer.Option(
        True,
        "--enable-prefix-caching/--no-enable-prefix-caching",
        help="Automatic prefix caching, as in vLLM V1.",
    ),
    device_profile: str | None = typer.Option(
        None,
        "--device-profile",
        help="Time vLLM's engine steps like this device (a key of "
        "aviator.placement.profiles.PROFILES, e.g. h100-sxm-80gb); --ttft-ms and --itl-ms are "
        "then ignored.",
        rich_help_panel="Device profile",
    ),
    model_class: str | None = typer.Option(
        None,
        "--model-class",
        help=f"Model size class on the profile: 8b, 70b or 70b-fp8 "
        f"(default {defaults.DEFAULT_MODEL_CLASS}).",
        rich_help_panel="Device profile",
    ),
    tensor_parallel: int | None = typer.Option(
        None,
        "--tensor-parallel",
        help="Devices one replica spans: 1, 2, 4 or 8 (default: the smallest that fits).",
        rich_help_panel="Device profile",
    ),
    max_num_batched_tokens: int | None = typer.Option(
        None,
        "--max-num-batched-tokens",
        help="Token budget of one engine step (default: vLLM's for the device).",
        rich_help_panel="Device profile",
    ),
    error_rate: float = typer.Option(
        0.0,
        "--error-rate",
        help="Share of requests answered 500 before any byte (0-1).",
        rich_help_panel="Failure injection",
    ),
    spike_rate: float = typer.Option(
        0.0,
        "--spike-rate",
        help="Share of requests delayed by --spike-ms before any byte (0-1).",
        rich_help_panel="Failure injection",
    ),
    spike_ms: float = typer.Option(
        defaults.DEFAULT_SPIKE_MS,
        "--spike-ms",
        help="Length of a latency spike, in ms.",
        rich_help_panel="Failure injection",
    ),
    crash_after: int | None = typer.Option(
        None,
        "--crash-after",
        help="Serve this many completion requests, then exit abruptly on the next one.",
        rich_help_panel="Failure injection",
    ),
    allow_fault_headers: bool = typer.Option(
        False,
        "--allow-fault-headers",
        help="Honour the x-sim-fail request header (error[=STATUS], spike[=MS], crash).",
        rich_help_panel="Failure injection",
    ),
) -> None:
    """Run the built-in vLLM-compatible inference simulator until SIGTERM or Ctrl-C.

    Serves the OpenAI API (/v1/chat/completions, /v1/completions, /v1/models, SSE streaming),
    /health and /metrics with vLLM's metric names. Answers are deterministic filler text.
    Latency follows --ttft-ms and --itl-ms, or with --device-profile vLLM's step loop timed like
    that device; a paged KV cache with prefix caching, and queueing beyond --max-num-seqs. See
    docs/simulator.md.
    """
    try:
        options = SimOptions(
            model=model,
            ttft_ms=ttft_ms,
            itl_ms=itl_ms,
            max_num_seqs=max_num_seqs,
            max_waiting=max_waiting,
            time_scale=time_scale,
            seed=seed,
            max_model_len=max_model_len,
            kv_cache_blocks=kv_cache_blocks,
            enable_prefix_caching=enable_prefix_caching,
            device_profile=device_profile,
            model_class=model_class,
            tensor_parallel=tensor_parallel,
            max_num_batched_tokens=max_num_batched_tokens,
            error_rate=error_rate,
            spike_rate=spike_rate,
            spike_ms=spike_ms,
            crash_after=crash_after,
            allow_fault_headers=allow_fault_headers,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    from aviator.sim.process import run  # the server stack, only when it is going to run

    raise typer.Exit(run(options, host=host, port=port))
