"""Attention kernels that return the log-sum-exp, behind one small interface.

Every dilated branch, sparse pattern and sequence-parallel partial is "softmax attention over some
rows, merged with others by log-sum-exp", so all the suite needs from a kernel is:

    forward(q, k, v, causal, scale)                  -> (out, lse)
    backward(dout, q, k, v, out, lse, causal, scale) -> (dq, dk, dv)

with q, k, v, out of shape (B, H, L, D) and lse of shape (B, H, L) in float32 (float64 for
float64 input). `causal` means
key j is visible to query i when j <= i (top-left alignment); the suite only asks for causal on
square blocks, where every kernel agrees. backward() takes the output and lse to use in the
softmax recomputation: passing the MERGED output and lse of several partials gives each partial's
share of the exact gradient. (With P = exp(S - lse) and delta = rowsum(dout * out), the softmax
backward dS = P * (dout v^T - delta) only needs the merged lse and out to be the union's: a
kernel that recomputes its own lse or ignores `out` gives wrong gradients here, and the kernel
checks in benchmarks/gpu_check.py test exactly that.)

Backends (flash-attention benchmark style: a backend that cannot run says so, never crashes):
- torch_cpu:      torch's flash kernel for CPU (aten::_scaled_dot_product_flash_attention_for_cpu)
- torch_flash:    torch's CUDA flash kernel (fp16/bf16, head dim a multiple of 8 up to 256)
- torch_efficient: torch's CUDA memory-efficient kernel (fp16/bf16/fp32)
- flash_attn:     flash-attn 2 (pip install flash-attn; CUDA, fp16/bf16, head dim as torch_flash)
- xformers:       xformers memory_efficient_attention (pip install xformers; CUDA)
- math:           plain PyTorch, any device and dtype: the reference, O(L^2) memory per block

The preconditions each CUDA kernel checks, with the source lines they come from, and the CPU
stand-ins that enforce them in the tests: docs/kernels.md and longnet/cuda_standins.py.
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import math
import warnings

import torch

_aten = torch.ops.aten


def default_scale(head_dim: int, scale: float | None) -> float:
    return 1.0 / math.sqrt(head_dim) if scale is None else float(scale)


# CUDA caps grid dimensions y and z at 65,535. Every CUDA kernel here puts the batch in one of
# them: torch's and flash-attn's flash kernels launch grid(num_m_blocks, batch, heads)
# (flash_fwd_launch_template.h, flash_bwd_launch_template.h), the memory-efficient (cutlass)
# kernels grid(num_m_blocks, heads, batch) (kernel_forward.h / kernel_backward.h getBlocksGrid).
# A larger batch fails with "invalid configuration argument" (pytorch#146704,
# flash-attention#1786), so the engine never sends more blocks than this in one call.
CUDA_MAX_GRID_BATCH = 65_535

_UNTRIED = object()
_UNUSED_PHILOX = torch.empty((), dtype=torch.int64)


class Backend:
    """Base class: subclasses set name / module / device_type and implement forward/backward."""

    name = "base"
    package: str | None = None  # pip package that provides the kernel, if not torch itself
    module: str | None = None   # what to import to use it (importing may fail although installed)
    device_type: str | None = None  # the device type the kernel runs on; None: any
    max_batch: int | None = None    # largest kernel batch (B * blocks) per call; None: no limit

    def __init__(self):
        self._import_error = _UNTRIED

    def import_error(self) -> str | None:
        """None when the kernel can be used here; else why not. Tried once and remembered: a
        package can be installed and still fail to import (xformers refusing a flash-attn outside
        its supported range, a wheel built for another torch, a missing CUDA library)."""
        if self._import_error is _UNTRIED:
            self._import_error = None
            if self.module is not None:
                try:
                    importlib.import_module(self.module)
                except Exception as exc:  # noqa: BLE001 - any import failure means "cannot use"
                    self._import_error = f"{type(exc).__name__}: {exc}".splitlines()[0]
        return self._import_error

    def installed(self) -> bool:
        return self.import_error() is None

    def present(self) -> bool:
        """Whether the package is on the path at all (imported or not)."""
        return self.module is None or importlib.util.find_spec(self.module.split(".")[0]) is not None

    # workspace a call holds per (query, key) pair of its blocks: 0 for a fused kernel, which
    # never materialises the scores
    bytes_per_pair = 0

    def supports(self, device: torch.device, dtype: torch.dtype, head_dim: int) -> bool:
        return (self.device_type is None or device.type == self.device_type) and self._supports(dtype, head_dim)

    def _supports(self, dtype: torch.dtype, head_dim: int) -> bool:
        raise NotImplementedError

    def forward(self, q, k, v, causal: bool, scale: float | None):
        raise NotImplementedError

    def backward(self, dout, q, k, v, out, lse, causal: bool, scale: float | None):
        raise NotImplementedError

    def __repr__(self):
        return f"<attention backend {self.name}>"


class TorchCPU(Backend):
    name = "torch_cpu"
    device_type = "cpu"

    def _supports(self, dtype, head_dim):
        return dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16)

    def forward(self, q, k, v, causal, scale):
        return _aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, causal, scale=scale)

    def backward(self, dout, q, k, v, out, lse, causal, scale):
        return _aten._scaled_dot_product_flash_attention_for_cpu_backward(
            dout.contiguous(), q, k, v, out, lse, 0.0, causal, scale=scale)


@functools.lru_cache(maxsize=None)
def _no_dropout_rng_state(device):
    """The (rng_state, unused) pair torch's CUDA flash forward returns when dropout_p == 0
    (flash_api.cpp mha_fwd: uint64 tensors of shapes (2,) and (), never read by mha_bwd unless
    p_dropout > 0). The backward takes them in its philox_seed / philox_offset slots; made once
    per device, not on every backward call."""
    return (torch.empty(2, dtype=torch.uint64, device=device),
            torch.empty((), dtype=torch.uint64, device=device))


class TorchFlash(Backend):
    """torch's CUDA flash kernel (FA2). Unlike F.scaled_dot_product_attention, the aten op does not
    pad the head dim: mha_fwd / mha_bwd require head_size % 8 == 0 and <= 256 (flash_api.cpp)."""

    name = "torch_flash"
    device_type = "cuda"
    max_batch = CUDA_MAX_GRID_BATCH

    def _supports(self, dtype, head_dim):
        return dtype in (torch.float16, torch.bfloat16) and head_dim % 8 == 0 and head_dim <= 256

    def forward(self, q, k, v, causal, scale):
        out, lse = _aten._scaled_dot_product_flash_attention(q, k, v, 0.0, causal, False, scale=scale)[:2]
        return out, lse

    def backward(self, dout, q, k, v, out, lse, causal, scale):
        # cum_seq_q / cum_seq_k: None. A defined tensor selects the varlen kernel
        # (attention_backward.cu, _flash_attention_backward: `if (cumulative_sequence_length_q
        # .defined())` -> mha_varlen_bwd, which requires int32 cu_seqlens); the dense forward
        # returns undefined ones, which reach Python as None.
        seed, offset = _no_dropout_rng_state(q.device)
        return _aten._scaled_dot_product_flash_attention_backward(
            dout.contiguous(), q, k, v, out, lse.contiguous(), None, None, q.shape[2], k.shape[2], 0.0,
            causal, seed, offset, scale=scale)


class TorchEfficient(Backend):
    """torch's CUDA memory-efficient (cutlass) kernel. Its forward returns the lse padded to a
    multiple of 32 (kAlignLSE); the backward reads rows < L through the lse's own strides, so the
    engine's (B, H, L) lse is padded back to that length (and 16-byte aligned rows) before the call."""

    name = "torch_efficient"
    device_type = "cuda"
    max_batch = CUDA_MAX_GRID_BATCH
    LSE_ALIGN = 32

    def _supports(self, dtype, head_dim):
        # the alignment F.scaled_dot_product_attention itself asks of this kernel (sdp_utils.cpp,
        # check_head_dim_size_mem_efficient): 8 for half types, 4 for float32
        align = 4 if dtype == torch.float32 else 8
        return dtype in (torch.float16, torch.bfloat16, torch.float32) and head_dim % align == 0

    def forward(self, q, k, v, causal, scale):
        out, lse = _aten._scaled_dot_product_efficient_attention(q, k, v, None, True, 0.0, causal, scale=scale)[:2]
        return out, lse[..., : q.shape[2]]

    def backward(self, dout, q, k, v, out, lse, causal, scale):
        pad = (-lse.shape[-1]) % self.LSE_ALIGN
        lse = torch.nn.functional.pad(lse, (0, pad)).contiguous()
        # philox seed / offset: the empty int64 scalars the forward returns without dropout
        # (attention.cu, _efficient_attention_forward); read only when dropout_p > 0
        seed = offset = _UNUSED_PHILOX
        # the kernel reads out as (B, L, H, D) rows, o_strideM == H * D (kernel_backward.h): the
        # layout its own forward returns, restored here whatever view the caller passes
        out = out.transpose(1, 2).contiguous().transpose(1, 2)
        dq, dk, dv, _ = _aten._scaled_dot_product_efficient_attention_backward(
            dout.contiguous(), q, k, v, None, out, lse, seed, offset, 0.0, [True, True, True, False], causal,
            scale=scale)
        return dq, dk, dv


