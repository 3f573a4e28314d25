"""Faults a hostile but realistic user meets: broken configurations refused at load with their key
path, damaged per-job CSVs refused by the aggregation naming the file, damaged or half-written
checkpoints detected and recovered from, and the library's edge cases refused clearly."""
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))
import pipeline_config  # noqa: E402
from pipeline_config import ConfigError, check_config  # noqa: E402

SMOKE = yaml.safe_load((REPO / "workflow" / "configs" / "smoke.yaml").read_text())
DELETE = object()


def broken(changes: dict) -> dict:
    """The smoke config with dotted keys ("variants.2.params.x") set, or deleted with DELETE."""
    config = yaml.safe_load(yaml.safe_dump(SMOKE))
    for key, value in changes.items():
        *parents, last = key.split(".")
        target = config
        for part in parents:
            target = target[int(part) if part.isdigit() else part]
        if value is DELETE:
            del target[int(last) if last.isdigit() else last]
        else:
            target[int(last) if last.isdigit() else last] = value
    return config


# (one broken key, the key path the error must name, other text it must hold)
BROKEN = [
    ({"training.stpes": 6}, "training.stpes", "allowed"),
    ({"training.steps": 0}, "training.steps", "minimum"),
    ({"training.steps": "six"}, "training.steps", "integer"),
    ({"training.lr": -1.0}, "training.lr", "minimum"),
    ({"training.min_lr": 1.0}, "training.min_lr", "min_lr"),
    ({"training.clip_grad": -1.0}, "training.clip_grad", "> 0"),
    ({"training.clip_grad": 0}, "training.clip_grad", "> 0"),
    ({"training.weight_decay": -0.1}, "training.weight_decay", ">= 0"),
    ({"training.eps": 0}, "training.eps", "> 0"),
    ({"training.betas": [0.9]}, "training.betas", "two numbers"),
    ({"training.power": 0}, "training.power", "power"),
    ({"training.eval_split": "dev"}, "training.eval_split", "test"),
    ({"training.log_every": 0}, "training.log_every", ">= 1"),
    ({"training.peak_flops": -5}, "training.peak_flops", "> 0"),
    ({"training.model": "huge"}, "training.model", "tiny"),
    ({"training.model_overrides.n_layers": 2}, "training.model_overrides", "n_layer"),
    ({"training.model_overrides.n_head": 5}, "training.model_overrides.d_model", "n_head=5"),
    ({"training.model_overrides.d_model": 0}, "training.model_overrides.d_model", ">= 1"),
    ({"training.model_overrides.dropout": 1.5}, "training.model_overrides.dropout", "0 <= p"),
    ({"training.positions": "alibi"}, "training.positions", "xpos"),
    ({"training.nproc": 3}, "training.nproc", "divisor"),
    ({"training.nproc": 0}, "training.nproc", "minimum"),
    ({"training.tokens_per_step": 500}, "variants[0].train_lens", "does not divide"),
    ({"training.attention": "vanilla"}, "training.attention", "set per job"),
    ({"training.seed": 1}, "training.seed", "top-level"),
    ({"training.steps": DELETE}, "training.steps", "required"),
    ({"seed": -1}, "seed", "minimum"),
    ({"device": "gpu"}, "device", "cpu"),
    ({"results_dir": ""}, "results_dir", "non-empty"),
    ({"extra_modules": ["no_such_module_xyz"]}, "extra_modules", "cannot import"),
    ({"extra_module": []}, "extra_module", "allowed"),
    ({"data.source": "web"}, "data.source", "stdlib"),
    ({"data.tokenizer": "gpt2"}, "data.tokenizer", "byte"),
    ({"data.max_bytes": 1000}, "data.max_bytes", "at least"),
    ({"data.source": "dir"}, "data.path", "required"),
    ({"data.source": "dir", "data.path": "/no/such/dir"}, "data.path", "not a directory"),
    ({"data.colour": 1}, "data.colour", "allowed"),
    ({"variants.0.name": "nope"}, "variants[0].name", "unknown variant"),
    ({"variants.1.id": "vanilla"}, "variants[1].id", "duplicate"),
    ({"variants.1.params.summary": 99}, "variants[1].params", "summary"),
    ({"variants.1.params.blocks": 32}, "variants[1].params", "unknown param"),
    ({"variants.1.train_params": [{}, {}]}, "variants[1].train_params", "one params override"),
    ({"variants.1.train_params": [{"summary": 0}]}, "variants[1].train_params[0]", "summary"),
    ({"variants.2.params.dilation_rates": [1, 2]}, "variants[2].params", "same length"),
    ({"variants.2.params.exact_grad": "no"}, "variants[2].params", "exact_grad"),
    ({"variants.2.params.backend": "bogus"}, "variants[2].params", "backend"),
    ({"variants.0.train_lens": [0]}, "variants[0].train_lens[0]", "minimum"),
    ({"variants.0.profile": "yes"}, "variants[0].profile", "boolean"),
    ({"variants.0.colour": 1}, "variants[0].colour", "allowed"),
    ({"variants": []}, "variants", "empty"),
    ({"evaluation.eval_lens": [32, 2048]}, "evaluation.eval_lens", "max_tokens"),
    ({"evaluation.eval_lens": []}, "evaluation.eval_lens", "empty"),
    ({"evaluation.passkey.context_lens": [8]}, "evaluation.passkey.context_lens", "too short"),
    ({"evaluation.passkey.depths": [1.5]}, "evaluation.passkey.depths[0]", "maximum"),
    ({"evaluation.context_window.n_final": 0}, "evaluation.context_window.n_final", "minimum"),
    ({"profile.modes": ["backward"]}, "profile.modes[0]", "fwd"),
    ({"profile.dtype": "float8"}, "profile.dtype", "float32"),
    ({"profile.heads": 0}, "profile.heads", "minimum"),
    ({"distributed.world_sizes": [2]}, "distributed.world_sizes", "must include 1"),
    ({"distributed.dilation_rates": [1]}, "distributed.dilation_rates", "one rate per segment"),
    ({"distributed.tokens_per_rank": DELETE, "distributed.seq_lens": [1000, 1001]},
     "distributed.seq_lens", "1001 is not divisible by world size 2"),
    ({"distributed.tokens_per_rank": DELETE}, "distributed", "exactly one of"),
    ({"cost_model.dilation_rates": [1, 2]}, "cost_model.dilation_rates", "one rate per segment"),
    ({"cost_model.links.nvlink.bandwidth": 0}, "cost_model.links.nvlink.bandwidth", "minimum"),
    ({"attention_graph.heads": 0}, "attention_graph.heads", "minimum"),
    # numbers that pass a minimum or maximum but mean nothing (NaN compares false with both)
    ({"training.lr": float("nan")}, "training.lr", "not a finite number"),
    ({"training.lr": float("inf")}, "training.lr", "not a finite number"),
    ({"recall.lr": [0.003, float("nan")]}, "recall.lr[1]", "not a finite number"),
    ({"cost_model.links.nvlink.latency": float("inf")}, "cost_model.links.nvlink.latency",
     "finite"),
    ({"cost_model.links.nvlink.bandwidth": float("nan")}, "cost_model.links.nvlink.bandwidth",
     "finite"),
    ({"evaluation.passkey.depths": [0.5, float("nan")]}, "evaluation.passkey.depths[1]", "finite"),
    ({"samples.temperature": float("nan")}, "samples.temperature", "finite"),
    ({"profile.time_cap_s": float("nan")}, "profile.time_cap_s", "finite"),
    # values that can only be a mistake
    ({"training.warmup": 1000}, "training.warmup", "longer than training.steps"),
    ({"recall.warmup": 50}, "recall.warmup", "longer than recall.steps"),
    ({"training.steps": 10 ** 9}, "training.steps", "maximum"),
    ({"training.tokens_per_step": 2 ** 30}, "training.tokens_per_step", "maximum"),
    ({"attention_graph.seq_len": 10 ** 6}, "attention_graph.seq_len", "maximum"),
    ({"samples.new_tokens": 10 ** 7}, "samples.new_tokens", "maximum"),
    ({"cost_model.segment_lengths": [32768, 16384, 8192, 4096, 2048]},
     "cost_model.segment_lengths", "not increasing"),
    ({"cost_model.dilation_rates": [12, 6, 4, 2, 1]}, "cost_model.dilation_rates", "decreases"),
    ({"distributed.segment_lengths": [256, 64]},
     "distributed.segment_lengths", "not increasing"),
    ({"work_dir": "runs/smoke"}, "work_dir", "results_dir too"),
]


