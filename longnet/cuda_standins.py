"""CPU stand-ins for the CUDA attention kernels the suite calls, for testing the CUDA call sites
on a machine without a GPU.

Each stand-in has the real op's signature, enforces the preconditions the real kernel checks (the
message says which source it comes from), and returns what the real op returns: the same tuple
layout, shapes, dtypes, memory layout of the outputs and lse padding. The arithmetic is plain
float32 math, so outputs are exact up to the rounding of the output dtype. docs/kernels.md lists
every rule with its source.

    from longnet.cuda_standins import cuda_standins
    with cuda_standins():
        out = dilated_attention(q_bf16, k_bf16, v_bf16, w, r, backend="torch_flash")   # CPU tensors

Inside the context:
- `torch.ops.aten` as seen by longnet.backends has stand-ins for
  _scaled_dot_product_flash_attention(_backward) and _scaled_dot_product_efficient_attention(_backward);
- `flash_attn` (flash_attn_func) and `xformers.ops.fmha` are importable stand-in modules (their
  real packages, if any, are hidden);
- the CUDA backends accept CPU tensors, with their CUDA grid limit still in force.
Everything is restored on exit. Every call is counted in `calls` (op name -> count), so a test can
check that the path it meant to exercise really ran.
"""
from __future__ import annotations

import contextlib
import math
import sys
import types
from collections import Counter

import torch

from . import backends

HALF = (torch.float16, torch.bfloat16)
MAX_GRID = backends.CUDA_MAX_GRID_BATCH
calls: Counter = Counter()

# where each rule comes from (file names in pytorch/pytorch aten/src/ATen/native/transformers/cuda/,
# flash-attention's csrc/flash_attn/ and flash_attn/, xformers' xformers/ops/fmha/)
FLASH_API = "flash_api.cpp mha_fwd/mha_bwd"
LAUNCH = "CUDA grid dims y/z <= 65535: flash_fwd/bwd_launch_template.h grid(m_blocks, batch, heads)"
MEM_EFF = "attention.cu _efficient_attention_forward / attention_backward.cu _efficient_attention_backward"
MEM_EFF_GRID = "CUDA grid dims y/z <= 65535: mem_eff_attention kernel_forward.h getBlocksGrid (m_blocks, heads, batch)"
BWD_CHECK = "mem_eff_attention/kernel_backward.h check_supported"


def _require(ok: bool, message: str, source: str) -> None:
    if not ok:
        raise RuntimeError(f"{message} [stand-in for {source}]")


def _attend(q, k, v, scale, causal=False, window=(-1, -1)):
    """Softmax attention in float32 on (B, H, L, D) inputs, differentiable: (out, lse).
    causal / window follow flash-attn: key j is visible to query i (aligned to the bottom right,
    i' = i + Lk - Lq) when i' - left <= j <= i' + right, -1 meaning unbounded; causal sets
    right = 0. Rows with no visible key give out 0 and lse -inf (flash-attn writes +inf there;
    the suite never asks for such rows)."""
    qf, kf, vf = q.float(), k.float(), v.float()
    scores = torch.einsum("bhid,bhjd->bhij", qf, kf) * scale
    left, right = window
    if causal:
        right = 0
    lq, lk = q.shape[2], k.shape[2]
    if left >= 0 or right >= 0:
        i = torch.arange(lq)[:, None] + (lk - lq)
        j = torch.arange(lk)[None, :]
        visible = torch.ones(lq, lk, dtype=torch.bool)
        if right >= 0:
            visible &= j <= i + right
        if left >= 0:
            visible &= j >= i - left
        scores = scores.masked_fill(~visible, float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)
    probs = torch.exp(scores - lse.masked_fill(torch.isinf(lse), 0)[..., None]).nan_to_num(0.0)
    return torch.einsum("bhij,bhjd->bhid", probs, vf), lse


def _grads(dout, q, k, v, out, lse, scale, causal):
    """The softmax backward with the GIVEN out and lse (what every real kernel computes: it never
    recomputes its own lse): the math backend's."""
    return backends.BACKENDS["math"].backward(dout, q, k, v, out, lse, causal, scale)


