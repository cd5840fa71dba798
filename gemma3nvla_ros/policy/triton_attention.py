"""Masked grouped-query attention as one Triton kernel (the action expert's, and the backbone's prefix attention on
the fast path): the query heads that share a KV head folded into the rows, the keys split across thread blocks
(flash-decoding), the additive mask read as it is.

Why: the expert's attention is 50 queries x 8 heads over ~620 keys of head_dim 256. Every library kernel is
latency-bound there: SDPA's flash kernel has no split-KV path once a mask is given (8 thread blocks on 132 SMs),
cuDNN and the memory-efficient kernel take ~40-70 us, two batched matmuls and a softmax take ~26 us in three
kernels. Here the 4 query heads of a KV head are one 200-row tile (K/V are read once per KV head, never repeated),
the keys are cut into ``split_keys``-long pieces, one thread block per (rows, KV head, piece), and a second
small kernel merges the pieces by their log-sum-exp. Masked keys (the additive bias's large negative values) get
zero weight, as in the softmax of the other implementations.

Triton exists for CUDA and ROCm builds of PyTorch; this module imports without it (``available()`` says whether
it can run). Tests run the kernels on the CPU with ``TRITON_INTERPRET=1``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - PyTorch builds without Triton
    triton = None


@dataclass(frozen=True)
class SplitConfig:
    """Rows per thread block, keys per inner step, keys per split (a multiple of ``block_n``); Triton's warps per
    block and software-pipelining stages (0: Triton's default)."""

    block_m: int = 16
    block_n: int = 64
    split_keys: int = 128
    num_warps: int = 4
    num_stages: int = 0

    def __post_init__(self):
        for name in ("block_m", "block_n", "split_keys"):
            value = getattr(self, name)
            if value < 16 or value & (value - 1):
                raise ValueError(f"{name} must be a power of two >= 16, got {value}.")
        if self.split_keys % self.block_n:
            raise ValueError(f"split_keys ({self.split_keys}) must be a multiple of block_n ({self.block_n}).")
        if self.num_warps not in (1, 2, 4, 8, 16) or self.num_stages < 0:
            raise ValueError(f"num_warps must be 1, 2, 4, 8 or 16 and num_stages >= 0; got {self}.")

    def fields(self) -> list[int]:
        """As the operator takes it (``int[] config``)."""
        return [self.block_m, self.block_n, self.split_keys, self.num_warps, self.num_stages]

    def __str__(self) -> str:
        extra = f" w{self.num_warps}" + (f" s{self.num_stages}" if self.num_stages else "")
        return f"{self.block_m}x{self.block_n}/{self.split_keys}{extra}"


# Candidates timed at warm-up (FastSampler.choose_attention). On an H200 (docs/GPU_SPEED.md, run 1) at the
# expert's shapes (50 queries x 8 heads over 619 keys, head_dim 256), 16 rows x 64 keys in 128-key splits took
# 11.2 us, 32x64/128 13.0, 32x32/64 14.2, 64x32/64 14.3, 32x64/256 18.3, one split (32x64/1024) 50.3; 64x64 tiles
# exceed its shared memory.
CONFIGS = (SplitConfig(16, 64, 128), SplitConfig(16, 64, 64), SplitConfig(16, 32, 64), SplitConfig(16, 32, 128),
           SplitConfig(32, 64, 128), SplitConfig(32, 32, 64), SplitConfig(16, 64, 256))
# For the backbone's prefix attention (569 queries over 569 keys, 8 heads, 2 KV heads, head_dim 256): larger row
# tiles. Measured there (us): 128x32/256 w8 38.8, sdpa (cuDNN with the mask) 68.2, 64x32/256 66.9, 32x64/256
# 119.1, 64x32/1024 125.3, 128x32/1024 w8 158.3, 64x64/256 s2 147.3, 32x64/1024 193.3, 64x64/1024 s2 227.6.
TEXT_CONFIGS = (SplitConfig(128, 32, 256, num_warps=8), SplitConfig(128, 32, 128, num_warps=8),
                SplitConfig(128, 64, 256, num_warps=8, num_stages=2), SplitConfig(64, 32, 256),
                SplitConfig(64, 32, 128), SplitConfig(32, 64, 256))


def available(device: torch.device) -> bool:
    """Triton on a CUDA or ROCm device; on the CPU only under Triton's interpreter (``TRITON_INTERPRET=1``)."""
    if triton is None:
        return False
    return device.type == "cuda" or (device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1")


if triton is not None:

    @triton.jit
    def _split_kernel(q_ptr, k_ptr, v_ptr, bias_ptr, o_ptr, lse_ptr,
                      sq_b, sq_h, sq_l, sk_b, sk_h, sk_s, sv_b, sv_h, sv_s, sb_b, sb_l, sb_s,
                      so_b, so_h, so_l, so_split, slse_b, slse_h, slse_l,
                      length, keys, kv_heads, scale,
                      GROUPS: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                      SPLIT_KEYS: tl.constexpr, FINAL: tl.constexpr):
        pid_m = tl.program_id(0)
        pid_bkv = tl.program_id(1)
        pid_split = tl.program_id(2)
        b = pid_bkv // kv_heads
        kvh = pid_bkv % kv_heads

        rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # folded rows: group * length + query
        row_ok = rows < GROUPS * length
        g = rows // length
        l_idx = rows % length
        head = kvh * GROUPS + g
        dims = tl.arange(0, HEAD_DIM)

        q = tl.load(q_ptr + b * sq_b + head[:, None] * sq_h + l_idx[:, None] * sq_l + dims[None, :],
                    mask=row_ok[:, None], other=0.0)
        m_i = tl.full([BLOCK_M], -1e30, dtype=tl.float32)  # finite: a fully masked block gives zero weights
        l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
        acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
        lo = pid_split * SPLIT_KEYS
        for start in range(lo, lo + SPLIT_KEYS, BLOCK_N):
            cols = start + tl.arange(0, BLOCK_N)
            col_ok = cols < keys
            k = tl.load(k_ptr + b * sk_b + kvh * sk_h + cols[:, None] * sk_s + dims[None, :],
                        mask=col_ok[:, None], other=0.0)
            s = tl.dot(q, tl.trans(k)) * scale
            bias = tl.load(bias_ptr + b * sb_b + l_idx[:, None] * sb_l + cols[None, :] * sb_s,
                           mask=row_ok[:, None] & col_ok[None, :], other=0.0)
            s = tl.where(col_ok[None, :], s + bias.to(tl.float32), float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, axis=1))
            p = tl.exp(s - m_new[:, None])
            alpha = tl.exp(m_i - m_new)
            l_i = l_i * alpha + tl.sum(p, axis=1)
            v = tl.load(v_ptr + b * sv_b + kvh * sv_h + cols[:, None] * sv_s + dims[None, :],
                        mask=col_ok[:, None], other=0.0)
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
            m_i = m_new
        nonempty = l_i > 0
        out = acc / tl.where(nonempty, l_i, 1.0)[:, None]
        o_ptrs = o_ptr + b * so_b + head[:, None] * so_h + l_idx[:, None] * so_l + dims[None, :]
        if FINAL:
            tl.store(o_ptrs, out.to(o_ptr.dtype.element_ty), mask=row_ok[:, None])
        else:
            tl.store(o_ptrs + pid_split * so_split, out, mask=row_ok[:, None])
            lse = tl.where(nonempty, m_i + tl.log(tl.where(nonempty, l_i, 1.0)), float("-inf"))
            tl.store(lse_ptr + pid_split + b * slse_b + head * slse_h + l_idx * slse_l, lse, mask=row_ok)

    @triton.jit
    def _merge_kernel(part_ptr, lse_ptr, out_ptr, rows_total, heads, length,
                      sp_row, sp_split, so_b, so_h, so_l,
                      NSPLIT: tl.constexpr, NSPLIT_P2: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_R: tl.constexpr):
        rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)  # over B * H * L
        row_ok = rows < rows_total
        splits = tl.arange(0, NSPLIT_P2)
        split_ok = splits < NSPLIT
        lse = tl.load(lse_ptr + rows[:, None] * NSPLIT + splits[None, :],
                      mask=row_ok[:, None] & split_ok[None, :], other=float("-inf"))
        m = tl.max(lse, axis=1)
        m = tl.where(m == float("-inf"), 0.0, m)
        w = tl.exp(lse - m[:, None])
        w = w / tl.sum(w, axis=1)[:, None]
        dims = tl.arange(0, HEAD_DIM)
        acc = tl.zeros([BLOCK_R, HEAD_DIM], dtype=tl.float32)
        for sp in range(NSPLIT):
            part = tl.load(part_ptr + rows[:, None] * sp_row + sp * sp_split + dims[None, :],
                           mask=row_ok[:, None], other=0.0)
            w_sp = tl.sum(tl.where(splits[None, :] == sp, w, 0.0), axis=1)
            acc += w_sp[:, None] * part
        b = rows // (heads * length)
        h = (rows // length) % heads
        l_idx = rows % length
        tl.store(out_ptr + b[:, None] * so_b + h[:, None] * so_h + l_idx[:, None] * so_l + dims[None, :],
                 acc.to(out_ptr.dtype.element_ty), mask=row_ok[:, None])


def split_attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor, groups: int,
                    config: SplitConfig = SplitConfig(), scale: float = 1.0) -> Tensor:
    """softmax(scale * q k^T + bias) v for q [B, H, L, D], k/v [B, KV, S, D] (H = groups * KV, any strides with the
    last dimension contiguous), an additive bias broadcastable to [B, 1, L, S]. Returns [B, H, L, D] laid out as
    [B, L, H, D] (so that ``.transpose(1, 2).reshape`` is a view)."""
    bsz, heads, length, dim = q.shape
    kv_heads, keys = k.shape[1], k.shape[2]
    if heads != groups * kv_heads or dim & (dim - 1) or dim < 16:
        raise ValueError(f"split_attention needs H = groups * KV and a power-of-two head_dim >= 16; got q "
                         f"{tuple(q.shape)}, k {tuple(k.shape)}, groups {groups}.")
    if q.stride(-1) != 1 or k.stride(-1) != 1 or v.stride(-1) != 1:
        q, k, v = (t.contiguous() for t in (q, k, v))
    bias = bias.expand(bsz, 1, length, keys)
    out = torch.empty(bsz, length, heads, dim, dtype=q.dtype, device=q.device).transpose(1, 2)
    nsplit = triton.cdiv(keys, config.split_keys)
    final = nsplit == 1
    if final:
        part, lse = out, out  # lse unused
        sp = (out.stride(0), out.stride(1), out.stride(2), 0)
        sl = (0, 0, 0)
    else:
        part = torch.empty(bsz, heads, length, nsplit, dim, dtype=torch.float32, device=q.device)
        lse = torch.empty(bsz, heads, length, nsplit, dtype=torch.float32, device=q.device)
        sp = (part.stride(0), part.stride(1), part.stride(2), part.stride(3))
        sl = (lse.stride(0), lse.stride(1), lse.stride(2))
    grid = (triton.cdiv(groups * length, config.block_m), bsz * kv_heads, nsplit)
    _split_kernel[grid](
        q, k, v, bias, part, lse,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), bias.stride(0), bias.stride(2), bias.stride(3),
        *sp, *sl, length, keys, kv_heads, float(scale),
        GROUPS=groups, HEAD_DIM=dim, BLOCK_M=config.block_m, BLOCK_N=config.block_n,
        SPLIT_KEYS=config.split_keys, FINAL=final, num_warps=config.num_warps,
        **({"num_stages": config.num_stages} if config.num_stages else {}),
    )
    if not final:
        rows = bsz * heads * length
        block_r = 4  # many small programs: the merge is latency-bound
        _merge_kernel[(triton.cdiv(rows, block_r),)](
            part, lse, out, rows, heads, length, part.stride(2), part.stride(3),
            out.stride(0), out.stride(1), out.stride(2),
            NSPLIT=nsplit, NSPLIT_P2=triton.next_power_of_2(nsplit), HEAD_DIM=dim, BLOCK_R=block_r,
        )
    return out


