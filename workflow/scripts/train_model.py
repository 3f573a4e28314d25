"""Train one model: a Snakemake job, run under torchrun when the config asks for several processes.

    train_model.py --cfg JSON --data-dir D --state-dir S --out-dir O [--threads T]

longnet.train.train checkpoints into the state directory and resumes from it; at the end rank 0
publishes checkpoint.pt, metrics.csv and compute_curve.csv into the out directory atomically.
"""
import argparse
import json
import os
from pathlib import Path

import torch

from baselines import load_modules
from longnet.train import train

OUTPUTS = ("checkpoint.pt", "metrics.csv", "compute_curve.csv")


def publish(state_dir: Path, out_dir: Path) -> None:
    """Hard-link the finished files into place (no copy: the trainer replaces them, never edits)."""
    for name in OUTPUTS:
        tmp = out_dir / f".{name}.tmp"
        tmp.unlink(missing_ok=True)
        os.link(state_dir / name, tmp)
        os.replace(tmp, out_dir / name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cfg", required=True, help="training configuration as JSON")
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--state-dir", required=True, type=Path)
    parser.add_argument("--out-dir", required=True, type=Path)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per process")
    parser.add_argument("--modules", default="[]", help="JSON list of modules registering variants")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_modules(json.loads(args.modules))
    args.state_dir.mkdir(parents=True, exist_ok=True)
    train(json.loads(args.cfg), args.data_dir, args.state_dir)
    if int(os.environ.get("RANK", "0")) == 0:
        publish(args.state_dir, args.out_dir)


if __name__ == "__main__":
    main()
