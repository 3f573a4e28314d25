"""The public dilated-attention implementations, measured by this suite's correctness cases.

    pip install --no-deps dilated-attention-pytorch longnet einops   # see "Installing" below
    python benchmarks/peers.py                  # all cases, about 2-3 minutes on 2 CPU cores
    python benchmarks/peers.py --quick          # without the paper-scale cases (seconds)

Implementations (each one skipped, with the reason in its row, when it is not importable):
- "dilated-attention-pytorch" (fkodom, PyPI): `DilatedAttention(segment_lengths, dilation_rates)`
  called on q, k, v (B, N, H, D), as its README shows.
- "longnet" (kyegomez, PyPI, import name long_net): `DilatedAttention(dim, heads, dilation_rate,
  segment_size, causal=...)`, a self-attention module with its own q/k/v projections and ONE
  (w, r) per module. The harness feeds it x = [q | k | v] (B, N, 3*H*D) and sets its projections
  to block selections (proj_q picks q, scaled by sqrt(3H) to undo the 1/sqrt(3*H*D) its kernel
  applies, so that one head of dimension D gets the reference's 1/sqrt(D); proj_k picks k, proj_v
  picks v; biases 0), so its attention sees exactly the suite's q, k, v; output features past
  H*D are 0 by construction and dropped. It returns N/r rows (only the kept ones); the harness
  puts them back at their positions (zeros elsewhere, as the reference has for a single branch).
- "torchscale" (Microsoft's official code, `torchscale.component.dilated_attention`): no PyPI
  release contains it; measured only where installed from its repository.
- "longnet-repro" (this suite's longnet.dilated_attention): the control; every case must pass.

CPU stand-ins (only where the real module is not importable; with the real one, e.g. on a GPU
with xformers, the library runs natively). Each is an exact dense attention with the replaced
function's own conventions:
- xformers.ops.memory_efficient_attention(query, key, value, attn_bias=None, p=0.0, scale=None,
  op=None) on (B, M, H, K) tensors, default scale 1/sqrt(K), attn_bias LowerTriangularMask meaning
  causal with the diagonal kept: here torch's scaled_dot_product_attention on the transposed
  tensors. xformers.ops.LowerTriangularMask and AttentionOp are plain names for it.
- zeta.nn.attention.flash_attention.FlashAttention(causal, dropout, flash=True) (zetascale, whose
  own dependencies would pull another torch): its flash path is torch's
  scaled_dot_product_attention(q, k, v, is_causal=causal) on (batch, heads, n, d) with its
  dropout in training only, and that is what the stand-in runs.

Cases, each against longnet.reference (float64, straight from the definition) on the same inputs
in float32 (max_abs_error), for a multi-branch schedule and a single branch (for one-branch
implementations): forward (non-causal and causal), gradients of q, k, v (non-causal and causal),
a causality probe (change every token from position p on; `leak` is the largest change of an
output before p), dead key rows (key/value rows no query attends: zero gradient), the shapes each
accepts, and the paper's schedule: its branch w = 16384, r = 6 (16384 mod 6 = 4), and all five
branches at N = 32768. Writes results/tables/peers.csv: implementation, version, case,
max_abs_error, leak, status, and the provenance columns.

Installing: both PyPI packages declare dependencies that would replace this torch (longnet pins
torch 2.0.1 through zetascale; dilated-attention-pytorch wants xformers < 0.0.22 and torchscale
0.2.0), so install them with --no-deps, plus einops (pure Python), which both import.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import math
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

from longnet.dilated_attention import dilated_attention
from longnet.io import write_csv
from longnet.provenance import git_commit, provenance
from longnet.reference import reference_dilated_attention

OUT = Path(__file__).resolve().parent.parent / "results" / "tables" / "peers.csv"
TORCHSCALE_INSTALL = "pip install --no-deps git+https://github.com/microsoft/torchscale.git"
MULTI = ([8, 16, 32], [1, 2, 4])   # N = 64: two or more segments of every branch
SINGLE = ([16], [2])                # one branch, r > 1: what a one-(w, r) module can run
PAPER_BRANCH = ([16384], [6])
PAPER = ([2048, 4096, 8192, 16384, 32768], [1, 2, 4, 6, 12])


# ----------------------------------------------------------------------------------------------
# CPU stand-ins for the kernels the libraries import


def _importable(name: str) -> bool:
    try:
        importlib.import_module(name)
        return True
    except Exception:  # noqa: BLE001 - a broken install (e.g. a CUDA-only wheel) counts as absent
        return False


class LowerTriangularMask:
    """Stand-in for xformers.ops.LowerTriangularMask: causal, diagonal kept."""


def memory_efficient_attention(query, key, value, attn_bias=None, p=0.0, scale=None, op=None):
    """Stand-in for xformers.ops.memory_efficient_attention: (B, M, H, K) in and out."""
    if attn_bias is not None and not isinstance(attn_bias, LowerTriangularMask):
        raise NotImplementedError(f"the CPU stand-in knows only LowerTriangularMask, got {attn_bias!r}")
    out = F.scaled_dot_product_attention(query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2),
                                         dropout_p=p, is_causal=attn_bias is not None, scale=scale)
    return out.transpose(1, 2)


class FlashAttention(torch.nn.Module):
    """Stand-in for zeta.nn.attention.flash_attention.FlashAttention (its flash path)."""

    def __init__(self, causal: bool = False, dropout: float = 0.0, flash: bool = True):
        super().__init__()
        self.causal, self.dropout = causal, dropout

    def forward(self, q, k, v, mask=None, attn_bias=None):
        if mask is not None or attn_bias is not None:
            raise NotImplementedError("the CPU stand-in runs FlashAttention without mask or bias, as long_net calls it")
        return F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0,
                                              is_causal=self.causal)


def _install_module(name: str, **attributes) -> None:
    parts = name.split(".")
    for i in range(1, len(parts) + 1):
        sys.modules.setdefault(".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
    for key, value in attributes.items():
        setattr(sys.modules[name], key, value)
    for i in range(1, len(parts)):
        setattr(sys.modules[".".join(parts[:i])], parts[i], sys.modules[".".join(parts[:i + 1])])


def install_stand_ins() -> dict[str, str]:
    """Put the stand-ins where the real modules are missing; {module: what replaced it}."""
    replaced = {}
    if not _importable("xformers.ops"):
        _install_module("xformers.ops", memory_efficient_attention=memory_efficient_attention,
                        LowerTriangularMask=LowerTriangularMask, AttentionOp=tuple)
        replaced["xformers.ops"] = "CPU stand-in: memory_efficient_attention = torch SDPA, (B, M, H, K)"
    if not _importable("zeta.nn.attention.flash_attention"):
        _install_module("zeta.nn.attention.flash_attention", FlashAttention=FlashAttention)
        replaced["zeta.nn.attention.flash_attention"] = "CPU stand-in: FlashAttention = torch SDPA"
    return replaced


# ----------------------------------------------------------------------------------------------
# the implementations, each as attend(q, k, v, segment_lengths, dilation_rates, causal) on (B, N, H, D)


class Unsupported(Exception):
    """The implementation cannot express this case (not an error of its arithmetic)."""


@dataclass
class Peer:
    name: str
    distribution: str | None   # the installed distribution whose version is reported
    module: str                # what must import
    attend: object = None
    skip: str | None = None    # why it is not measured
    version: str = ""


def _fkodom(q, k, v, segment_lengths, dilation_rates, causal):
    from dilated_attention_pytorch.dilated_attention import DilatedAttention
    return DilatedAttention(segment_lengths, dilation_rates)(q, k, v, is_causal=causal)


def _kyegomez(q, k, v, segment_lengths, dilation_rates, causal):
    from long_net.attention import DilatedAttention
    if len(segment_lengths) != 1:
        raise Unsupported("one (w, r) per module: no mixing of branches")
    (w,), (r,) = segment_lengths, dilation_rates
    batch, n, heads, dim = q.shape
    width = heads * dim
    module = DilatedAttention(3 * width, heads, r, w, causal=causal, dtype=q.dtype, device=str(q.device))
    module = module.to(device=q.device, dtype=q.dtype).eval()
    eye = torch.eye(width, dtype=q.dtype, device=q.device)
    with torch.no_grad():
        for i, proj in enumerate((module.proj_q, module.proj_k, module.proj_v)):
            proj.weight.zero_()
            proj.bias.zero_()
            proj.weight[:width, i * width:(i + 1) * width] = eye * (math.sqrt(3 * heads) if i == 0 else 1.0)
    x = torch.cat([t.reshape(batch, n, width) for t in (q, k, v)], dim=-1)
    rows = module(x)[..., :width]
    padded = n + (-n % w)
    kept = torch.arange(padded, device=q.device).view(-1, w)[:, ::r].flatten()  # offset 0 in every segment
    if rows.shape[1] != kept.numel():
        raise RuntimeError(f"returned {rows.shape[1]} rows for N={n} (expected {kept.numel()} kept rows)")
    out = q.new_zeros(batch, padded, width)
    out = out.index_copy(1, kept, rows)
    return out[:, :n].view(batch, n, heads, dim)


def _ours(q, k, v, segment_lengths, dilation_rates, causal):
    return dilated_attention(q, k, v, segment_lengths, dilation_rates, causal=causal)


def _torchscale(q, k, v, segment_lengths, dilation_rates, causal):
    raise Unsupported("torchscale is installed but this harness has no adapter for its module yet")


def peers() -> list[Peer]:
    found = [Peer("dilated-attention-pytorch (fkodom)", "dilated-attention-pytorch",
                  "dilated_attention_pytorch.dilated_attention", _fkodom),
             Peer("longnet (kyegomez)", "longnet", "long_net.attention", _kyegomez),
             Peer("torchscale (official)", "torchscale", "torchscale.component.dilated_attention", _torchscale),
             Peer("longnet-repro (this suite)", None, "longnet.dilated_attention", _ours)]
    for peer in found:
        if peer.distribution is None:
            peer.version = git_commit()
            continue
        try:
            peer.version = importlib.metadata.version(peer.distribution)
        except importlib.metadata.PackageNotFoundError:
            peer.version = "not installed"
        if peer.name.startswith("torchscale") and not _importable(peer.module):
            peer.skip = (f"skipped: no PyPI release of torchscale contains dilated attention; "
                         f"install it from its repository: {TORCHSCALE_INSTALL}")
        elif not _importable(peer.module):
            peer.skip = f"skipped: {peer.module} is not importable (pip install --no-deps {peer.distribution} einops)"
    return found


# ----------------------------------------------------------------------------------------------
# cases


def _inputs(shape, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=g, dtype=torch.float64) for _ in range(3)]


def _error(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.shape != b.shape:
        raise RuntimeError(f"output shape {tuple(a.shape)}, expected {tuple(b.shape)}")
    return float((a.detach().double() - b.detach().double()).abs().max())


def forward_case(attend, schedule, shape, causal, grad=False, seed=0):
    """max |impl - reference| of the output, or (grad) of the gradients of q, k, v under one
    random upstream gradient."""
    q64, k64, v64 = [x.requires_grad_(grad) for x in _inputs(shape, seed)]
    q, k, v = [x.detach().float().requires_grad_(grad) for x in (q64, k64, v64)]
    out = attend(q, k, v, *schedule, causal)  # first: a refusal costs no reference
    expected = reference_dilated_attention(q64, k64, v64, *schedule, causal=causal)
    if not grad:
        return _error(out, expected)
    upstream = torch.randn(expected.shape, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    _error(out, expected)  # shape check
    expected_grads = torch.autograd.grad((expected * upstream).sum(), (q64, k64, v64))
    grads = torch.autograd.grad((out * upstream.float()).sum(), (q, k, v), allow_unused=True)
    return max(_error(torch.zeros_like(e) if g is None else g, e) for g, e in zip(grads, expected_grads))


def causality_leak(attend, schedule, shape, cut, seed=0):
    """Largest change of an output before position `cut` when every token from `cut` on changes."""
    q, k, v = [x.float() for x in _inputs(shape, seed)]
    changed = [x.clone() for x in (q, k, v)]
    for x, fresh in zip(changed, _inputs(shape, seed + 7)):
        x[:, cut:] = fresh[:, cut:].float()
    with torch.no_grad():
        a, b = attend(q, k, v, *schedule, True), attend(*changed, *schedule, True)
    return float((a[:, :cut] - b[:, :cut]).abs().max())


def dead_rows(attend, schedule, shape, seed=0):
    """Share of key/value rows (position, head) no query attends (zero gradient of v; non-causal),
    beside the reference's share for the same schedule."""
    def share(fn, dtype):
        q, k, v = [x.to(dtype) for x in _inputs(shape, seed)]
        v.requires_grad_(True)
        out = fn(q, k, v, *schedule, False)
        (grad,) = torch.autograd.grad(out.sum(), v)
        return float((grad.abs().sum(-1) == 0).double().mean())
    reference = share(lambda q, k, v, w, r, causal: reference_dilated_attention(q, k, v, w, r, causal=causal),
                      torch.float64)
    return share(attend, torch.float32), reference


