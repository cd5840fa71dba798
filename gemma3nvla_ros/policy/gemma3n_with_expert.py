"""Gemma 3n prefix (transformers' own modules) + a lean action expert that reads its per-layer K/V.

The prefix
----------
Images go through Gemma 3n's MobileNetV5 tower (timm via ``TimmWrapperModel``) and ``embed_vision`` by calling
transformers' ``Gemma3nModel.get_image_features`` on this module. Token ids are embedded as
``Gemma3nModel.forward`` does it: text ids with ``embed_tokens`` (which carries the sqrt(hidden) scale), vision
hard tokens (the end-of-image token) with ``embed_vision``'s hard-token table, per-layer inputs (PLE) from
``embed_tokens_per_layer`` with every non-text id (image soft tokens, end-of-image, our state token) mapped to
the pad id, then ``project_per_layer_inputs`` of the final embeddings. The decoder runs transformers'
``Gemma3nTextDecoderLayer`` modules (AltUp, LAuReL, q/k/v norms, scaling 1.0, activation sparsity, PLE gate),
with RoPE from the model's own float32 rotary module(s) (full layers theta 1e6, sliding layers 1e4; called
through ``gemma3nvla_ros.compat``, as transformers 4.57 and 5.x differ there), and a duck-typed cache (`_KVRecorder`) through which transformers' attention
code itself performs KV sharing and hands us every layer's K/V. The only lines mirrored rather than called
are the AltUp stream stacking before the first layer (and, for diagnostics, the un-stacking after the last),
which transformers inlines in ``Gemma3nTextModel.forward``; a test checks them against that forward.

The prefix is causal, as Gemma 3n is (images included), with a sliding window of ``sliding_window`` tokens
on sliding layers. Padding tokens (padded text, masked cameras) are never attended to and do not advance
positions (position = number of earlier real tokens, as SmolVLA); the window is measured in positions.

Truncation (``num_vlm_layers``)
-------------------------------
The text config is truncated consistently: ``layer_types``, ``intermediate_size`` and
``activation_sparsity_pattern`` are cut, and ``num_kv_shared_layers`` becomes ``max(0, N - F)`` where ``F``
is the first KV-shared layer of the full model, so the shared layers kept still read the K/V of their
source layer (E2B: 20-29 read 18 (sliding) / 19 (full)). A KV-shared layer's output never reaches the
expert (the expert reads K/V only, and a shared layer's K/V *are* its source's), so by default the shared
decoder layers, the final norm and the AltUp un-embedding are not kept, and the PLE table keeps only the
columns of computed layers (``keep_full_backbone=True`` keeps them, to compute the backbone's final hidden
state). The backbone therefore computes ``min(N, F)`` layers; the expert still sees N "virtual" layers.

The expert
----------
Same heads / KV heads / head_dim as the backbone, width ``hidden * expert_width_multiplier``, Gemma-style
sandwich norms (input / post-attention / pre- and post-feed-forward RMSNorm), a gated GELU MLP (transformers'
``Gemma3nTextMLP`` with sparsity 0), q/k/v RMS norms and attention scaling 1.0 like the backbone (so its
queries live on the scale of the backbone's normed keys). No PLE, no AltUp, no LAuReL, no vocabulary.
Expert layer ``e`` is paired with backbone layer ``e * (N // E)`` (SmolVLA's mapping).

* Joint ("self-attention") layers -- every ``self_attn_every_n_layers``-th expert layer, or all with
  ``attention_mode='self_attn'``: expert queries attend to [the backbone layer's K/V exactly as Gemma 3n
  computed them (normed, RoPE'd K; normed V; a shared layer's are its source's), the expert's own K/V].
* Cross layers: K/V are the expert's ``k_proj``/``v_proj`` (from the backbone's KV width) applied to that
  layer's backbone K *before* RoPE (normed K captured at ``k_norm``) and V, then the expert's k/v norms, and
  RoPE at the prefix tokens' positions. Projecting the un-rotated K keeps attention logits a function of
  relative position (a linear map of rotated K would scramble the rotation pairs).
* RoPE for expert tokens: positions continue after the prefix (number of real prefix tokens + index), and
  the base is that of the paired backbone layer's type (1e4 sliding, 1e6 full), computed in float32 by the
  backbone's own rotary modules.
* Expert queries see the whole prefix, also on sliding layers: the window bounds Gemma's own long-context
  cost, the expert has only chunk_size queries and must see every camera. Among themselves action tokens
  are causal (SmolVLA's mask); the prefix never attends to actions, so its K/V are computed once per
  observation and reused for every denoising step.
"""
from __future__ import annotations

import contextlib
import copy
import logging
import threading
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn
from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, Gemma3nConfig, Gemma3nTextConfig
from transformers.models.gemma3n.modeling_gemma3n import (
    Gemma3nMultimodalEmbedder,
    Gemma3nRMSNorm,
    Gemma3nTextMLP,
    Gemma3nTextModel,
    Gemma3nTextScaledWordEmbedding,
    apply_rotary_pos_emb,
    repeat_kv,
)

from gemma3nvla_ros import compat

logger = logging.getLogger(__name__)

# Per-thread destination of the k_norm hooks while a prefix forward runs (module level, not an attribute, so
# models stay deep-copyable / picklable).
_K_CAPTURE = threading.local()


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype):
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