class FlashAttn(Backend):
    """flash-attn 2 forward; the backward runs torch's CUDA flash backward, the same FA2 kernel,
    because flash-attn's private backward signature changes between releases. So the head dim
    follows torch's unpadded rule (a multiple of 8, at most 256)."""

    name = "flash_attn"
    package = "flash-attn"
    module = "flash_attn"
    device_type = "cuda"
    max_batch = CUDA_MAX_GRID_BATCH

    def _supports(self, dtype, head_dim):
        return TorchFlash._supports(self, dtype, head_dim)

    def forward(self, q, k, v, causal, scale):
        from flash_attn import flash_attn_func

        out, lse, _ = flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                      softmax_scale=scale, causal=causal, return_attn_probs=True)
        return out.transpose(1, 2), lse

    backward = TorchFlash.backward


class XFormers(Backend):
    name = "xformers"
    package = "xformers"
    module = "xformers.ops"
    device_type = "cuda"
    max_batch = CUDA_MAX_GRID_BATCH

    def _supports(self, dtype, head_dim):
        # xformers dispatches to an operator whose inputs it can align: fmha/flash.py checks
        # check_lastdim_alignment_stride1(..., 8) and fmha/cutlass.py's minimum GEMM alignment on
        # sm80+ is 8 for half types, 4 for float32; otherwise no operator (NotImplementedError)
        return TorchEfficient._supports(self, dtype, head_dim)

    @staticmethod
    def _bias(causal):
        from xformers.ops import fmha
        return fmha.attn_bias.LowerTriangularMask() if causal else None

    def forward(self, q, k, v, causal, scale):
        from xformers.ops import fmha

        out, lse = fmha.memory_efficient_attention_forward_requires_grad(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_bias=self._bias(causal), scale=scale)
        return out.transpose(1, 2), lse[..., : q.shape[2]].float()

    def backward(self, dout, q, k, v, out, lse, causal, scale):
        from xformers.ops import fmha

        dq, dk, dv = fmha.memory_efficient_attention_backward(
            dout.transpose(1, 2), out.transpose(1, 2), lse.contiguous(), q.transpose(1, 2), k.transpose(1, 2),
            v.transpose(1, 2), attn_bias=self._bias(causal), scale=scale)
        return dq.transpose(1, 2), dk.transpose(1, 2), dv.transpose(1, 2)


