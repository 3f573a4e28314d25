"""Train one model: a Snakemake job, run under torchrun when the config asks for several processes.

    train_model.py --cfg JSON --data-dir D --state-dir S --out-dir O [--threads T]

longnet.train.train checkpoints into the state directory and resumes from it; at the end rank 0
publishes checkpoint.pt (verified against its sidecar), its sidecar, metrics.csv and
compute_curve.csv into the out directory, each as its own copy (a damaged published file never
damages the state directory's) written atomically.
"""
import argparse
import json
import os
import sys
from pathlib import Path

import torch

from longnet.checkpoint import sidecar_path, verify_checkpoint
from longnet.io import copy_file
from longnet.train import TrainConfig, train
from longnet.variants import load_modules

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # workflow/: pipeline_config
from pipeline_config import require_device  # noqa: E402

OUTPUTS = ("checkpoint.pt", "metrics.csv", "compute_curve.csv")


def publish(state_dir: Path, out_dir: Path) -> None:
    """Copy the finished files into place, each atomically (longnet.io.copy_file)."""
    verify_checkpoint(state_dir / "checkpoint.pt")
    for name in (*OUTPUTS, sidecar_path(OUTPUTS[0]).name):
        copy_file(state_dir / name, out_dir / name)


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
    cfg = json.loads(args.cfg)
    require_device(TrainConfig.from_dict(cfg).device)
    args.state_dir.mkdir(parents=True, exist_ok=True)
    train(cfg, args.data_dir, args.state_dir)
    if int(os.environ.get("RANK", "0")) == 0:
        publish(args.state_dir, args.out_dir)


if __name__ == "__main__":
    main()
