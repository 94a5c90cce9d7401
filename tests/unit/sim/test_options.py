from __future__ import annotations

import dataclasses

import pytest

from aviator.sim import SimOptions


def test_defaults_match_the_documented_ones() -> None:
    options = SimOptions(model="m")
    assert (options.ttft_ms, options.itl_ms) == (40.0, 8.0)
    assert (options.max_waiting, options.time_scale) == (1000, 1.0)
    assert (options.max_num_seqs, options.kv_cache_blocks) == (None, None)  # resolved below
    config = options.resolve()
    assert (config.max_num_seqs, config.num_gpu_blocks) == (64, 8192)
    assert config.max_model_len == 131_072
    assert config.profile is None and config.max_num_batched_tokens is None
    assert options.enable_prefix_caching and not options.allow_fault_headers


def test_time_scale_multiplies_latencies() -> None:
    options = SimOptions(model="m", ttft_ms=40, itl_ms=8, time_scale=0.5)
    assert options.ttft_s == pytest.approx(0.020)
    assert options.itl_s == pytest.approx(0.004)
    assert SimOptions(model="m", time_scale=0).ttft_s == 0


def test_options_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        SimOptions(model="m").ttft_ms = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("model", ""),
        ("ttft_ms", -1.0),
        ("itl_ms", float("nan")),
        ("time_scale", float("inf")),
        ("max_num_seqs", 0),
        ("max_waiting", -1),
        ("max_num_seqs", True),
        ("max_model_len", 0),
        ("kv_cache_blocks", 0),
        ("max_body_bytes", 10),
        ("seed", 1.5),
        ("error_rate", 1.5),
        ("spike_rate", float("nan")),
        ("spike_ms", -1.0),
        ("crash_after", -1),
        ("model_class", "8b"),  # without a device profile
        ("tensor_parallel", 2),
        ("max_num_batched_tokens", 512),
    ],
)
def test_invalid_values_name_the_field(field: str, value: object) -> None:
    kwargs = {"model": "m", field: value}
    with pytest.raises(ValueError, match=f"^{field}:"):
        SimOptions(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"device_profile": "h900"}, "device_profile", "unknown profile 'h900'; one of h100-sxm"),
        ({"model_class": "405b"}, "model_class", "one of 8b, 70b, 70b-fp8"),
        ({"model_class": "70b", "tensor_parallel": 1}, "tensor_parallel", "does not fit on 1x"),
        ({"tensor_parallel": 3}, "tensor_parallel", "must be one of"),
        ({"device_profile": "l4-24gb", "model_class": "70b"}, "device_profile", "does not fit"),
        ({"max_num_batched_tokens": 0}, "max_num_batched_tokens", ">= 1"),
    ],
)
def test_device_profile_options_are_checked_together(
    overrides: dict[str, object], field: str, message: str
) -> None:
    kwargs: dict[str, object] = {"model": "m", "device_profile": "h100-sxm-80gb", **overrides}
    with pytest.raises(ValueError, match=f"^{field}:.*{message}"):
        SimOptions(**kwargs)  # type: ignore[arg-type]


def test_a_profile_resolves_to_vllm_defaults_and_explicit_options_win() -> None:
    config = SimOptions(model="m", device_profile="a100-40gb").resolve()
    assert (config.max_num_seqs, config.max_num_batched_tokens) == (256, 2048)
    assert config.tensor_parallel == 1 and config.model_class is not None
    assert config.model_class.name == "8b"
    explicit = SimOptions(
        model="m", device_profile="a100-40gb", max_num_seqs=8, kv_cache_blocks=100,
        max_num_batched_tokens=512, max_model_len=1000,
    ).resolve()  # fmt: skip
    assert (explicit.max_num_seqs, explicit.num_gpu_blocks) == (8, 100)
    assert (explicit.max_num_batched_tokens, explicit.max_model_len) == (512, 1000)
    assert SimOptions(model="m", kv_cache_blocks=10).resolve().max_model_len == 160


def test_the_api_names_every_profile_model_class_and_degree() -> None:
    # aviator.api spells the names out (it imports nothing of ours): keep them equal.
    from typing import get_args

    from aviator.api.modeldeployment import SimulatorOptions
    from aviator.placement import profiles

    def literal(field: str) -> tuple[object, ...]:
        annotation = SimulatorOptions.model_fields[field].annotation
        return next(get_args(a) for a in get_args(annotation) if get_args(a))

    assert literal("device_profile") == tuple(profiles.PROFILES)
    assert literal("model_class") == tuple(profiles.MODEL_CLASSES)
    assert literal("tensor_parallel") == profiles.TENSOR_PARALLEL_DEGREES
    for name in profiles.PROFILES:  # every one is a valid simulator option too
        SimOptions(model="m", device_profile=name)