# ------------------------------------------------------------------------------- vision attention, sparsity
try:
    from timm.layers.attention2d import MultiQueryAttention2d as _TimmMQA
except ImportError:  # pragma: no cover - timm without MobileNetV5 layers
    _TimmMQA = None


if _TimmMQA is not None:
    class FusedMultiQueryAttention2d(_TimmMQA):
        """timm's ``MultiQueryAttention2d`` (non-einsum branch) with its single K/V head expanded to every query
        head before ``scaled_dot_product_attention``. timm hands SDPA K/V with one head against Q with 8 or 16;
        no fused kernel takes that broadcast, so PyTorch ran its math path (in float32 for bf16 inputs). With
        the heads expanded the flash / memory-efficient / cuDNN kernels apply. Same function (a test compares
        it with timm's forward); same parameters and state-dict keys."""

        def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
            if self.einsum or not self.fused_attn:
                return super().forward(x, attn_mask)
            B, C, H, W = x.shape  # noqa: N806
            q = self._reshape_projected_query(self.query(x), self.num_heads, self.key_dim)
            k = self._reshape_input(self.key(x))
            v = self._reshape_input(self.value(x))
            heads = q.shape[1]
            k = k.expand(-1, heads, -1, -1).contiguous()
            v = v.expand(-1, heads, -1, -1).contiguous()
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                               dropout_p=self.attn_drop.p if self.training else 0.0)
            o = self._reshape_output(o, self.num_heads, H // self.query_strides[0], W // self.query_strides[1])
            return self.output(o)
else:  # pragma: no cover
    FusedMultiQueryAttention2d = None


def fuse_vision_attention(vision_tower: nn.Module) -> int:
    """Switches every timm ``MultiQueryAttention2d`` of the tower to ``FusedMultiQueryAttention2d`` (a class
    swap: no parameter changes). Returns how many modules were switched."""
    if _TimmMQA is None:
        return 0
    n = 0
    for module in vision_tower.modules():
        if type(module) is _TimmMQA:
            module.__class__ = FusedMultiQueryAttention2d
            n += 1
    return n


class CaptureSafeGaussianTopK:
    """Gemma 3n's activation sparsity (``Gemma3nTextMLP._gaussian_topk``) with its Normal quantile computed
    once, on the device, instead of from a host ``torch.tensor`` at every call (a host-to-device copy that
    synchronizes and cannot be captured in a CUDA graph). Same operations otherwise."""

    def __init__(self, mlp: nn.Module, device: torch.device) -> None:
        target = torch.tensor(mlp.activation_sparsity, dtype=torch.float32, device=device)
        self.std_multiplier = torch.distributions.normal.Normal(0, 1).icdf(target)

    def __call__(self, inputs: Tensor) -> Tensor:
        std_multiplier = self.std_multiplier.to(device=inputs.device).type(inputs.dtype)
        inputs_mean = torch.mean(inputs, dim=-1, keepdim=True)
        inputs_std = torch.std(inputs, dim=-1, keepdim=True, unbiased=False)
        cutoff_x = inputs_mean + inputs_std * std_multiplier
        return F.relu(inputs - cutoff_x)


# ----------------------------------------------------------------------------------------- config helpers
def _deep_merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def load_vlm_config(name_or_path: str, overrides: dict[str, Any] | None = None) -> Gemma3nConfig:
    """Gemma3nConfig of a hub id or local directory, with ``overrides`` merged into its dict."""
    cfg = AutoConfig.from_pretrained(name_or_path)
    if not isinstance(cfg, Gemma3nConfig):
        raise ValueError(
            f"vlm_model_name={name_or_path!r} is a {type(cfg).__name__} ({cfg.model_type}); gemma3nvla needs a "
            "Gemma 3n model (model_type 'gemma3n')."
        )
    if overrides:
        cfg = Gemma3nConfig.from_dict(_deep_merge(cfg.to_dict(), overrides))
    return cfg


def first_kv_shared_layer(text_config: Gemma3nTextConfig) -> int:
    """Index of the first KV-shared layer (== num_hidden_layers when there is none)."""
    return text_config.num_hidden_layers - (text_config.num_kv_shared_layers or 0)


def kv_source_layer(text_config: Gemma3nTextConfig, layer_idx: int) -> int:
    """The layer whose K/V ``layer_idx`` uses: itself, or for a KV-shared layer the last non-shared layer of the
    same type (transformers' ``Gemma3nTextAttention.kv_shared_layer_index``; tests compare the two)."""
    first = first_kv_shared_layer(text_config)
    if layer_idx < first or first <= 0:
        return layer_idx
    prev = list(text_config.layer_types[:first])
    kind = text_config.layer_types[layer_idx]
    return len(prev) - 1 - prev[::-1].index(kind)


def truncate_text_config(text_config: Gemma3nTextConfig, num_layers: int) -> Gemma3nTextConfig:
    """Config of the first ``num_layers`` layers that builds exactly the same layers as the full config.

    Per-layer lists are cut; ``num_kv_shared_layers`` is reduced so that the first KV-shared layer stays where
    it was (or disappears when the truncation ends before it): every kept layer keeps its layer type, MLP size,
    sparsity and, for KV-shared layers, its source layer.
    """
    total = text_config.num_hidden_layers
    if not 1 <= num_layers <= total:
        raise ValueError(f"num_vlm_layers must be in [1, {total}] for this Gemma 3n config, got {num_layers}.")
    first = first_kv_shared_layer(text_config)
    d = text_config.to_dict()
    d["num_hidden_layers"] = num_layers
    d["layer_types"] = list(text_config.layer_types[:num_layers])
    d["intermediate_size"] = list(text_config.intermediate_size[:num_layers])
    d["activation_sparsity_pattern"] = list(text_config.activation_sparsity_pattern[:num_layers])
    d["num_kv_shared_layers"] = max(0, num_layers - first)
    new = Gemma3nTextConfig.from_dict(d)
    new._attn_implementation = text_config._attn_implementation
    return new


def expert_intermediate_size(hidden: int, ffn_dim_multiplier: int = 4, multiple_of: int = 256) -> int:
    """SmolVLA's expert MLP size rule (2/3 * 4 * hidden, rounded up to a multiple of 256)."""
    hidden_dim = int(2 * hidden / 3)
    hidden_dim = int(ffn_dim_multiplier * hidden_dim)
    return multiple_of * ((hidden_dim + multiple_of - 1) // multiple_of)


# ------------------------------------------------------------------------------------------ K/V capture
class _KVRecorder:
    """Duck-typed stand-in for a transformers ``Cache``: ``Gemma3nTextAttention`` calls ``update`` on every
    non-shared layer (we keep the K/V and hand them back unchanged), stores the KV-sharing sources in
    ``shared_layers`` and reads them back on KV-shared layers -- i.e. transformers' own code does the sharing."""

    def __init__(self, past: _KVRecorder | None = None) -> None:
        self.layers: dict[int, tuple[Tensor, Tensor]] = {}
        self.shared_layers: dict[int, tuple[Tensor, Tensor]] = {}
        self.past = past  # K/V of earlier tokens, prepended (a one-token continuation pass)

    def update(self, key_states: Tensor, value_states: Tensor, layer_idx: int, cache_kwargs: Any = None):
        if self.past is not None:
            past_k, past_v = self.past.layers[layer_idx]
            key_states = torch.cat([past_k, key_states], dim=2)
            value_states = torch.cat([past_v, value_states], dim=2)
        self.layers[layer_idx] = (key_states, value_states)
        return key_states, value_states

    def get_seq_length(self, layer_idx: int = 0) -> int:  # pragma: no cover - not called with cache_position
        return 0


def _rows_to(rows: Tensor, device: torch.device) -> Tensor:
    """Host rows to ``device`` through pinned memory (asynchronous copy) where the device is an accelerator."""
    if rows.device == device:
        return rows
    if device.type == "cuda" and rows.device.type == "cpu":
        return rows.pin_memory().to(device, non_blocking=True)
    return rows.to(device)


@dataclass
class PrefixOutput:
    """Per backbone layer (all N "virtual" layers): K (normed, RoPE'd) and V as [B, kv_heads, P, head_dim],
    the normed K before RoPE as [B, P, kv_heads, head_dim]; masks and positions of the prefix."""

    keys: list[Tensor]
    values: list[Tensor]
    keys_pre_rope: list[Tensor]
    pad_mask: Tensor  # [B, P] bool
    position_ids: Tensor  # [B, P]
    last_hidden_state: Tensor | None = None


# ------------------------------------------------------------------------------------------------ expert
class ExpertAttention(nn.Module):
    def __init__(self, cfg: Gemma3nTextConfig, vlm_kv_width: int, cross: bool):
        super().__init__()
        self.cross = cross
        self.num_heads = cfg.num_attention_heads
        self.num_kv_heads = cfg.num_key_value_heads
        self.head_dim = cfg.head_dim
        self.num_key_value_groups = self.num_heads // self.num_kv_heads
        kv_in = vlm_kv_width if cross else cfg.hidden_size
        self.q_proj = nn.Linear(cfg.hidden_size, self.num_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(kv_in, self.num_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(kv_in, self.num_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, cfg.hidden_size, bias=False)
        self.q_norm = Gemma3nRMSNorm(self.head_dim, eps=cfg.rms_norm_eps)
        self.k_norm = Gemma3nRMSNorm(self.head_dim, eps=cfg.rms_norm_eps)
        self.v_norm = Gemma3nRMSNorm(self.head_dim, eps=cfg.rms_norm_eps, with_scale=False)

    def kv(self, k_in: Tensor, v_in: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor]:
        """K/V from [B, L, in] inputs (expert hidden states; for cross layers the backbone's flattened pre-RoPE
        K and V): projections, k/v norms, RoPE on K. Returns [B, kv_heads, L, head_dim] each."""
        shape = (*k_in.shape[:-1], self.num_kv_heads, self.head_dim)
        k = self.k_norm(self.k_proj(k_in).view(shape))
        k = apply_rotary_pos_emb(k, cos, sin, unsqueeze_dim=2).transpose(1, 2)
        v = self.v_norm(self.v_proj(v_in).view(shape)).transpose(1, 2)
        return k, v

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, prefix_k: Tensor, prefix_v: Tensor,
                mask: Tensor) -> Tensor:
        bsz, length, _ = x.shape
        q = self.q_norm(self.q_proj(x).view(bsz, length, self.num_heads, self.head_dim))
        q = apply_rotary_pos_emb(q, cos, sin, unsqueeze_dim=2).transpose(1, 2)
        if self.cross:
            k, v = prefix_k, prefix_v
        else:
            k_self, v_self = self.kv(x, x, cos, sin)
            k = torch.cat([prefix_k, k_self], dim=2)
            v = torch.cat([prefix_v, v_self], dim=2)
        k = repeat_kv(k, self.num_key_value_groups)
        v = repeat_kv(v, self.num_key_value_groups)
        # scale 1.0 as Gemma 3n (q and k are RMS-normed per head)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0)
        out = out.transpose(1, 2).reshape(bsz, length, -1)
        return self.o_proj(out)


class ExpertLayer(nn.Module):
    def __init__(self, cfg: Gemma3nTextConfig, layer_idx: int, vlm_kv_width: int, cross: bool):
        super().__init__()
        self.self_attn = ExpertAttention(cfg, vlm_kv_width, cross)
        self.mlp = Gemma3nTextMLP(cfg, layer_idx=layer_idx)  # activation_sparsity 0 in the expert config
        eps = cfg.rms_norm_eps
        self.input_layernorm = Gemma3nRMSNorm(cfg.hidden_size, eps=eps)
        self.post_attention_layernorm = Gemma3nRMSNorm(cfg.hidden_size, eps=eps)
        self.pre_feedforward_layernorm = Gemma3nRMSNorm(cfg.hidden_size, eps=eps)
        self.post_feedforward_layernorm = Gemma3nRMSNorm(cfg.hidden_size, eps=eps)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, prefix_k: Tensor, prefix_v: Tensor,
                mask: Tensor) -> Tensor:
        h = self.self_attn(self.input_layernorm(x), cos, sin, prefix_k, prefix_v, mask)
        x = x + self.post_attention_layernorm(h)
        h = self.mlp(self.pre_feedforward_layernorm(x))
        return x + self.post_feedforward_layernorm(h)


class ActionExpert(nn.Module):
    def __init__(self, cfg: Gemma3nTextConfig, vlm_kv_width: int, cross_flags: list[bool]):
        super().__init__()
        self.config = cfg
        self.layers = nn.ModuleList(
            [ExpertLayer(cfg, i, vlm_kv_width, cross) for i, cross in enumerate(cross_flags)]
        )
        self.norm = Gemma3nRMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=cfg.initializer_range)


# -------------------------------------------------------------------------------------------- the model
class Gemma3nWithExpertModel(nn.Module):
    """Gemma 3n (vision tower, ``embed_vision``, truncated text model) + the action expert.

    Attributes ``vision_tower``, ``embed_vision``, ``language_model`` and ``config`` (a ``Gemma3nConfig``) are
    named as in transformers' ``Gemma3nModel`` so its ``get_image_features`` runs on this module and state-dict
    keys line up with ``Gemma3nModel``'s (minus the audio tower, which is never built or kept).
    """

    def __init__(
        self,
        model_id: str,
        load_vlm_weights: bool = False,
        vlm_config_overrides: dict[str, Any] | None = None,
        num_vlm_layers: int = -1,
        num_expert_layers: int = -1,
        expert_width_multiplier: float = 0.75,
        self_attn_every_n_layers: int = 2,
        attention_mode: str = "cross_attn",
        freeze_vision_encoder: bool = True,
        train_expert_only: bool = True,
        dtype: torch.dtype = torch.float32,
        attn_implementation: str = "sdpa",
        keep_full_backbone: bool = False,
    ):
        super().__init__()
        full_cfg = load_vlm_config(model_id, vlm_config_overrides)
        full_text = full_cfg.text_config
        full_text._attn_implementation = attn_implementation
        total_layers = full_text.num_hidden_layers
        n = total_layers if num_vlm_layers is None or num_vlm_layers <= 0 else num_vlm_layers
        text_n = truncate_text_config(full_text, n)
        first_shared = first_kv_shared_layer(text_n)
        n_computed = n if keep_full_backbone else min(n, first_shared)
        text_c = truncate_text_config(full_text, n_computed)

        if load_vlm_weights:
            logger.info("Loading Gemma 3n weights from %s", model_id)
            full = AutoModelForImageTextToText.from_pretrained(model_id, config=full_cfg, dtype=dtype)
            base = full.model
            self.vision_tower = base.vision_tower
            self.embed_vision = base.embed_vision
            lm: Gemma3nTextModel = base.language_model
            lm.layers = nn.ModuleList(list(lm.layers[:n_computed]))
            self._slice_per_layer_tables(lm, n_computed)
            lm.config = text_c
            del full, base  # audio tower, embed_audio, lm_head go with it
        else:
            # Built under the target default dtype, as from_pretrained does, so buffers (embed scales, ...) get
            # the same dtype as in a loaded model while RoPE inv_freq stays float32 (created as float there).
            with _default_dtype(dtype):
                self.vision_tower = AutoModel.from_config(full_cfg.vision_config)
                self.embed_vision = Gemma3nMultimodalEmbedder(full_cfg.vision_config, text_n)
                lm = Gemma3nTextModel(text_c)
        for layer in lm.layers:  # the timm tower has no sdpa switch, so the text layers get it here
            layer.self_attn.config._attn_implementation = attn_implementation
        if not keep_full_backbone:
            # Only needed to turn the AltUp streams into the backbone's final hidden state, which no action
            # depends on.
            lm.norm = None
            lm.altup_unembed_projections = None
        self.language_model = lm
        self.keep_full_backbone = keep_full_backbone
        self.num_fused_vision_attention = fuse_vision_attention(self.vision_tower)
        self.host_embeddings = False

        cfg = copy.deepcopy(full_cfg)
        cfg.text_config = text_n
        self.config = cfg
        self.text_config = text_n
        self.num_vlm_layers = n
        self.num_computed_layers = n_computed
        self.kv_source = [kv_source_layer(text_n, i) for i in range(n)]
        self.layer_types = list(text_n.layer_types)
        # Never `.to(dtype)` the backbone: that would also cast RoPE's float32 inv_freq buffers.
        for p in self.parameters():
            p.data = p.data.to(dtype)

        # Capture each computed layer's normed, un-rotated K (the k_norm output) for the cross layers (into the
        # thread-local `_K_CAPTURE`, so forwards in different threads cannot mix their captures).
        for layer in self.language_model.layers:
            if not layer.self_attn.is_kv_shared_layer:
                layer.self_attn.k_norm.register_forward_hook(self._make_k_hook(layer.layer_idx))

        # ---- expert
        if num_expert_layers is None or num_expert_layers <= 0:
            num_expert_layers = n
        if n % num_expert_layers != 0:
            raise ValueError(
                f"num_expert_layers ({num_expert_layers}) must divide num_vlm_layers ({n}): expert layers map "
                "onto every n-th backbone layer."
            )
        self.num_expert_layers = num_expert_layers
        step = n // num_expert_layers
        self.expert_to_vlm = [e * step for e in range(num_expert_layers)]
        if attention_mode == "self_attn":
            cross_flags = [False] * num_expert_layers
        elif attention_mode == "cross_attn":
            every = self_attn_every_n_layers
            cross_flags = [not (every > 0 and e % every == 0) for e in range(num_expert_layers)]
        else:
            raise ValueError(f"attention_mode must be 'cross_attn' or 'self_attn', got {attention_mode!r}.")
        self.cross_flags = cross_flags
        width = int(text_n.hidden_size * expert_width_multiplier)
        width -= width % 2
        inter = expert_intermediate_size(width)
        self.expert_config = Gemma3nTextConfig(
            vocab_size=1,
            vocab_size_per_layer_input=1,
            hidden_size=width,
            hidden_size_per_layer_input=1,
            intermediate_size=[inter] * num_expert_layers,
            num_hidden_layers=num_expert_layers,
            num_attention_heads=text_n.num_attention_heads,
            num_key_value_heads=text_n.num_key_value_heads,
            head_dim=text_n.head_dim,
            hidden_activation=text_n.hidden_activation,
            rms_norm_eps=text_n.rms_norm_eps,
            num_kv_shared_layers=0,
            activation_sparsity_pattern=[0.0] * num_expert_layers,
            initializer_range=text_n.initializer_range,
        )
        self.expert_hidden_size = width
        self.vlm_kv_width = text_n.num_key_value_heads * text_n.head_dim
        self.expert = ActionExpert(self.expert_config, self.vlm_kv_width, cross_flags)  # float32

        self.freeze_vision_encoder = freeze_vision_encoder
        self.train_expert_only = train_expert_only
        self.set_requires_grad()

    # ------------------------------------------------------------------ setup helpers
    @staticmethod
    def _slice_per_layer_tables(lm: Gemma3nTextModel, n: int) -> None:
        """Keep only the PLE columns (table and model projection) of the first ``n`` layers."""
        per = lm.hidden_size_per_layer_input
        old_emb = lm.embed_tokens_per_layer
        if old_emb.weight.shape[1] == n * per:
            return
        new_emb = Gemma3nTextScaledWordEmbedding(
            old_emb.num_embeddings, n * per, old_emb.padding_idx, embed_scale=float(old_emb.embed_scale)
        ).to(device=old_emb.weight.device, dtype=old_emb.weight.dtype)
        with torch.no_grad():
            new_emb.weight.copy_(old_emb.weight[:, : n * per])
        lm.embed_tokens_per_layer = new_emb
        old_proj = lm.per_layer_model_projection
        new_proj = nn.Linear(old_proj.in_features, n * per, bias=False).to(
            device=old_proj.weight.device, dtype=old_proj.weight.dtype
        )
        with torch.no_grad():
            new_proj.weight.copy_(old_proj.weight[: n * per])
        lm.per_layer_model_projection = new_proj

    def _make_k_hook(self, layer_idx: int):
        def hook(_module: nn.Module, _inputs: Any, output: Tensor) -> None:
            store = getattr(_K_CAPTURE, "keys", None)
            if store is not None:
                store[layer_idx] = output

        return hook

    def vlm_modules(self) -> list[nn.Module]:
        return [self.vision_tower, self.embed_vision, self.language_model]

    def set_requires_grad(self) -> None:
        if self.freeze_vision_encoder:
            for p in self.vision_tower.parameters():
                p.requires_grad = False
        if self.train_expert_only:
            for module in self.vlm_modules():
                for p in module.parameters():
                    p.requires_grad = False

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze_vision_encoder:
            self.vision_tower.eval()
        if self.train_expert_only:
            for module in self.vlm_modules():
                module.eval()
        return self

    @property
    def vlm_dtype(self) -> torch.dtype:
        return self.language_model.embed_tokens.weight.dtype

    # ------------------------------------------------------------------ inference setup
    def host_tables(self) -> list[nn.Module]:
        """The token-indexed tables that ``keep_embeddings_on_host`` keeps in host memory: the per-layer-
        embedding table (E2B: 262,144 x 5,120 = 1.34 B parameters for 20 computed layers) and embed_tokens
        (0.54 B). Only rows of the prefix's token ids are ever read from them."""
        lm = self.language_model
        return [lm.embed_tokens, lm.embed_tokens_per_layer]

    def keep_embeddings_on_host(self, enabled: bool = True) -> None:
        """Moves the two token tables to host memory (and keeps them there through later ``.to(device)``
        calls), or back next to the rest of the model. Lookups then gather rows on the host and copy only
        those to the device (the fast path caches them per task)."""
        if enabled:
            for table in self.host_tables():
                table.to("cpu")
            self.host_embeddings = True
        else:
            self.host_embeddings = False
            device = self.language_model.per_layer_model_projection.weight.device
            for table in self.host_tables():
                table.to(device)

    def _apply(self, fn, recurse: bool = True):
        if not getattr(self, "host_embeddings", False):
            return super()._apply(fn, recurse)
        # Host-kept tables stay where they are (and in their dtype) while the rest moves.
        lm = self.language_model
        saved = {name: lm._modules.pop(name) for name in ("embed_tokens", "embed_tokens_per_layer")}
        try:
            return super()._apply(fn, recurse)
        finally:
            lm._modules.update(saved)

    def make_capture_safe(self) -> None:
        """Per-instance replacement of the activation-sparsity step (see ``CaptureSafeGaussianTopK``) on the
        decoder layers that have sparsity. Idempotent; the outputs are the same."""
        device = self.language_model.per_layer_model_projection.weight.device
        for layer in self.language_model.layers:
            mlp = layer.mlp
            if getattr(mlp, "activation_sparsity", 0.0) > 0.0:
                mlp._gaussian_topk = CaptureSafeGaussianTopK(mlp, device)

    # ------------------------------------------------------------------ embeddings
    def get_image_features(self, pixel_values: Tensor) -> Tensor:
        """transformers' ``Gemma3nModel.get_image_features`` run on this module: MobileNetV5 tower, the
        [B, C, h, w] -> [B, h*w, C] soft tokens scaled by sqrt(vision hidden), then ``embed_vision``."""
        pixel_values = pixel_values.to(dtype=self.vlm_dtype)
        return compat.image_features(self, pixel_values)

    def embed_token_ids(self, input_ids: Tensor) -> tuple[Tensor, Tensor]:
        """Embeddings and raw per-layer inputs of Gemma 3n token ids, as ``Gemma3nModel.forward`` computes them.

        Text ids use ``embed_tokens`` (sqrt(hidden) scale inside), ids in the vision range (the end-of-image
        token; image soft tokens, overwritten later) use ``embed_vision``'s hard-token table, which has no extra
        scale. PLE uses the pad id for every id outside the PLE vocabulary.
        """
        lm = self.language_model
        vocab_ple = self.text_config.vocab_size_per_layer_input
        ple_ids = torch.where((input_ids >= 0) & (input_ids < vocab_ple), input_ids, torch.zeros_like(input_ids))
        text_ids = input_ids.clamp(0, lm.embed_tokens.num_embeddings - 1)
        table_device = lm.embed_tokens.weight.device
        if table_device != input_ids.device:  # tables kept in host memory: gather there, copy only the rows
            per_layer_raw = _rows_to(lm.get_per_layer_inputs(ple_ids.to(table_device)), input_ids.device)
            embeds = _rows_to(lm.embed_tokens(text_ids.to(table_device)), input_ids.device)
        else:
            per_layer_raw = lm.get_per_layer_inputs(ple_ids)
            embeds = lm.embed_tokens(text_ids)
        lo = self.embed_vision.vocab_offset
        hi = lo + self.embed_vision.vocab_size
        vision_mask = (input_ids >= lo) & (input_ids < hi)
        if bool(vision_mask.any()):
            dummy = hi - 1
            vision_embeds = self.embed_vision(input_ids=torch.where(vision_mask, input_ids, dummy))
            embeds = torch.where(vision_mask[..., None], vision_embeds.to(embeds.dtype), embeds)
        return embeds, per_layer_raw

    # ------------------------------------------------------------------ prefix
    def build_masks(self, pad_mask: Tensor, position_ids: Tensor, dtype: torch.dtype) -> dict[str, Tensor]:
        """Additive 4D masks [B, 1, P, P]: causal over the sequence, padded keys masked, and on sliding layers
        only keys less than ``sliding_window`` positions back."""
        length = pad_mask.shape[1]
        idx = torch.arange(length, device=pad_mask.device)
        allowed = (idx[None, :] <= idx[:, None])[None] & pad_mask[:, None, :]
        dist = position_ids[:, :, None] - position_ids[:, None, :]
        sliding = allowed & (dist < self.text_config.sliding_window)
        neg = torch.finfo(dtype).min

        def additive(m: Tensor) -> Tensor:
            return torch.zeros(m.shape, dtype=dtype, device=m.device).masked_fill(~m, neg)[:, None]

        return {"full_attention": additive(allowed), "sliding_attention": additive(sliding)}

    def backbone_frozen(self) -> bool:
        return not any(p.requires_grad for m in self.vlm_modules() for p in m.parameters())

    def _run_layers(self, inputs_embeds: Tensor, per_layer_raw: Tensor, position_ids: Tensor,
                    masks: dict[str, Tensor], recorder: _KVRecorder, cache_position: Tensor):
        """transformers' decoder layers over ``inputs_embeds``; K/V land in ``recorder``. Returns the AltUp
        streams after the last computed layer and the captured pre-RoPE keys."""
        lm = self.language_model
        per_layer_inputs = lm.project_per_layer_inputs(inputs_embeds, per_layer_raw)
        kinds = [self.layer_types[layer.layer_idx] for layer in lm.layers]
        rope = {kind: compat.rope(lm, inputs_embeds, position_ids, kind) for kind in set(kinds)}

        # AltUp stream stacking, as Gemma3nTextModel.forward does it (inlined there, mirrored here).
        # (transformers takes the maximum with a float32 tensor 1e-5; clamp_min is the same value without the
        # host-to-device copy of that tensor, so the prefix has no host sync and can be captured in a CUDA graph.)
        h0 = inputs_embeds
        target_magnitude = torch.mean(h0**2, dim=-1, keepdim=True) ** 0.5
        streams = [h0]
        for proj in lm.altup_projections:
            cur = proj(h0).to(dtype=h0.dtype)
            new_magnitude = torch.sqrt(torch.mean(cur**2, dim=-1, keepdim=True).clamp_min(1e-5))
            streams.append(cur * target_magnitude / new_magnitude)
        hidden = torch.stack(streams, dim=0)

        k_pre: dict[int, Tensor] = {}
        _K_CAPTURE.keys = k_pre
        try:
            for layer, kind in zip(lm.layers, kinds):
                hidden = compat.decoder_layer(
                    layer, hidden, rope[kind], per_layer_inputs[:, :, layer.layer_idx, :],
                    attention_mask=masks[kind], position_ids=position_ids,
                    past_key_values=recorder, cache_position=cache_position,
                )
        finally:
            _K_CAPTURE.keys = None
        return hidden, k_pre

    def forward_prefix(self, inputs_embeds: Tensor, per_layer_raw: Tensor, pad_mask: Tensor,
                       position_ids: Tensor, output_hidden: bool = False) -> PrefixOutput:
        """Runs Gemma 3n's decoder over the prefix and returns every layer's K/V (and optionally the final
        hidden state, which needs ``keep_full_backbone``).

        Training with a frozen backbone and a trainable state projection: the state token is last and the
        prefix is causal, so it influences nothing but itself. The tokens before it then run without autograd,
        and the state token runs as a one-token continuation over their K/V (exactly the same K/V; only the
        state token's path is kept for the backward), instead of storing every layer's activations of the
        whole prefix.
        """
        if output_hidden and not self.keep_full_backbone:
            raise ValueError("output_hidden needs the model built with keep_full_backbone=True.")
        length = inputs_embeds.shape[1]
        device = inputs_embeds.device
        masks = self.build_masks(pad_mask, position_ids, inputs_embeds.dtype)
        split = (not output_hidden and length > 1 and torch.is_grad_enabled() and inputs_embeds.requires_grad
                 and self.backbone_frozen())
        if split:
            with torch.no_grad():
                head = _KVRecorder()
                _, k_pre_head = self._run_layers(
                    inputs_embeds[:, :-1], per_layer_raw[:, :-1], position_ids[:, :-1],
                    {k: m[:, :, :-1, :-1] for k, m in masks.items()}, head, torch.arange(length - 1, device=device),
                )
            recorder = _KVRecorder(past=head)
            hidden, k_pre_tail = self._run_layers(
                inputs_embeds[:, -1:], per_layer_raw[:, -1:], position_ids[:, -1:],
                {k: m[:, :, -1:, :] for k, m in masks.items()}, recorder,
                torch.tensor([length - 1], device=device),
            )
            k_pre = {i: torch.cat([k_pre_head[i], k_pre_tail[i]], dim=1) for i in k_pre_tail}
        else:
            recorder = _KVRecorder()
            hidden, k_pre = self._run_layers(inputs_embeds, per_layer_raw, position_ids, masks, recorder,
                                             torch.arange(length, device=device))
        prefix = self.collect_prefix(recorder, k_pre, pad_mask, position_ids)
        if output_hidden:
            prefix.last_hidden_state = self._final_hidden(hidden, inputs_embeds.dtype)
        return prefix

    def collect_prefix(self, recorder: _KVRecorder, k_pre: dict[int, Tensor], pad_mask: Tensor,
                       position_ids: Tensor) -> PrefixOutput:
        """Every virtual layer's K/V (a dropped KV-shared layer gets its source's) from a prefix pass."""
        lm = self.language_model
        keys, values, keys_pre = [], [], []
        for i in range(self.num_vlm_layers):
            src = self.kv_source[i]
            if i < self.num_computed_layers and not lm.layers[i].self_attn.is_kv_shared_layer:
                k, v = recorder.layers[i]
            else:
                k, v = recorder.shared_layers[src]
            keys.append(k)
            values.append(v)
            keys_pre.append(k_pre[src])
        return PrefixOutput(keys, values, keys_pre, pad_mask, position_ids)

    def _final_hidden(self, hidden: Tensor, dtype: torch.dtype) -> Tensor:
        """AltUp un-stacking + final norm, as Gemma3nTextModel.forward does it."""
        lm = self.language_model
        target_magnitude = torch.mean(hidden[0] ** 2, dim=-1, keepdim=True) ** 0.5
        outs = [hidden[0]]
        for i, proj in enumerate(lm.altup_unembed_projections):
            cur = proj(hidden[i + 1]).to(dtype=dtype)
            new_magnitude = torch.sqrt(torch.mean(cur**2, dim=-1, keepdim=True).clamp_min(1e-5))
            outs.append(cur * target_magnitude / new_magnitude)
        return lm.norm(torch.mean(torch.stack(outs), dim=0))

    # ------------------------------------------------------------------ expert
    def rope(self, layer_idx: int, x: Tensor, position_ids: Tensor) -> tuple[Tensor, Tensor]:
        """cos/sin of backbone layer ``layer_idx``'s type (float32 inside transformers' rotary module)."""
        return compat.rope(self.language_model, x, position_ids, self.layer_types[layer_idx])

    def expert_prefix_kv(self, prefix: PrefixOutput) -> list[tuple[Tensor, Tensor]]:
        """Per expert layer, the prefix K/V it attends to, in the expert's dtype. Independent of the noisy
        actions, so sampling computes it once per observation."""
        dtype = self.expert.norm.weight.dtype
        out = []
        for e, layer in enumerate(self.expert.layers):
            i = self.expert_to_vlm[e]
            attn: ExpertAttention = layer.self_attn
            if attn.cross:
                k_pre = prefix.keys_pre_rope[i]  # [B, P, kv, D]
                bsz, length = k_pre.shape[:2]
                k_in = k_pre.reshape(bsz, length, -1).to(dtype)
                v_in = prefix.values[i].transpose(1, 2).reshape(bsz, length, -1).to(dtype)
                cos, sin = self.rope(i, k_in, prefix.position_ids)
                out.append(attn.kv(k_in, v_in, cos, sin))
            else:
                out.append((prefix.keys[i].to(dtype), prefix.values[i].to(dtype)))
        return out

    def forward_expert(self, suffix_embeds: Tensor, prefix_kv: list[tuple[Tensor, Tensor]],
                       prefix_pad_mask: Tensor, suffix_position_ids: Tensor) -> Tensor:
        """Runs the expert over the action tokens; returns its final-normed hidden states [B, S, width]."""
        # The expert may run in another dtype than the projections around it (e.g. cast to bf16 for inference).
        suffix_embeds = suffix_embeds.to(self.expert.norm.weight.dtype)
        bsz, length, _ = suffix_embeds.shape
        device = suffix_embeds.device
        neg = torch.finfo(suffix_embeds.dtype).min
        prefix_part = prefix_pad_mask[:, None, None, :].expand(bsz, 1, length, prefix_pad_mask.shape[1])
        causal = torch.ones(length, length, dtype=torch.bool, device=device).tril()
        joint = torch.cat([prefix_part, causal[None, None].expand(bsz, 1, length, length)], dim=-1)

        def additive(m: Tensor) -> Tensor:
            return torch.zeros(m.shape, dtype=suffix_embeds.dtype, device=device).masked_fill(~m, neg)

        cross_mask, joint_mask = additive(prefix_part), additive(joint)
        rope_cache: dict[str, tuple[Tensor, Tensor]] = {}
        x = suffix_embeds
        for e, layer in enumerate(self.expert.layers):
            i = self.expert_to_vlm[e]
            kind = self.layer_types[i]
            if kind not in rope_cache:
                rope_cache[kind] = self.rope(i, x, suffix_position_ids)
            cos, sin = rope_cache[kind]
            k, v = prefix_kv[e]
            x = layer(x, cos, sin, k, v, cross_mask if layer.self_attn.cross else joint_mask)
        return self.expert.norm(x)

    # ------------------------------------------------------------------ accounting
    def parameter_report(self) -> dict[str, int]:
        """Parameter counts: total kept, and those that can influence an action (all kept modules except the
        parts of the last computed layer after its K/V, and PLE columns of that layer)."""
        total = sum(p.numel() for p in self.parameters())
        unused = 0
        lm = self.language_model
        if self.keep_full_backbone:
            first = first_kv_shared_layer(self.text_config)
            for layer in lm.layers[first:]:
                unused += sum(p.numel() for p in layer.parameters())
            unused += sum(p.numel() for p in lm.norm.parameters())
            unused += sum(p.numel() for p in lm.altup_unembed_projections.parameters())
            last_idx = min(self.num_vlm_layers, first) - 1
        else:
            last_idx = self.num_computed_layers - 1
        last = lm.layers[last_idx]
        needed = {"altup.modality_router", "altup.router_norm", "altup.prediction_coefs", "input_layernorm",
                  "self_attn.k_proj", "self_attn.v_proj", "self_attn.k_norm", "self_attn.v_norm"}
        for name, p in last.named_parameters():
            if not any(name.startswith(k) for k in needed):
                unused += p.numel()
        # PLE columns of the last computed layer and of any kept KV-shared layer
        per = lm.hidden_size_per_layer_input
        n_cols = self.num_computed_layers - last_idx
        unused += n_cols * per * (lm.embed_tokens_per_layer.num_embeddings + lm.per_layer_model_projection.in_features)
        return {"total": total, "used": total - unused}
