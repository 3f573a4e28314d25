"""Sequence-parallel dilated attention on gloo: equal to the single-process result, bytes flat in N.

One spawn of 4 CPU processes runs every check (spawning is the slow part): P = 4 over the world,
P = 2 as a 2 x 2 sequence x data layout (each data replica its own inputs), and P = 1 groups.
The ranks write their measurements to a file; the tests below assert on it.
"""
import json
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from longnet import dilated_attention
from longnet.sequence_parallel import (CommCounter, sequence_data_groups,
                                       sequence_parallel_dilated_attention, shard_sequence)

N, HEADS, DIM, BATCH = 48, 3, 8, 2
# (segment lengths, dilation rates); with P = 4 the local chunk is 12 tokens, with P = 2 it is 24
CONFIGS = {
    "shorter_equal_longer": ((4, 12, 48), (1, 2, 4)),  # local, local (= chunk), spanning all
    "straddling_uneven": ((8, 24, 36), (1, 3, 5)),  # segments cross chunks mid-way; w % r != 0
    "no_r1_clipped": ((16, 96), (2, 3)),  # rows no branch selects; w > N; H % r != 0
}
WORLD = 4


def _run_layout(name, seq_group, data_rank, results):
    """Every config, causal and not: this rank's max error vs the single-process result."""
    for config, (segments, dilations) in CONFIGS.items():
        for causal in (True, False):
            torch.manual_seed(1000 + data_rank)  # each data-parallel replica gets its own inputs
            full = [torch.randn(BATCH, N, HEADS, DIM, dtype=torch.float32, requires_grad=True)
                    for _ in range(3)]
            dout = torch.randn(BATCH, N, HEADS, DIM)
            single = dilated_attention(*full, segments, dilations, causal=causal)
            single.backward(dout)
            local = [shard_sequence(x.detach(), seq_group).clone().requires_grad_() for x in full]
            out = sequence_parallel_dilated_attention(*local, segments, dilations, group=seq_group,
                                                      causal=causal)
            out.backward(shard_sequence(dout, seq_group))
            errors = [(out - shard_sequence(single, seq_group)).abs().max()]
            errors += [(x.grad - shard_sequence(y.grad, seq_group)).abs().max()
                       for x, y in zip(local, full)]
            results[f"{name}/{config}/causal={causal}"] = max(e.item() for e in errors)


def _bytes_vs_n(results):
    """P = 4, one local branch and one spanning the whole sequence with r = N / 16 (w/r fixed)."""
    for n in (64, 128, 256):
        counter = CommCounter()
        full = [torch.randn(1, n, 2, DIM, requires_grad=True) for _ in range(3)]
        local = [shard_sequence(x.detach()).clone().requires_grad_() for x in full]
        out = sequence_parallel_dilated_attention(*local, (8, n), (1, n // 16), counter=counter)
        forward = (counter.bytes_sent, counter.bytes_recv)
        out.sum().backward()
        results[f"bytes/N={n}"] = [*forward, counter.bytes_sent - forward[0], counter.collectives]


def _worker(rank, store_path, out_path):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store_path}", rank=rank,
                            world_size=WORLD, timeout=timedelta(seconds=60))
    results = {}
    _run_layout("P=4", None, 0, results)
    seq2, data2 = sequence_data_groups(2)  # 2 x 2: sequences on ranks {0,1} and {2,3}
    _run_layout("P=2 x data 2", seq2, dist.get_rank(data2), results)
    seq1, _ = sequence_data_groups(1)
    _run_layout("P=1 x data 4", seq1, rank, results)
    _bytes_vs_n(results)
    try:
        shard_sequence(torch.zeros(1, 50, 1, 1))
    except ValueError as exc:
        results["uneven_error"] = str(exc)
    gathered = [None] * WORLD
    dist.all_gather_object(gathered, results)
    if rank == 0:
        with open(out_path, "w") as f:
            json.dump(gathered, f)
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """Per-rank result dicts of one 4-process run (killed if it takes over 100 s)."""
    tmp = tmp_path_factory.mktemp("sp")
    out = tmp / "results.json"
    context = mp.start_processes(_worker, args=(str(tmp / "store"), str(out)), nprocs=WORLD,
                                 join=False, start_method="spawn")
    try:
        for _ in range(100):
            if context.join(timeout=1):
                break
        else:
            pytest.fail("the sequence-parallel processes did not finish in 100 s")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
    return json.loads(out.read_text())


LAYOUTS = ["P=4", "P=2 x data 2", "P=1 x data 4"]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("causal", [True, False])
def test_equals_single_process(ranks, layout, config, causal):
    errors = [r[f"{layout}/{config}/causal={causal}"] for r in ranks]
    assert max(errors) < 2e-5, errors


def test_bytes_per_rank_constant_in_n(ranks):
    for rank in ranks:
        per_n = [rank[f"bytes/N={n}"] for n in (64, 128, 256)]
        assert per_n[0] == per_n[1] == per_n[2], per_n
        sent, recv, backward_sent, collectives = per_n[0]
        # one spanning branch over 4 ranks: 3 peers x k and v x (L / r = 4 rows x 2 heads) x D x 4 B
        assert sent == recv == backward_sent == 3 * 2 * (4 * 2) * DIM * 4
        assert collectives == 2  # one all-gather forward, one reduce-scatter backward


def test_uneven_length_is_a_clear_error(ranks):
    message = ranks[0]["uneven_error"]
    assert "N=50" in message and "P=4" in message


@pytest.mark.slow
def test_benchmark_command_line_writes_the_csv_and_fits_the_link(tmp_path):
    """benchmarks/sequence_parallel.py under torchrun, as the pipeline's sequence_parallel rule runs it."""
    import subprocess
    import sys
    from pathlib import Path

    import pandas as pd

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "sequence_parallel.py"
    out = tmp_path / "P2.csv"
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc-per-node", "2", str(script), "--seq-lens", "64",
                          "--segment-lengths", "16", "64", "--dilation-rates", "1", "2",
                          "--heads", "2", "--head-dim", "8", "--repeats", "2", "--measure-link",
                          "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    row = pd.read_csv(out).iloc[0]
    assert row["world_size"] == 2 and row["seq_len"] == 64 and row["max_abs_error_vs_single"] < 1e-5
    assert row["bytes_sent_per_rank"] > 0 and row["median_ms"] > 0
    link = json.loads(run.stdout.strip().splitlines()[-1])["link"]
    assert link["bandwidth"] > 0 and link["latency"] >= 0