def test_the_table_has_enough_cases():
    assert len(BROKEN) >= 80


@pytest.mark.parametrize("changes, key, text", BROKEN, ids=[c[1] for c in BROKEN])
def test_broken_configuration_is_refused_at_load_naming_its_key(changes, key, text):
    with pytest.raises(ConfigError) as refused:
        check_config(broken(changes))
    message = str(refused.value)
    assert f"config key '{key}'" in message, message
    assert text in message, message


def test_good_configurations_pass_and_keep_their_values():
    for name in ("default", "smoke", "paper"):
        config = pipeline_config.read_config(name)
        variants = check_config(config, local=False)
        assert list(variants) == [v.get("id", v["name"]) for v in config["variants"]]


def test_per_head_params_are_checked_at_the_models_head_count():
    """Longformer's per-head dilation list fits profile.heads (2) but not the model's 4 heads."""
    config = broken({"training.model_overrides.n_head": 4, "attention_graph.heads": 2,
                     "variants.0.name": "longformer",
                     "variants.0.params": {"window": 4, "dilation": [1, 2]}})
    with pytest.raises(ConfigError, match=r"variants\[0\]\.params.*4 heads, the model's n_head"):
        check_config(config)


def test_environment_checks_where_the_jobs_run(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="config key 'device'.*needs CUDA"):
        check_config(broken({"device": "cuda"}))
    check_config(broken({"device": "cuda"}), dry_run=True)  # the jobs check it when they start
    check_config(broken({"device": "cuda"}), local=False)  # a cluster's nodes may have GPUs
    with pytest.raises(SystemExit, match="needs CUDA"):
        pipeline_config.require_device("cuda")
    real_find_spec = pipeline_config.importlib.util.find_spec
    monkeypatch.setattr(pipeline_config.importlib.util, "find_spec",
                        lambda name: None if name == "tiktoken" else real_find_spec(name))
    with pytest.raises(ConfigError, match="config key 'data.tokenizer'.*tiktoken"):
        check_config(broken({"data.tokenizer": "cl100k_base", "data.max_bytes": 10 ** 6}))