SHAPES = [  # (case, schedule, (B, N, H, D)) for multi-branch implementations; single-branch below
    ("shape: N=40, not a multiple of w=32", MULTI, (1, 40, 4, 8)),
    ("shape: N=16, shorter than w=32", MULTI, (1, 16, 4, 8)),
    ("shape: H=3, not a multiple of r=4", MULTI, (1, 64, 3, 8)),
    ("shape: w mod r != 0 (w=[10,20], r=[1,3])", ([10, 20], [1, 3]), (1, 40, 4, 8)),
]
SINGLE_SHAPES = [
    ("shape: N=24, not a multiple of w=16", SINGLE, (1, 24, 4, 8)),
    ("shape: N=8, shorter than w=16", SINGLE, (1, 8, 4, 8)),
    ("shape: H=3, not a multiple of r=2", SINGLE, (1, 32, 3, 8)),
    ("shape: w mod r != 0 (w=10, r=3)", ([10], [3]), (1, 40, 4, 8)),
]


def cases(quick: bool):
    """(case name, function of attend -> (max_abs_error, leak, status))."""
    found = []
    for label, schedule in (("", MULTI), (" [one branch]", SINGLE)):
        name = f"w={schedule[0]} r={schedule[1]}"
        shape = (2, 64, 4, 8) if schedule is MULTI else (2, 32, 4, 8)
        for causal in (False, True):
            kind = "causal" if causal else "non-causal"
            found.append((f"forward {kind}, {name}{label}",
                          lambda a, s=schedule, sh=shape, c=causal: (forward_case(a, s, sh, c), None, None)))
            found.append((f"gradient {kind}, {name}{label}",
                          lambda a, s=schedule, sh=shape, c=causal: (forward_case(a, s, sh, c, grad=True), None, None)))
        cut = shape[1] * 5 // 8
        found.append((f"causality probe (tokens >= {cut} changed), {name}{label}",
                      lambda a, s=schedule, sh=shape, c=cut: (None, causality_leak(a, s, sh, c), None)))

        def dead(a, s=schedule, sh=shape):
            share, reference = dead_rows(a, s, sh)
            return None, None, f"dead key rows {share:.3f} (reference {reference:.3f})"
        found.append((f"dead key rows, {name}{label}", dead))
    for causal in (False, True):  # where one head of a one-branch, one-segment module is the whole story
        found.append((f"forward {'causal' if causal else 'non-causal'}, w=[16] r=[2], N=16, H=1",
                      lambda a, c=causal: (forward_case(a, SINGLE, (2, 16, 1, 8), c), None, None)))
    for case, schedule, shape in SHAPES + SINGLE_SHAPES:
        found.append((case, lambda a, s=schedule, sh=shape: (forward_case(a, s, sh, False), None, None)))
    if not quick:
        found.append(("paper branch w=16384 r=6, N=16384, H=6, causal forward",
                      lambda a: (forward_case(a, PAPER_BRANCH, (1, 16384, 6, 8), True), None, None)))
        found.append(("paper schedule w=2K..32K r=1,2,4,6,12, N=32768, H=12, causal forward",
                      lambda a: (forward_case(a, PAPER, (1, 32768, 12, 8), True), None, None)))
    return found


