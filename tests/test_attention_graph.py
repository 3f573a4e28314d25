"""The attention-graph analysis on cases small enough to count by hand."""
import math

import pandas as pd
import pytest
import torch

from analysis.attention_graph import main, path_lengths, reach_layers


def layers(name, params, seq_len, **kwargs):
    table = path_lengths(name, params, seq_len=seq_len, heads=2, **kwargs)
    assert list(table["distance"]) == list(range(seq_len))
    return [None if pd.isna(x) else int(x) for x in table["layers"]]


def test_reach_layers_on_a_chain():
    # 3 reads 2 reads 1 reads 0; nobody reads 4
    chain = torch.eye(5, dtype=torch.bool)
    chain[[1, 2, 3], [0, 1, 2]] = True
    assert reach_layers(chain, torch.tensor([3]))[0].tolist() == [3, 2, 1, 0, math.inf]


def test_vanilla_reaches_everything_in_one_layer():
    assert layers("vanilla", {}, 6) == [0, 1, 1, 1, 1, 1]


def test_sliding_window_needs_distance_over_window_layers():
    assert layers("longformer", {"window": 3}, 10) == [0] + [math.ceil(d / 3) for d in range(1, 10)]


def test_sparse_strided_needs_at_most_two_layers():
    # stride 3 from the last token (position 9): d < 3 local, d = 3, 6, 9 strided, else 2 hops
    assert layers("sparse_strided", {"stride": 3}, 10) == [0, 1, 1, 1, 2, 2, 1, 2, 2, 1]


def test_sparse_fixed_one_layer_to_summaries_two_to_the_rest():
    # block 4, summary 1: heads 0 and 1 read offsets 3 and 2 of earlier blocks; last token 9 is in
    # block [8, 12): reads 8, 9 and the summaries 2, 3, 6, 7; everything else via a summary cell
    assert layers("sparse_fixed", {"block": 4, "summary": 1}, 10) == [0, 1, 1, 1, 2, 2, 1, 1, 2, 2]


def test_longnet_union_of_branches_by_hand():
    # n = 8, branches (4, 1) and (8, 2). Token 7 reads 4..7 (segment [4, 8)) and, as an odd row
    # of the r = 2 branch, 1, 3, 5, 7; then 1 and 3 read 0..3. So only 2 and 0 need two layers.
    params = {"segment_lengths": [4, 8], "dilation_rates": [1, 2]}
    assert layers("longnet", params, 8) == [0, 1, 1, 1, 1, 2, 1, 2]
    # from token 4 (even row: reads 0, 2, 4 then 2 reads 0..2), token 3 is never reached
    worst = path_lengths("longnet", params, seq_len=8, heads=2, all_queries=True)["layers_worst"]
    assert pd.isna(worst[1]) and worst[0] == 0


def test_not_causal_window_reaches_back_as_far():
    forward = path_lengths("longformer", {"window": 2}, seq_len=7, heads=2, causal=False)
    assert list(forward["layers"]) == [0, 1, 1, 2, 2, 3, 3]


def test_cli_writes_the_csv(tmp_path):
    out = tmp_path / "graph.csv"
    main(["sparse_strided", "--params", '{"stride": 3}', "--seq-len", "10", "--heads", "2",
          "--out", str(out)])
    table = pd.read_csv(out)
    assert {"variant", "params", "seq_len", "heads", "distance", "layers"} <= set(table.columns)
    assert table["layers"].tolist() == [0, 1, 1, 1, 2, 2, 1, 2, 2, 1]
    assert table["params"][0] == '{"backend": "auto", "stride": 3}'


def test_unknown_variant_is_an_error():
    with pytest.raises(ValueError, match="available"):
        path_lengths("no_such_variant", {}, seq_len=4)
