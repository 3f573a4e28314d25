"""Snakemake job: the decoding benchmark (benchmarks/bench_decode.py) with the configured
contexts, shapes and variants: decode.csv, decode_throughput.csv and the decode figure."""
import sys
from pathlib import Path

import torch

from analysis.figures import decode_latency
from analysis.io import save_figure, write_csv
from baselines import load_modules

sys.stdout = sys.stderr = open(snakemake.log[0], "w", buffering=1)  # noqa: F821 (snakemake global)
sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1]))  # noqa: F821 (the repository root)
from benchmarks.bench_decode import run, summary  # noqa: E402

torch.set_num_threads(min(snakemake.threads, torch.get_num_threads()))  # noqa: F821
params, out = snakemake.params, snakemake.output  # noqa: F821
load_modules(params.modules)
bench = params.bench
cells, throughput = run(bench["context_lens"], bench["shapes"], bench["variants"], bench["repeats"],
                        bench["warmup"], bench["max_cache_bytes"], params.model, bench["prompt_len"],
                        bench["new_tokens"], params.model_overrides, config=params.config)
write_csv(cells, out.decode)
write_csv(throughput, out.throughput)
save_figure(decode_latency(cells), out.figure)
print(summary(cells))