def _bshd_like(x: torch.Tensor) -> torch.Tensor:
    """x (B, H, L, D) with the memory layout of a (B, L, H, D) tensor, as the kernels return it
    (they run on q.transpose(1, 2) and transpose the result back)."""
    return x.transpose(1, 2).contiguous().transpose(1, 2)


def _scale(q, scale):
    return 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale


# ------------------------------------------------------------------------------------------------
# torch's CUDA kernels (the aten ops longnet.backends calls)

def _flash_checks(q, k, v, *others, backward=False):
    _require(q.dtype in HALF, "FlashAttention only support fp16 and bf16 data type", FLASH_API)
    for x in (k, v, *others):
        _require(x.dtype == q.dtype, "query and key/value/out/dout must have the same dtype", FLASH_API)
    for x in (q, k, v, *others[:1]):
        _require(x.stride(-1) == 1, "Input tensor must have contiguous last dimension", FLASH_API)
    head = q.shape[-1]
    _require(head % 8 == 0, "head_size must be a multiple of 8, this is ensured by padding!", FLASH_API)
    _require(head <= 256, f"FlashAttention {'backward' if backward else 'forward'} only supports head "
             "dimension at most 256", FLASH_API)
    _require(q.shape[0] <= MAX_GRID and q.shape[1] <= MAX_GRID,
             f"CUDA error: invalid configuration argument (batch {q.shape[0]}, heads {q.shape[1]})", LAUNCH)


def sdpa_flash_forward(query, key, value, dropout_p=0.0, is_causal=False, return_debug_mask=False, *,
                       scale=None):
    """aten::_scaled_dot_product_flash_attention on (B, H, L, D) ->
    (output, logsumexp (B, H, L) f32, cum_seq_q None, cum_seq_k None, max_q, max_k, rng_state,
    unused, debug_attn_mask): undefined tensors reach Python as None."""
    calls["_scaled_dot_product_flash_attention"] += 1
    _require(key.shape[2] == value.shape[2], "Key and Value must have the same sequence length", "attention.cu")
    _flash_checks(query, key, value)
    _require(dropout_p == 0.0, "the suite's stand-in models dropout_p == 0 only", FLASH_API)
    out, lse = _attend(query, key, value, _scale(query, scale), is_causal)
    rng_state, unused = torch.empty(2, dtype=torch.uint64), torch.empty((), dtype=torch.uint64)
    return (_bshd_like(out.to(query.dtype)), lse.contiguous(), None, None, query.shape[2], key.shape[2],
            rng_state, unused, torch.empty(0, dtype=query.dtype))


def sdpa_flash_backward(grad_out, query, key, value, out, logsumexp, cum_seq_q, cum_seq_k, max_q, max_k,
                        dropout_p, is_causal, philox_seed, philox_offset, *, scale=None):
    """aten::_scaled_dot_product_flash_attention_backward -> (grad_query, grad_key, grad_value)."""
    calls["_scaled_dot_product_flash_attention_backward"] += 1
    if cum_seq_q is not None:  # attention_backward.cu: a defined cum_seq_q selects mha_varlen_bwd
        _require(cum_seq_q.dtype == torch.int32, "cu_seqlens_q must have dtype int32", "flash_api.cpp mha_varlen_bwd")
        _require(cum_seq_k is not None and cum_seq_k.dtype == torch.int32, "cu_seqlens_k must have dtype int32",
                 "flash_api.cpp mha_varlen_bwd")
        _require(query.dim() == 3, "query must have shape (total_q, num_heads, head_size)",
                 "flash_api.cpp mha_varlen_bwd CHECK_SHAPE")
    _flash_checks(query, key, value, out, grad_out, backward=True)
    _require(logsumexp.dtype == torch.float32 and logsumexp.is_contiguous()
             and tuple(logsumexp.shape) == tuple(query.shape[:3]),
             "softmax_lse must be a contiguous float32 (B, H, L) tensor (read through its data pointer)",
             FLASH_API)
    if dropout_p > 0:
        _require(philox_seed is not None, "dropout needs the forward's rng_state", FLASH_API)
    dq, dk, dv = _grads(grad_out, query, key, value, out, logsumexp, _scale(query, scale), is_causal)
    return tuple(_bshd_like(g.to(query.dtype)) for g in (dq, dk, dv))


