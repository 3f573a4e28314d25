"""Checkpoints hold plain data and are read with weights_only=True: a crafted pickle with a
matching sidecar runs nothing on load and is refused naming the file (longnet/checkpoint.py)."""
import json
import pathlib
import pickle

import pytest
import torch

from longnet.checkpoint import (CheckpointError, load_checkpoint, save_checkpoint, sidecar_path,
                                _digest)


class Planted:
    """Unpickling this creates `marker`: what a hostile checkpoint would do instead."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def with_matching_sidecar(path):
    sidecar_path(path).write_text(json.dumps(_digest(path)) + "\n")
    return path


@pytest.mark.parametrize("write", ["torch.save", "pickle"])
def test_a_crafted_checkpoint_runs_nothing_and_names_the_file(write, tmp_path):
    marker, path = tmp_path / "MARK", tmp_path / "checkpoint.pt"
    state = {"step": 3, "model": {"w": torch.zeros(2)}, "manifest": Planted(marker)}
    if write == "torch.save":
        torch.save(state, path)
    else:  # the legacy (non-zip) format: a bare pickle stream
        path.write_bytes(pickle.dumps(state))
    with_matching_sidecar(path)  # the sidecar check passes: only the unpickling stands in the way
    with pytest.raises(CheckpointError, match=f"checkpoint {path} was not loaded: it asks for"):
        load_checkpoint(path)
    assert not marker.exists(), "loading the checkpoint ran code"
    assert path.exists()  # refused, not deleted by the loader


def test_a_project_checkpoint_still_loads(tmp_path):
    path = tmp_path / "checkpoint.pt"
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    state = dict(model=model.state_dict(), optimizer=optimizer.state_dict(), step=1, wall_s=0.5,
                 train_config={"betas": (0.9, 0.95), "seq_len": 32, "model": None},
                 manifest={"splits": {"train": 100}, "files": ["a", "b"]})
    save_checkpoint(state, path)
    loaded = load_checkpoint(path)
    assert loaded["step"] == 1 and loaded["manifest"] == state["manifest"]
    assert torch.equal(loaded["model"]["weight"], model.weight.detach())
    assert loaded["optimizer"]["param_groups"][0]["betas"] == optimizer.param_groups[0]["betas"]
    assert loaded["train_config"]["betas"] == (0.9, 0.95)


def test_saving_anything_but_plain_data_is_refused_naming_its_key(tmp_path):
    path = tmp_path / "checkpoint.pt"
    with pytest.raises(TypeError, match=r"checkpoint key state\['manifest'\]\['root'\] is a "
                                        r"pathlib\.\w*Path \(allowed: dict, list"):
        save_checkpoint({"step": 1, "manifest": {"root": pathlib.Path("data")}}, path)
    assert not path.exists() and not sidecar_path(path).exists()