@pytest.mark.slow
def test_a_broken_key_stops_the_real_workflow_before_any_job(tmp_path):
    """End to end: snakemake itself (not a dry run) refuses the typo, and nothing is created."""
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump(broken({"training.stpes": 6})))
    run = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"),
                          "--cores", "1", "--configfile", str(config)], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode != 0
    assert "config key 'training.stpes': unknown key" in run.stdout + run.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "results").exists()


# ---- aggregation: per-job CSVs checked against what the configuration says -----------------

def perplexity_csv(path: Path, eval_lens=(32, 128)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame([dict(variant="vanilla", params="{}", train_len=32, eval_len=n, mode="native",
                       loss=4.5, perplexity=90.0 + n, split="test") for n in eval_lens]
                 ).to_csv(path, index=False)
    return path


def expect_for(path, eval_lens=(32, 128)):
    return {str(path): {"variant": "vanilla", "train_len": 32, "eval_len": list(eval_lens)}}


def test_a_whole_per_job_csv_is_read():
    from analysis.tables import read_csvs

    path = perplexity_csv(Path(os.environ.get("TMPDIR", "/tmp")) / f"ok-{os.getpid()}.csv")
    try:
        assert len(read_csvs([path], "perplexity", expect_for(path))) == 2
    finally:
        path.unlink()


@pytest.mark.parametrize("damage, problem", [
    (lambda text: "", "empty"),
    (lambda text: text.splitlines()[0] + "\n", "no rows, only a header"),
    (lambda text: text[:-8], "truncated"),
    (lambda text: text[:text.index("\n", len(text) // 2) - 5] + "\n", "fields where the header"),
    (lambda text: text.replace(",122.0", ",nan", 1), "finite number"),
    (lambda text: text[:text.rindex("\n", 0, len(text) - 1) + 1], "no rows for eval_len = [128]"),
    (lambda text: text.replace("test", '"te\nst'), "line"),
])
def test_a_damaged_per_job_csv_is_refused_naming_the_file(tmp_path, damage, problem):
    from analysis.tables import InputError, read_csvs

    path = perplexity_csv(tmp_path / "eval" / "vanilla" / "L32" / "perplexity.csv")
    path.write_text(damage(path.read_text()))
    with pytest.raises(InputError) as refused:
        read_csvs([path], "perplexity", expect_for(path))
    assert str(path) in str(refused.value) and problem in str(refused.value), str(refused.value)


def test_a_missing_input_is_refused(tmp_path):
    from analysis.tables import InputError, build_tables

    path = perplexity_csv(tmp_path / "perplexity.csv")
    with pytest.raises(InputError, match="not among the inputs"):
        build_tables({"perplexity": []}, [dict(name="vanilla")],
                     expect={"perplexity": expect_for(path)})


def test_results_are_written_readable_by_others(tmp_path):
    from analysis.io import write_text

    old = os.umask(0o022)
    try:
        write_text("x\n", tmp_path / "table.csv")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "table.csv").stat().st_mode) == 0o644


# ---- checkpoints -------------------------------------------------------------------------------

def test_a_truncated_checkpoint_is_named_and_its_sidecar_catches_it(tmp_path):
    from longnet.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

    path = tmp_path / "checkpoint.pt"
    save_checkpoint({"step": 3, "w": torch.arange(1000.0)}, path)
    assert load_checkpoint(path)["step"] == 3
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(CheckpointError, match=f"{path}.*damaged.*delete"):
        load_checkpoint(path)
    (tmp_path / "checkpoint.pt.sha256").unlink()  # no sidecar: unpickling still names the file
    with pytest.raises(CheckpointError, match=f"{path}.*torch.load failed"):
        load_checkpoint(path)


def test_a_failed_checkpoint_write_leaves_the_previous_one_and_no_temporary(tmp_path, monkeypatch):
    from longnet import checkpoint

    path = tmp_path / "checkpoint_last.pt"
    checkpoint.save_checkpoint({"step": 2}, path)

    def disk_full(obj, target):
        Path(target).write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", disk_full)
    with pytest.raises(OSError, match="No space"):
        checkpoint.save_checkpoint({"step": 4}, path)

    def torch_full_disk(obj, target):  # what torch.save raises on a full disk
        raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0: "
                           "basic_ios::clear: iostream error")
    monkeypatch.setattr(checkpoint.torch, "save", torch_full_disk)
    with pytest.raises(OSError, match=r"could not write checkpoint .*checkpoint_last\.pt.*"
                                      r"free space there: [\d,]+ bytes; is the disk full"):
        checkpoint.save_checkpoint({"step": 4}, path)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_last.pt",
                                                          "checkpoint_last.pt.sha256"]
    assert checkpoint.load_checkpoint(path)["step"] == 2


