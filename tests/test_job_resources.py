"""What each job asks a scheduler for (workflow/job_resources.py): derived from the configuration,
GPUs only on cuda, torchrun jobs asking for what torchrun starts, a site's scales and caps applied
last, a site file given with --config site_resources=PATH, and a default for rules it does not know."""
import subprocess
import sys
from pathlib import Path

import pytest

from test_faults import SMOKE, broken  # the smoke configuration, changed by dotted keys

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))
import job_resources  # noqa: E402
from job_resources import SMALL_JOB, SWEEP_THREADS, read_site, resources_for  # noqa: E402
from pipeline_config import check_config  # noqa: E402

NEUTRAL = dict(job_resources.SITE_KEYS)  # no scaling, no caps
RULES = ["prepare_data", "train", "evaluate", "samples", "profile", "sequence_parallel",
         "decode_benchmark", "attention_graph"]


def checked(changes=None) -> dict:
    """The smoke config with `changes`, validated and filled in as the workflow does at load."""
    config = broken(changes or {})
    check_config(config, local=False, dry_run=True)
    return config


def cluster(rule, config, device="cpu", site=NEUTRAL, **job) -> dict:
    return resources_for(rule, config, device, False, site, **job)


def test_bigger_models_and_longer_lengths_ask_for_more_memory_and_time():
    base = checked()
    wide = checked({"training.model_overrides.d_model": 1024, "training.model_overrides.d_ff": 4096,
                    "training.model_overrides.n_layer": 8, "training.tokens_per_step": 32768})
    for rule in ("train", "evaluate", "samples"):
        assert cluster(rule, wide)["mem_mb"] > cluster(rule, base)["mem_mb"], rule
    assert cluster("train", wide)["runtime"] > cluster("train", base)["runtime"]
    # a training length beyond micro_batch_tokens holds a bigger micro-batch
    assert cluster("train", wide, train_len=16384)["mem_mb"] > cluster("train", wide, train_len=32)["mem_mb"]
    longer = checked({"training.steps": 60000})
    assert cluster("train", longer)["runtime"] > cluster("train", base)["runtime"]
    far = checked({"evaluation.eval_lens": [32, 128, 65536], "evaluation.max_tokens": 65536,
                   "data.max_bytes": 10 ** 7})
    assert cluster("evaluate", far)["mem_mb"] > cluster("evaluate", base)["mem_mb"]
    corpus = checked({"data.max_bytes": 10 ** 9})
    assert cluster("prepare_data", corpus)["mem_mb"] > cluster("prepare_data", base)["mem_mb"]
    assert cluster("prepare_data", corpus)["runtime"] > cluster("prepare_data", base)["runtime"]
    swept = checked({"profile.seq_lens": [128, 1 << 22], "profile.modes": ["fwd", "fwd+bwd"]})
    assert cluster("profile", swept)["mem_mb"] > cluster("profile", base)["mem_mb"]
    assert cluster("profile", swept)["runtime"] > cluster("profile", base)["runtime"]
    spread = checked({"distributed.tokens_per_rank": [128, 1 << 20]})
    assert cluster("sequence_parallel", spread)["mem_mb"] > cluster("sequence_parallel", base)["mem_mb"]


def test_gpus_only_when_the_device_is_cuda():
    config = checked({"training.nproc": 4, "training.tokens_per_step": 2048,
                      "distributed.world_sizes": [1, 2, 4], "distributed.tokens_per_rank": [128]})
    for rule in RULES:
        assert cluster(rule, config, "cpu")["gpu"] == 0, rule
    on_gpus = {rule: cluster(rule, config, "cuda")["gpu"] for rule in RULES}
    assert on_gpus == {"prepare_data": 0, "train": 4, "evaluate": 1, "samples": 1, "profile": 1,
                       "sequence_parallel": 4, "decode_benchmark": 0, "attention_graph": 0}
    assert cluster("sequence_parallel", config, "cuda", world_size=2)["gpu"] == 2


def test_a_torchrun_job_asks_for_what_torchrun_starts():
    config = checked({"training.nproc": 4, "training.threads": 3, "training.tokens_per_step": 2048,
                      "distributed.world_sizes": [1, 2, 4], "distributed.tokens_per_rank": [128],
                      "distributed.threads_per_rank": 2})
    for local in (True, False):
        assert resources_for("train", config, "cpu", local, NEUTRAL)["threads"] == 12
    assert cluster("sequence_parallel", config, world_size=4)["threads"] == 8
    assert cluster("sequence_parallel", config, world_size=2)["threads"] == 4
    # memory is per process: four training processes hold four copies
    one = checked({"training.threads": 3, "training.tokens_per_step": 2048})
    assert cluster("train", config)["mem_mb"] > 3 * cluster("train", one)["mem_mb"]


