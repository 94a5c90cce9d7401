from __future__ import annotations

import dataclasses

import pytest

from aviator.sim import SimOptions


def test_defaults_match_the_documented_ones() -> None:
    options = SimOptions(model="m")
    assert (options.ttft_ms, options.itl_ms) == (40.0, 8.0)
    assert (options.max_num_seqs, options.max_waiting, options.time_scale) == (64, 1000, 1.0)


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
    ],
)
def test_invalid_values_name_the_field(field: str, value: object) -> None:
    kwargs = {"model": "m", field: value}
    with pytest.raises(ValueError, match=f"^{field}:"):
        SimOptions(**kwargs)  # type: ignore[arg-type]