TRAIN = dict(model_overrides=dict(n_layer=1, d_model=16, n_head=2, d_ff=32), seq_len=16,
             tokens_per_step=64, micro_batch_tokens=64, steps=4, lr=3e-3, warmup=1,
             eval_every=0, eval_tokens=64, log_every=1, checkpoint_every=1, progress=False,
             peak_flops=1e11, device="cpu")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from longnet.data import prepare_corpus, stdlib_dir

    out = tmp_path_factory.mktemp("corpus")
    prepare_corpus(out, source="dir", path=stdlib_dir() / "json", extensions=(".py",),
                   fractions=(0.6, 0.2, 0.2))
    return out


def test_training_recovers_from_damaged_checkpoints(corpus, tmp_path):
    """A damaged resume point falls back to the one before; a damaged final checkpoint is
    retrained; either way the run ends with the weights of an undisturbed run."""
    from longnet.checkpoint import load_checkpoint
    from longnet.train import train

    clean = tmp_path / "clean"
    train(TRAIN, corpus, clean)
    run = tmp_path / "run"
    train(TRAIN, corpus, run, stop_after=3)
    assert {"checkpoint_last.pt", "checkpoint_prev.pt"} <= {p.name for p in run.iterdir()}
    last = run / "checkpoint_last.pt"
    last.write_bytes(last.read_bytes()[:100])  # truncated: resume from step 2 instead of 3
    train(TRAIN, corpus, run)
    expected = load_checkpoint(clean / "checkpoint.pt")["model"]
    final = run / "checkpoint.pt"
    for name, tensor in load_checkpoint(final)["model"].items():
        assert torch.equal(tensor, expected[name]), name
    assert not [p for p in run.iterdir() if "last" in p.name or "prev" in p.name
                or p.name.endswith(".tmp")]
    final.write_bytes(final.read_bytes()[:100])  # a damaged finished run is trained again
    train(TRAIN, corpus, run)
    for name, tensor in load_checkpoint(final)["model"].items():
        assert torch.equal(tensor, expected[name]), name