def test_jobs_that_want_a_machine_get_every_core_locally_and_a_fixed_share_on_a_cluster():
    config = checked({"profile.threads": None})
    assert cluster("profile", config)["threads"] == SWEEP_THREADS
    local = resources_for("profile", config, "cpu", True, NEUTRAL)["threads"]
    assert local == job_resources.ALL_CORES  # Snakemake caps it at --cores
    capped = resources_for("profile", config, "cpu", True, {**NEUTRAL, "max_threads": 2})
    assert capped["threads"] == job_resources.ALL_CORES  # still every core of a local run
    # a local sequence_parallel job runs alone too (not refused for its every-core ask)
    assert resources_for("sequence_parallel", config, "cpu", True,
                         {**NEUTRAL, "max_threads": 2})["threads"] == job_resources.ALL_CORES
    assert checked()["profile"]["threads"] == 1 and cluster("profile", checked())["threads"] == 1


def test_the_site_scales_then_caps_every_job():
    config = checked({"profile.threads": None, "training.model_overrides.d_model": 1024,
                      "training.model_overrides.d_ff": 4096})
    for rule in RULES:
        plain = cluster(rule, config)
        scaled = cluster(rule, config, site={**NEUTRAL, "mem_scale": 2.0, "runtime_scale": 3.0})
        assert abs(scaled["mem_mb"] - 2 * plain["mem_mb"]) <= 200, rule  # rounded up to 100 MB
        assert abs(scaled["runtime"] - 3 * plain["runtime"]) <= 3, rule  # rounded up to minutes
        capped = cluster(rule, config, site={**NEUTRAL, "mem_scale": 100.0, "max_mem_mb": 2000,
                                             "max_runtime": 7})
        assert capped["mem_mb"] == 2000 and capped["runtime"] == 7, rule
    assert cluster("profile", config)["threads"] == SWEEP_THREADS > 2
    assert cluster("profile", config, site={**NEUTRAL, "max_threads": 2})["threads"] == 2
    assert cluster("evaluate", config, "cuda", site={**NEUTRAL, "max_gpus": 1})["gpu"] == 1


def test_a_cap_below_what_torchrun_starts_is_refused_naming_the_keys():
    config = checked({"training.nproc": 4, "training.tokens_per_step": 2048,
                      "distributed.world_sizes": [1, 2, 4], "distributed.tokens_per_rank": [128]})
    with pytest.raises(ValueError, match="max_threads=2, but a train job starts 4 threads; lower training.nproc"):
        cluster("train", config, site={**NEUTRAL, "max_threads": 2})
    with pytest.raises(ValueError, match="max_gpus=2, but a sequence_parallel job starts 4 GPUs; "
                                         "lower distributed.world_sizes"):
        cluster("sequence_parallel", config, "cuda", site={**NEUTRAL, "max_gpus": 2})
    assert cluster("sequence_parallel", config, "cuda", site={**NEUTRAL, "max_gpus": 2}, world_size=2)["gpu"] == 2


def test_a_rule_it_does_not_know_gets_the_small_default():
    config = checked()
    assert cluster("a_rule_added_later", config, "cuda") == {
        "threads": 1, "mem_mb": SMALL_JOB["mem_mb"],
        "runtime": SMALL_JOB["runtime"] * job_resources.RUNTIME_MARGIN, "gpu": 0}


def test_site_files_are_checked(tmp_path):
    assert set(read_site()) == set(NEUTRAL)  # the committed file
    site = tmp_path / "site.yaml"
    site.write_text("max_mem_mb: 64000\nruntime_scale: 0.5\n")
    assert read_site(site) == {**NEUTRAL, "max_mem_mb": 64000, "runtime_scale": 0.5}
    for text, message in (("max_memory: 1\n", "unknown keys \\['max_memory'\\]"),
                          ("max_gpus: 0\n", "max_gpus must be a positive number or null"),
                          ("mem_scale: yes\n", "mem_scale must be a positive number")):
        site.write_text(text)
        with pytest.raises(ValueError, match=message):
            read_site(site)
    with pytest.raises(ValueError, match="does not exist"):
        read_site(tmp_path / "missing.yaml")


def dry_run(tmp_path, *args):
    """A dry run of the smoke configuration planned as a cluster submission (--jobs)."""
    return subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-n",
                           "--jobs", "4", "--configfile", str(REPO / "workflow/configs/smoke.yaml"),
                           *args], cwd=tmp_path, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_a_site_file_given_on_the_command_line_caps_every_planned_job(tmp_path):
    (tmp_path / "site.yaml").write_text("max_mem_mb: 1700\nmax_runtime: 20\n")
    run = dry_run(tmp_path, "--config", "site_resources=site.yaml")
    assert run.returncode == 0, run.stdout + run.stderr
    planned = run.stdout.count("rule train:") + run.stdout.count("rule evaluate:")
    assert planned == 2 * len(SMOKE["seeds"]) * sum(len(v["train_lens"]) for v in SMOKE["variants"])
    mem = [int(m) for m in _values(run.stdout, "mem_mb")]
    runtime = [int(m) for m in _values(run.stdout, "runtime")]
    assert mem and max(mem) == 1700 and runtime and max(runtime) == 20
    uncapped = dry_run(tmp_path)
    assert max(int(m) for m in _values(uncapped.stdout, "mem_mb")) > 1700


