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


def test_gpu_check_quick_runs_on_cpu_with_standins(tmp_path):
    """The script cannot rot unnoticed: its quick form runs every section on the CPU, the CUDA
    backends through the stand-ins, and every check passes."""
    import json
    assert _gpu_check().main(["--quick", "--standins", "--device", "cpu", "--out", str(tmp_path)]) == 0
    (result,) = tmp_path.glob("*/gpu_check.json")
    rows = json.loads(result.read_text())["rows"]
    sections = {row["section"] for row in rows}
    assert sections == {"env", "kernels", "grid", "dilated", "baselines", "latency", "train", "nccl", "decode"}
    kernels = {row["case"].split()[0] for row in rows if row["section"] == "kernels"}
    assert {"flash_attn", "torch_flash", "xformers", "torch_efficient"} <= kernels
