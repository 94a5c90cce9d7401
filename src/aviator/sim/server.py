"""The simulator's HTTP face: a vLLM-compatible OpenAI server on aiohttp.

Routes: ``POST /v1/chat/completions``, ``POST /v1/completions`` (JSON or SSE when ``stream``),
``GET /v1/models``, ``GET /health`` (200 while serving, 503 once shutting down) and
``GET /metrics`` (Prometheus text, vLLM names).

``SimServer`` resolves the options (``SimOptions.resolve``): constant latencies drive the
per-sequence ``Scheduler``; a device profile drives vLLM's step loop (``StepScheduler`` timed by
``latency.ProfileLatency``). Completion requests pass the fault injector (``faults``) first, then
are tokenized (ids for the prefix cache), queued in the engine and answered as their tokens come.

``build_app`` composes one ``SimServer`` (tokenizer, engine, metrics; nothing shared between
instances) into an ``aiohttp.web.Application``. Serve it with ``handler_cancellation=True`` (as
``serve`` and aiohttp's ``TestServer`` do) so that a client that disconnects cancels its handler,
which aborts its sequence and frees the slot; without it a disconnect is only noticed when a
streamed write fails. On application shutdown every in-flight request is aborted first, so
stopping takes milliseconds, not the length of the longest answer.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import signal
import time
from collections.abc import Callable
from typing import Any, Literal

import orjson
from aiohttp import web

from aviator.api.errors import ApiError, BadRequest, RequestEntityTooLarge
from aviator.sim import faults, openai_api, textgen
from aviator.sim.driver import AsyncEngine, Flight
from aviator.sim.engine import (
    ConstantLatency,
    FinishReason,
    LatencyModel,
    ServiceUnavailable,
    StepModel,
)
from aviator.sim.metrics import CONTENT_TYPE, SimMetrics
from aviator.sim.options import BLOCK_SIZE, SimOptions
from aviator.sim.tokenizer import Tokenizer

__all__ = ["SHUTDOWN_GRACE_S", "SIM_KEY", "SimServer", "build_app", "serve"]

log = logging.getLogger("aviator.sim")

SHUTDOWN_GRACE_S = 0.5
"""How long shutdown waits for handlers (already woken by the engine's abort) before cancelling
them; keeps SIGTERM-to-exit well under a second."""

_JSON = "application/json"
_SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


def _error(exc: ApiError) -> web.Response:
    headers = {"Retry-After": "1"} if exc.code == 503 else None
    return web.Response(
        status=exc.code,
        body=orjson.dumps(openai_api.error_body(exc)),
        content_type=_JSON,
        headers=headers,
    )


class SimServer:
    """One simulator instance: its options, tokenizer, engine, metrics and HTTP handlers."""

    def __init__(self, options: SimOptions) -> None:
        self.options = options
        self.config = config = options.resolve()
        self.tokenizer = Tokenizer()
        self.metrics = SimMetrics(
            model_name=options.model,
            kv_cache_blocks=config.num_gpu_blocks,
            enable_prefix_caching=options.enable_prefix_caching,
        )
        latency: LatencyModel | StepModel
        if config.profile is None or config.model_class is None or config.tensor_parallel is None:
            latency = ConstantLatency(ttft_s=options.ttft_s, itl_s=options.itl_s)
        else:
            from aviator.sim.latency import ProfileLatency  # imports the profiles: only now

            latency = ProfileLatency(
                config.profile,
                config.model_class,
                tensor_parallel=config.tensor_parallel,
                time_scale=options.time_scale,
            )
        self.engine = AsyncEngine(
            max_num_seqs=config.max_num_seqs,
            max_waiting=options.max_waiting,
            latency=latency,
            kv_cache_blocks=config.num_gpu_blocks,
            max_num_batched_tokens=config.max_num_batched_tokens,
            enable_prefix_caching=options.enable_prefix_caching,
            observer=self.metrics,
        )
        self.faults = faults.Faults(options)
        self.crash: Callable[[], None] = faults.crash
        """What an injected crash calls (``os._exit``; tests replace it)."""
        self.draining = False
        self._id_prefix = os.urandom(6).hex()
        self._ids = itertools.count(1)
        created = int(time.time())
        self._models = orjson.dumps(
            {
                "object": "list",
                "data": [
                    {
                        "id": options.model,
                        "object": "model",
                        "created": created,
                        "owned_by": "aviator-sim",
                        "root": options.model,
                        "parent": None,
                        "max_model_len": config.max_model_len,
                        "permission": [],
                    }
                ],
            }
        )

    def describe(self) -> str:
        """One line on what this engine simulates (logged at start)."""
        config, options = self.config, self.options
        if config.profile is None or config.model_class is None:
            timing = f"fixed latencies (TTFT {options.ttft_ms:g} ms, ITL {options.itl_ms:g} ms)"
        else:
            timing = (
                f"vLLM steps timed like {config.tensor_parallel}x {config.profile.name} serving "
                f"model class {config.model_class.name} "
                f"(step budget {config.max_num_batched_tokens} tokens)"
            )
        caching = "on" if options.enable_prefix_caching else "off"
        return (
            f"{timing}; KV cache {config.num_gpu_blocks} blocks of {BLOCK_SIZE} tokens, prefix "
            f"caching {caching}; max_num_seqs {config.max_num_seqs}; max_model_len "
            f"{config.max_model_len}; time scale {options.time_scale:g}"
        )

    # -- routes

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._complete(request, "chat")

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._complete(request, "completion")

    async def models(self, request: web.Request) -> web.Response:
        return web.Response(body=self._models, content_type=_JSON)

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(status=503 if self.draining else 200)

    async def prometheus(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE})

    async def on_shutdown(self, app: web.Application) -> None:
        self.draining = True
        self.engine.close()

    # -- completions

    async def _complete(
        self, request: web.Request, kind: Literal["chat", "completion"]
    ) -> web.StreamResponse:
        options = self.options
        try:
            if self.faults.enabled:
                injected = await self._inject(request)
                if injected is not None:
                    return injected
            body = await self._read_json(request)
            parse = openai_api.parse_chat if kind == "chat" else openai_api.parse_completion
            req = parse(
                body,
                served_model=options.model,
                max_model_len=self.config.max_model_len,
                tokenizer=self.tokenizer,
            )
            key = textgen.prompt_key(req.prompt_bytes, seed=options.seed, request_seed=req.seed)
            natural = textgen.natural_length(key)
            if req.ignore_eos or natural > req.max_tokens:
                count, end = req.max_tokens, FinishReason.LENGTH
            else:
                count, end = natural, FinishReason.STOP
            pieces = textgen.generate(key, count)
            caching = options.enable_prefix_caching
            flight = self.engine.submit(
                num_prompt_tokens=req.prompt_tokens,
                max_output_tokens=count,
                end_reason=end,
                stream=req.stream,
                prompt_token_ids=req.prompt_token_ids if caching else None,
                output_token_ids=self.tokenizer.ids(pieces) if caching else None,
            )
        except ApiError as exc:
            return _error(exc)
        response_id = (
            f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{self._id_prefix}{next(self._ids):010x}"
        )
        try:
            if req.stream:
                return await self._stream(request, req, flight, pieces, response_id=response_id)
            while not flight.done:
                await flight.wait()
            seq = flight.seq
            if seq.finish_reason is FinishReason.ABORT:
                return _error(ServiceUnavailable("the simulator is shutting down"))
            usage = openai_api.Usage(
                req.prompt_tokens, seq.num_output_tokens, seq.num_cached_tokens
            )
            payload = openai_api.response_body(
                req,
                response_id=response_id,
                created=int(time.time()),
                text="".join(pieces),
                finish_reason=str(seq.finish_reason),
                usage=usage,
            )
            return web.Response(body=orjson.dumps(payload), content_type=_JSON)
        finally:
            if not flight.done:  # cancelled: the client went away, or the server stops
                self.engine.abort(flight)

    async def _stream(
        self,
        request: web.Request,
        req: openai_api.CompletionRequest,
        flight: Flight,
        pieces: list[str],
        *,
        response_id: str,
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers=_SSE_HEADERS)
        await response.prepare(request)
        writer = openai_api.ChunkWriter(req, response_id=response_id, created=int(time.time()))
        seq = flight.seq
        sent = 0
        try:
            while seq.finish_reason is not FinishReason.ABORT:  # aborted: end without [DONE]
                finished = seq.finished
                produced = seq.num_output_tokens
                out: list[bytes] = []
                if produced > sent:
                    if sent == 0:
                        out.append(writer.role())
                    out.append(writer.tokens(pieces[sent:produced]))
                    sent = produced
                if finished:
                    out.append(writer.finish(str(seq.finish_reason)))
                    if req.include_usage:
                        usage = openai_api.Usage(req.prompt_tokens, produced, seq.num_cached_tokens)
                        out.append(writer.usage(usage))
                    out.append(writer.done())
                if out:
                    await response.write(b"".join(out))
                if finished:
                    break
                await flight.wait()
            await response.write_eof()
        except ConnectionError:  # the client went away mid-stream; the caller aborts the flight
            pass
        return response

    async def _inject(self, request: web.Request) -> web.Response | None:
        """Apply the fault (if any) chosen for this request: an error response to send, a delay,
        or the end of the process. Raises ``BadRequest`` for a malformed fault header."""
        fault = self.faults.decide(request.headers.get(faults.FAULT_HEADER))
        if fault is None:
            return None
        if fault.kind == "crash":
            self.crash()
            raise ServiceUnavailable("the simulator crashed")  # only when crash() came back
        if fault.kind == "error":
            body = orjson.dumps(faults.error_body(fault.status))
            return web.Response(status=fault.status, body=body, content_type=_JSON)
        await asyncio.sleep(fault.delay_s)
        return None

    async def _read_json(self, request: web.Request) -> Any:
        limit = self.options.max_body_bytes
        length = request.content_length
        try:
            if length is not None and length > limit:
                raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=length)
            raw = await request.read()  # enforces the limit on bodies without Content-Length
        except web.HTTPRequestEntityTooLarge:
            raise RequestEntityTooLarge(f"the request body is larger than {limit} bytes") from None
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise BadRequest(f"We could not parse the JSON body of your request: {exc}") from None


SIM_KEY = web.AppKey("aviator_sim", SimServer)
"""Where ``build_app`` leaves the ``SimServer`` (tests and embedders reach the engine through it)."""


def build_app(options: SimOptions) -> web.Application:
    """A fresh application serving ``options``; each call has its own engine and metrics."""
    server = SimServer(options)
    app = web.Application(client_max_size=options.max_body_bytes)
    app[SIM_KEY] = server
    app.router.add_post("/v1/chat/completions", server.chat_completions)
    app.router.add_post("/v1/completions", server.completions)
    app.router.add_get("/v1/models", server.models)
    app.router.add_get("/health", server.health)
    app.router.add_get("/metrics", server.prometheus)
    app.on_shutdown.append(server.on_shutdown)
    return app


async def serve(
    options: SimOptions,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    ready: asyncio.Event | None = None,
    handle_signals: bool = False,
) -> None:
    """Serve ``options`` on ``host:port`` until cancelled, or, with ``handle_signals``, until
    SIGTERM or SIGINT (then return normally). Sets ``ready`` once listening and logs one line
    with the bound URL (``port=0`` picks a free port). Stops within ``SHUTDOWN_GRACE_S`` plus a
    few milliseconds, aborting in-flight requests."""
    loop = asyncio.get_running_loop()
    app = build_app(options)
    runner = web.AppRunner(
        app,
        access_log=None,
        handler_cancellation=True,
        shutdown_timeout=SHUTDOWN_GRACE_S,
    )
    await runner.setup()
    stop: asyncio.Future[None] = loop.create_future()
    signals = (signal.SIGTERM, signal.SIGINT) if handle_signals else ()
    try:
        await web.TCPSite(runner, host, port).start()
        bound_host, bound_port = runner.addresses[0][:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        log.info("aviator sim serving %r on http://%s:%d", options.model, shown, bound_port)
        log.info("engine: %s", app[SIM_KEY].describe())
        for sig in signals:
            loop.add_signal_handler(sig, _resolve, stop)
        if ready is not None:
            ready.set()
        await stop
    finally:
        try:
            # In its own task: a cancelled caller must not cut the cleanup short. Signal handlers
            # stay until it is done, so a second SIGTERM cannot kill the process half-way.
            await asyncio.shield(asyncio.ensure_future(runner.cleanup()))
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)
        log.info("aviator sim stopped")


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
