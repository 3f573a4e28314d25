"""Every tensor the library makes on a GPU-reachable path takes its device from an input or the
configuration: a static check over longnet/ and baselines/ that each torch factory call passes
`device=` (or derives from a tensor: new_*, *_like, .to), with a short allow-list saying why."""
import ast
from pathlib import Path

import pytest

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


# ---- the GPU-reachable paths, run on meta tensors ------------------------------------------------
# A tensor made on the CPU inside a path that runs on another device fails here ("Tensor on device
# cpu is not on the expected device meta!"), as it would on a GPU; so does a check that reads index
# values on the device (a host sync on a GPU). Meta tensors carry shapes only: no numbers checked.

def _variant_cases():
    import baselines
    for name in baselines.available():
        cls = baselines.variant_class(name)
        for params in ({}, *getattr(cls, "small_params", ())[:2]):
            yield name, params


@pytest.mark.parametrize("name, params", list(_variant_cases()),
                         ids=[f"{n}-{i}" for i, (n, _) in enumerate(_variant_cases())])
def test_every_variant_runs_forward_backward_and_decode_on_another_device(name, params):
    import torch

    import baselines
    meta = torch.device("meta")
    attn = baselines.build(name, num_heads=4, **params)
    q, k, v = (torch.randn(1, 64, 4, 8, device=meta, requires_grad=True) for _ in range(3))
    out = attn(q, k, v, causal=True)
    out.sum().backward()
    assert out.device == meta and all(x.grad.device == meta for x in (q, k, v))
    cache = attn.new_cache(1, 8, device=meta, max_len=64)
    # a RowCache with a keep rule compacts itself with nonzero() (data-dependent: a host sync on a
    # GPU, impossible on meta), so only the fixed-shape caches decode here (LongNet's, vanilla's)
    if cache is not None and getattr(cache, "keeps", None) is None:
        x = torch.randn(1, 1, 4, 8, device=meta)
        cache.append(x, x)
        assert cache.attend(x).device == meta


def test_the_reference_and_a_language_model_step_run_on_another_device():
    import torch

    from longnet.model import LanguageModel, ModelConfig
    from longnet.reference import reference_dilated_attention
    meta = torch.device("meta")
    q = torch.randn(1, 64, 4, 8, device=meta)
    assert reference_dilated_attention(q, q, q, [16, 32], [1, 2]).device == meta
    for attention, params in (("longnet", {"segment_lengths": [16, 32], "dilation_rates": [1, 2]}),
                              ("sparse_fixed", {"block": 16, "summary": 2})):
        with meta:
            model = LanguageModel(ModelConfig.from_size("tiny", vocab_size=300, attention=attention,
                                                        attention_params=params))
        tokens = torch.randint(0, 300, (2, 65), device=meta)
        loss = model(tokens[:, :-1], targets=tokens[:, 1:], loss_chunk_tokens=50)
        loss.backward()
        assert loss.device == meta and all(p.grad.device == meta for p in model.parameters())
