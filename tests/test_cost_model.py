"""The cost model: its counts agree with the implementation's, its scaling claims, its validation."""
import math

import pandas as pd
import pytest

from longnet.cost_model import (LINKS, point, project, rank_cost, rates_from,
                                validate)
from longnet.flops import dilated_attention_flops, dense_attention_flops

SHAPE = dict(segment_lengths=[2048, 4096, 8192, 16384, 32768], dilation_rates=[1, 2, 4, 6, 12],
             heads=12, head_dim=64)


def test_one_device_is_the_single_process_flop_count():
    for n in (8192, 32768):
        flops, gathers = rank_cost("longnet", n, 1, **SHAPE)
        assert flops == dilated_attention_flops(n, SHAPE["segment_lengths"], SHAPE["dilation_rates"],
                                                12, 64, causal=True)
        assert gathers == []
        assert rank_cost("vanilla", n, 1, heads=12, head_dim=64)[0] == dense_attention_flops(n, 12, 64)


def test_gathered_bytes_match_the_implementation_count():
    # P = 4, N = 64 (chunk 16), branches (8, 1) local and (64, 4) spanning: 16/4 rows x 2 heads,
    # k and v, D = 8, float32: the same sizes tests/test_sequence_parallel.py measures
    _, gathers = rank_cost("longnet", 64, 4, segment_lengths=[8, 64], dilation_rates=[1, 4],
                           heads=2, head_dim=8, dtype_bytes=4)
    assert gathers == [(4, 2 * (4 * 2) * 8 * 4)]


def test_per_device_cost_flat_for_longnet_quadratic_for_vanilla():
    df = project({"longnet": 100.0, "vanilla": 100.0}, [2 ** p for p in range(13, 31, 3)],
                 tokens_per_device=8192, link="nvlink", extend_schedule=True, algorithm="tree")
    assert {"variant", "seq_len", "devices", "projected_ms", "compute_ms", "comm_ms", "link",
            "kind"} <= set(df.columns)
    assert (df.kind == "projected").all() and (df.devices == df.seq_len // 8192).all()
    longnet = df[df.variant == "longnet"].projected_ms.to_numpy()
    vanilla = df[df.variant == "vanilla"].projected_ms.to_numpy()
    assert longnet.max() < 1.5 * longnet.min()  # ~flat from 8K to 1B tokens
    # vanilla per-device work grows like N: x 8 per step of 8 in N at fixed tokens per device
    assert vanilla[-1] / vanilla[-2] == pytest.approx(8, rel=0.05)


def test_link_presets_and_errors():
    slow = point("longnet", 65536, 8, 100.0, "infiniband", **SHAPE)
    fast = point("longnet", 65536, 8, 100.0, "nvlink", **SHAPE)
    assert slow["comm_ms"] > fast["comm_ms"] > 0 and slow["compute_ms"] == fast["compute_ms"]
    custom = point("longnet", 65536, 8, 100.0, dict(bandwidth=1e9, latency=0.0), **SHAPE)
    assert custom["link"] == "custom" and custom["comm_ms"] > slow["comm_ms"]
    both = point("longnet", 65536, 8, 100.0, "nvlink", mode="fwd+bwd", **SHAPE)
    assert both["compute_ms"] == pytest.approx(3.5 * fast["compute_ms"])
    with pytest.raises(ValueError, match="link='ethernet'.*nvlink"):
        point("longnet", 65536, 8, 100.0, "ethernet")
    with pytest.raises(ValueError, match="divisible"):
        point("longnet", 1000, 3, 100.0)
    with pytest.raises(ValueError, match="sparse_fixed"):
        rank_cost("sparse_fixed", 1024, 1)
    assert set(LINKS) >= {"nvlink", "infiniband"}


def test_projection_uses_the_paper_rule_and_says_so():
    rows = project({"longnet": 100.0, "vanilla": 100.0}, [2 ** 15, 2 ** 20], 2 ** 15,
                   extend_schedule=True)
    longnet = rows[rows["variant"] == "longnet"].set_index("seq_len")
    assert list(longnet["schedule"]) == ["paper", "paper"]
    assert list(longnet["widest_segment"]) == [2 ** 15, 2 ** 20]
    from longnet.schedule import paper_schedule
    extended = paper_schedule(2 ** 20)
    segments, rates = extended.segment_lengths, extended.dilation_rates
    assert segments[-1] >= 2 ** 20 and segments[-2] < 2 ** 20
    assert [w // r for w, r in zip(segments[5:], rates[5:])] == [32768 // 12] * (len(segments) - 5)
    # the projection's FLOPs are those of the extended schedule
    assert longnet.loc[2 ** 20, "flops_per_device"] == rank_cost(
        "longnet", 2 ** 20, 32, segment_lengths=list(segments), dilation_rates=list(rates))[0]
    pinned = project({"longnet": 100.0}, [2 ** 20], 2 ** 15, variants=("longnet",))
    assert list(pinned["schedule"]) == ["truncated"] and list(pinned["widest_segment"]) == [32768]


def test_rates_from_a_sweep_use_the_longest_successful_length():
    sweep = pd.DataFrame(dict(variant=["vanilla"] * 3, mode=["fwd"] * 3, seq_len=[1024, 2048, 4096],
                              status=["ok", "ok", "timeout"], gflops_per_s=[50.0, 80.0, math.nan]))
    assert rates_from(sweep) == {"vanilla": 80.0}
    with pytest.raises(ValueError, match="no measured rate"):
        project(sweep, [8192], 8192)


def test_validation_calibrates_on_one_rank_and_reports_the_error():
    common = dict(segment_lengths="8 64", dilation_rates="1 4", heads=2, head_dim=8, batch=1,
                  causal=True, dtype="float32", mode="fwd")
    measured = pd.DataFrame([dict(common, world_size=1, seq_len=64, median_ms=2.0),
                             dict(common, world_size=4, seq_len=256, median_ms=4.0)])
    df = validate(measured, link="nvlink")
    assert (df.kind == "validation").all() and list(df.devices) == [1, 4]
    assert df.relative_error.iloc[0] == pytest.approx(0.0)  # the calibration point itself
    assert df.projected_ms.iloc[1] == pytest.approx(df.compute_ms.iloc[1] + df.comm_ms.iloc[1])
    assert df.relative_error.iloc[1] == pytest.approx(df.projected_ms.iloc[1] / 4.0 - 1)
    # 4 one-thread ranks on 2 cores: each computes at half the calibrated speed
    shared = validate(measured, link="nvlink", cores=2)
    assert shared.compute_ms.iloc[1] == pytest.approx(2 * df.compute_ms.iloc[1])
    assert shared.relative_error.iloc[0] == pytest.approx(0.0)
