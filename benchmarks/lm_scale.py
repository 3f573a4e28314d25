"""Time the Table 2 language-model grid at laptop scale: train + evaluate each model, report.

    python benchmarks/lm_scale.py --steps 150 --threads 2            # the seven models, in turn
    python benchmarks/lm_scale.py --only vanilla:128 --steps 20       # one model (throughput/MFU)

Per model: training seconds, tokens/s and MFU of the last logged window (longnet.train's metrics),
evaluation seconds, and test perplexity at each evaluation length; at the end the corpus's unigram
perplexity (the bar every model must clear) and the total time. Lengths are the paper's / 16.
Timings on a shared machine are noisy: rerun when it is idle before quoting them.
"""
import argparse
import csv
import json
import shutil
import time
from pathlib import Path

import torch

from baselines.sparse_fixed import match_longnet_flops
from longnet.data import prepare_corpus, read_manifest
from longnet.evaluate import perplexity
from longnet.model import SIZES
from longnet.train import train

LONGNET = {"segment_lengths": [128, 256, 512, 1024, 2048], "dilation_rates": [1, 2, 4, 6, 12]}
TRAIN_LENS = (512, 1024, 2048)


def table2_models(size: str) -> list:
    """(variant, params, train_len): vanilla at 128; sparse_fixed (block 128, summary matched to
    LongNet's FLOPs at its length, as the paper did) and LongNet at three longer lengths."""
    heads, head_dim = SIZES[size]["n_head"], SIZES[size]["d_model"] // SIZES[size]["n_head"]
    models = [("vanilla", {}, 128)]
    for L in TRAIN_LENS:
        sparse = match_longnet_flops(L, heads, head_dim, block=128, **LONGNET).params
        models += [("sparse_fixed", sparse, L), ("longnet", LONGNET, L)]
    return models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", default="/tmp/lm_scale", help="scratch directory")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--tokens-per-step", type=int, default=8192)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-bytes", type=int, default=8_000_000)
    parser.add_argument("--eval-lens", default="128,512,2048")
    parser.add_argument("--eval-tokens", type=int, default=32768)
    parser.add_argument("--only", default=None, help="variant:train_len, e.g. vanilla:128")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    data = work / "corpus"
    if not (data / "manifest.json").exists():
        prepare_corpus(data, max_bytes=args.max_bytes)
    eval_lens = [int(x) for x in args.eval_lens.split(",")]
    models = [m for m in table2_models(args.model) if args.only is None or f"{m[0]}:{m[2]}" == args.only]
    began = time.perf_counter()
    for name, params, L in models:
        out = work / f"{name}_L{L}"
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.perf_counter()
        train(dict(model=args.model, attention=name, attention_params=params, seq_len=L,
                   steps=args.steps, tokens_per_step=args.tokens_per_step, lr=args.lr,
                   warmup=max(1, args.steps // 10), eval_every=max(1, args.steps // 5),
                   eval_tokens=args.eval_tokens, log_every=max(1, args.steps // 5),
                   progress=False), data, out)
        t1 = time.perf_counter()
        df = perplexity(out / "checkpoint.pt", data, eval_lens, max_tokens=args.eval_tokens)
        t2 = time.perf_counter()
        with open(out / "metrics.csv") as f:
            last = list(csv.DictReader(f))[-1]
        print(json.dumps(dict(variant=name, params=params, train_len=L, train_s=round(t1 - t0, 1),
                              eval_s=round(t2 - t1, 1),
                              tokens_per_s=round(float(last["tokens_per_s"])),
                              mfu=round(float(last["mfu"]), 3),
                              ppl={int(e): round(p, 2) for e, p in zip(df.eval_len, df.perplexity)},
                              modes=list(df["mode"]))), flush=True)
    print(json.dumps(dict(total_s=round(time.perf_counter() - began, 1),
                          unigram_test_perplexity=round(
                              read_manifest(data)["unigram_test_perplexity"], 2))))


if __name__ == "__main__":
    main()