# ---- the library's edge cases ------------------------------------------------------------------

def test_library_edge_cases_are_refused_clearly():
    import baselines
    from longnet.dilated_attention import dilated_attention, dilated_attention_decode
    from longnet.multihead import MultiheadDilatedAttention
    from longnet.train import TrainConfig

    for heads in (0, -2, 2.0):
        with pytest.raises(ValueError, match="num_heads"):
            MultiheadDilatedAttention(8, heads, [4], [1])
    for bad, name in ((dict(backend="bogus"), "backend"), (dict(causal="yes"), "causal"),
                      (dict(exact_grad="no"), "exact_grad")):
        with pytest.raises(ValueError, match=name):
            MultiheadDilatedAttention(8, 2, [4], [1], **bad)
    x = torch.randn(1, 8, 2, 4)
    for bad, name in ((dict(scale=0.0), "scale"), (dict(scale=-1.0), "scale"),
                      (dict(causal=None), "causal"), (dict(backend="bogus"), "backend")):
        with pytest.raises(ValueError, match=name):
            dilated_attention(x, x, x, [4], [1], **bad)
    with pytest.raises(ValueError, match="2\\*\\*63"):
        dilated_attention(x, x, x, [4], [2 ** 63])
    with pytest.raises(ValueError, match="D >= 1"):
        z = torch.randn(1, 8, 2, 0)
        dilated_attention(z, z, z, [4], [1])
    with pytest.raises(ValueError, match="empty cache"):
        dilated_attention_decode(x[:, :1], x[:, :0], x[:, :0], [4], [1])
    empty = torch.randn(1, 0, 2, 4, requires_grad=True)
    dilated_attention(empty, empty, empty, [4], [1]).sum().backward()
    assert empty.grad.shape == empty.shape
    assert dilated_attention(*[torch.randn(0, 8, 2, 4)] * 3, [4], [1]).shape == (0, 8, 2, 4)
    for name in baselines.available():
        with pytest.raises(ValueError, match="n=-1"):
            baselines.build(name, num_heads=2).flops(-1, 16)
    with pytest.raises(ValueError, match="clip_grad"):
        TrainConfig(clip_grad=-1.0)


def test_the_library_refuses_mixed_devices_and_unordered_schedules():
    from longnet.dilated_attention import dilated_attention
    from longnet.schedule import DilatedSchedule

    x = torch.randn(1, 8, 2, 4)
    with pytest.raises(ValueError, match="one device"):
        dilated_attention(x, x.to("meta"), x, [4], [1])
    for unordered in ({4, 8}, {4: 1, 8: 2}, frozenset((4, 8))):
        with pytest.raises(ValueError, match="in order"):
            DilatedSchedule(unordered, [1, 2])
    # continued from the widest branch whatever the order: no branch repeated
    shuffled = DilatedSchedule([8, 32, 16], [1, 4, 2]).extended_to(128)
    assert shuffled.segment_lengths == (8, 32, 16, 64, 128)
    assert shuffled.dilation_rates == (1, 4, 2, 8, 16)


