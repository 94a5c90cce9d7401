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
    max_num_seqs: int = typer.Option(
        defaults.DEFAULT_MAX_NUM_SEQS,
        "--max-num-seqs",
        min=1,
        help="Sequences decoded at once (vLLM --max-num-seqs); later requests wait in FIFO order.",
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
    kv_cache_blocks: int = typer.Option(
        defaults.DEFAULT_KV_CACHE_BLOCKS,
        "--kv-cache-blocks",
        min=1,
        help=f"Nominal KV-cache size in {defaults.BLOCK_SIZE}-token blocks "
        "(the denominator of vllm:kv_cache_usage_perc).",
    ),
) -> None:
    """Run the built-in vLLM-compatible inference simulator until SIGTERM or Ctrl-C.

    Serves the OpenAI API (/v1/chat/completions, /v1/completions, /v1/models, SSE streaming),
    /health and /metrics with vLLM's metric names. Answers are deterministic filler text;
    latency follows --ttft-ms and --itl-ms, with queueing beyond --max-num-seqs.
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
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    from aviator.sim.process import run  # the server stack, only when it is going to run

    raise typer.Exit(run(options, host=host, port=port))