def _values(stdout, key):
    return [part.split("=")[1] for line in stdout.splitlines() if line.strip().startswith("resources:")
            for part in line.split(", ") if part.strip().startswith(f"{key}=")]


@pytest.mark.slow
def test_a_broken_site_file_or_a_cap_torchrun_exceeds_is_refused_at_load(tmp_path):
    (tmp_path / "site.yaml").write_text("max_memory_mb: 1700\n")
    run = dry_run(tmp_path, "--config", "site_resources=site.yaml")
    assert run.returncode != 0 and "unknown keys ['max_memory_mb']" in run.stdout + run.stderr
    (tmp_path / "site.yaml").write_text("max_threads: 1\n")  # sequence_parallel at P = 2 starts 2
    run = dry_run(tmp_path, "--config", "site_resources=site.yaml")
    assert run.returncode != 0
    assert "site_resources.max_threads=1, but a sequence_parallel job starts 2 threads" in run.stdout + run.stderr
    assert "InputFunctionException" not in run.stdout + run.stderr  # refused once, before planning


def test_recall_jobs_are_sized_from_the_recall_model_and_get_a_gpu_on_cuda():
    """paper.yaml's recall (20,000 steps of 32 x 32K tokens, a 768-wide model) is no small job:
    it asks for a GPU on cuda and far more time than the default, which SMALL_JOB used to give."""
    import yaml

    paper = yaml.safe_load((REPO / "workflow" / "configs" / "paper.yaml").read_text())
    base = checked()
    small, big = cluster("recall", base), cluster("recall", paper, device="cuda")
    assert big["gpu"] == 1 and small["gpu"] == 0
    assert big["runtime"] > small["runtime"] and big["runtime"] > cluster("attention_graph", paper)["runtime"]
    assert cluster("recall", checked({"recall.steps": 10 ** 6}))["runtime"] > small["runtime"]


def test_a_training_job_that_cannot_fit_the_gpu_is_refused_at_load():
    """paper.yaml's micro-batch of 65,536 tokens at the 100,277-token vocabulary: the loss over all
    of it at once needs ~98 GiB of logits alone, over an 80 GB GPU; computed 8,192 positions at a
    time (training.loss_chunk_tokens, as shipped) the job fits."""
    import yaml

    paper = yaml.safe_load((REPO / "workflow" / "configs" / "paper.yaml").read_text())
    check_config(paper, local=False, dry_run=True)
    site = {**NEUTRAL, "gpu_mem_gb": 80}
    job_resources.check_gpu_memory(paper, "cuda", site)  # as shipped: fits
    assert job_resources.train_gpu_bytes(paper, 32768) < 80 * 2 ** 30
    unchunked = {**paper, "training": {**paper["training"], "loss_chunk_tokens": None}}
    assert job_resources.train_gpu_bytes(unchunked, 2048) > 120 * 2 ** 30
    with pytest.raises(ValueError, match=r"config key 'training.micro_batch_tokens'.*train_len "
                                         r"2048 needs about \d+ GiB.*gpu_mem_gb=80"):
        job_resources.check_gpu_memory(unchunked, "cuda", site)
    job_resources.check_gpu_memory(unchunked, "cpu", site)  # a CPU run has no GPU to fit
    wide = {**paper, "variants": [*paper["variants"], {  # a model-size entry, 4x as wide
        "name": "longnet", "id": "longnet_wide", "train_lens": [32768],
        "model_overrides": {"d_model": 3072, "d_ff": 12288, "n_head": 48}}]}
    with pytest.raises(ValueError, match=r"variants\[\d+\] \(longnet_wide\) at train_len 32768"):
        job_resources.check_gpu_memory(wide, "cuda", site)  # its own size, not training.model's
    job_resources.check_gpu_memory(unchunked, "cuda", NEUTRAL)  # no gpu_mem_gb: unchecked
    assert read_site()["gpu_mem_gb"] == 80  # the shipped site file checks an 80 GB GPU


def test_the_chunked_loss_is_the_loss():
    """LanguageModel(targets=, loss_chunk_tokens=): the same loss and gradients as the whole
    micro-batch at once (float summation order aside), and exactly the unchunked path's bits."""
    import torch
    import torch.nn.functional as F

    from longnet.model import LanguageModel, ModelConfig

    torch.manual_seed(0)
    model = LanguageModel(ModelConfig.from_size("tiny", vocab_size=300))
    x = torch.randint(0, 300, (2, 65))
    whole = model(x[:, :-1], targets=x[:, 1:])
    assert torch.equal(whole, F.cross_entropy(model(x[:, :-1]).flatten(0, 1).float(),
                                              x[:, 1:].flatten()))
    whole.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    chunked = model(x[:, :-1], targets=x[:, 1:], loss_chunk_tokens=37)  # 128 = 37 + 37 + 37 + 17
    chunked.backward()
    assert torch.allclose(chunked, whole, rtol=1e-6)
    for a, p in zip(grads, model.parameters()):
        assert torch.allclose(p.grad, a, atol=1e-6)
