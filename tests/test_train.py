"""Training: schedule, config checks, outputs, exact resume, accumulation and DDP equivalence."""
import csv
import os
import subprocess
import sys

import pytest
import torch
import yaml

import longnet.train as train_module
from longnet.data import prepare_corpus, stdlib_dir
from longnet.train import TrainConfig, learning_rate, train

MODEL = dict(n_layer=2, d_model=32, n_head=2, d_ff=64)
BASE = dict(model_overrides=MODEL, seq_len=32, tokens_per_step=256, micro_batch_tokens=256,
            steps=6, lr=3e-3, warmup=2, eval_every=3, eval_tokens=512, log_every=1,
            checkpoint_every=2, progress=False, peak_flops=1e11)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    prepare_corpus(out, source="dir", path=stdlib_dir() / "email", extensions=(".py",),
                   fractions=(0.6, 0.2, 0.2))
    return out


def read_rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def weights(run_dir, name="checkpoint.pt"):
    return torch.load(run_dir / name, weights_only=True)["model"]


def test_learning_rate_schedule():
    cfg = TrainConfig(lr=1.0, min_lr=0.1, warmup=10, steps=110, power=2.0)
    assert learning_rate(0, cfg) == pytest.approx(0.1)
    assert learning_rate(9, cfg) == pytest.approx(1.0)
    assert learning_rate(60, cfg) == pytest.approx(0.1 + 0.9 * 0.25)  # half-way, squared
    assert learning_rate(110, cfg) == pytest.approx(0.1)


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="unknown train config key.*lr_max"):
        TrainConfig.from_dict({"lr_max": 1})
    with pytest.raises(ValueError, match="tokens_per_step=1000 must be a multiple of seq_len=256"):
        TrainConfig(tokens_per_step=1000, seq_len=256)
    with pytest.raises(ValueError, match="eval_split='dev'.*train, validation, test"):
        TrainConfig(eval_split="dev")
    with pytest.raises(ValueError, match="steps=0 is invalid"):
        TrainConfig(steps=0)


def test_outputs_and_learning(corpus, tmp_path):
    train(dict(BASE, steps=12, eval_every=6), corpus, tmp_path)
    metrics = read_rows(tmp_path / "metrics.csv")
    assert list(metrics[0]) == ["step", "tokens", "loss", "lr", "tokens_per_s", "wall_s", "mfu"]
    assert [int(r["step"]) for r in metrics] == list(range(1, 13))
    assert [int(r["tokens"]) for r in metrics] == [256 * s for s in range(1, 13)]
    assert all(float(r["tokens_per_s"]) > 0 and 0 < float(r["mfu"]) for r in metrics)
    curve = read_rows(tmp_path / "compute_curve.csv")
    assert list(curve[0]) == ["step", "tokens", "train_flops", "val_loss"]
    assert [int(r["step"]) for r in curve] == [0, 6, 12]
    specs = train_module.logged_steps(TrainConfig.from_dict(dict(BASE, steps=12, eval_every=6)))
    assert train_module.steps_of(specs["metrics"]) == [int(r["step"]) for r in metrics]
    assert train_module.steps_of(specs["compute_curve"]) == [0, 6, 12]
    assert train_module.steps_of({"every": 10, "last": 25, "zero": False}) == [10, 20, 25]
    assert float(curve[0]["train_flops"]) == 0 < float(curve[1]["train_flops"])
    assert float(curve[-1]["val_loss"]) < float(curve[0]["val_loss"]) - 0.5  # it learns
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["step"] == 12 and state["tokens_seen"] == 12 * 256
    assert state["manifest"]["tokenizer"] == "byte" and "optimizer" not in state
    assert not (tmp_path / "checkpoint_last.pt").exists()
    assert not list(tmp_path.glob("*.tmp"))
    mtime = (tmp_path / "checkpoint.pt").stat().st_mtime_ns
    train(dict(BASE, steps=12, eval_every=6), corpus, tmp_path)  # finished: nothing to do
    assert (tmp_path / "checkpoint.pt").stat().st_mtime_ns == mtime


