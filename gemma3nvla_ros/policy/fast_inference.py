"""Fast inference path of Gemma3nVLA: static buffers, no host syncs, one CUDA graph per phase, torch.compile.

The eager path (``VLAFlowMatching.sample_actions``) stays the reference; this computes the same function
(tests compare the two on fresh random inputs) in three phases, each a function of static buffers:

* **vision**: the MobileNetV5 tower and ``embed_vision`` over all cameras (``get_image_features``);
* **text prefix**: the image features and the state token written into the task's token embeddings, the
  Gemma 3n decoder layers (transformers' modules), and every expert layer's prefix K/V;
* **denoising**: all ``num_steps`` Euler steps of the expert, each velocity guided by real-time chunking
  (RTC) as LeRobot's ``RTCProcessor.denoise_step`` guides it (see below).

What makes it fast (each chosen at run time; none needs a CUDA-only package):

* **Per-task plan.** Everything that depends only on the task and the camera masks is computed once per task
  and cached: token ids, token and per-layer embeddings (gathered on the host when the tables live there),
  pad mask, positions, the prefix's additive masks, the expert's RoPE tables and masks, and the time-embedding
  half of ``action_time_mlp_in`` for each step. The task is padded to ``tokenizer_max_length`` so that every
  task has the same shapes (one compile, one capture); padded tokens are masked out everywhere, so the result
  is that of the eager path.
* **CUDA graphs** (CUDA or ROCm builds of PyTorch): each phase is captured once per batch size and replayed
  with one launch; the phases hand each other their outputs through the graphs' own static tensors, so no
  input is copied per step (the eager path with ``compile_model`` copied 55 per step).
* **torch.compile** (where Triton works) of each phase's body, without its own CUDA graphs (inductor's fused
  kernels are captured in ours).
* **Fused projections** in the expert: q/k/v of the joint layers and gate/up of every MLP are one matrix
  each; the modules' weights become views of the fused matrices (no extra memory).
* **Expert attention** through ``scaled_dot_product_attention`` or as two batched matrix products with the
  4 query heads of a KV head folded into the rows ("bmm"); ``auto`` times both on the device at warm-up,
  compiled as they will run, and keeps the fastest that agrees with the first.

Real-time chunking needs no autograd here. ``RTCProcessor.denoise_step`` (LeRobot 0.4.4 and 0.6.1 alike)
evaluates ``v_t`` before ``x_t`` requires grad, so the gradient it takes of ``x1 = x_t - time * v_t`` is the
identity and its "correction" is the weighted error itself::

    v <- v - min(c(tau) * inv_r2(tau), max_guidance_weight) * (leftover_padded - (x_t - time * v)) * prefix_weights

(``tau = 1 - time``; ``rtc_guide`` and ``rtc_guidance_weights``; a test checks this against ``denoise_step``).
The padded leftover [B, T, A], the prefix weights [1, T, 1] and the per-step guidance weights [num_steps] are
static buffers written by ``load`` like the other inputs (``max_guidance_weight`` is read per call, so changing
it takes effect at once). An unguided chunk has zero guidance and prefix weights: ``v - 0 * err`` is ``v``
exactly, so guided and unguided chunks share one plan, one compile and one graph, and unguided chunks are
those of the path without RTC. Guidance adds only elementwise ops to the denoising phase.

Any phase whose compile or capture fails falls back (compile -> eager body, graph -> plain launches) with a
warning; ``FastSampler.report`` says what runs.
"""
from __future__ import annotations

import logging
import math
import statistics
import time
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor
from transformers.models.gemma3n.modeling_gemma3n import apply_rotary_pos_emb, repeat_kv

from . import triton_attention
from .gemma3n_with_expert import _KVRecorder
from .input_checks import count

logger = logging.getLogger(__name__)

ATTENTION_IMPLS = ("auto", "sdpa", "bmm", "triton")


# ----------------------------------------------------------------------------------------------- attention
def attention_sdpa(q: Tensor, k: Tensor, v: Tensor, bias: Tensor, groups: int) -> Tensor:
    """q [B, H, L, D], k/v [B, KV, S, D], additive bias broadcastable to [B, 1, L, S]; scale 1.0."""
    return F.scaled_dot_product_attention(q, repeat_kv(k, groups), repeat_kv(v, groups), attn_mask=bias, scale=1.0)


def attention_bmm(q: Tensor, k: Tensor, v: Tensor, bias: Tensor, groups: int) -> Tensor:
    """The same attention as two batched matrix products per KV head, the ``groups`` query heads that share a
    KV head stacked along the rows (no K/V repeat); softmax in float32."""
    bsz, heads, length, dim = q.shape
    kv_heads, keys = k.shape[1], k.shape[2]
    qg = q.reshape(bsz, kv_heads, groups * length, dim)
    scores = torch.matmul(qg, k.transpose(-1, -2)).view(bsz, kv_heads, groups, length, keys)
    probs = torch.softmax(scores.float() + bias[:, :, None].float(), dim=-1).to(q.dtype)
    out = torch.matmul(probs.view(bsz, kv_heads, groups * length, keys), v)
    return out.view(bsz, heads, length, dim)


ATTENTION_FUNCS: dict[str, Callable[..., Tensor]] = {"sdpa": attention_sdpa, "bmm": attention_bmm}


