"""Every tensor the library makes on a GPU-reachable path takes its device from an input or the
configuration: a static check over longnet/ and baselines/ that each torch factory call passes
`device=` (or derives from a tensor: new_*, *_like, .to), with a short allow-list saying why."""
import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FACTORIES = {"zeros", "ones", "empty", "full", "arange", "randn", "rand", "randint", "randperm",
             "tensor", "as_tensor", "eye", "linspace", "tril_indices", "triu_indices"}
CPU_BY_DESIGN = "built on the CPU once, then moved to each input's device (BlockSparseVariant.plan)"
ANALYSIS = "a dense (n, n) mask or pattern for tests and the attention-graph analysis, CPU only"
ALLOWED = {  # (file, function) -> why a factory there needs no device=
    ("longnet/backends.py", "<module>"): "the mem-efficient backward's unused philox seed and "
                                         "offset: CPU int64 scalars, as its forward returns them",
    ("longnet/cuda_standins.py", "*"): "CPU stand-ins for CUDA kernels: they run on the CPU only",
    ("longnet/positions.py", "__init__"): "module buffers, moved with the model (.to(device))",
    ("longnet/recall.py", "batch"): "drawn from a CPU generator (the same on every device), "
                                    "moved to the device by train_recall / evaluate_recall",
    ("longnet/recall.py", "train_recall"): "a CPU generator's seed draw",
    ("longnet/train.py", "sample_batch"): "drawn from a CPU generator, moved by _step",
    ("longnet/schedule.py", "pattern"): ANALYSIS,
    ("longnet/sequence_parallel.py", "_check_equal_chunks"): "moved to the current CUDA device "
                                                             "(.cuda()) when the group is NCCL",
    ("baselines/_blocks.py", "band_pieces"): CPU_BY_DESIGN,
    ("baselines/_blocks.py", "query_key_grid"): ANALYSIS,
    ("baselines/blockwise_causal.py", "build_pieces"): CPU_BY_DESIGN,
    ("baselines/blockwise_causal.py", "mask"): ANALYSIS,
    ("baselines/blockwise_causal.py", "pattern"): ANALYSIS,
    ("baselines/longformer.py", "build_pieces"): CPU_BY_DESIGN,
    ("baselines/sparse_fixed.py", "build_pieces"): CPU_BY_DESIGN,
    ("baselines/sparse_strided.py", "build_pieces"): CPU_BY_DESIGN,
    ("baselines/vanilla.py", "mask"): ANALYSIS,
}


def factory_calls_without_device():
    """(file, enclosing function, line, factory) of every torch.<factory>(...) without device=."""
    found = []
    for folder in ("longnet", "baselines"):
        for path in sorted((REPO / folder).rglob("*.py")):
            tree = ast.parse(path.read_text())
            enclosing = {}
            for node in ast.walk(tree):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    for child in ast.walk(node):
                        enclosing[id(child)] = node.name  # innermost wins: walked after outer
            for node in ast.walk(tree):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                        and node.func.attr in FACTORIES and isinstance(node.func.value, ast.Name)
                        and node.func.value.id == "torch"
                        and not any(k.arg == "device" for k in node.keywords)):
                    found.append((str(path.relative_to(REPO)), enclosing.get(id(node), "<module>"),
                                  node.lineno, node.func.attr))
    return found


def test_every_tensor_factory_names_its_device_or_says_why_not():
    unexplained = [f"{file}:{line} torch.{name} in {function}"
                   for file, function, line, name in factory_calls_without_device()
                   if (file, function) not in ALLOWED and (file, "*") not in ALLOWED]
    assert not unexplained, ("a tensor made without device= on a path a GPU input may reach (pass "
                             "device= from an input, or add it to ALLOWED with the reason): "
                             + "; ".join(unexplained))


def test_the_allow_list_has_no_stale_entries():
    seen = {(file, function) for file, function, _, _ in factory_calls_without_device()}
    seen |= {(file, "*") for file, _ in seen}
    assert set(ALLOWED) <= seen, sorted(set(ALLOWED) - seen)


def test_the_scan_finds_a_missing_device(tmp_path, monkeypatch):
    """The check itself: a factory without device= in a new function is reported."""
    folder = tmp_path / "longnet"
    folder.mkdir()
    (folder / "new.py").write_text("import torch\n\ndef f(x):\n    return x + torch.zeros(3)\n")
    (tmp_path / "baselines").mkdir()
    monkeypatch.setattr(__import__(__name__), "REPO", tmp_path)
    assert factory_calls_without_device() == [("longnet/new.py", "f", 4, "zeros")]