def measure(peer: Peer, case, run, tolerance=1e-4) -> dict:
    row = {"implementation": peer.name, "version": peer.version, "case": case,
           "max_abs_error": float("nan"), "leak": float("nan")}
    if peer.skip:
        return {**row, "status": peer.skip}
    try:
        error, leak, status = run(peer.attend)
    except Unsupported as exc:
        return {**row, "status": f"unsupported: {exc}"}
    except Exception as exc:  # noqa: BLE001 - a refusal or a crash is the measurement
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return {**row, "status": f"error: {type(exc).__name__}: {first_line[:160]}"}
    if error is not None:
        row["max_abs_error"] = error
        status = "ok" if error <= tolerance else f"wrong (> {tolerance:g})"
    if leak is not None:
        row["leak"] = leak
        status = "ok" if leak == 0 else "leaks future tokens"
    return {**row, "status": status}


def run(quick: bool = False, only: list[str] | None = None, out: Path | None = OUT) -> pd.DataFrame:
    replaced = install_stand_ins()
    torch.manual_seed(0)
    rows = []
    for peer in peers():
        if only and not any(key in peer.name for key in only):
            continue
        if peer.skip:
            rows.append(measure(peer, "all cases", None))
            print(f"{peer.name}: {peer.skip}", flush=True)
            continue
        for case, fn in cases(quick):
            rows.append(measure(peer, case, fn))
            print(f"{peer.name:36s} {case:75s} {rows[-1]['status']}", flush=True)
    table = pd.DataFrame(rows)
    stand_ins = "; ".join(f"{module}: {what}" for module, what in replaced.items()) or "none"
    table = table.assign(stand_ins=stand_ins, **provenance({"quick": quick, "only": only}))
    if out is not None:
        write_csv(table, out)
    return table


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="leave out the paper-scale cases")
    parser.add_argument("--only", nargs="*", help="implementations whose name contains one of these")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    run(args.quick, args.only, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