def _efficient_checks(q, k, v):
    _require(q.dtype in (*HALF, torch.float32), "expected query to be fp16, bf16 or fp32", MEM_EFF)
    _require(k.dtype == q.dtype and v.dtype == q.dtype, "query, key and value must share a dtype", MEM_EFF)
    for x in (q, k, v):
        _require(x.stride(-1) == 1, "must have contiguous last dimension (CHECK_NOSPARSE_LASTCONTIGUOUS_CUDA)",
                 MEM_EFF)
    _require(q.shape[0] <= MAX_GRID and q.shape[1] <= MAX_GRID,
             f"CUDA error: invalid configuration argument (batch {q.shape[0]}, heads {q.shape[1]})", MEM_EFF_GRID)


def sdpa_efficient_forward(query, key, value, attn_bias, compute_log_sumexp, dropout_p=0.0, is_causal=False,
                           *, scale=None):
    """aten::_scaled_dot_product_efficient_attention -> (output, log_sumexp, philox_seed, philox_offset).
    log_sumexp is (B, H, ceil(L / 32) * 32) float32 (kAlignLSE = 32); the stand-in fills the
    padding with NaN (the kernel leaves it unwritten), so a caller that reads it shows up."""
    calls["_scaled_dot_product_efficient_attention"] += 1
    return _efficient_forward(query, key, value, attn_bias, compute_log_sumexp, dropout_p, is_causal, scale)