def test_killed_run_resumes_to_identical_weights(corpus, tmp_path, monkeypatch):
    train(BASE, corpus, tmp_path / "whole")

    real = train_module.learning_rate
    def crash_at_step_5(step, cfg):  # dies after 5 steps; the last checkpoint is at step 4
        if step == 5:
            raise KeyboardInterrupt("killed")
        return real(step, cfg)
    monkeypatch.setattr(train_module, "learning_rate", crash_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        train(BASE, corpus, tmp_path / "killed")
    assert torch.load(tmp_path / "killed" / "checkpoint_last.pt", weights_only=True)["step"] == 4
    monkeypatch.setattr(train_module, "learning_rate", real)
    train(BASE, corpus, tmp_path / "killed")  # resumes from step 4

    for a, b in zip(weights(tmp_path / "whole").values(), weights(tmp_path / "killed").values()):
        assert torch.equal(a, b)
    whole, killed = (read_rows(tmp_path / d / "metrics.csv") for d in ("whole", "killed"))
    assert [r["loss"] for r in whole] == [r["loss"] for r in killed]
    assert [int(r["step"]) for r in killed] == list(range(1, 7))  # step 5 logged once
    curves = [read_rows(tmp_path / d / "compute_curve.csv") for d in ("whole", "killed")]
    assert [r["val_loss"] for r in curves[0]] == [r["val_loss"] for r in curves[1]]

    # stop_after (a time-boxed job) leaves a checkpoint and the next call finishes the same run
    train(BASE, corpus, tmp_path / "boxed", stop_after=3)
    assert not (tmp_path / "boxed" / "checkpoint.pt").exists()
    train(BASE, corpus, tmp_path / "boxed")
    for a, b in zip(weights(tmp_path / "whole").values(), weights(tmp_path / "boxed").values()):
        assert torch.equal(a, b)


def test_a_changed_corpus_or_configuration_trains_again(corpus, tmp_path):
    """The checkpoint records what it was trained on; a finished run or a resume point from
    another corpus or configuration is trained over, never republished (the state directory's
    name hashes the configuration only); evaluation refuses a model from another corpus."""
    from longnet.evaluate import load_model
    run = tmp_path / "run"
    train(BASE, corpus, run)
    first = weights(run)
    other = tmp_path / "other_corpus"  # the same sources, fewer bytes: other tokens
    prepare_corpus(other, source="dir", path=stdlib_dir() / "email", extensions=(".py",),
                   fractions=(0.6, 0.2, 0.2), max_bytes=200_000)
    with pytest.raises(ValueError, match="trained on another corpus than .*other_corpus"):
        load_model(run / "checkpoint.pt", data_dir=other)
    train(BASE, other, run)
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    assert state["manifest"]["max_bytes"] == 200_000
    assert any(not torch.equal(a, b) for a, b in zip(first.values(), state["model"].values()))
    assert [int(r["step"]) for r in read_rows(run / "compute_curve.csv")] == [0, 3, 6]
    load_model(run / "checkpoint.pt", data_dir=other)  # its own corpus: accepted

    # a resume point left by another configuration is not resumed from
    real = train_module.learning_rate
    def crash_at_step_5(step, cfg):
        if step == 5:
            raise KeyboardInterrupt("killed")
        return real(step, cfg)
    train_module.learning_rate = crash_at_step_5
    try:
        with pytest.raises(KeyboardInterrupt):
            train(dict(BASE, lr=1e-2), corpus, tmp_path / "killed")
    finally:
        train_module.learning_rate = real
    train(BASE, corpus, tmp_path / "killed")  # lr 3e-3 from step 0, not lr 1e-2's step 4
    for a, b in zip(first.values(), weights(tmp_path / "killed").values()):
        assert torch.equal(a, b)
    assert (tmp_path / "killed" / "checkpoint_last.pt.other-run").exists()  # kept, not deleted
    assert (run / "checkpoint.pt.other-run").exists()  # the first corpus's model, kept

    # memory-only and bookkeeping keys are not the run's identity: a new checkpoint interval
    # or micro-batch size resumes the same run
    train_module.learning_rate = crash_at_step_5
    try:
        with pytest.raises(KeyboardInterrupt):
            train(BASE, corpus, tmp_path / "resumed")
    finally:
        train_module.learning_rate = real
    changed = dict(BASE, checkpoint_every=3, micro_batch_tokens=128, loss_chunk_tokens=100)
    assert train_module.run_identity(changed) == train_module.run_identity(BASE)
    train(changed, corpus, tmp_path / "resumed")
    assert not (tmp_path / "resumed" / "checkpoint_last.pt.other-run").exists()
    for a, b in zip(first.values(), weights(tmp_path / "resumed").values()):
        torch.testing.assert_close(a, b)  # the same run (micro-batches: float summation order)


def test_a_cut_split_is_refused_naming_the_file(corpus, tmp_path):
    import shutil
    from longnet.data import load_split
    cut = tmp_path / "cut"
    shutil.copytree(corpus, cut)
    data = (cut / "test.bin").read_bytes()
    (cut / "test.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"test\.bin: \d+ bytes where its manifest records"):
        load_split(cut, "test")
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 1  # same size, one token changed
    (cut / "test.bin").write_bytes(bytes(flipped))
    load_split(cut, "test")  # the size alone cannot tell
    with pytest.raises(ValueError, match=r"test\.bin: its sha256 is not the one its manifest records"):
        load_split(cut, "test", verify=True)


def test_gradient_accumulation_and_constant_tokens_per_step(corpus, tmp_path):
    train(dict(BASE, steps=3), corpus, tmp_path / "one")
    train(dict(BASE, steps=3, micro_batch_tokens=64), corpus, tmp_path / "four")  # 4 micro-batches
    for a, b in zip(weights(tmp_path / "one").values(), weights(tmp_path / "four").values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    # a longer sequence length keeps the tokens per step (fewer sequences)
    train(dict(BASE, steps=3, seq_len=64), corpus, tmp_path / "long")
    tokens = [int(r["tokens"]) for r in read_rows(tmp_path / "long" / "metrics.csv")]
    assert tokens == [256, 512, 768]


@pytest.mark.slow
def test_ddp_on_cpu_matches_one_process(corpus, tmp_path):
    cfg = dict(BASE, steps=2, eval_every=0)
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    train(cfg, corpus, tmp_path / "single")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                    "--nproc_per_node", "2", "-m", "longnet.train", "--config",
                    str(tmp_path / "cfg.yaml"), "--data", str(corpus), "--out",
                    str(tmp_path / "ddp")], check=True, env=env, capture_output=True, timeout=300)
    for a, b in zip(weights(tmp_path / "single").values(), weights(tmp_path / "ddp").values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_a_cuda_rank_sets_its_device_before_the_process_group_and_names_it(monkeypatch, tmp_path):
    """NCCL binds a rank to the current device when the group is made: set_device first, and
    device_id given (torch's documented eager init), so no rank ever lands on GPU 0 by default."""
    import torch.distributed as dist

    from longnet import train as train_module

    calls = []

    class Stop(Exception):
        pass

    def init_process_group(backend, **kwargs):
        calls.append(("init_process_group", backend, kwargs.get("device_id")))
        raise Stop

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(train_module, "resolve_device", lambda device, local_rank: torch.device("cuda", local_rank))
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.append(("set_device", device)))
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", init_process_group)
    tc = train_module.TrainConfig.from_dict(dict(seq_len=32, tokens_per_step=128, steps=1, device="cuda"))
    with pytest.raises(Stop):
        train_module._set_up(tc, tmp_path, tmp_path / "out")
    assert calls == [("set_device", torch.device("cuda", 1)),
                     ("init_process_group", "nccl", torch.device("cuda", 1))]
