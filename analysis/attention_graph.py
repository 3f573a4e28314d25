"""How many attention layers a token needs to reach a token d positions back.

Stack L attention layers: position i at layer l reads position j at layer l-1 when some head's
pattern lets query i see key j (`attn.pattern(n)`, the union over heads; for LongNet also over
branches). Residual connections keep what a position already had, so the layers needed to carry
token j's information to token i is the shortest path i -> j in that graph. LongNet claims this
grows as log(d) (its dilation doubles the reach per branch); a sliding window needs d / window.

    path_lengths("longnet", {...}, seq_len=4096, heads=8)   # DataFrame, one row per distance d

Columns: variant, params (JSON), seq_len, heads, causal, distance, layers (from the last token
to the token d back; empty when unreachable), and, with all_queries=True, layers_worst (the most
over every query position i >= d of the layers from i to i - d).

The graph is dense (n x n booleans per head), so keep seq_len to a few thousand; scale the
variant's sizes down with it (e.g. LongNet segments 16, 32, 64, ... instead of 2048, 4096, ...).

CLI: python -m analysis.attention_graph NAME --params '{"window": 64}' --seq-len 1024 --out f.csv
"""
from __future__ import annotations

import argparse
import json

import pandas as pd
import torch

from longnet import variants


def reach_layers(pattern: torch.Tensor, sources: torch.Tensor) -> torch.Tensor:
    """Layers (shortest path length) from each source position to every position.

    pattern: Bool (H, n, n) or (n, n), True where query i reads key j. sources: (S,) positions.
    Returns float (S, n), inf where unreachable.
    """
    reads = (pattern.any(0) if pattern.dim() == 3 else pattern).float()
    count, n = len(sources), reads.shape[-1]
    layers = torch.full((count, n), float("inf"))
    frontier = torch.zeros(count, n, dtype=torch.bool)
    frontier[torch.arange(count), sources] = True
    reached = frontier.clone()
    layers[frontier] = 0
    depth = 0
    while frontier.any():  # breadth-first, all sources at once: one matmul per layer
        depth += 1
        frontier = ((frontier.float() @ reads) > 0) & ~reached
        layers[frontier] = depth
        reached |= frontier
    return layers


def layer_matrix(name: str, params: dict | None = None, seq_len: int = 1024, heads: int = 8,
                 causal: bool = True) -> torch.Tensor:
    """Float (seq_len, seq_len): [i, j] = layers for token j's information to reach position i
    in variant `name`'s stacked pattern (inf where no depth suffices)."""
    attn = variants.build(name, num_heads=heads, **(params or {}))
    return reach_layers(attn.pattern(seq_len, causal), torch.arange(seq_len))


def _as_count(values: torch.Tensor) -> pd.Series:
    return pd.Series(values.numpy()).replace(float("inf"), float("nan")).astype("Int64")


def path_lengths(name: str, params: dict | None = None, seq_len: int = 1024, heads: int = 8,
                 causal: bool = True, all_queries: bool = False) -> pd.DataFrame:
    """Layers needed to reach each distance d = 0..seq_len-1 back, for variant `name`."""
    attn = variants.build(name, num_heads=heads, **(params or {}))
    pattern = attn.pattern(seq_len, causal)
    last = seq_len - 1
    from_last = reach_layers(pattern, torch.tensor([last]))[0]
    distance = torch.arange(seq_len)
    table = pd.DataFrame({
        "variant": name, "params": json.dumps(attn.params, sort_keys=True), "seq_len": seq_len,
        "heads": heads, "causal": causal, "distance": distance.numpy(),
        "layers": _as_count(from_last[last - distance]),
    })
    if all_queries:
        every = reach_layers(pattern, torch.arange(seq_len))  # every[i, j]
        i = torch.arange(seq_len)
        worst = torch.stack([every[i[d:], i[d:] - d].max() for d in range(seq_len)])
        table["layers_worst"] = _as_count(worst)
    return table


def main(argv=None) -> None:
    from analysis.io import write_csv

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name", choices=variants.available())
    parser.add_argument("--params", default="{}", help="the variant's params as JSON")
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--not-causal", action="store_true")
    parser.add_argument("--all-queries", action="store_true", help="add layers_worst (n^3 work)")
    parser.add_argument("--out", required=True, help="CSV path (written atomically)")
    args = parser.parse_args(argv)
    write_csv(path_lengths(args.name, json.loads(args.params), args.seq_len, args.heads,
                           not args.not_causal, args.all_queries), args.out)


if __name__ == "__main__":
    main()
