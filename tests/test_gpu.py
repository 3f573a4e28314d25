"""On a CUDA machine: the whole GPU check (benchmarks/gpu_check.py) must pass. `pytest -m gpu`."""
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.gpu
def test_gpu_check_passes_on_this_gpu(tmp_path):
    assert _gpu_check().main(["--device", "cuda", "--out", str(tmp_path)]) == 0


@pytest.mark.slow
def test_gpu_check_quick_runs_on_cpu_with_standins(tmp_path):
    """The script cannot rot unnoticed: its quick form runs every section on the CPU, the CUDA
    backends through the stand-ins, and every check passes."""
    import json
    assert _gpu_check().main(["--quick", "--standins", "--device", "cpu", "--out", str(tmp_path)]) == 0
    (result,) = tmp_path.glob("*/gpu_check.json")
    rows = json.loads(result.read_text())["rows"]
    sections = {row["section"] for row in rows}
    assert sections == {"env", "kernels", "grid", "dilated", "speed", "baselines", "latency", "train",
                        "nccl", "decode"}
    speed = [row for row in rows if row["section"] == "speed"]
    assert any(row["case"] == "fa2 blocks N=1024 w=1024 r=8" for row in speed)  # extended to N
    ratio = next(row for row in speed if row["case"].startswith("longnet"))
    assert ratio["status"] in ("ok", "below") and ratio["fraction_of_fa2"] > 0
    provenance = json.loads(result.read_text())["provenance"]
    assert {"version_torch", "version_cuda", "version_flash_attn", "version_xformers",
            "version_driver", "version_gpu"} <= set(provenance)
    kernels = {row["case"].split()[0] for row in rows if row["section"] == "kernels"}
    assert {"flash_attn", "torch_flash", "xformers", "torch_efficient"} <= kernels


def test_gpu_check_keeps_every_finished_row_and_skips_what_the_budget_cannot_hold(tmp_path,
                                                                              monkeypatch):
    """Results are rewritten after every section: a run stopped mid-way (here a section that
    raises KeyboardInterrupt, as a time limit would) leaves the rows of the sections before it;
    a section whose estimate would overrun --budget-s is a skip row saying so."""
    import json
    check = _gpu_check()

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt("time limit")
    monkeypatch.setattr(check, "check_kernels", stopped)
    with pytest.raises(KeyboardInterrupt):
        check.main(["--quick", "--device", "cpu", "--out", str(tmp_path),
                    "--sections", "env", "kernels"])
    (result,) = tmp_path.glob("*/gpu_check.json")
    rows = json.loads(result.read_text())["rows"]
    assert rows and {row["section"] for row in rows} == {"env"}

    assert check.main(["--quick", "--device", "cpu", "--out", str(tmp_path / "tight"),
                       "--budget-s", "0.5", "--sections", "env", "latency"]) == 0
    (result,) = (tmp_path / "tight").glob("*/gpu_check.json")
    rows = json.loads(result.read_text())["rows"]
    skipped = [row for row in rows if row["section"] == "latency"]
    assert len(skipped) == 1 and skipped[0]["status"] == "skip"
    assert "skipped: budget" in skipped[0]["message"]