def graphs_available(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_available() and hasattr(torch.cuda, "CUDAGraph")


def compile_available(device: torch.device) -> bool:
    """torch.compile with inductor on this device (Triton for GPUs). CPU compile needs a C++ toolchain and is
    not worth it for batch-1 inference; off there."""
    if device.type != "cuda":
        return False
    try:
        from torch.utils._triton import has_triton

        return bool(has_triton())
    except Exception:  # pragma: no cover
        return False


# ----------------------------------------------------------------------------------------------- RTC
def rtc_guide(x_t: Tensor, v_t: Tensor, leftover: Tensor, prefix_weights: Tensor, guidance_weight: Tensor,
              time: float) -> Tensor:
    """``RTCProcessor.denoise_step``'s guided velocity given the unguided one ``v_t`` (its autograd correction is
    the weighted error: ``v_t`` does not depend on the ``x_t`` it differentiates), in its order of operations."""
    x1_t = x_t - time * v_t
    err = (leftover - x1_t) * prefix_weights
    return v_t - guidance_weight * err


def rtc_guidance_weights(num_steps: int, max_guidance_weight: float) -> Tensor:
    """[num_steps] float32 on the host: ``RTCProcessor.denoise_step``'s guidance weight at each Euler step's time
    ``1 - step / num_steps`` (``tau = 1 - time``), with its infinity rules."""
    mgw = float(max_guidance_weight)
    if not math.isfinite(mgw) or mgw <= 0:
        raise ValueError(f"rtc_config.max_guidance_weight must be a finite number > 0, got {max_guidance_weight!r}.")
    cap = torch.as_tensor(mgw)
    dt = -1.0 / num_steps
    out = torch.empty(num_steps, dtype=torch.float32)
    for step in range(num_steps):
        tau = torch.as_tensor(1 - (1.0 + step * dt))
        squared_one_minus_tau = (1 - tau) ** 2
        inv_r2 = (squared_one_minus_tau + tau**2) / squared_one_minus_tau
        c = torch.nan_to_num((1 - tau) / tau, posinf=mgw)
        out[step] = torch.minimum(torch.nan_to_num(c * inv_r2, posinf=mgw), cap)
    return out


# ----------------------------------------------------------------------------------------------- buffers
@dataclass
class _Plan:
    """Per task (token ids, masks) and batch size: every tensor that does not depend on images, state or noise."""

    token_embeds: Tensor
    per_layer_raw: Tensor
    pad_mask: Tensor
    position_ids: Tensor
    cache_position: Tensor
    img_index: Tensor
    prefix_masks: dict[str, Tensor]
    suffix_rope: dict[str, tuple[Tensor, Tensor]]
    cross_bias: Tensor
    joint_bias: Tensor
    time_parts: list[Tensor]


@dataclass
class _Guidance:
    """RTC inputs of the denoising phase (all zero for an unguided chunk)."""

    leftover: Tensor  # [B, T, A] the previous chunk's leftover, zero-padded to the chunk
    prefix_weights: Tensor  # [1, T, 1]
    weights: Tensor  # [num_steps] guidance weight of each Euler step
    on: bool = False  # whether the buffers hold a guided chunk's values (else zeros)


@dataclass
class _Statics:
    """Static input buffers of one shape signature, the phases' outputs, and their graphs."""

    images: Tensor
    state: Tensor
    noise: Tensor
    guidance: _Guidance
    plan: _Plan | None = None
    plan_key: Any = None
    feats: Tensor | None = None
    prefix_kv: list[tuple[Tensor, Tensor]] | None = None
    actions: Tensor | None = None
    graphs: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------- sampler
class FastSampler:
    """Fast ``sample_actions`` for a ``VLAFlowMatching`` in eval mode (see the module docstring)."""

    def __init__(self, net, *, graphs: bool | None = None, compile: bool | None = None,  # noqa: A002
                 attention: str = "auto", fuse: bool = True, pad_task_to: int | None = None,
                 compile_mode: str = "default", max_plans: int = 8, verify: bool = True, verify_tol: float = 1.0):
        if attention not in ATTENTION_IMPLS:
            raise ValueError(f"attention must be one of {ATTENTION_IMPLS}, got {attention!r}.")
        self.net = net
        self.vlm = net.vlm_with_expert
        self.device = net.action_in_proj.weight.device
        self.use_graphs = graphs_available(self.device) if graphs is None else bool(graphs and graphs_available(self.device))
        self.use_compile = compile_available(self.device) and (compile is None or bool(compile))
        self.compile_mode = compile_mode
        self.attention_choice = attention
        self.split_config = triton_attention.SplitConfig()
        self.attention = "sdpa" if attention == "auto" else attention
        self.pad_task_to = pad_task_to if pad_task_to is not None else net.config.tokenizer_max_length
        self.max_plans = max_plans
        # After each capture, the phase's output is checked against its uncompiled body on the same inputs; a
        # phase that differs by more than verify_tol (relative L2) falls back. The default only catches gross
        # errors (uncorrelated outputs are ~1.4, NaN fails): with random E2B weights the bf16 network amplifies
        # rounding differences ~1.3x per layer, so two correct bf16 computations can differ by tens of percent
        # (the benchmark compares both to a float32 reference).
        self.verify = verify
        self.verify_tol = verify_tol
        self._plans: OrderedDict[Any, _Plan] = OrderedDict()
        self._statics: dict[Any, _Statics] = {}
        self.report: dict[str, Any] = {"graphs": self.use_graphs, "compile": self.use_compile,
                                       "fallbacks": []}
        if self.attention == "triton" and not triton_attention.available(self.device):
            self._fallback(f"expert attention triton needs Triton on a GPU ({self.device} here); bmm")
            self.attention = "bmm"
        # The backbone's prefix attention: its own implementation (None), or the name under which a Triton
        # configuration is registered with transformers, set on its layers while the text phase runs.
        self.text_attention: str | None = None
        if self.attention == "triton" and self._text_configs():
            self.text_attention = triton_attention.transformers_attention(triton_attention.TEXT_CONFIGS[0])
        self.report["text_attention"] = self.text_attention or "backbone"
        self.expert_dtype = self.vlm.expert.norm.weight.dtype
        self.fused: dict[int, dict[str, Tensor]] = {}
        if fuse:
            self.fuse_projections()
        width = self.vlm.expert_hidden_size
        w_in = net.action_time_mlp_in.weight
        # action_time_mlp_in(cat([a, t])) = a @ W[:, :w].T + (t @ W[:, w:].T + b): the time half is per step.
        self._w_in_action = w_in[:, :width]
        self._w_in_time = w_in[:, width:]
        self._phase_fns = {"vision": self._vision_body, "text": self._text_body, "denoise": self._denoise_body}
        self._compiled: dict[str, Callable] = {}
        if self.use_compile:
            for name in ("vision", "text", "velocity"):
                fn = self._velocity if name == "velocity" else self._phase_fns[name]
                self._compiled[name] = torch.compile(fn, mode=compile_mode, dynamic=False)

    # ------------------------------------------------------------------ fused weights
    def fuse_projections(self) -> None:
        """q/k/v of the joint expert layers and gate/up of every expert MLP as single matrices; the modules'
        weights become views of them (``unfuse`` gives them their own storage again, e.g. to save)."""
        for e, layer in enumerate(self.vlm.expert.layers):
            entry = {}
            attn = layer.self_attn
            mlp = layer.mlp
            if not attn.cross:
                entry["qkv"] = _fuse([attn.q_proj, attn.k_proj, attn.v_proj])
            entry["gate_up"] = _fuse([mlp.gate_proj, mlp.up_proj])
            self.fused[e] = entry

    def unfuse(self) -> None:
        for e, layer in enumerate(self.vlm.expert.layers):
            attn, mlp = layer.self_attn, layer.mlp
            mods = [mlp.gate_proj, mlp.up_proj] + ([] if attn.cross else [attn.q_proj, attn.k_proj, attn.v_proj])
            for m in mods:
                m.weight.data = m.weight.data.clone()
        self.fused = {}

    # ------------------------------------------------------------------ public
    @torch.no_grad()
    def sample_actions(self, images: list[Tensor], img_masks: list[Tensor], lang_tokens: Tensor, lang_masks: Tensor,
                       state: Tensor, noise: Tensor | None = None, generator: torch.Generator | None = None, *,
                       rtc_processor: Any = None, rtc_enabled: bool = False, inference_delay: int | None = None,
                       prev_chunk_left_over: Tensor | None = None, execution_horizon: int | None = None) -> Tensor:
        """``VLAFlowMatching.sample_actions`` (same arguments): with ``rtc_enabled`` and a leftover the chunk is
        guided as ``rtc_processor.denoise_step`` guides it; ``rtc_processor``'s config (schedule, execution horizon,
        max guidance weight) is read at each call."""
        net = self.net
        bsize = state.shape[0]
        if noise is None:
            noise = net.sample_noise((bsize, net.config.chunk_size, net.config.max_action_dim), state.device, generator)
        guided = rtc_enabled and prev_chunk_left_over is not None
        s = self.load(images, img_masks, lang_tokens, lang_masks, state, noise, rtc_processor=rtc_processor,
                      inference_delay=inference_delay, prev_chunk_left_over=prev_chunk_left_over if guided else None,
                      execution_horizon=execution_horizon)
        self.run_phase(s, "vision")
        self.run_phase(s, "text")
        self.run_phase(s, "denoise")
        return s.actions.clone()

    def load(self, images, img_masks, lang_tokens, lang_masks, state, noise, *, rtc_processor: Any = None,
             inference_delay: int | None = None, prev_chunk_left_over: Tensor | None = None,
             execution_horizon: int | None = None) -> _Statics:
        """Fills the static buffers for one chunk (the plan only when the task or masks changed), the RTC ones
        for a chunk guided towards ``prev_chunk_left_over`` (else zero weights: unguided)."""
        bsize = state.shape[0]
        lang_tokens, lang_masks = self._pad_task(lang_tokens, lang_masks)
        host = torch.cat([lang_tokens.long(), lang_masks.long()] + [m.long().reshape(bsize, 1) for m in img_masks],
                         dim=1).cpu()  # the one host sync of a chunk, before any work is queued
        plan_key = (bsize, len(images), host.numpy().tobytes())
        shape_key = (bsize, tuple(images[0].shape[1:]), len(images), host.shape[1])
        s = self._statics.get(shape_key)
        if s is None:
            s = self._new_statics(images, state, noise)
            self._statics[shape_key] = s
        if s.plan_key != plan_key:
            plan = self._plans.get(plan_key)
            if plan is None:
                t = host[:, : lang_tokens.shape[1]]
                m = host[:, lang_tokens.shape[1]: 2 * lang_tokens.shape[1]].bool()
                im = [host[:, 2 * lang_tokens.shape[1] + i].bool() for i in range(len(images))]
                plan = self._make_plan(t, m, im, bsize)
                self._plans[plan_key] = plan
                while len(self._plans) > self.max_plans:
                    self._plans.popitem(last=False)
            else:
                self._plans.move_to_end(plan_key)
            if s.plan is None:
                with torch.inference_mode(False):  # see _new_statics
                    s.plan = _clone_plan(plan)  # the static copy the graphs read
            else:
                _copy_plan(s.plan, plan)
            s.plan_key = plan_key
        for i, img in enumerate(images):
            s.images[i * bsize:(i + 1) * bsize].copy_(img, non_blocking=True)
        s.state.copy_(state, non_blocking=True)
        s.noise.copy_(noise, non_blocking=True)
        if prev_chunk_left_over is None:
            self.clear_guidance(s)
        else:
            self.load_guidance(s, rtc_processor, inference_delay, prev_chunk_left_over, execution_horizon)
        return s

    def _new_statics(self, images: list[Tensor], state: Tensor, noise: Tensor) -> _Statics:
        # Written in place at every call, so never inference tensors, whatever mode the first call came in:
        # the runner samples unguided chunks under inference_mode and guided ones under no_grad.
        bsize, n_img = state.shape[0], len(images)
        with torch.inference_mode(False):
            like = dict(dtype=torch.float32, device=self.device)
            return _Statics(
                images=torch.empty((n_img * bsize, *images[0].shape[1:]), **like),
                state=torch.empty(state.shape, **like),
                noise=torch.empty(noise.shape, **like),
                guidance=_Guidance(leftover=torch.zeros(noise.shape, **like),
                                   prefix_weights=torch.zeros((1, noise.shape[1], 1), **like),
                                   weights=torch.zeros((self.net.config.num_steps,), **like)),
            )

    def load_guidance(self, s: _Statics, rtc_processor: Any, inference_delay: int | None, leftover: Tensor,
                      execution_horizon: int | None) -> None:
        """Writes a guided chunk's RTC buffers, as ``RTCProcessor.denoise_step`` builds its inputs: the leftover
        ([T', A'] or [1 or B, T', A'], T' <= T, A' <= A) zero-padded to the chunk, the prefix weights of
        ``(inference_delay, min(execution_horizon, T'), T)`` from the processor's schedule, the guidance weights."""
        g = s.guidance
        bsize, chunk, dims = s.noise.shape
        if rtc_processor is None:
            raise ValueError("rtc_enabled with a prev_chunk_left_over needs an rtc_processor.")
        cfg = rtc_processor.rtc_config
        delay = count(inference_delay)
        horizon = count(cfg.execution_horizon if execution_horizon is None else execution_horizon)
        if delay is None or horizon is None or horizon == 0:
            raise ValueError(f"inference_delay must be an integer >= 0 and execution_horizon an integer > 0, got "
                             f"{inference_delay!r} and {execution_horizon!r} (config: {cfg.execution_horizon!r}).")
        leftover = torch.as_tensor(leftover)
        if leftover.ndim == 2:
            leftover = leftover[None]
        if (leftover.ndim != 3 or leftover.shape[0] not in (1, bsize) or not 1 <= leftover.shape[1] <= chunk
                or leftover.shape[2] > dims):
            raise ValueError(f"prev_chunk_left_over must be [T, D] or [1 or {bsize}, T, D] with 1 <= T <= {chunk} "
                             f"and D <= {dims}; got {tuple(leftover.shape)}.")
        prefix = rtc_processor.get_prefix_weights(delay, min(horizon, leftover.shape[1]), chunk)
        # Host-computed, copied without waiting: the chunk's one host sync was in load().
        g.weights.copy_(rtc_guidance_weights(self.net.config.num_steps, cfg.max_guidance_weight), non_blocking=True)
        g.prefix_weights.copy_(prefix.reshape(1, chunk, 1), non_blocking=True)
        g.leftover.zero_()
        g.leftover[:, : leftover.shape[1], : leftover.shape[2]].copy_(leftover, non_blocking=True)
        g.on = True

    @staticmethod
    def clear_guidance(s: _Statics) -> None:
        """Zero weights: the denoising phase computes the unguided chunk (its leftover is then irrelevant)."""
        g = s.guidance
        if g.on:
            g.weights.zero_()
            g.prefix_weights.zero_()
            g.on = False

    def run_phase(self, s: _Statics, name: str) -> None:
        """Runs one phase: replays its graph (capturing it on first use) or calls its body."""
        if self.use_graphs:
            graph = s.graphs.get(name)
            if graph is None:
                graph = self._capture(s, name)
            if graph is not False:
                graph.replay()
                return
        self._call_body(s, name)

    # ------------------------------------------------------------------ plan
    def _pad_task(self, lang_tokens: Tensor, lang_masks: Tensor) -> tuple[Tensor, Tensor]:
        width = lang_tokens.shape[1]
        target = self.pad_task_to
        if target is None or width >= target:
            return lang_tokens, lang_masks
        pad_id = self.net.pad_token_id
        lang_tokens = F.pad(lang_tokens, (0, target - width), value=pad_id)
        lang_masks = F.pad(lang_masks.bool(), (0, target - width), value=False)
        return lang_tokens, lang_masks

    @torch.no_grad()
    def _make_plan(self, lang_tokens: Tensor, lang_masks: Tensor, img_masks: list[Tensor], bsize: int) -> _Plan:
        net, vlm, dev = self.net, self.vlm, self.device
        input_ids, pad_mask = net.prefix_layout(img_masks, lang_tokens, lang_masks)  # on the host
        position_ids = torch.cumsum(pad_mask.long(), dim=1) - 1
        img_index = (input_ids[0] == net.image_token_id).nonzero().flatten()
        input_ids_dev = input_ids.to(dev)
        token_embeds, per_layer_raw = vlm.embed_token_ids(input_ids_dev)
        pad_mask, position_ids = pad_mask.to(dev), position_ids.to(dev)
        length = input_ids.shape[1]
        bdtype = token_embeds.dtype
        prefix_masks = vlm.build_masks(pad_mask, position_ids, bdtype)

        chunk = net.config.chunk_size
        edtype = self.expert_dtype
        n_real = pad_mask.sum(dim=1, keepdim=True)
        suffix_pos = n_real + torch.arange(chunk, device=dev)[None]
        probe = torch.empty(0, dtype=edtype, device=dev)
        suffix_rope = {}
        for e in range(len(vlm.expert.layers)):
            i = vlm.expert_to_vlm[e]
            kind = vlm.layer_types[i]
            if kind not in suffix_rope:
                suffix_rope[kind] = vlm.rope(i, probe, suffix_pos)
        neg = torch.finfo(edtype).min
        prefix_part = pad_mask[:, None, None, :]
        causal = torch.ones(chunk, chunk, dtype=torch.bool, device=dev).tril()
        joint = torch.cat([prefix_part.expand(bsize, 1, chunk, length), causal[None, None].expand(bsize, 1, chunk, chunk)], -1)

        def additive(m: Tensor) -> Tensor:
            return torch.zeros(m.shape, dtype=edtype, device=dev).masked_fill(~m, neg)

        steps = net.config.num_steps
        dt = -1.0 / steps
        width = vlm.expert_hidden_size
        time_parts = []
        for step in range(steps):
            t = torch.full((bsize,), 1.0 + step * dt, dtype=torch.float32, device=dev)
            emb = _sinusoid(net, t, width).to(self._w_in_time.dtype)
            time_parts.append(F.linear(emb, self._w_in_time, net.action_time_mlp_in.bias)[:, None, :])
        return _Plan(
            token_embeds=token_embeds, per_layer_raw=per_layer_raw, pad_mask=pad_mask, position_ids=position_ids,
            cache_position=torch.arange(length, device=dev), img_index=img_index.to(dev), prefix_masks=prefix_masks,
            suffix_rope=suffix_rope, cross_bias=additive(prefix_part), joint_bias=additive(joint),
            time_parts=time_parts,
        )

    # ------------------------------------------------------------------ phase bodies
    def _vision_body(self, images: Tensor) -> Tensor:
        return self.vlm.get_image_features(images)

    def _text_body(self, feats: Tensor, state: Tensor, plan: _Plan) -> list[tuple[Tensor, Tensor]]:
        net, vlm = self.net, self.vlm
        embeds = plan.token_embeds
        bsize = embeds.shape[0]
        n_img = feats.shape[0] // bsize
        feats = feats.view(n_img, bsize, *feats.shape[1:]).transpose(0, 1).reshape(bsize, -1, feats.shape[-1])
        embeds = embeds.index_copy(1, plan.img_index, feats.to(embeds.dtype))
        state_emb = net.state_proj(state.to(net.state_proj.weight.dtype)).to(embeds.dtype)
        embeds = torch.cat([embeds[:, :-1], state_emb[:, None]], dim=1)
        recorder = _KVRecorder()
        _, k_pre = vlm._run_layers(embeds, plan.per_layer_raw, plan.position_ids, plan.prefix_masks, recorder,
                                   plan.cache_position)
        prefix = vlm.collect_prefix(recorder, k_pre, plan.pad_mask, plan.position_ids)
        return vlm.expert_prefix_kv(prefix)

    def _denoise_body(self, noise: Tensor, prefix_kv: list[tuple[Tensor, Tensor]], plan: _Plan,
                      guidance: _Guidance, compiled: bool = True) -> Tensor:
        net = self.net
        velocity = self._compiled.get("velocity", self._velocity) if compiled else self._velocity
        kv = [t for pair in prefix_kv for t in pair]
        steps = net.config.num_steps
        dt = -1.0 / steps
        x_t = net.real_dims_only(noise)
        for step in range(steps):
            v = velocity(x_t, plan.time_parts[step], kv, plan.suffix_rope, plan.cross_bias, plan.joint_bias)
            v = rtc_guide(x_t, net.real_dims_only(v), guidance.leftover, guidance.prefix_weights,
                          guidance.weights[step], 1.0 + step * dt)
            x_t = x_t + dt * v
        return x_t

    def _velocity(self, x_t: Tensor, time_part: Tensor, kv: list[Tensor], suffix_rope: dict,
                  cross_bias: Tensor, joint_bias: Tensor) -> Tensor:
        """One velocity evaluation: ``VLAFlowMatching.velocity`` with the per-step constants precomputed."""
        net, vlm = self.net, self.vlm
        action_emb = net.action_in_proj(x_t)
        h = F.linear(action_emb, self._w_in_action) + time_part
        x = net.action_time_mlp_out(F.silu(h)).to(self.expert_dtype)
        attend = self._attend
        for e, layer in enumerate(vlm.expert.layers):
            cos, sin = suffix_rope[vlm.layer_types[vlm.expert_to_vlm[e]]]
            attn = layer.self_attn
            fused = self.fused.get(e, {})
            h = layer.input_layernorm(x)
            bsz, length, _ = h.shape
            nh, nkv, d = attn.num_heads, attn.num_kv_heads, attn.head_dim
            pk, pv = kv[2 * e], kv[2 * e + 1]
            if attn.cross:
                q = attn.q_proj(h)
                k, v, bias = pk, pv, cross_bias
            else:
                if "qkv" in fused:
                    q, ks, vs = F.linear(h, fused["qkv"]).split([nh * d, nkv * d, nkv * d], dim=-1)
                else:
                    q, ks, vs = attn.q_proj(h), attn.k_proj(h), attn.v_proj(h)
                ks = attn.k_norm(ks.view(bsz, length, nkv, d))
                ks = apply_rotary_pos_emb(ks, cos, sin, unsqueeze_dim=2).transpose(1, 2)
                vs = attn.v_norm(vs.view(bsz, length, nkv, d)).transpose(1, 2)
                k, v, bias = torch.cat([pk, ks], dim=2), torch.cat([pv, vs], dim=2), joint_bias
            q = attn.q_norm(q.view(bsz, length, nh, d))
            q = apply_rotary_pos_emb(q, cos, sin, unsqueeze_dim=2).transpose(1, 2)
            o = attend(q, k, v, bias, nh // nkv).transpose(1, 2).reshape(bsz, length, -1)
            x = x + layer.post_attention_layernorm(attn.o_proj(o))
            h = layer.pre_feedforward_layernorm(x)
            mlp = layer.mlp
            if "gate_up" in fused:
                gate, up = F.linear(h, fused["gate_up"]).chunk(2, dim=-1)
            else:
                gate, up = mlp.gate_proj(h), mlp.up_proj(h)
            x = x + layer.post_feedforward_layernorm(mlp.down_proj(mlp.act_fn(gate) * up))
        out = vlm.expert.norm(x)
        return net.action_out_proj(out.to(net.action_out_proj.weight.dtype))

    # ------------------------------------------------------------------ running, compiling, capturing
    def _body(self, s: _Statics, name: str) -> Callable[[], None]:
        fn = self._compiled.get(name, self._phase_fns[name]) if name != "denoise" else self._denoise_body

        # A phase run without a graph writes into the static outputs that a later phase's graph reads.
        nxt = {"vision": "text", "text": "denoise"}.get(name)
        attr = {"vision": "feats", "text": "prefix_kv", "denoise": "actions"}[name]
        inputs = {"vision": lambda: (s.images,), "text": lambda: (s.feats, s.state, s.plan),
                  "denoise": lambda: (s.noise, s.prefix_kv, s.plan, s.guidance)}[name]

        def body():
            if name == "text":
                with self._text_attention_set():
                    out = fn(*inputs())
            else:
                out = fn(*inputs())
            if nxt is not None and s.graphs.get(nxt) and getattr(s, attr) is not None and not _capturing():
                for dst, src in zip(_flat(getattr(s, attr)), _flat(out)):
                    dst.copy_(src)
            else:
                setattr(s, attr, out)
        return body

    def _call_body(self, s: _Statics, name: str) -> None:
        try:
            self._body(s, name)()
        except Exception as exc:  # compile failure: fall back to the eager body for this phase
            key = "velocity" if name == "denoise" else name
            if key not in self._compiled:
                raise
            self._fallback(f"torch.compile of {key} failed ({type(exc).__name__}: {exc}); eager {key}")
            self._compiled.pop(key)
            self._body(s, name)()

    def _capture(self, s: _Statics, name: str):
        """Warm-up (compiles) on a side stream, then capture; on failure the phase runs without a graph."""
        stream = torch.cuda.Stream(device=self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        t0 = time.perf_counter()
        with torch.cuda.stream(stream):
            for _ in range(2):
                self._call_body(s, name)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        torch.cuda.synchronize(self.device)
        warm_s = time.perf_counter() - t0
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                self._body(s, name)()
        except Exception as exc:
            self._fallback(f"CUDA graph capture of {name} failed ({type(exc).__name__}: {exc}); plain launches")
            torch.cuda.synchronize(self.device)
            s.graphs[name] = False
            self._call_body(s, name)  # outputs for the next phase
            return False
        s.graphs[name] = graph
        graph.replay()  # the captured outputs hold real values for the next phase's warm-up
        self.report.setdefault("warmup_s", {})[name] = round(warm_s, 2)
        if self.verify:
            err = self._verify(s, name)
            self.report.setdefault("verify_rel_err", {})[name] = err
            if not err <= self.verify_tol:
                key = "velocity" if name == "denoise" else name
                if key in self._compiled:
                    self._fallback(f"{name}: compiled graph differs from the eager body (rel. error {err:.3g}); "
                                   f"{key} runs uncompiled")
                    self._compiled.pop(key)
                    s.graphs.pop(name)
                    return self._capture(s, name)
                self._fallback(f"{name}: CUDA graph differs from the eager body (rel. error {err:.3g}); plain launches")
                s.graphs[name] = False
                self._call_body(s, name)
                return False
        return graph

    @torch.no_grad()
    def _verify(self, s: _Statics, name: str) -> float:
        """Relative L2 error of the phase's captured output against its uncompiled body on the same inputs."""
        out = _flat(self._outputs(s, name))
        if name == "vision":
            ref = self._vision_body(s.images)
        elif name == "text":
            with self._text_attention_set():
                ref = self._text_body(s.feats, s.state, s.plan)
        else:
            ref = self._denoise_body(s.noise, s.prefix_kv, s.plan, s.guidance, compiled=False)
        ref = _flat(ref)
        num = sum(float((a.double() - b.double()).norm() ** 2) for a, b in zip(out, ref))
        den = sum(float(b.double().norm() ** 2) for b in ref)
        return (num / max(den, 1e-30)) ** 0.5

    @staticmethod
    def _outputs(s: _Statics, name: str):
        return {"vision": s.feats, "text": s.prefix_kv, "denoise": s.actions}[name]

    def _fallback(self, message: str) -> None:
        logger.warning("gemma3nvla fast path: %s", message)
        self.report["fallbacks"].append(message)

    # ------------------------------------------------------------------ attention choice
    @property
    def attention(self) -> str:
        """The expert's attention implementation: a key of ``ATTENTION_FUNCS`` or "triton"."""
        return self._attention

    @attention.setter
    def attention(self, name: str) -> None:
        self._attention = name
        self._attend = triton_attention.attend(self.split_config) if name == "triton" else ATTENTION_FUNCS[name]

    def choose_attention(self, bsize: int = 1, iters: int = 20) -> dict[str, float]:
        """With ``attention='auto'`` on a GPU: times each expert-attention implementation on the joint layers'
        shapes (the larger), compiled when the phases are, and keeps the fastest that agrees with the first.
        The Triton kernel's tile and split sizes are chosen first, the same way. Returns microseconds per call."""
        if self.attention_choice != "auto" or self.device.type != "cuda":
            return {}
        vlm, net = self.vlm, self.net
        tc = vlm.expert_config
        nh, nkv, d = tc.num_attention_heads, tc.num_key_value_heads, tc.head_dim
        chunk = net.config.chunk_size
        length = self._prefix_length()
        dev, dt = self.device, self.expert_dtype
        q = torch.randn(bsize, chunk, nh, d, device=dev, dtype=dt).transpose(1, 2)  # as the expert lays it out
        k = torch.randn(bsize, nkv, length + chunk, d, device=dev, dtype=dt)
        v = torch.randn_like(k)
        # The joint layers' mask: a few padded prefix keys and causal action tokens.
        keep = torch.ones(chunk, length + chunk, dtype=torch.bool, device=dev)
        keep[:, length - 8:length - 1] = False
        keep[:, length:] = torch.ones(chunk, chunk, dtype=torch.bool, device=dev).tril()
        bias = torch.zeros(bsize, 1, chunk, length + chunk, device=dev, dtype=dt).masked_fill(~keep, torch.finfo(dt).min)
        args = (q, k, v, bias, nh // nkv)
        candidates = dict(ATTENTION_FUNCS)
        if triton_attention.available(dev):
            configs = {}
            for cfg in triton_attention.CONFIGS:
                try:
                    configs[cfg] = time_in_graph(triton_attention.attend(cfg), args, iters)
                except Exception as exc:  # e.g. a tile too large for this GPU's shared memory
                    logger.debug("split attention %s: %s", cfg, exc)
            if configs:
                self.split_config = min(configs, key=configs.get)
                self.report["triton_configs_us"] = {str(c): round(t, 1) for c, t in configs.items()}
                candidates["triton"] = triton_attention.attend(self.split_config)
        times, left_out = time_candidates(candidates, args, lambda fn, a: time_in_graph(fn, a, iters),
                                          wrap=self._compile_candidate)
        for name, why in left_out.items():
            self._fallback(f"expert attention {name} not used: {why}")
        if times:
            self.attention = min(times, key=times.get)
        self.report["attention"] = self.attention
        self.report["attention_us"] = {k: round(v, 1) for k, v in times.items()}
        if "triton" in candidates:
            self._choose_text_attention(bsize, iters)
        return times

    def _compile_candidate(self, fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
        """An attention candidate as it will run: compiled when the phases are."""
        return torch.compile(fn, dynamic=False) if self.use_compile else fn

    def _text_configs(self) -> list:
        """The backbone layers' configs, when they use SDPA (the only implementation the Triton kernel replaces)."""
        configs = {id(layer.self_attn.config): layer.self_attn.config for layer in self.vlm.language_model.layers}
        return list(configs.values()) if all(c._attn_implementation == "sdpa" for c in configs.values()) else []

    def _choose_text_attention(self, bsize: int, iters: int) -> None:
        """Times the backbone's SDPA against the Triton kernel's ``TEXT_CONFIGS`` on the prefix's shapes and mask
        (causal, a few padded keys), compiled when the phases are; keeps the fastest that agrees."""
        if not self._text_configs():
            return
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        attn = self.vlm.language_model.layers[0].self_attn
        tc = attn.config
        nh, nkv, d = tc.num_attention_heads, tc.num_key_value_heads, tc.head_dim
        length, dev, dt = self._prefix_length(), self.device, attn.q_proj.weight.dtype
        q = torch.randn(bsize, length, nh, d, device=dev, dtype=dt).transpose(1, 2)  # as transformers lays them out
        k = torch.randn(bsize, length, nkv, d, device=dev, dtype=dt).transpose(1, 2)
        v = torch.randn(bsize, length, nkv, d, device=dev, dtype=dt).transpose(1, 2)
        pad = torch.ones(bsize, length, dtype=torch.bool, device=dev)
        pad[:, length - 9:length - 1] = False
        mask = self.vlm.build_masks(pad, torch.cumsum(pad.long(), dim=1) - 1, dt)["full_attention"]
        forwards = {"sdpa": sdpa_attention_forward}  # transformers' attention-interface signature, all of them
        forwards.update((cfg, triton_attention.transformers_forward(cfg)) for cfg in triton_attention.TEXT_CONFIGS)
        fns = {key: lambda q, k, v, m, f=f: f(attn, q, k, v, m, dropout=0.0, scaling=1.0)[0]
               for key, f in forwards.items()}
        times, left_out = time_candidates(fns, (q, k, v, mask), lambda fn, a: time_in_graph(fn, a, max(2, iters // 4)),
                                          wrap=self._compile_candidate)
        if "sdpa" not in times:  # nothing to check the kernel against: the backbone keeps its own
            self._fallback(f"backbone attention: the SDPA reference failed ({left_out.get('sdpa')}); SDPA kept")
            return
        for key, why in left_out.items():  # e.g. a tile too large for this GPU's shared memory
            logger.debug("backbone attention %s not used: %s", key, why)
        best = min(times, key=times.get)
        self.text_attention = None if best == "sdpa" else triton_attention.transformers_attention(best)
        self.report["text_attention"] = self.text_attention or "backbone"
        self.report["text_attention_us"] = {str(k): round(v, 1) for k, v in times.items()}

    @contextmanager
    def _text_attention_set(self):
        """The chosen prefix attention on the backbone's layers while a text phase runs (traced, captured or
        called), their own outside it."""
        configs = self._text_configs() if self.text_attention is not None else []
        before = [c._attn_implementation for c in configs]
        for c in configs:
            c._attn_implementation = self.text_attention
        try:
            yield
        finally:
            for c, impl in zip(configs, before):
                c._attn_implementation = impl

    def _prefix_length(self) -> int:
        n_cam = len(self.net.config.image_features)
        return 1 + n_cam * self.net.image_block_ids.numel() + (self.pad_task_to or 0) - 1 + 1


# ----------------------------------------------------------------------------------------------- helpers
def time_candidates(candidates: dict[Any, Callable[..., Tensor]], args: tuple,
                    timer: Callable[[Callable[..., Tensor], tuple], float], *,
                    wrap: Callable[[Callable[..., Tensor]], Callable[..., Tensor]] | None = None,
                    tol: float = 2e-2) -> tuple[dict[Any, float], dict[Any, str]]:
    """Runs each candidate (through ``wrap``, e.g. torch.compile) on ``args`` and times those whose output agrees with
    the first candidate's: relative L2 error < ``tol`` (bf16 rounding is ~4e-3; NaN fails). The first candidate is
    the reference: if it fails, nothing else is tried. Returns (time of each kept, why each other was left out)."""
    times: dict[Any, float] = {}
    left_out: dict[Any, str] = {}
    ref, first = None, next(iter(candidates), None)
    for key, fn in candidates.items():
        try:
            fn = wrap(fn) if wrap is not None else fn
            out = fn(*args)
            if ref is None:
                ref = out
            err = float((out.float() - ref.float()).norm() / ref.float().norm())
            if not err < tol:
                left_out[key] = f"its output differs from {first}'s (rel. error {err:.3g})"
                continue
            times[key] = timer(fn, args)
        except Exception as exc:  # a backend this build lacks, a tile too large for this GPU, ...
            left_out[key] = f"{type(exc).__name__}: {exc}"
            if ref is None:
                break
    return times, left_out


def time_in_graph(fn: Callable[..., Tensor], args: tuple, iters: int, reps: int = 3) -> float:
    """Microseconds per call of ``fn(*args)`` replayed from a CUDA graph of ``iters`` calls (what a phase's replay
    pays, without launch gaps): the median over ``reps`` timed replays."""
    for _ in range(3):
        fn(*args)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(iters):
            fn(*args)
    graph.replay()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3 / iters)
    return statistics.median(times)


def _flat(x) -> list[Tensor]:
    if isinstance(x, Tensor):
        return [x]
    return [t for item in x for t in _flat(item)]


def _capturing() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


def _fuse(linears) -> Tensor:
    fused = torch.cat([m.weight.data for m in linears], dim=0).contiguous()
    start = 0
    for m in linears:
        rows = m.weight.shape[0]
        m.weight.data = fused[start:start + rows]
        start += rows
    return fused


def _sinusoid(net, t: Tensor, width: int) -> Tensor:
    from .modeling_gemma3nvla import create_sinusoidal_pos_embedding

    return create_sinusoidal_pos_embedding(t, width, net.config.min_period, net.config.max_period)


def _clone_plan(plan: _Plan) -> _Plan:
    return _Plan(
        token_embeds=plan.token_embeds.clone(), per_layer_raw=plan.per_layer_raw.clone(),
        pad_mask=plan.pad_mask.clone(), position_ids=plan.position_ids.clone(),
        cache_position=plan.cache_position.clone(), img_index=plan.img_index.clone(),
        prefix_masks={k: v.clone() for k, v in plan.prefix_masks.items()},
        suffix_rope={k: (c.clone(), s.clone()) for k, (c, s) in plan.suffix_rope.items()},
        cross_bias=plan.cross_bias.clone(), joint_bias=plan.joint_bias.clone(),
        time_parts=[t.clone() for t in plan.time_parts],
    )


def _copy_plan(dst: _Plan, src: _Plan) -> None:
    for name in ("token_embeds", "per_layer_raw", "pad_mask", "position_ids", "cache_position", "img_index",
                 "cross_bias", "joint_bias"):
        getattr(dst, name).copy_(getattr(src, name))
    for k in dst.prefix_masks:
        dst.prefix_masks[k].copy_(src.prefix_masks[k])
    for k in dst.suffix_rope:
        dst.suffix_rope[k][0].copy_(src.suffix_rope[k][0])
        dst.suffix_rope[k][1].copy_(src.suffix_rope[k][1])
    for a, b in zip(dst.time_parts, src.time_parts):
        a.copy_(b)
