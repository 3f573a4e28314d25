"""Decoding cost per generated token vs context length, for each attention variant.

    python benchmarks/bench_decode.py [--quick] [--context-lens 1024 ... 1048576] [--out results/tables]

Per-layer step: one attention layer's cache (the variant's `new_cache`, longnet.kv_cache) is
filled with the context, and the timed steps are the real decode steps of the last tokens up to
position N - 1: `append` of a token's key and value, then `attend` of its query (B = 1, fp32, the
given heads and head dim). Ending at N - 1 matters for LongNet: a token at the start of a segment
reads one row per branch, the last token of a segment every row of its lattice, so at N a multiple
of the widest segment the timed steps are LongNet's most expensive ones. The context is filled by
`append` of random keys in chunks (the cache state a prefill leaves, without running N decode
steps); a cache that outgrows --max-cache-bytes while filling is recorded as
`over_cap` and not timed. cache_bytes is what the cache holds (`cache.nbytes`) at that context.

Model throughput: a whole LanguageModel (the given size) per variant: prefill tokens/s (the
normal forward over a prompt, filling the caches) and decode tokens/s (cached steps after it).

Each context gets the cache of a sequence of that many tokens (`new_cache(max_len=N)`): LongNet's
schedule by the paper's rule covers the context, so its cache gains one branch of w / r rows per
head with each doubling (logarithmic growth; `schedule` / `widest_segment` say what ran).

Writes decode.csv (variant, shape, heads, head_dim, context_len, schedule, widest_segment,
ms_per_token (median), ms_per_token_min, cache_bytes, cache_rows_per_head, status, provenance
columns) and decode_throughput.csv, and the figure decode.png beside them.
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import pandas as pd
import torch

import baselines
from longnet.model import LanguageModel, ModelConfig
from longnet.provenance import provenance
from longnet.timing import time_ms
from longnet.variants import schedule_columns

ROOT = Path(__file__).resolve().parent.parent
CONTEXT_LENS = [1024, 4096, 16384, 65536, 262144, 1048576]
SHAPES = {"default": {"heads": 4, "head_dim": 32}, "paper": {"heads": 12, "head_dim": 64}}
VARIANTS = [  # the paper's configurations (benchmarks/bench_variants.py uses the same)
    {"name": "longnet", "params": {}},  # segments 2K..32K, rates 1..12
    {"name": "vanilla", "params": {}},
    {"name": "sparse_fixed", "params": {"block": 2048, "summary": 148}},
    {"name": "sparse_strided", "params": {"stride": 128}},
    {"name": "longformer", "params": {"window": 512}},
]
FILL_CHUNK = 65536


def filled_cache(attn, head_dim: int, context_len: int, max_cache_bytes: int | None, seed: int = 0,
                 max_len: int | None = None):
    """attn's cache holding context_len random positions, or None if it outgrew max_cache_bytes;
    max_len: the longest sequence it will hold (LongNet: the schedule covers it)."""
    cache = attn.new_cache(1, head_dim, max_len=max_len)
    if cache is None:
        raise ValueError(f"attention variant {attn.name!r} cannot decode (new_cache returns None)")
    generator = torch.Generator().manual_seed(seed)
    chunk = torch.randn(2, 1, min(FILL_CHUNK, context_len), attn.num_heads, head_dim, generator=generator)
    while cache.length < context_len:
        n = min(chunk.shape[2], context_len - cache.length)
        cache.append(chunk[0, :, :n], chunk[1, :, :n])
        if max_cache_bytes is not None and cache.nbytes > max_cache_bytes:
            return None
    return cache


def time_step(cache, heads: int, head_dim: int, repeats: int, warmup: int) -> tuple[float, float]:
    """(median, minimum) milliseconds of one decode step (append + attend of one new token); on a
    shared machine the minimum is the steadier estimate of the step's own cost."""
    q, k, v = torch.randn(3, 1, 1, heads, head_dim).unbind(0)

    def step():
        cache.append(k, v)
        cache.attend(q)

    stats = time_ms(step, warmup=warmup, repeats=repeats)
    return stats["median_ms"], stats["min_ms"]