# An opaque operator for torch.compile: inductor calls it as it is (its kernels are captured in our CUDA graphs).
@torch.library.custom_op("gemma3nvla::split_attention", mutates_args=(),
                         schema="(Tensor q, Tensor k, Tensor v, Tensor bias, int groups, int[] config, float scale) "
                                "-> Tensor")
def split_attention_op(q, k, v, bias, groups, config, scale):
    return split_attention(q, k, v, bias, groups, SplitConfig(*config), scale)


@split_attention_op.register_fake
def _split_attention_fake(q, k, v, bias, groups, config, scale):
    bsz, heads, length, dim = q.shape
    return q.new_empty(bsz, length, heads, dim).transpose(1, 2)


def attend(config: SplitConfig) -> Callable[..., Tensor]:
    """``split_attention`` with ``config`` through the operator, as the expert calls attention:
    ``(q, k, v, bias, groups)``, scale 1.0."""
    fields = config.fields()

    def fn(q: Tensor, k: Tensor, v: Tensor, bias: Tensor, groups: int) -> Tensor:
        return torch.ops.gemma3nvla.split_attention(q, k, v, bias, groups, fields, 1.0)
    return fn


def transformers_forward(config: SplitConfig) -> Callable[..., tuple[Tensor, None]]:
    """``split_attention`` with ``config`` as a transformers attention function (``sdpa_attention_forward``'s
    signature). It takes the additive mask as given (sliding windows included); inference only."""
    fields = config.fields()

    def forward(module, query: Tensor, key: Tensor, value: Tensor, attention_mask: Tensor | None,
                dropout: float = 0.0, scaling: float | None = None, **kwargs) -> tuple[Tensor, None]:
        if attention_mask is None or dropout:
            raise ValueError("split attention needs an additive attention mask and no dropout (inference only).")
        scale = query.shape[-1] ** -0.5 if scaling is None else scaling
        mask = attention_mask[:, :, :, : key.shape[-2]]
        out = torch.ops.gemma3nvla.split_attention(query, key, value, mask, query.shape[1] // key.shape[1], fields,
                                                   float(scale))
        return out.transpose(1, 2), None
    return forward


def transformers_attention(config: SplitConfig) -> str:
    """Registers ``transformers_forward(config)`` in transformers' ``AttentionInterface`` and returns its name, for a
    text config's ``_attn_implementation``."""
    from transformers import AttentionInterface

    name = "gemma3nvla_split_" + "_".join(map(str, config.fields()))
    AttentionInterface.register(name, transformers_forward(config))
    return name