class Math(Backend):
    """Explicit softmax in float32 (float64 for float64 input): slow, exact, runs everywhere."""

    name = "math"
    # it materialises its (Lq, Lk) matrices: scores, probabilities and, in the backward, their two
    # gradients, 4 bytes each in float32 (the engine doubles it for float64): callers bound the
    # blocks per call by it
    bytes_per_pair = 16

    def _supports(self, dtype, head_dim):
        return dtype.is_floating_point

    @staticmethod
    def _probs_inputs(q, k, causal, scale):
        acc = torch.float64 if q.dtype == torch.float64 else torch.float32
        scores = torch.einsum("bhid,bhjd->bhij", q.to(acc), k.to(acc)) * default_scale(q.shape[-1], scale)
        if causal:
            lq, lk = q.shape[2], k.shape[2]
            visible = torch.ones(lq, lk, dtype=torch.bool, device=q.device).tril()
            scores = scores.masked_fill(~visible, float("-inf"))
        return scores, acc

    def forward(self, q, k, v, causal, scale):
        scores, acc = self._probs_inputs(q, k, causal, scale)
        lse = torch.logsumexp(scores, dim=-1)
        out = torch.einsum("bhij,bhjd->bhid", torch.exp(scores - lse[..., None]), v.to(acc))
        return out.to(q.dtype), lse.float() if acc == torch.float32 else lse

    def backward(self, dout, q, k, v, out, lse, causal, scale):
        scores, acc = self._probs_inputs(q, k, causal, scale)
        probs = torch.exp(scores - lse.to(acc)[..., None])
        dout, out = dout.to(acc), out.to(acc)
        dv = torch.einsum("bhij,bhid->bhjd", probs, dout)
        dprobs = torch.einsum("bhid,bhjd->bhij", dout, v.to(acc))
        dscores = probs * (dprobs - (dout * out).sum(-1, keepdim=True)) * default_scale(q.shape[-1], scale)
        dq = torch.einsum("bhij,bhjd->bhid", dscores, k.to(acc))
        dk = torch.einsum("bhij,bhid->bhjd", dscores, q.to(acc))
        return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)