def _efficient_forward(query, key, value, attn_bias, compute_log_sumexp, dropout_p, is_causal, scale):
    _efficient_checks(query, key, value)
    _require(attn_bias is None and dropout_p == 0.0, "the suite's stand-in models no bias, no dropout", MEM_EFF)
    out, lse = _attend(query, key, value, _scale(query, scale), is_causal)
    length = query.shape[2]
    padded = torch.full((*query.shape[:2], -(-length // 32) * 32 if compute_log_sumexp else 0), float("nan"))
    if compute_log_sumexp:
        padded[..., :length] = lse
    seed = offset = torch.empty((), dtype=torch.int64)
    return _bshd_like(out.to(query.dtype)), padded, seed, offset


def sdpa_efficient_backward(grad_out_, query, key, value, attn_bias, out, logsumexp, philox_seed, philox_offset,
                            dropout_p, grad_input_mask, is_causal=False, *, scale=None):
    """aten::_scaled_dot_product_efficient_attention_backward -> (dq, dk, dv, dbias None)."""
    calls["_scaled_dot_product_efficient_attention_backward"] += 1
    _efficient_checks(query, key, value)
    batch, heads, length = query.shape[:3]
    _require(logsumexp.dim() == 3 and logsumexp.shape[0] == batch and logsumexp.shape[1] == heads
             and logsumexp.shape[2] >= length and logsumexp.dtype == torch.float32,
             "logsumexp must be float32 (B, H, >= L)", MEM_EFF)
    _require(heads <= 1 or logsumexp.stride(1) % 8 == 0, "LSE is not correctly aligned (strideH)", BWD_CHECK)
    _require(batch <= 1 or logsumexp.stride(0) % 8 == 0, "LSE is not correctly aligned (strideB)", BWD_CHECK)
    _require(out.shape == query.shape[:3] + value.shape[3:] and out.stride(3) == 1
             and (length == 1 or out.stride(2) == heads * value.shape[3]),  # one row: never stepped
             "out must be laid out as the forward returns it, (B, L, H, D) rows: o_strideM == "
             "head_dim_value * num_heads", BWD_CHECK)
    lse = logsumexp[..., :length]
    dq, dk, dv = _grads(grad_out_, query, key, value, out, lse, _scale(query, scale), is_causal)
    return (*(_bshd_like(g.to(query.dtype)) for g in (dq, dk, dv)), None)


class _Aten:
    """torch.ops.aten with the CUDA attention ops replaced; everything else is the real op."""

    _scaled_dot_product_flash_attention = staticmethod(sdpa_flash_forward)
    _scaled_dot_product_flash_attention_backward = staticmethod(sdpa_flash_backward)
    _scaled_dot_product_efficient_attention = staticmethod(sdpa_efficient_forward)
    _scaled_dot_product_efficient_attention_backward = staticmethod(sdpa_efficient_backward)

    def __getattr__(self, name):
        return getattr(torch.ops.aten, name)


# ------------------------------------------------------------------------------------------------
# flash-attn 2 (flash_attn_interface.py: flash_attn_func)

class _FlashAttnFunc(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, scale, causal, window):
        qh, kh, vh = (x.transpose(1, 2) for x in (q, k, v))
        with torch.enable_grad():
            leaves = [x.detach().float().requires_grad_() for x in (qh, kh, vh)]
            out, lse = _attend(*leaves, scale, causal, window)
        ctx.save_for_backward(*leaves)
        ctx.graph = out
        ctx.dtype = q.dtype
        return out.detach().to(q.dtype).transpose(1, 2).contiguous(), lse.detach()

    @staticmethod
    def backward(ctx, dout, _dlse):
        leaves = ctx.saved_tensors
        grads = torch.autograd.grad(ctx.graph, leaves, dout.float().transpose(1, 2))
        return (*(g.to(ctx.dtype).transpose(1, 2).contiguous() for g in grads), None, None, None)


def flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                    softcap=0.0, alibi_slopes=None, deterministic=False, return_attn_probs=False):
    """flash_attn_func on (B, L, H, D): out (B, L, H, D), or (out, softmax_lse (B, H, L) f32,
    S_dmask) with return_attn_probs. Inputs with a non-contiguous last dim are made contiguous
    and head dims not a multiple of 8 are padded by flash-attn itself (maybe_contiguous, the pad in
    FlashAttnFunc.forward); the kernel then checks dtype, head dim <= 256 and the grid."""
    calls["flash_attn_func"] += 1
    _require(q.dtype in HALF, "FlashAttention only support fp16 and bf16 data type", FLASH_API)
    _require(k.dtype == q.dtype and v.dtype == q.dtype, "query and key must have the same dtype", FLASH_API)
    _require(-(-q.shape[-1] // 8) * 8 <= 256, "FlashAttention forward only supports head dimension at most 256",
             FLASH_API)
    _require(q.shape[0] <= MAX_GRID, f"CUDA error: invalid configuration argument (batch {q.shape[0]})", LAUNCH)
    _require(dropout_p == 0.0 and softcap == 0.0 and alibi_slopes is None,
             "the suite's stand-in models no dropout, softcap or alibi", "flash_attn_interface.py")
    out, lse = _FlashAttnFunc.apply(q, k, v, _scale(q, softmax_scale), causal, tuple(window_size))
    return (out, lse, None) if return_attn_probs else out


# ------------------------------------------------------------------------------------------------
# xformers (ops/fmha/__init__.py: memory_efficient_attention_forward_requires_grad / _backward)

class LowerTriangularMask:
    """xformers.ops.fmha.attn_bias.LowerTriangularMask: causal, top-left aligned."""


def _xformers_inputs(query, key, value, attn_bias, p):
    if p != 0.0:
        raise NotImplementedError("dropout is not supported on the non-autograd API.")
    _require(query.dim() == 4 and key.dim() == 4 and value.dim() == 4, "inputs must be BMHK (B, M, H, K)",
             "xformers fmha Inputs.validate_inputs")
    _require(attn_bias is None or isinstance(attn_bias, LowerTriangularMask),
             "the suite's stand-in models no bias or LowerTriangularMask only", "xformers fmha attn_bias")
    align = 4 if query.dtype == torch.float32 else 8  # fmha/flash.py and fmha/cutlass.py (sm80+)
    if query.shape[-1] % align or value.shape[-1] % align:
        raise NotImplementedError(f"No operator found for `memory_efficient_attention_forward` with "
                                  f"inputs: query {tuple(query.shape)} {query.dtype}: lastdim not "
                                  f"aligned to {align} [stand-in for xformers fmha dispatch]")
    _efficient_checks(*(x.transpose(1, 2) for x in (query, key, value)))
    return isinstance(attn_bias, LowerTriangularMask)


def memory_efficient_attention_forward_requires_grad(query, key, value, attn_bias=None, p=0.0, scale=None, *,
                                                     op=None, output_dtype=None):
    """-> (out (B, M, H, K), lse (B, H, ceil(M / 32) * 32) f32): the cutlass op's lse, padded."""
    calls["memory_efficient_attention_forward_requires_grad"] += 1
    causal = _xformers_inputs(query, key, value, attn_bias, p)
    out, lse, _, _ = _efficient_forward(*(x.transpose(1, 2) for x in (query, key, value)), None, True, 0.0,
                                        causal, scale)
    return out.transpose(1, 2).contiguous().to(output_dtype or query.dtype), lse


def memory_efficient_attention_backward(grad, output, lse, query, key, value, attn_bias=None, p=0.0, scale=None,
                                        *, op=None):
    """-> (dq, dk, dv) in BMHK, from the GIVEN output and lse. lse must be (B, H, >= M) float32
    (_memory_efficient_attention_backward's shape check)."""
    calls["memory_efficient_attention_backward"] += 1
    causal = _xformers_inputs(query, key, value, attn_bias, p)
    batch, length, heads = query.shape[:3]
    _require(lse.dim() == 3 and lse.shape[0] == batch and lse.shape[1] == heads and lse.shape[2] >= length,
             f"Input tensors have incompatible shapes: lse {tuple(lse.shape)} for query {tuple(query.shape)}",
             "xformers fmha _memory_efficient_attention_backward")
    dq, dk, dv = _grads(grad.transpose(1, 2), *(x.transpose(1, 2) for x in (query, key, value)),
                        output.transpose(1, 2), lse[..., :length].float(), _scale(query, scale), causal)
    return tuple(g.transpose(1, 2).contiguous().to(query.dtype) for g in (dq, dk, dv))


def _modules() -> dict[str, types.ModuleType]:
    flash = types.ModuleType("flash_attn")
    flash.__version__ = "2.8.3+cpu-stand-in"
    flash.flash_attn_func = flash_attn_func
    xformers, ops, fmha, bias = (types.ModuleType(n) for n in
                                 ("xformers", "xformers.ops", "xformers.ops.fmha", "xformers.ops.fmha.attn_bias"))
    xformers.__version__ = "0.0.35+cpu-stand-in"
    bias.LowerTriangularMask = LowerTriangularMask
    fmha.attn_bias = bias
    fmha.memory_efficient_attention_forward_requires_grad = memory_efficient_attention_forward_requires_grad
    fmha.memory_efficient_attention_backward = memory_efficient_attention_backward
    ops.fmha = fmha
    xformers.ops = ops
    return {"flash_attn": flash, "xformers": xformers, "xformers.ops": ops, "xformers.ops.fmha": fmha,
            "xformers.ops.fmha.attn_bias": bias}


CUDA_BACKENDS = backends.CUDA_BACKENDS  # the backends routed through the stand-ins


@contextlib.contextmanager
def standin_packages():
    """Only the packages: the stand-in flash_attn and xformers modules importable under their
    real names, every backend's device type and torch's own kernels left as they are. What a
    machine with flash-attn and xformers installed looks like to the backend choice (tests of
    `auto` run once without and once with them)."""
    saved_modules = {name: sys.modules.get(name) for name in _modules()}
    saved = {name: backends.BACKENDS[name]._import_error for name in CUDA_BACKENDS}
    try:
        sys.modules.update(_modules())
        for name in CUDA_BACKENDS:
            backends.BACKENDS[name]._import_error = backends._UNTRIED
        yield
    finally:
        for name, error in saved.items():
            backends.BACKENDS[name]._import_error = error
        for name, module in saved_modules.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


@contextlib.contextmanager
def cuda_standins():
    """Route the CUDA backends to the stand-ins on CPU tensors (see the module docstring)."""
    saved_modules = {name: sys.modules.get(name) for name in _modules()}
    saved_aten = backends._aten
    saved = {name: (backends.BACKENDS[name].device_type, backends.BACKENDS[name]._import_error)
             for name in CUDA_BACKENDS}
    try:
        sys.modules.update(_modules())
        backends._aten = _Aten()
        for name in CUDA_BACKENDS:
            backend = backends.BACKENDS[name]
            backend.device_type, backend._import_error = "cpu", None
        yield calls
    finally:
        backends._aten = saved_aten
        for name, (device_type, error) in saved.items():
            backends.BACKENDS[name].device_type, backends.BACKENDS[name]._import_error = device_type, error
        for name, module in saved_modules.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