def layer_cells(variants, shapes, context_lens, repeats: int = 5, warmup: int = 2,
                max_cache_bytes: int | None = 2**31, progress: bool = True) -> pd.DataFrame:
    """One row per (variant, shape, context length): ms per token and cache bytes of one layer."""
    rows = []
    for shape, dims in shapes.items():
        for spec in variants:
            attn = baselines.build(spec["name"], num_heads=dims["heads"], **spec.get("params", {}))
            for n in context_lens:
                # the warm-up and timed steps are positions n - warmup - repeats .. n - 1
                # the cache for a sequence of n tokens: LongNet's schedule covers the context
                cache = filled_cache(attn, dims["head_dim"], max(0, n - warmup - repeats), max_cache_bytes,
                                     max_len=n)
                row = dict(variant=spec.get("id", spec["name"]), shape=shape, **dims, context_len=n,
                           **schedule_columns(attn, n))
                if cache is None:
                    row.update(ms_per_token=math.nan, ms_per_token_min=math.nan, cache_bytes=math.nan,
                               cache_rows_per_head=math.nan, status="over_cap")
                else:
                    median, least = time_step(cache, dims["heads"], dims["head_dim"], repeats, warmup)
                    row.update(ms_per_token=median, ms_per_token_min=least, cache_bytes=cache.nbytes,
                               cache_rows_per_head=cache.rows_per_head, status="ok")
                del cache
                rows.append(row)
                if progress:
                    print(f"{row['variant']:>15} {shape:>8} N={n:>8}: {row['ms_per_token']:9.3f} ms/token, "
                          f"{row['cache_bytes'] / 2**20:10.2f} MiB", flush=True)
    return pd.DataFrame(rows)


@torch.no_grad()
def model_throughput(variants, size: str, prompt_len: int, new_tokens: int, overrides: dict | None = None,
                     progress: bool = True) -> pd.DataFrame:
    """Prefill and decode tokens/s of a whole LanguageModel (named size, ModelConfig `overrides`;
    random weights: speed does not depend on them), one row per variant."""
    rows = []
    for spec in variants:
        torch.manual_seed(0)
        cfg = ModelConfig.from_size(size, **{**(overrides or {}), "attention": spec["name"],
                                             "attention_params": spec.get("params", {}),
                                             "max_seq_len": prompt_len + new_tokens})
        model = LanguageModel(cfg).eval()
        tokens = torch.randint(0, cfg.vocab_size, (1, prompt_len + new_tokens))
        caches = model.new_caches(1, max_len=prompt_len + new_tokens)
        start = time.perf_counter()
        model(tokens[:, :prompt_len], caches=caches)  # prefill
        prefill_s = time.perf_counter() - start
        start = time.perf_counter()
        for t in range(prompt_len, prompt_len + new_tokens):
            model(tokens[:, t:t + 1], caches=caches)
        decode_s = time.perf_counter() - start
        row = dict(variant=spec.get("id", spec["name"]), model=size, prompt_len=prompt_len,
                   new_tokens=new_tokens, prefill_tokens_per_s=prompt_len / prefill_s,
                   decode_tokens_per_s=new_tokens / decode_s,
                   cache_bytes=sum(cache.nbytes for cache in caches))
        rows.append(row)
        if progress:
            print(f"{row['variant']:>15} {size}: prefill {row['prefill_tokens_per_s']:9.0f} tokens/s, "
                  f"decode {row['decode_tokens_per_s']:7.1f} tokens/s", flush=True)
    return pd.DataFrame(rows)


def run(context_lens=CONTEXT_LENS, shapes=SHAPES, variants=VARIANTS, repeats=5, warmup=2,
        max_cache_bytes=2**31, model="tiny", prompt_len=8192, new_tokens=32, overrides=None, config=None):
    """(decode table, throughput table), each with the provenance columns."""
    stamp = provenance(config if config is not None else dict(
        context_lens=context_lens, shapes=shapes, variants=variants, repeats=repeats, warmup=warmup,
        max_cache_bytes=max_cache_bytes, model=model, prompt_len=prompt_len, new_tokens=new_tokens), "cpu")
    cells = layer_cells(variants, shapes, context_lens, repeats, warmup, max_cache_bytes)
    throughput = model_throughput(variants, model, prompt_len, new_tokens, overrides)
    return cells.assign(**stamp), throughput.assign(**stamp)