def test_a_cut_or_repeated_training_row_is_refused():
    """Every logged step is expected once (longnet.train.logged_steps): a middle row dropped from
    compute_curve.csv, or one repeated, is refused naming the file; the refusal sets it aside."""
    from analysis.tables import InputError, read_checked

    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"curve-{os.getpid()}"
    tmp.mkdir(exist_ok=True)
    path = tmp / "compute_curve.csv"
    rows = [dict(step=s, tokens=s * 8, train_flops=s * 1e6, val_loss=5.0 - s / 100)
            for s in (0, 25, 50, 75, 100)]
    expect = {"step": {"steps": {"every": 25, "last": 100, "zero": True}}}
    try:
        pd.DataFrame(rows).to_csv(path, index=False)
        assert len(read_checked(path, "compute_curve", expect)) == 5
        for broken_rows, problem in ((rows[:2] + rows[3:], "missing [50] (1)"),
                                     (rows + rows[-1:], "repeated [100] (1)")):
            pd.DataFrame(broken_rows).to_csv(path, index=False)
            with pytest.raises(InputError, match=re.escape(problem)) as refused:
                read_checked(path, "compute_curve", expect)
            assert str(path) in str(refused.value)
        message = refused.value.set_aside()
        assert "moved aside" in message and "run the same command again" in message
        assert not path.exists() and path.with_name("compute_curve.csv.refused").exists()
    finally:
        for leftover in tmp.iterdir():
            leftover.unlink()
        tmp.rmdir()


@pytest.mark.parametrize("backend", ["torch_cpu", "math"])
def test_a_nan_query_row_gives_nan_on_every_backend(backend):
    """The definition's output at a query row holding a NaN is NaN; torch's CPU flash kernel
    returned exactly 0.0 there. Every other row is untouched."""
    from longnet.dilated_attention import dilated_attention

    q, k, v = (torch.randn(1, 32, 2, 8) for _ in range(3))
    clean = dilated_attention(q, k, v, [8, 16], [1, 2], backend=backend)
    q[0, 5, 1, 3] = float("nan")
    out = dilated_attention(q, k, v, [8, 16], [1, 2], backend=backend)
    assert torch.isnan(out[0, 5, 1]).all()
    others = torch.ones(32, 2, dtype=torch.bool)
    others[5, 1] = False
    assert torch.equal(out[0][others], clean[0][others])


def test_an_overlay_is_its_base_with_its_own_keys_on_top():
    """cpu_full.yaml holds only what differs from default.yaml (`extends`): mappings merge key by
    key, lists are replaced whole; a base that is not a shipped configuration, or one that
    extends another, is refused naming the key."""
    full = pipeline_config.read_config("cpu_full")
    default = pipeline_config.read_config("default")
    assert "extends" not in full and full["recall"]["steps"] == 1000
    assert full["recall"]["variants"] == default["recall"]["variants"]  # merged, not replaced
    assert [v["train_lens"] for v in full["variants"][:3]] == [[128, 512, 2048], [512, 1024, 2048],
                                                                [512, 1024, 2048]]
    assert {k: v for k, v in full["evaluation"].items() if k != "max_tokens"} == \
        {k: v for k, v in default["evaluation"].items() if k != "max_tokens"}
    check_config(full, local=False)
    for name in ("nope.yaml", "../default.yaml", "/etc/passwd", 3):
        with pytest.raises(ConfigError, match="config key 'extends'.*allowed: .*default.yaml"):
            pipeline_config.resolve_extends({"extends": name})
    with pytest.raises(ConfigError, match="config key 'extends': cpu_full.yaml extends"):
        pipeline_config.resolve_extends({"extends": "cpu_full.yaml"})
    assert pipeline_config.merged({"a": {"b": 1, "c": [1]}}, {"a": {"c": [2]}}) == {"a": {"b": 1, "c": [2]}}
