"""The Snakemake pipeline: lint, dry runs of every configuration, refused configurations, a new
variant growing the DAG, and the smoke configuration run end to end after a kill mid-training."""
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

pytestmark = pytest.mark.slow  # Snakemake runs end to end
REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "workflow" / "configs"
sys.path.insert(0, str(REPO / "workflow"))
from pipeline_config import read_config  # noqa: E402 (overlays resolved)
SMOKE = yaml.safe_load((CONFIGS / "smoke.yaml").read_text())
RESULTS, WORK = SMOKE["results_dir"], SMOKE["work_dir"]  # the smoke run's own directories


def snakemake(*args, cwd, env=None, timeout=600) -> subprocess.CompletedProcess:
    """Run snakemake on the repository's Snakefile from `cwd` (its results go under cwd)."""
    return subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


DELETE = object()


def smoke_config(path: Path, changes: dict) -> Path:
    """The smoke config with dotted keys ("variants.2.params.dilation_rates") set or deleted."""
    config = yaml.safe_load(yaml.safe_dump(SMOKE))  # a deep copy
    for key, value in changes.items():
        *parents, last = key.split(".")
        target = config
        for part in parents:
            target = target[int(part) if part.isdigit() else part]
        if value is DELETE:
            del target[last]
        else:
            target[last] = value
    path.write_text(yaml.safe_dump(config))
    return path