def cache_growth(rows: pd.DataFrame) -> float:
    """Least-squares slope of cache rows per head against log2(context): rows added per doubling
    (constant for a cache that grows logarithmically)."""
    import numpy as np
    x, y = np.log2(rows["context_len"].to_numpy(float)), rows["cache_rows_per_head"].to_numpy(float)
    return float(np.polyfit(x, y, 1)[0]) if len(rows) > 1 else math.nan


def summary(cells: pd.DataFrame) -> str:
    """The questions the benchmark answers, from the table: how LongNet's step and cache grow
    with the context (its schedule covering the context: one more branch per doubling), and from
    which context it is faster and smaller than vanilla (per shape)."""
    lines = []
    ok = cells[cells["status"] == "ok"]
    for shape, rows in ok.groupby("shape"):
        per = {v: r.set_index("context_len") for v, r in rows.groupby("variant")}
        if "longnet" not in per:
            continue
        longnet = per["longnet"]
        if len(longnet) > 1:
            first, last = longnet.index[0], longnet.index[-1]
            extended = longnet[longnet["widest_segment"] == longnet.index]  # schedule grown to N
            lines.append(
                f"{shape}: longnet ({longnet['schedule'].iloc[-1]} schedule, widest segment "
                f"{longnet['widest_segment'].iloc[-1]:.0f} at {last}) ms/token "
                f"{longnet['ms_per_token'].iloc[0]:.3f} at {first} -> {longnet['ms_per_token'].iloc[-1]:.3f} "
                f"at {last}; cache {longnet['cache_rows_per_head'].iloc[0]:.0f} -> "
                f"{longnet['cache_rows_per_head'].iloc[-1]:.0f} rows per head "
                f"(+{cache_growth(extended.reset_index()):.0f} per doubling of the context past "
                f"the base schedule)")
        for name, other in per.items():
            if name == "longnet" or len(other) < 2:
                continue
            grown = other["cache_rows_per_head"].iloc[-1] / other["cache_rows_per_head"].iloc[0]
            lines.append(f"{shape}: {name} cache x{grown:.1f} from {other.index[0]} to "
                         f"{other.index[-1]} (context x{other.index[-1] / other.index[0]:.0f})")
        if "vanilla" in per:
            both = longnet.add_suffix("_longnet").join(per["vanilla"].add_suffix("_vanilla"), how="inner")
            faster = both[both["ms_per_token_longnet"] < both["ms_per_token_vanilla"]].index
            smaller = both[both["cache_bytes_longnet"] < both["cache_bytes_vanilla"]].index
            lines.append(f"{shape}: longnet faster than vanilla from context "
                         f"{faster.min() if len(faster) else 'none measured'}, smaller cache from "
                         f"{smaller.min() if len(smaller) else 'none measured'}")
    return "\n".join(lines)


def main(argv=None):
    from analysis.figures import decode_latency
    from analysis.io import save_figure, write_csv

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--context-lens", type=int, nargs="+", default=CONTEXT_LENS)
    parser.add_argument("--quick", action="store_true", help="contexts 1K..16K, 2 repeats, short prompt")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--max-cache-bytes", type=int, default=2**31)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: a decode step is "
                        "a few small ops, and more threads only add wake-up latency)")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "tables")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    kwargs = dict(context_lens=[1024, 4096, 16384], repeats=2, prompt_len=2048, new_tokens=8) if args.quick \
        else dict(context_lens=args.context_lens, repeats=args.repeats)
    cells, throughput = run(max_cache_bytes=args.max_cache_bytes, **kwargs)
    write_csv(cells, args.out / "decode.csv")
    write_csv(throughput, args.out / "decode_throughput.csv")
    save_figure(decode_latency(cells), args.out.parent / "figures" / "decode.png")
    print(summary(cells))


if __name__ == "__main__":
    main()
