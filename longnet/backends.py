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
share of the exact gradient (the identity in LONGNET_NOTES.md, section 1).

Backends (flash-attention benchmark style: a backend that cannot run says so, never crashes):
- torch_cpu:      torch's flash kernel for CPU (aten::_scaled_dot_product_flash_attention_for_cpu)
- torch_flash:    torch's CUDA flash kernel (fp16/bf16)
- torch_efficient: torch's CUDA memory-efficient kernel (any float dtype)
- flash_attn:     flash-attn 2 (pip install flash-attn; CUDA, fp16/bf16)
- xformers:       xformers memory_efficient_attention (pip install xformers; CUDA)
- math:           plain PyTorch, any device and dtype: the reference, O(L^2) memory per block
"""
from __future__ import annotations

import importlib.util
import math

import torch

_aten = torch.ops.aten


def default_scale(head_dim: int, scale: float | None) -> float:
    return 1.0 / math.sqrt(head_dim) if scale is None else float(scale)


class Backend:
    """Base class: subclasses set name/package and implement forward/backward."""

    name = "base"
    package: str | None = None  # pip package that provides the kernel, if not torch itself

    def installed(self) -> bool:
        return self.package is None or importlib.util.find_spec(self.package.replace("-", "_")) is not None

    def supports(self, device: torch.device, dtype: torch.dtype, head_dim: int) -> bool:
        raise NotImplementedError

    def forward(self, q, k, v, causal: bool, scale: float | None):
        raise NotImplementedError

    def backward(self, dout, q, k, v, out, lse, causal: bool, scale: float | None):
        raise NotImplementedError

    def __repr__(self):
        return f"<attention backend {self.name}>"


class TorchCPU(Backend):
    name = "torch_cpu"

    def supports(self, device, dtype, head_dim):
        return device.type == "cpu" and dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16)

    def forward(self, q, k, v, causal, scale):
        return _aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, causal, scale=scale)

    def backward(self, dout, q, k, v, out, lse, causal, scale):
        return _aten._scaled_dot_product_flash_attention_for_cpu_backward(
            dout.contiguous(), q, k, v, out, lse, 0.0, causal, scale=scale)


class TorchFlash(Backend):
    name = "torch_flash"

    def supports(self, device, dtype, head_dim):
        return device.type == "cuda" and dtype in (torch.float16, torch.bfloat16) and head_dim <= 256

    def forward(self, q, k, v, causal, scale):
        out, lse = _aten._scaled_dot_product_flash_attention(q, k, v, 0.0, causal, False, scale=scale)[:2]
        return out, lse

    def backward(self, dout, q, k, v, out, lse, causal, scale):
        empty = torch.empty(0, dtype=torch.int64, device=q.device)
        return _aten._scaled_dot_product_flash_attention_backward(
            dout.contiguous(), q, k, v, out, lse.contiguous(), empty, empty, q.shape[2], k.shape[2], 0.0,
            causal, empty, empty, scale=scale)


class TorchEfficient(Backend):
    name = "torch_efficient"

    def supports(self, device, dtype, head_dim):
        return device.type == "cuda" and dtype in (torch.float16, torch.bfloat16, torch.float32)

    def forward(self, q, k, v, causal, scale):
        out, lse = _aten._scaled_dot_product_efficient_attention(q, k, v, None, True, 0.0, causal, scale=scale)[:2]
        return out, lse[..., : q.shape[2]]  # the kernel pads lse's length to a multiple of 32

    def backward(self, dout, q, k, v, out, lse, causal, scale):
        empty = torch.empty(0, dtype=torch.int64, device=q.device)
        pad = (-lse.shape[-1]) % 32
        lse = torch.nn.functional.pad(lse, (0, pad)).contiguous()
        dq, dk, dv, _ = _aten._scaled_dot_product_efficient_attention_backward(
            dout.contiguous(), q, k, v, None, out, lse, empty, empty, 0.0, [True, True, True, False], causal,
            scale=scale)
        return dq, dk, dv


class FlashAttn(Backend):
    """flash-attn 2 forward; the backward runs torch's CUDA flash backward, the same FA2 kernel,
    because flash-attn's private backward signature changes between releases."""

    name = "flash_attn"
    package = "flash-attn"

    def supports(self, device, dtype, head_dim):
        return device.type == "cuda" and dtype in (torch.float16, torch.bfloat16) and head_dim <= 256

    def forward(self, q, k, v, causal, scale):
        from flash_attn import flash_attn_func

        out, lse, _ = flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                      softmax_scale=scale, causal=causal, return_attn_probs=True)
        return out.transpose(1, 2), lse

    backward = TorchFlash.backward


class XFormers(Backend):
    name = "xformers"
    package = "xformers"

    def supports(self, device, dtype, head_dim):
        return device.type == "cuda" and dtype in (torch.float16, torch.bfloat16, torch.float32)

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

    def supports(self, device, dtype, head_dim):
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


BACKENDS: dict[str, Backend] = {b.name: b for b in
                                (FlashAttn(), TorchFlash(), XFormers(), TorchEfficient(), TorchCPU(), Math())}
# "auto" takes the first backend, in this order, that is installed and supports the input.
AUTO_ORDER = ("flash_attn", "torch_flash", "xformers", "torch_efficient", "torch_cpu", "math")


def get_backend(name: str = "auto", device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                head_dim: int = 64) -> Backend:
    """The named backend, or the fastest one that supports (device, dtype, head_dim) for "auto".

    An explicitly named backend that is not installed, or cannot run this input, is an error that
    says what to install or which backends can.
    """
    device = torch.device(device)
    if name == "auto":
        for candidate in AUTO_ORDER:
            backend = BACKENDS[candidate]
            if backend.installed() and backend.supports(device, dtype, head_dim):
                return backend
        raise RuntimeError(f"no attention backend supports device={device}, dtype={dtype}")
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {['auto', *BACKENDS]}, got {name!r}")
    backend = BACKENDS[name]
    if not backend.installed():
        raise ImportError(f"backend {name!r} needs the package {backend.package!r}: "
                          f"pip install {backend.package} (CUDA only)")
    if not backend.supports(device, dtype, head_dim):
        usable = [n for n in AUTO_ORDER if BACKENDS[n].installed() and BACKENDS[n].supports(device, dtype, head_dim)]
        raise ValueError(f"backend {name!r} does not support device={device}, dtype={dtype}, "
                         f"head_dim={head_dim}; usable here: {usable}")
    return backend


def available_backends(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                       head_dim: int = 64) -> list[str]:
    device = torch.device(device)
    return [n for n in AUTO_ORDER if BACKENDS[n].installed() and BACKENDS[n].supports(device, dtype, head_dim)]


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