def job_counts(stdout: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run: rule -> number of jobs."""
    table = stdout[stdout.index("Job stats:"):]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def test_lint_is_clean():
    run = snakemake("--lint", cwd=REPO)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Congratulations" in run.stdout + run.stderr


def expected_jobs(config: dict) -> dict[str, int]:
    """Jobs per rule that a configuration implies."""
    seeds = len(config.get("seeds", [0]))
    models = sum(len(v.get("train_lens", [])) for v in config["variants"]) * seeds
    recall_variants = len(config["recall"]["variants"]) if "recall" in config else 0
    return dict(train=models, evaluate=models, recall=recall_variants * seeds,
                recall_reach=recall_variants,
                profile=sum(v.get("profile", True) for v in config["variants"]),
                attention_graph=len(config["variants"]),
                sequence_parallel=len(config["distributed"]["world_sizes"]),
                prepare_data=1, project_latency=1, aggregate=1, tables=1, figures=1,
                provenance=1, results_readme=1)


@pytest.mark.parametrize("name", ["default", "smoke", "paper", "cpu_full"])
def test_dry_run_of_every_config(name, tmp_path):
    """Each configuration plans the jobs it implies; the plain command plans the default one."""
    config = read_config(name)
    args = [] if name == "default" else ["--configfile", str(CONFIGS / f"{name}.yaml")]
    if name == "paper":  # planned as a cluster submission (--jobs): its nodes bring tiktoken, GPUs
        args += ["--jobs", "50"]
    run = snakemake("-n", *args, cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    jobs = job_counts(run.stdout)
    for rule, count in expected_jobs(config).items():
        assert jobs[rule] == count, rule


@pytest.mark.parametrize("name", ["smoke", "paper"])
def test_other_configs_never_write_into_the_committed_reference_run(name):
    """Only the default configuration writes results/ (committed); every other one has its own
    results and work directories outside it, ignored by git."""
    default = read_config("default")
    config = read_config(name)
    reference = (REPO / default["results_dir"]).resolve()
    ignored = (REPO / ".gitignore").read_text().splitlines()
    for key in ("results_dir", "work_dir"):
        path = (REPO / config[key]).resolve()
        assert path != reference and reference not in path.parents, (key, path)
        assert Path(config[key]).parts[0] + "/" in ignored, f"{config[key]} is not git-ignored"


def test_the_complete_cpu_study_is_committed_beside_the_reference_run_never_over_it():
    """cpu_full's results are committed in their own folder inside results/, one that none of the
    default run's outputs live in; its logs and per-job intermediates are git-ignored."""
    default = read_config("default")
    config = read_config("cpu_full")
    reference = (REPO / default["results_dir"]).resolve()
    own = (REPO / config["results_dir"]).resolve()
    assert own.parent == reference, own
    default_outputs = {"tables", "figures", "samples", "benchmarks", "logs", "work",
                       "provenance.json", "README.md", "report.html"}
    assert own.name not in default_outputs, own.name
    ignored = (REPO / ".gitignore").read_text().splitlines()
    assert f"{config['results_dir']}/logs/" in ignored
    assert Path(config["work_dir"]).parts[0] + "/" in ignored, config["work_dir"]


@pytest.mark.parametrize("changes, expected", [
    ({"variants.2.params.dilation_rates": [1, 2]}, ["variants[2].params"]),
    ({"distributed.tokens_per_rank": DELETE, "distributed.seq_lens": [1000, 1001]},
     ["distributed.seq_lens", "1001 is not divisible by world size 2"]),
    ({"data.source": "web"}, ["'web' is not one of ['stdlib', 'dir', 'hf']", "source"]),
    ({"variants.0.name": "nope"}, ["variants[0].name", "unknown variant 'nope'", "allowed"]),
])
def test_impossible_configs_are_refused_at_load(changes, expected, tmp_path):
    run = snakemake("-n", "--configfile", str(smoke_config(tmp_path / "bad.yaml", changes)),
                    cwd=tmp_path)
    assert run.returncode != 0
    for text in expected:
        assert text in run.stdout + run.stderr, text


def test_adding_a_variant_module_grows_the_dag(tmp_path):
    """A variant from an outside module, listed in the config, gets its train, evaluate, profile
    and attention-graph jobs and outputs, with no other edit."""
    (tmp_path / "my_attention.py").write_text(
        "from baselines import register\n"
        "from baselines.vanilla import Vanilla\n\n\n"
        "@register('my_attention')\n"
        "class MyAttention(Vanilla):\n"
        "    '''Vanilla attention under another name: a stand-in for a user's variant.'''\n")
    env = dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    grown = smoke_config(tmp_path / "grown.yaml", {
        "extra_modules": ["my_attention"],
        "variants": SMOKE["variants"] + [dict(name="my_attention", train_lens=[32])]})
    run = snakemake("-n", "--configfile", str(grown), cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    jobs, before = job_counts(run.stdout), expected_jobs(SMOKE)
    seeds = len(SMOKE["seeds"])
    for rule, more in (("train", seeds), ("evaluate", seeds), ("profile", 1), ("attention_graph", 1)):
        assert jobs[rule] == before[rule] + more, rule
    for output in ("train/my_attention/L32/s0/checkpoint.pt",
                   "eval/my_attention/L32/s1/perplexity.csv",
                   "profile/my_attention.csv", "attention_graph/my_attention.csv"):
        assert f"{WORK}/{output}" in run.stdout


# ---- the smoke configuration, killed mid-training and rerun ------------------------------------

SMOKE_STEPS = 60  # long enough to kill a training job between two of its checkpoints
SMOKE_RUN_CHANGES = {"training.steps": SMOKE_STEPS, "training.checkpoint_every": 10,
                     "training.eval_every": 30}


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """Run the smoke pipeline, SIGKILL it (every process) once a model has a resumable checkpoint,
    then unlock and rerun it to completion."""
    root = tmp_path_factory.mktemp("smoke")
    config = str(smoke_config(root / "smoke.yaml", SMOKE_RUN_CHANGES))
    first = subprocess.Popen([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"),
                              "--cores", "2", "--configfile", config], cwd=root,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    deadline = time.time() + 240
    while not list(root.glob(f"{WORK}/train/*/L*/s*/state-*/checkpoint_last.pt")):
        assert first.poll() is None, "the smoke run ended before any training checkpoint"
        assert time.time() < deadline, "no training checkpoint appeared"
        time.sleep(0.05)
    killed_in = [p.parent.parent for p in  # the model directories
                 root.glob(f"{WORK}/train/*/L*/s*/state-*/checkpoint_last.pt")]
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert first.poll() is not None  # no run is alive: only then is --unlock safe
    assert snakemake("--unlock", "--configfile", config, cwd=root).returncode == 0
    rerun = snakemake("--cores", "2", "--rerun-incomplete", "--configfile", config, cwd=root)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    return root, config, killed_in


def declared_outputs(root: Path, config: str) -> list[Path]:
    summary = snakemake("--summary", "--configfile", config, cwd=root)
    assert summary.returncode == 0, summary.stderr
    rows = [line.split("\t") for line in summary.stdout.splitlines()[1:] if "\t" in line]
    return [root / row[0] for row in rows]


def test_smoke_run_writes_every_declared_output_and_each_parses(smoke_run):
    import matplotlib.image
    import torch

    root, config, _ = smoke_run
    outputs = declared_outputs(root, config)
    assert len(outputs) > 30
    for path in outputs:
        assert path.exists(), path
        if path.suffix == ".csv":
            pd.read_csv(path)
        elif path.suffix == ".png":
            assert matplotlib.image.imread(path).ndim == 3
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".pt":
            torch.load(path, map_location="cpu", weights_only=True)
        else:
            assert path.read_text().strip(), path
    tables = root / RESULTS / "tables"
    for name in ("table1_scaling", "table2_perplexity", "latency", "distributed",
                 "loss_vs_compute", "context_window", "passkey", "claims", "recall"):
        assert len(pd.read_csv(tables / f"{name}.csv")) > 0, name
    table2 = pd.read_csv(tables / "table2_perplexity.csv")
    assert {"variant", "train_len", "eval_len", "perplexity", "paper_perplexity", "seed",
            "statistic", "perplexity_mean", "ci_low", "ci_high", "n_seeds"} <= set(table2)
    means = table2[table2["statistic"] == "mean"]
    assert (means["n_seeds"] == len(SMOKE["seeds"])).all()
    assert set(table2.loc[table2["statistic"] == "seed", "seed"]) == set(SMOKE["seeds"])
    recall = pd.read_csv(tables / "recall.csv")
    assert set(recall["seed"]) == set(SMOKE["seeds"])
    assert set(recall["distance"]) == set(SMOKE["recall"]["distances"])
    assert recall["reachable"].between(0, 1).all()
    assert (recall["ceiling"] >= recall["reachable"]).all()
    vanilla = recall[recall["name"] == "vanilla"]
    assert len(vanilla) and (vanilla["reachable"] == 1).all()  # full attention connects every pair
    latency = pd.read_csv(tables / "latency.csv")
    assert {"variant", "seq_len", "mode", "device", "dtype", "median_ms", "peak_mem_bytes",
            "status"} <= set(latency)
    provenance = json.loads((root / RESULTS / "provenance.json").read_text())
    assert {"git_commit", "torch_version", "device", "date", "config_hash"} <= set(provenance)


def test_killed_training_resumes_with_no_stale_or_partial_output(smoke_run):
    root, config, killed_in = smoke_run
    assert killed_in, "the kill did not land during training"
    for model_dir in killed_in:
        metrics = pd.read_csv(model_dir / "metrics.csv")
        assert metrics["step"].is_unique and metrics["step"].is_monotonic_increasing
        assert metrics["step"].iloc[-1] == SMOKE_STEPS
        curve = pd.read_csv(model_dir / "compute_curve.csv")
        assert curve["step"].is_unique and curve["step"].iloc[-1] == SMOKE_STEPS
    leftovers = [p for p in (root / RESULTS).rglob("*") if p.name.startswith(".")
                 or p.name.endswith(".tmp")]
    assert not leftovers
    again = snakemake("-n", "--configfile", config, cwd=root)
    assert "Nothing to be done" in again.stdout + again.stderr


def test_report_has_every_figure_and_table(smoke_run):
    root, config, _ = smoke_run
    run = snakemake("--report", "report.html", "--configfile", config, cwd=root)
    assert run.returncode == 0, run.stderr[-3000:]
    html = (root / "report.html").read_text()
    from analysis.figures import FIGURES
    from analysis.tables import TABLES
    for name in FIGURES + TABLES:
        assert name in html, name


def test_every_table_column_is_documented(smoke_run):
    from analysis.readme import COLUMNS
    from analysis.tables import TABLES

    root, _, _ = smoke_run
    for name in TABLES:
        columns = set(pd.read_csv(root / RESULTS / "tables" / f"{name}.csv").columns)
        assert not columns - set(COLUMNS), (name, sorted(columns - set(COLUMNS)))
    readme = (root / RESULTS / "README.md").read_text()
    assert all(f"tables/{name}.csv" in readme for name in TABLES)


# ---- analysis on small synthetic tables -----------------------------------------------------

def test_fit_exponent_recovers_a_power_law():
    from analysis.tables import fit_exponent

    n = [1024, 4096, 16384]
    assert fit_exponent(n, [3.0 * x ** 1.5 for x in n]) == pytest.approx(1.5)
    assert pd.isna(fit_exponent([1024], [1.0]))


def test_scaling_exponents_use_time_per_sequence_at_a_constant_token_budget():
    from analysis.tables import scaling_exponents

    n = [4096, 16384, 65536]
    rows = [dict(variant=v, mode="fwd", status="ok", seq_len=x, batch=65536 // x,
                 median_ms=(65536 // x) * 1e-6 * x ** power, flops=(65536 // x) * x ** power)
            for v, power in (("vanilla", 2), ("longnet", 1)) for x in n]
    rows.append(dict(variant="vanilla", mode="fwd", status="timeout", seq_len=262144, batch=1,
                     median_ms=float("nan"), flops=float("nan")))
    variants = [dict(name="vanilla", paper_model="Transformer"),
                dict(name="longnet", paper_model="LongNet")]
    table = scaling_exponents(pd.DataFrame(rows), variants).set_index("variant")
    assert table.loc["vanilla", "measured_exponent"] == pytest.approx(2.0)
    assert table.loc["longnet", "measured_exponent"] == pytest.approx(1.0)
    assert table.loc["vanilla", "points"] == 3
    assert table.loc["longnet", "paper_complexity"] == "O(N d)"
    assert table.loc["vanilla", "paper_exponent"] == 2.0


def test_table2_puts_the_papers_value_beside_ours_at_scaled_lengths():
    from analysis.tables import table2

    ours = pd.DataFrame([dict(variant="longnet", train_len=512, eval_len=e, perplexity=p,
                              loss=math.log(p), seed=0)
                         for e, p in ((128, 9.0), (512, 8.0), (2048, 7.5), (4096, 7.4))])
    variants = [dict(name="longnet", paper_model="LongNet")]
    table = table2(ours, variants, paper_len_scale=16)
    table = table[table["statistic"] == "seed"].set_index("eval_len")
    assert table.loc[128, "paper_perplexity"] == 4.23  # LongNet 8K at 2K
    assert table.loc[512, "paper_perplexity"] == 3.24
    assert table.loc[2048, "paper_perplexity"] == 3.36
    assert pd.isna(table.loc[4096, "paper_perplexity"])  # no such column in the paper
    assert (table["paper_train_len"] == 8192).all()


def test_every_figure_is_drawn_from_empty_tables():
    from analysis.figures import FIGURES, draw_figures
    from analysis.tables import TABLES

    figures = draw_figures({name: pd.DataFrame() for name in TABLES})
    assert sorted(figures) == sorted(FIGURES)


def test_a_damaged_input_fails_the_aggregation_keeps_the_tables_and_is_rebuilt(smoke_run):
    """Last in this file (it damages and deletes intermediates): a per-job CSV cut mid-row is
    refused naming the file, the run's tables/ keeps every previous table, the file is set aside,
    and the next run remakes it, as it remakes a deleted model's files; a changed corpus plans
    every model again."""
    root, config, _ = smoke_run
    tables = root / RESULTS / "tables"
    before = {p.name: p.read_bytes() for p in tables.glob("*.csv")}
    victim = next(root.glob(f"{WORK}/eval/*/L*/s*/perplexity.csv"))
    text = victim.read_text()
    victim.write_text(text[:len(text) - 20])
    run = snakemake("--cores", "2", "--configfile", config, cwd=root)
    assert run.returncode != 0
    assert str(victim.relative_to(root)) in (run.stdout + run.stderr
                                              + (root / RESULTS / "logs/analysis/aggregate.log")
                                              .read_text())
    assert {p.name: p.read_bytes() for p in tables.glob("*.csv")} == before
    assert "moved aside" in (root / RESULTS / "logs/analysis/aggregate.log").read_text()
    assert not victim.exists() and victim.with_name(victim.name + ".refused").exists()

    # a dry run plans the rebuild and leaves no trace (the stamp's mtime is put back)
    stamp = root / WORK / "tables" / "rebuild.stamp"
    before = stamp.stat().st_mtime_ns
    plan = snakemake("-n", "--configfile", config, cwd=root)
    assert "evaluate" in job_counts(plan.stdout) and stamp.stat().st_mtime_ns == before

    # a training output the training run itself wrote wrong (here: a repeated row, in the state
    # directory too): republishing cannot mend it, so it is not set aside, and the message says
    # to delete the model directory; doing so retrains that model
    model = next(root.glob(f"{WORK}/train/*/L*/s*/metrics.csv")).parent
    for copy in (model / "metrics.csv", *model.glob("state-*/metrics.csv")):
        text = copy.read_text()
        copy.write_text(text + text.splitlines()[-1] + "\n")
    stuck = snakemake("--cores", "2", "--configfile", config, cwd=root)
    log = (root / RESULTS / "logs/analysis/aggregate.log").read_text()
    assert stuck.returncode != 0 and "delete the model directory" in log, log[-2000:]
    assert (model / "metrics.csv").exists()
    import shutil
    shutil.rmtree(model)
    rebuilt = snakemake("--cores", "2", "--configfile", config, cwd=root)
    assert rebuilt.returncode == 0, rebuilt.stdout[-3000:] + rebuilt.stderr[-3000:]
    pd.read_csv(victim)  # whole again
    assert pd.read_csv(model / "metrics.csv")["step"].is_unique
    assert (model / "checkpoint.pt").exists() and (model / "compute_curve.csv").exists()
    assert "Nothing to be done" in snakemake("-n", "--configfile", config, cwd=root).stdout

    changed = smoke_config(root / "changed.yaml", {**SMOKE_RUN_CHANGES, "data.max_bytes": 300_000})
    plan = snakemake("-n", "--configfile", str(changed), cwd=root)
    assert plan.returncode == 0, plan.stderr[-3000:]
    assert job_counts(plan.stdout)["train"] == expected_jobs(SMOKE)["train"]
