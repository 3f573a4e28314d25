"""A write killed between writing and renaming leaves longnet.io's temporary file; the next run
removes it (onstart, workflow/rules/common.smk), and nothing else: not good results, not files
outside results_dir/work_dir, not while another run holds a lock."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from longnet.io import is_temporary

REPO = Path(__file__).resolve().parents[1]
SMOKE = yaml.safe_load((REPO / "workflow" / "configs" / "smoke.yaml").read_text())
RESULTS, WORK = SMOKE["results_dir"], SMOKE["work_dir"]
TARGET = f"{WORK}/distributed/P1.csv"  # one cheap real job

KILLED_FIGURE_WRITE = """
import sys, time
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
from longnet.io import atomic_path
fig, ax = plt.subplots()
ax.plot([0, 1], [1, 0])
with atomic_path(sys.argv[1]) as tmp:
    fig.savefig(tmp)
    print("written", flush=True)
    time.sleep(600)  # killed here, before the rename
"""


def kill_a_figure_write(path: Path) -> Path:
    """SIGKILL a process inside atomic_path(path) after it wrote the figure; its temporary."""
    child = subprocess.Popen([sys.executable, "-c", KILLED_FIGURE_WRITE, str(path)],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "written"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    left = [p for p in path.parent.iterdir() if is_temporary(p.name)]
    assert len(left) == 1 and left[0].name.startswith(f".{path.name}.")  # the kill left it
    assert not path.exists()
    return left[0]


def snakemake(*args, cwd):
    return subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"),
                           *args], cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_the_next_run_removes_a_killed_writes_temporary_and_nothing_else(tmp_path):
    config = yaml.safe_load(yaml.safe_dump(SMOKE))
    config["distributed"]["world_sizes"] = [1]
    (tmp_path / "smoke.yaml").write_text(yaml.safe_dump(config))
    figures, work = tmp_path / RESULTS / "figures", tmp_path / WORK
    stale = kill_a_figure_write(figures / "figure1_scaling.png")
    stale_work = kill_a_figure_write(work / "train" / "x" / "curve.png")
    # what must stay: a good figure, look-alikes that are not atomic_path's names, and a real
    # temporary outside results_dir and work_dir
    good = figures / "figure2.png"
    good.write_bytes(b"png")
    alike = [figures / ".figure2.png.notrand.png", figures / ".figure2.png.ABCDEFGH.png",
             figures / ".figure2.png.abcdefgh.csv", figures / ".hidden"]
    for path in alike:
        path.write_bytes(b"keep")
    outside = kill_a_figure_write(tmp_path / "elsewhere" / "figure.png")

    # another run's lock (on other files) in this folder: the sweep waits
    locks = tmp_path / ".snakemake" / "locks"
    locks.mkdir(parents=True)
    (locks / "7.output.lock").write_text(str(tmp_path / "some" / "other" / "output.csv") + "\n")
    run = snakemake(TARGET, "--cores", "1", "--configfile", "smoke.yaml", cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Not removing stale temporary files: another run holds" in run.stderr
    assert stale.exists() and stale_work.exists()

    (locks / "7.output.lock").unlink(missing_ok=True)  # that run has ended (and Snakemake
    # removes the whole locks folder when a run ends)
    run = snakemake(TARGET, "--cores", "1", "--forcerun", "sequence_parallel",
                    "--configfile", "smoke.yaml", cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert not stale.exists() and not stale_work.exists()
    assert f"Removed a stale temporary file (a killed write): {RESULTS}/figures/{stale.name}" \
        in run.stderr
    assert not [p for root in (tmp_path / RESULTS, work) for p in root.rglob("*")
                if is_temporary(p.name)]
    assert good.read_bytes() == b"png"
    assert all(path.read_bytes() == b"keep" for path in alike)
    assert outside.exists()
    assert (tmp_path / TARGET).is_file()
