"""The smoke pipeline through workflow/profiles/slurm on a real single-node SLURM cluster started
here: Debian's slurm-wlm and munge (installed with apt-get when missing), munged, slurmctld and slurmd
run from a temporary directory with their own key, socket, ports, state and logs, no cgroups and no
accounting (so the profile's copy sets `slurm-status-command: squeue`); while it runs,
/etc/slurm/slurm.conf is a link to its configuration (skipped if that file already exists). Every job that is not a
local rule must have been an sbatch job that completed, and the run's results must be complete.

Needs root and a Debian-like system; skipped, saying why, otherwise. Not part of the default run
(pyproject's addopts deselect the `slurm` marker): run it with

    .venv/bin/pytest -m slurm tests/test_slurm.py -s

It stops only the daemons it started (by their process ids)."""
import importlib.util
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "workflow" / "configs" / "smoke.yaml"
DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "mungekey")
PARTITION = "debug"


def run(*cmd, env=None, timeout=600, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, **kw)


def install_what_is_missing():
    """slurm-wlm and munge with apt-get, the executor plugin with pip; pytest.skip if impossible."""
    if os.geteuid() != 0:
        pytest.skip("needs root (starts munged, slurmctld and slurmd)")
    if not all(shutil.which(name) for name in DAEMONS):
        if not shutil.which("apt-get"):
            pytest.skip("slurm-wlm and munge are not installed and there is no apt-get")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        install = ("apt-get", "install", "-y", "-q", "slurm-wlm", "munge")
        if run(*install, env=env).returncode != 0:
            run("apt-get", "update", "-q", env=env)
            done = run(*install, env=env)
            if done.returncode != 0:
                pytest.skip(f"apt-get install slurm-wlm munge failed: {done.stderr[-500:]}")
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        done = run(sys.executable, "-m", "pip", "install", "-q", "snakemake-executor-plugin-slurm>=1.0")
        if done.returncode != 0:
            pytest.skip(f"pip install snakemake-executor-plugin-slurm failed: {done.stderr[-500:]}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def slurm_conf(root: Path, host: str, node: str) -> str:
    """One node (as `slurmd -C` describes this machine), one partition, no cgroups, no accounting.
    MinJobAge keeps finished jobs visible to squeue for 10 minutes (the plugin's status source)."""
    return "\n".join([
        "ClusterName=longnet-test", f"SlurmctldHost={host}",
        f"SlurmctldPort={free_port()}", f"SlurmdPort={free_port()}",
        "SlurmUser=root", "SlurmdUser=root",
        "AuthType=auth/munge", "CredType=cred/munge", f"AuthInfo=socket={root}/munge/munge.sock",
        f"StateSaveLocation={root}/state", f"SlurmdSpoolDir={root}/spool",
        f"SlurmctldPidFile={root}/slurmctld.pid", f"SlurmdPidFile={root}/slurmd.pid",
        f"SlurmctldLogFile={root}/slurmctld.log", f"SlurmdLogFile={root}/slurmd.log",
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
        "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core_Memory",
        "AccountingStorageType=accounting_storage/none", "JobAcctGatherType=jobacct_gather/none",
        "JobCompType=jobcomp/none", "MpiDefault=none", "ReturnToService=2", "MinJobAge=600",
        f"{node} State=UNKNOWN",
        f"PartitionName={PARTITION} Nodes={host} Default=YES MaxTime=INFINITE State=UP", ""])


def tail(path: Path, n=2000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else f"({path.name}: none)"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A running one-node cluster: the environment (SLURM_CONF) its clients need."""
    install_what_is_missing()
    root = tmp_path_factory.mktemp("slurm")
    for sub in ("state", "spool"):
        (root / sub).mkdir()
    (root / "munge").mkdir(mode=0o755)
    (root / "key").mkdir(mode=0o700)
    key = root / "key" / "munge.key"
    if run("mungekey", "--create", "--keyfile", str(key)).returncode != 0:
        pytest.skip("mungekey could not make a key")
    key.chmod(0o600)
    probe = run("slurmd", "-C")
    node = next((line for line in probe.stdout.splitlines() if line.startswith("NodeName=")), None)
    if node is None:
        pytest.skip(f"slurmd -C did not describe this machine: {probe.stderr[-300:]}")
    host = node.split()[0].split("=", 1)[1]
    # The plugin's job step drops SLURM_* variables (SLURM_CONF too) before its srun, which then
    # reads /etc/slurm/slurm.conf, as on any real cluster: ours goes there while the test runs.
    system_conf = Path("/etc/slurm/slurm.conf")
    if system_conf.exists() or system_conf.is_symlink():
        pytest.skip(f"{system_conf} exists: this machine has its own SLURM configuration")
    conf = root / "slurm.conf"
    conf.write_text(slurm_conf(root, host, node))
    env = dict(os.environ, SLURM_CONF=str(conf))
    started = []
    system_conf.parent.mkdir(exist_ok=True)
    system_conf.symlink_to(conf)
    try:
        started.append(subprocess.Popen(
            ["munged", "--foreground", "--force", f"--socket={root}/munge/munge.sock",
             f"--key-file={key}", f"--log-file={root}/munged.log",
             f"--pid-file={root}/munged.pid", f"--seed-file={root}/munged.seed"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.time() + 20
        while not (root / "munge" / "munge.sock").exists():
            if time.time() > deadline or started[-1].poll() is not None:
                pytest.skip(f"munged did not start: {tail(root / 'munged.log')}")
            time.sleep(0.2)
        for daemon in (["slurmctld", "-D", "-f", str(conf)], ["slurmd", "-D", "-f", str(conf)]):
            started.append(subprocess.Popen(daemon, env=env, stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL))
        deadline = time.time() + 60
        while run("sinfo", "-h", "-o", "%t", env=env, timeout=30).stdout.strip() != "idle":
            if time.time() > deadline or any(p.poll() is not None for p in started):
                pytest.skip("slurmctld/slurmd did not bring the node up: "
                            f"{tail(root / 'slurmctld.log')}\n{tail(root / 'slurmd.log')}")
            time.sleep(1)
        yield env
    finally:
        for process in reversed(started):  # only what this fixture started
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        system_conf.unlink()


def site_profile(path: Path) -> Path:
    """The committed profile, copied and edited as workflow/README.md tells a site to: its
    placeholders filled in (this cluster's partition, no accounts), squeue for job status."""
    profile = yaml.safe_load((REPO / "workflow" / "profiles" / "slurm" / "config.yaml").read_text())
    del profile["default-resources"]["slurm_account"]
    profile["slurm-no-account"] = True
    profile["slurm-status-command"] = "squeue"
    profile["slurm-init-seconds-before-status-checks"] = 10  # a 10-minute test, not a 3-day run
    profile["default-resources"]["slurm_partition"] = PARTITION
    for resources in profile["set-resources"].values():
        resources["slurm_partition"] = PARTITION
    assert "YOUR_" not in yaml.safe_dump(profile)
    path.mkdir()
    (path / "config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return path


def localrules() -> set[str]:
    text = (REPO / "Snakefile").read_text()
    return {name.strip() for name in re.search(r"^localrules:(.*)$", text, re.M)[1].split(",")}


def job_counts(stdout: str) -> dict[str, int]:
    table = stdout[stdout.index("Job stats:"):]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def test_the_smoke_pipeline_runs_as_slurm_jobs_through_the_profile(cluster, tmp_path):
    profile = site_profile(tmp_path / "my-site")
    smoke = yaml.safe_load(SMOKE.read_text())
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--profile",
               str(profile), "--configfile", str(SMOKE)]
    plan = run(*command, "-n", env=cluster, cwd=tmp_path)
    assert plan.returncode == 0, plan.stdout[-3000:] + plan.stderr[-3000:]
    expected = {rule: n for rule, n in job_counts(plan.stdout).items()
                if rule not in localrules() | {"total"}}
    # one train job per (variant, training length, seed)
    assert expected["train"] == sum(len(v["train_lens"]) for v in smoke["variants"]) * len(
        smoke.get("seeds", [0]))

    started = time.time()
    done = run(*command, env=cluster, cwd=tmp_path, timeout=1800)
    wall = time.time() - started
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-5000:]
    print(f"\nsmoke pipeline through SLURM: {wall:.0f} s, jobs {expected}")

    # every cluster job was an sbatch job of this cluster, tagged with its rule, and completed
    jobs = run("squeue", "--states=all", "-h", "-o", "%i|%T|%k", env=cluster).stdout.split()
    ran = [job.split("|") for job in jobs]
    assert all(state == "COMPLETED" for _, state, _ in ran), ran
    by_rule = {rule: sum(comment == f"rule_{rule}" or comment.startswith(f"rule_{rule}_wildcards")
                         for _, _, comment in ran) for rule in expected}
    assert by_rule == expected
    for job_id, _, _ in ran:
        assert re.search(rf"\b{job_id}\b", done.stdout + done.stderr), job_id

    # the results are complete: every table and figure, the provenance and the results README
    from analysis.figures import FIGURES
    from analysis.tables import TABLES

    results = tmp_path / smoke["results_dir"]
    # every table the configuration fills (model_size.csv is empty without a model_size section)
    empty_by_design = set() if smoke.get("model_size") else {"model_size"}
    for name in TABLES:
        table = results / "tables" / f"{name}.csv"
        assert table.exists(), name
        if name not in empty_by_design:
            assert len(pd.read_csv(table)) > 0, name
    for name in FIGURES:
        assert (results / "figures" / f"{name}.png").stat().st_size > 0, name
    assert (results / "provenance.json").exists() and (results / "README.md").exists()
    again = run(*command, "-n", env=cluster, cwd=tmp_path)
    assert "Nothing to be done" in again.stdout + again.stderr