# In "auto" order: the first backend that can be used here and supports the input is taken.
BACKENDS: dict[str, Backend] = {b.name: b for b in
                                (FlashAttn(), TorchFlash(), XFormers(), TorchEfficient(), TorchCPU(), Math())}
CUDA_BACKENDS = tuple(name for name, b in BACKENDS.items() if b.device_type == "cuda")
_WARNED: set[str] = set()


def _usable(backend: Backend, device, dtype, head_dim) -> bool:
    return backend.installed() and backend.supports(device, dtype, head_dim)


def get_backend(name: str = "auto", device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                head_dim: int = 64) -> Backend:
    """The named backend, or the fastest one that supports (device, dtype, head_dim) for "auto".

    "auto" skips a package that is installed but fails to import, with one warning that says why.
    An explicitly named backend that cannot be used, or cannot run this input, is an error that
    says what to install, why the import failed, or which backends can.
    """
    device = torch.device(device)
    if name == "auto":
        for backend in BACKENDS.values():
            if backend.supports(device, dtype, head_dim) and not backend.installed() and backend.present() \
                    and backend.name not in _WARNED:
                _WARNED.add(backend.name)
                warnings.warn(f"attention backend {backend.name!r} is installed but cannot be used "
                              f"({backend.import_error()}); falling back to the next backend", stacklevel=2)
            if _usable(backend, device, dtype, head_dim):
                return backend
        raise RuntimeError(f"no attention backend supports device={device}, dtype={dtype}, head_dim={head_dim}")
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {['auto', *BACKENDS]}, got {name!r}")
    backend = BACKENDS[name]
    if not backend.installed():
        if not backend.present():
            raise ImportError(f"backend {name!r} needs the package {backend.package!r}: "
                              f"pip install {backend.package} (CUDA only)")
        raise ImportError(f"backend {name!r}: the package {backend.package!r} is installed but cannot be "
                          f"imported: {backend.import_error()}")
    if not backend.supports(device, dtype, head_dim):
        raise ValueError(f"backend {name!r} does not support device={device}, dtype={dtype}, "
                         f"head_dim={head_dim}; usable here: {available_backends(device, dtype, head_dim)}")
    return backend


def available_backends(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                       head_dim: int = 64) -> list[str]:
    device = torch.device(device)
    return [n for n, b in BACKENDS.items() if _usable(b, device, dtype, head_dim)]


def merge_attention(out_a, lse_a, out_b, lse_b):
    """Merge two partial attentions over disjoint key sets into one, by log-sum-exp.

    out_* (..., D) and lse_* (...) in any layout that matches; rows where both lse are -inf (no
    visible key) stay (0, -inf). Returns float32 (float64 for float64 input).
    """
    acc = torch.float64 if out_a.dtype == torch.float64 else torch.float32
    lse = torch.logaddexp(lse_a.to(acc), lse_b.to(acc))
    finite = torch.isfinite(lse)
    safe = torch.where(finite, lse, torch.zeros_like(lse))
    weight_a = torch.where(finite, torch.exp(lse_a.to(acc) - safe), torch.zeros_like(lse))
    weight_b = torch.where(finite, torch.exp(lse_b.to(acc) - safe), torch.zeros_like(lse))
    out = out_a.to(acc) * weight_a[..., None] + out_b.to(acc) * weight_b[..., None]
    return out, lse
