"""Gemma3nVLA: SmolVLA's flow-matching VLA with Gemma 3n as the backbone (LeRobot policy ``gemma3nvla``).

Train (after ``pip install -e plugins/lerobot_policy_gemma3nvla``)::

    lerobot-train --policy.type=gemma3nvla --dataset.repo_id=<user>/<dataset> --batch_size=32 --steps=200000

Prefix = [BOS] + per camera ["\\n\\n", BOI, 256 image soft tokens, EOI, "\\n\\n"] (Gemma 3n's processor
layout) + task tokens + one state token; suffix = chunk_size noisy action tokens (+ sinusoidal time embedding
through a small MLP) run through the action expert, which reads the prefix's per-layer K/V (see
``gemma3n_with_expert``). Flow matching: t ~ 0.999 * Beta(1.5, 1) + 0.001, x_t = t * noise + (1 - t) * actions,
target u = noise - actions, MSE over real (unpadded) action dims and in-episode steps; the padded action dims
carry no noise (x_t is zero there in training and sampling alike). Sampling: Euler from t=1
to 0 in ``num_steps`` steps with the prefix K/V computed once.

Normalization lives in the processors (``processor_gemma3nvla``); this module never normalizes.

Sizes with the defaults on E2B (30 VLM layers, expert 30 x 1536 wide): 4.24 B parameters kept (the 10
KV-shared decoder layers, their PLE columns, the audio tower and any LM head are not), 4.11 B of them can
influence an action, 0.79 B trainable (expert 0.787 B + action/time projections + state projection). The
logged "used" count is checked in the tests against the parameters that receive gradient.
"""
from __future__ import annotations

import contextlib
import logging
import math
import numbers
import threading
import time
from collections import deque
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from lerobot.policies.pretrained import PreTrainedPolicy
from lerobot.policies.rtc.modeling_rtc import RTCProcessor
from lerobot.policies.smolvla.modeling_smolvla import (
    aloha_gripper_from_angular,
    aloha_gripper_from_angular_inv,
    aloha_gripper_to_angular,
)
from lerobot.utils.constants import ACTION, OBS_IMAGES, OBS_LANGUAGE_ATTENTION_MASK, OBS_LANGUAGE_TOKENS, OBS_STATE

from gemma3nvla_ros.compat import no_init_weights

from .configuration_gemma3nvla import Gemma3nVLAConfig
from .flow_matching import euler_integrate
from .gemma3n_with_expert import Gemma3nWithExpertModel, PrefixOutput
from .input_checks import InputRefused, check_finite, check_pixels, count, inputs_look_fine

logger = logging.getLogger(__name__)

ACTION_IS_PAD = f"{ACTION}_is_pad"
EMPTY_CAMERA_PREFIX = f"{OBS_IMAGES}.empty_camera_"
# Set while Gemma3nVLAPolicy.from_pretrained builds a policy whose weights (backbone included) come from a checkpoint.
_FROM_CHECKPOINT = threading.local()


def resolve_dtype(name: str, device: str | None) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if (device or "").startswith("cuda") else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def create_sinusoidal_pos_embedding(time: Tensor, dimension: int, min_period: float, max_period: float) -> Tensor:
    """Sine-cosine embedding of scalar times [B] -> [B, dimension] (SmolVLA's, float64 where available)."""
    if dimension % 2 != 0:
        raise ValueError(f"dimension ({dimension}) must be divisible by 2")
    dtype = torch.float32 if time.device.type == "mps" else torch.float64
    fraction = torch.linspace(0.0, 1.0, dimension // 2, dtype=dtype, device=time.device)
    period = min_period * (max_period / min_period) ** fraction
    scaling = 1.0 / period * 2 * math.pi
    sin_input = scaling[None, :] * time.to(dtype)[:, None]
    return torch.cat([torch.sin(sin_input), torch.cos(sin_input)], dim=1)


def resize_image(img: Tensor, height: int, width: int, mode: str = "stretch", antialias: bool = True) -> Tensor:
    """[B, C, H, W] float images -> [B, C, height, width]. ``stretch``: the whole frame scaled to the size, as Gemma 3n's
    image processor does (bilinear, antialiased). ``pad``: scaled to fit with its aspect ratio kept, then zero-padded on
    the left and top, as SmolVLA's ``resize_with_pad`` (same sizes and layout). ``antialias``: low-pass when
    downscaling (bilinear with the kernel widened by the scale factor, as PIL and torchvision do); it changes nothing
    when upscaling."""
    cur_height, cur_width = img.shape[-2:]
    if mode == "stretch":
        size = (height, width)
    elif mode == "pad":
        ratio = max(cur_width / width, cur_height / height)
        size = (int(cur_height / ratio), int(cur_width / ratio))
    else:
        raise ValueError(f"resize mode must be 'stretch' or 'pad', got {mode!r}")
    if size != (cur_height, cur_width):
        downscale = size[0] < cur_height or size[1] < cur_width
        img = F.interpolate(img, size=size, mode="bilinear", align_corners=False, antialias=antialias and downscale)
    if size != (height, width):
        img = F.pad(img, (width - size[1], 0, height - size[0], 0), value=0)
    return img


def pad_vector(vector: Tensor, new_dim: int) -> Tensor:
    """Zero-pads the last dim to ``new_dim`` (returns a new tensor; never writes into the input)."""
    if vector.shape[-1] == new_dim:
        return vector
    return F.pad(vector, (0, new_dim - vector.shape[-1]))


class VLAFlowMatching(nn.Module):
    """The network: Gemma 3n prefix + action expert + state/action/time projections."""

    def __init__(self, config: Gemma3nVLAConfig, load_vlm_weights: bool | None = None):
        super().__init__()
        self.config = config
        dtype = resolve_dtype(config.backbone_dtype, config.device)
        self.vlm_with_expert = Gemma3nWithExpertModel(
            model_id=config.vlm_model_name,
            load_vlm_weights=config.load_vlm_weights if load_vlm_weights is None else load_vlm_weights,
            vlm_config_overrides=config.vlm_config_overrides,
            num_vlm_layers=config.num_vlm_layers,
            num_expert_layers=config.num_expert_layers,
            expert_width_multiplier=config.expert_width_multiplier,
            self_attn_every_n_layers=config.self_attn_every_n_layers,
            attention_mode=config.attention_mode,
            freeze_vision_encoder=config.freeze_vision_encoder,
            train_expert_only=config.train_expert_only,
            dtype=dtype,
            attn_implementation=config.attn_implementation,
            keep_full_backbone=config.keep_full_backbone,
        )
        vlm_cfg = self.vlm_with_expert.config
        hidden = vlm_cfg.text_config.hidden_size
        width = self.vlm_with_expert.expert_hidden_size
        self.state_proj = nn.Linear(config.max_state_dim, hidden)
        self.action_in_proj = nn.Linear(config.max_action_dim, width)
        self.action_out_proj = nn.Linear(width, config.max_action_dim)
        self.action_time_mlp_in = nn.Linear(2 * width, width)
        self.action_time_mlp_out = nn.Linear(width, width)
        # Real action dims; the rest (up to max_action_dim) is padding, which the loss does not cover.
        self.action_dim = config.action_feature.shape[0] if config.action_feature is not None else config.max_action_dim
        for p in self.state_proj.parameters():
            p.requires_grad = config.train_state_proj

        # Special-token layout of Gemma 3n's processor: "\n\n" BOI <soft>*n EOI "\n\n" per image, BOS first.
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(config.vlm_model_name)
        newline_ids = tokenizer("\n\n", add_special_tokens=False)["input_ids"]
        self.bos_token_id = int(tokenizer.bos_token_id if tokenizer.bos_token_id is not None
                                else vlm_cfg.text_config.bos_token_id)
        self.pad_token_id = int(vlm_cfg.text_config.pad_token_id or 0)
        n_soft = vlm_cfg.vision_soft_tokens_per_image
        block = [*newline_ids, vlm_cfg.boi_token_id, *([vlm_cfg.image_token_id] * n_soft), vlm_cfg.eoi_token_id,
                 *newline_ids]
        self.register_buffer("image_block_ids", torch.tensor(block, dtype=torch.long), persistent=False)
        self.image_token_id = vlm_cfg.image_token_id
        self.num_image_soft_tokens = n_soft
        if config.compile_model:
            self.velocity = torch.compile(self.velocity, mode=config.compile_mode)

    # ------------------------------------------------------------------ sampling helpers
    @staticmethod
    def sample_noise(shape: tuple[int, ...], device: torch.device, generator: torch.Generator | None = None) -> Tensor:
        return torch.randn(shape, dtype=torch.float32, device=device, generator=generator)

    @staticmethod
    def sample_time(bsize: int, device: torch.device, generator: torch.Generator | None = None) -> Tensor:
        """t = 0.999 * Beta(1.5, 1) + 0.001. Beta(a, 1) has CDF x^a, so it is U^(1/a) (exact, and seedable)."""
        u = torch.rand(bsize, dtype=torch.float32, device=device, generator=generator)
        return u.pow(1.0 / 1.5) * 0.999 + 0.001

    def real_dims_only(self, x: Tensor) -> Tensor:
        """``x`` with its padded action dims zeroed (a new tensor). Applied to the noise (so x_t's padded dims are
        zero in training) and to the velocity while sampling (so they stay zero): the padded dims' velocity is
        never trained, and integrating it would feed the network padded dims unlike any it saw in training."""
        if self.action_dim >= x.shape[-1]:
            return x
        return pad_vector(x[..., : self.action_dim], x.shape[-1])

    # ------------------------------------------------------------------ embeddings
    def prefix_layout(self, img_masks: list[Tensor], lang_tokens: Tensor, lang_masks: Tensor) -> tuple[Tensor, Tensor]:
        """Token ids [B, P] of the prefix (BOS, per camera the image block, the task, the state slot) and its pad
        mask [B, P], on the device of ``lang_tokens``."""
        bsize = lang_tokens.shape[0]
        device = lang_tokens.device
        lang_masks = lang_masks.bool()
        # The tokenizer may already have put BOS first; Gemma 3n's layout has BOS before the images.
        if lang_tokens.shape[1] > 0 and bool((lang_tokens[:, 0] == self.bos_token_id).all()):
            lang_tokens, lang_masks = lang_tokens[:, 1:], lang_masks[:, 1:]

        ids = [torch.full((bsize, 1), self.bos_token_id, dtype=torch.long, device=device)]
        pads = [torch.ones(bsize, 1, dtype=torch.bool, device=device)]
        block = self.image_block_ids.to(device)
        for mask in img_masks:
            ids.append(block[None].expand(bsize, -1))
            pads.append(mask.to(device).bool()[:, None].expand(bsize, block.numel()))
        ids.append(lang_tokens.long())
        pads.append(lang_masks)
        ids.append(torch.full((bsize, 1), self.pad_token_id, dtype=torch.long, device=device))  # the state slot
        pads.append(torch.ones(bsize, 1, dtype=torch.bool, device=device))
        return torch.cat(ids, dim=1), torch.cat(pads, dim=1)

    def embed_prefix(self, images: list[Tensor], img_masks: list[Tensor], lang_tokens: Tensor,
                     lang_masks: Tensor, state: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Returns (inputs_embeds [B, P, H], raw per-layer inputs, pad mask [B, P], position ids [B, P])."""
        vlm = self.vlm_with_expert
        bsize = state.shape[0]
        input_ids, pad_mask = self.prefix_layout(img_masks, lang_tokens, lang_masks)

        embeds, per_layer_raw = vlm.embed_token_ids(input_ids)
        if images:
            feats = vlm.get_image_features(torch.cat(images, dim=0))  # [n_img * B, n_soft, H]
            if feats.shape[1] != self.num_image_soft_tokens:
                raise ValueError(
                    f"The vision tower gave {feats.shape[1]} soft tokens per image, the config expects "
                    f"vision_soft_tokens_per_image={self.num_image_soft_tokens}."
                )
            feats = feats.view(len(images), bsize, *feats.shape[1:]).transpose(0, 1).reshape(bsize, -1, feats.shape[-1])
            image_slots = (input_ids == self.image_token_id)[..., None].expand_as(embeds)
            embeds = embeds.masked_scatter(image_slots, feats.to(embeds.dtype))
        state_emb = self.state_proj(state.to(self.state_proj.weight.dtype)).to(embeds.dtype)
        embeds = torch.cat([embeds[:, :-1], state_emb[:, None]], dim=1)
        position_ids = torch.cumsum(pad_mask.long(), dim=1) - 1
        return embeds, per_layer_raw, pad_mask, position_ids

    def embed_suffix(self, noisy_actions: Tensor, timestep: Tensor) -> Tensor:
        action_emb = self.action_in_proj(noisy_actions)
        time_emb = create_sinusoidal_pos_embedding(
            timestep, self.vlm_with_expert.expert_hidden_size, self.config.min_period, self.config.max_period
        ).to(action_emb.dtype)
        time_emb = time_emb[:, None, :].expand_as(action_emb)
        x = self.action_time_mlp_in(torch.cat([action_emb, time_emb], dim=2))
        return self.action_time_mlp_out(F.silu(x))

    # ------------------------------------------------------------------ network passes
    def compute_prefix(self, images, img_masks, lang_tokens, lang_masks, state) -> tuple[PrefixOutput, list]:
        embeds, per_layer_raw, pad_mask, position_ids = self.embed_prefix(images, img_masks, lang_tokens, lang_masks, state)
        prefix = self.vlm_with_expert.forward_prefix(embeds, per_layer_raw, pad_mask, position_ids)
        return prefix, self.vlm_with_expert.expert_prefix_kv(prefix)

    def velocity(self, prefix: PrefixOutput, prefix_kv: list, x_t: Tensor, timestep: Tensor) -> Tensor:
        suffix = self.embed_suffix(x_t, timestep)
        n_real = prefix.pad_mask.sum(dim=1, keepdim=True)
        positions = n_real + torch.arange(suffix.shape[1], device=suffix.device)[None]  # continue after prefix
        out = self.vlm_with_expert.forward_expert(suffix, prefix_kv, prefix.pad_mask, positions)
        return self.action_out_proj(out.to(self.action_out_proj.weight.dtype))

    def forward(self, images, img_masks, lang_tokens, lang_masks, state, actions, noise=None, time=None,
                generator: torch.Generator | None = None) -> Tensor:
        """Per-element flow-matching losses [B, chunk, max_action_dim]."""
        if noise is None:
            noise = self.sample_noise(actions.shape, actions.device, generator)
        noise = self.real_dims_only(noise)
        if time is None:
            time = self.sample_time(actions.shape[0], actions.device, generator)
        t = time[:, None, None]
        x_t = t * noise + (1 - t) * actions
        u_t = noise - actions
        prefix, prefix_kv = self.compute_prefix(images, img_masks, lang_tokens, lang_masks, state)
        v_t = self.velocity(prefix, prefix_kv, x_t, time)
        return F.mse_loss(v_t, u_t, reduction="none")

    @torch.no_grad()
    def sample_actions(self, images, img_masks, lang_tokens, lang_masks, state, noise: Tensor | None = None,
                       generator: torch.Generator | None = None, use_cache: bool | None = None, *,
                       rtc_processor: RTCProcessor | None = None, rtc_enabled: bool = False,
                       inference_delay: int | None = None, prev_chunk_left_over: Tensor | None = None,
                       execution_horizon: int | None = None) -> Tensor:
        """Euler integration from t=1 (noise) to t=0 (LeRobot's ``euler_integrate``). With the cache (default) the
        prefix K/V -- and the cross layers' projected K/V -- are computed once; without it they are recomputed at
        every step. With ``rtc_enabled`` each velocity goes through ``rtc_processor.denoise_step``, which guides the
        chunk towards ``prev_chunk_left_over`` (model space, [B, T, max_action_dim]) as LeRobot's policies do."""
        bsize = state.shape[0]
        device = state.device
        if noise is None:
            noise = self.sample_noise((bsize, self.config.chunk_size, self.config.max_action_dim), device, generator)
        noise = self.real_dims_only(noise)
        use_cache = self.config.use_cache if use_cache is None else use_cache
        cached = self.compute_prefix(images, img_masks, lang_tokens, lang_masks, state) if use_cache else None

        def denoise(x_t: Tensor, time: Tensor) -> Tensor:
            prefix, prefix_kv = cached if cached is not None else self.compute_prefix(
                images, img_masks, lang_tokens, lang_masks, state
            )
            return self.real_dims_only(self.velocity(prefix, prefix_kv, x_t, time))

        return euler_integrate(
            denoise, noise, self.config.num_steps, rtc_processor=rtc_processor, rtc_enabled=rtc_enabled,
            inference_delay=inference_delay, prev_chunk_left_over=prev_chunk_left_over,
            execution_horizon=execution_horizon,
        )


class Gemma3nVLAPolicy(PreTrainedPolicy):
    """LeRobot wrapper: input checks, image/state/action preparation, action queue."""

    config_class = Gemma3nVLAConfig
    name = "gemma3nvla"

    def __init__(self, config: Gemma3nVLAConfig, **kwargs: Any):
        # make_policy passes dataset_stats= / dataset_meta=: normalization is the processors' job, so they are
        # accepted and not used.
        super().__init__(config)
        config.validate_features()
        self.config = config
        # From a checkpoint every weight (backbone included) is the checkpoint's: build from vlm_model_name's config
        # only, without random init (E2B: ~2 min on a CPU core) of tensors about to be overwritten.
        from_checkpoint = getattr(_FROM_CHECKPOINT, "active", False)
        with no_init_weights() if from_checkpoint else contextlib.nullcontext():
            self.model = VLAFlowMatching(config, load_vlm_weights=config.load_vlm_weights and not from_checkpoint)
        self._fast = None
        self._inference_prepared = False  # prepare_for_inference() was called: its choice of path stands
        self._logged_once: set[str] = set()
        self.init_rtc_processor()
        self.parameter_counts = self._count_parameters()
        logger.info(
            "gemma3nvla parameters: total %s, trainable %s, used by the action forward %s",
            f"{self.parameter_counts['total']:,}", f"{self.parameter_counts['trainable']:,}",
            f"{self.parameter_counts['used']:,}",
        )
        self.reset()

    def _count_parameters(self) -> dict[str, int]:
        vlm = self.model.vlm_with_expert
        backbone = [vlm.vision_tower, vlm.embed_vision, vlm.language_model]
        backbone_ids = {id(p) for m in backbone for p in m.parameters()}
        report = vlm.parameter_report()  # over the whole Gemma3nWithExpertModel (backbone + expert)
        total = sum(p.numel() for p in self.parameters())
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        rest = total - sum(p.numel() for p in vlm.parameters())
        return {
            "total": total,
            "trainable": trainable,
            "used": report["used"] + rest,
            "backbone": sum(p.numel() for p in self.parameters() if id(p) in backbone_ids),
            "expert": sum(p.numel() for p in vlm.expert.parameters()),
        }

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any):
        """LeRobot's from_pretrained, except that ``load_vlm_weights`` is not applied: the checkpoint holds every
        weight (backbone included), so Gemma 3n's weights are not loaded (or downloaded) a second time only to be
        overwritten. Only the config and tokenizer at ``vlm_model_name`` are needed; on a machine where they live
        elsewhere, pass ``config=`` with ``vlm_model_name`` changed (``--policy.vlm_model_name`` on the CLI)."""
        _FROM_CHECKPOINT.active = True
        try:
            return super().from_pretrained(*args, **kwargs)
        finally:
            _FROM_CHECKPOINT.active = False

    @classmethod
    def _load_as_safetensor(cls, model, model_file: str, map_location: str, strict: bool):
        # The policy was built without initializing its weights: a tensor missing from the checkpoint is an error
        # (LeRobot's default strict=False would leave it as uninitialized memory).
        from safetensors import safe_open

        with safe_open(model_file, framework="pt") as f:
            saved = set(f.keys())
        missing = sorted(set(model.state_dict()) - saved)
        if missing:
            raise ValueError(
                f"{model_file} lacks {len(missing)} tensors of this gemma3nvla policy (e.g. {missing[:5]}); was it "
                "saved with a different configuration (num_vlm_layers, num_expert_layers, keep_full_backbone, ...)?"
            )
        return super()._load_as_safetensor(model, model_file, map_location, strict)

    def reset(self) -> None:
        self._queues = {ACTION: deque(maxlen=self.config.n_action_steps)}

    # ------------------------------------------------------------------ real-time chunking
    def supports_rtc(self) -> bool:
        return True

    def init_rtc_processor(self) -> None:
        """(Re)build the RTC processor from ``config.rtc_config`` (LeRobot's rollout calls this after setting it)."""
        self.rtc_processor = RTCProcessor(self.config.rtc_config) if self.config.rtc_config is not None else None

    def _rtc_enabled(self) -> bool:
        return self.config.rtc_config is not None and bool(self.config.rtc_config.enabled)

    def _log_once(self, key: str, message: str) -> None:
        if key not in self._logged_once:
            self._logged_once.add(key)
            logger.warning(message)

    def _rtc_prefix(self, leftover: Any, bsize: int, device: torch.device) -> Tensor:
        """``prev_chunk_left_over`` as predict_action_chunk returns actions ([T, action_dim] or [B, T, action_dim],
        normalized) -> the model's space [B, T, max_action_dim], at most chunk_size steps."""
        prev = torch.as_tensor(leftover).to(device=device, dtype=torch.float32).clone()  # never an inference tensor
        action_dim = self.config.action_feature.shape[0]
        if prev.ndim == 2:
            prev = prev[None]
        if prev.ndim != 3 or prev.shape[-1] != action_dim or prev.shape[1] == 0 or prev.shape[0] not in (1, bsize):
            raise ValueError(
                f"prev_chunk_left_over must be [T, {action_dim}] or [{bsize}, T, {action_dim}] (T >= 1): the unexecuted "
                f"actions of the previous chunk as predict_action_chunk returned them; got {tuple(prev.shape)}."
            )
        if not bool(torch.isfinite(prev).all()):
            raise ValueError("prev_chunk_left_over holds NaN/inf values.")
        prev = prev[:, : self.config.chunk_size].expand(bsize, -1, -1)
        return self.prepare_action({ACTION: prev})

    # ------------------------------------------------------------------ inference setup
    def prepare_for_inference(self, fast: bool | None = None, warmup: bool = True,
                              batch: dict[str, Tensor] | None = None) -> dict[str, Any]:
        """Sets the policy up for inference on the device it is on, and (``warmup``) runs chunks until nothing
        is left to compile or capture, so that the first real chunk is not a compile. Call it after moving the
        policy to its device (again after any later ``.to()``).

        * ``fast``: the fast path (``fast_inference.FastSampler``) for ``predict_action_chunk`` /
          ``select_action``; ``None`` follows ``config.fast_inference`` ("auto": on with CUDA). ``False`` drops a
          fast path set up earlier: the eager reference path runs.
        * The expert is cast to ``config.inference_expert_dtype`` ("auto": the backbone's dtype, bfloat16 on
          CUDA); ``config.host_embeddings`` keeps the two token tables in host memory; TF32 per ``config.tf32``.
        * ``batch``: an example (preprocessed) batch for the warm-up; by default one is made from the config's
          features (random images, a task of ``tokenizer_max_length`` tokens, batch size 1).

        Returns what was set up: path, graphs, compile, expert attention, fallbacks, warm-up seconds.
        """
        from .fast_inference import FastSampler

        cfg = self.config
        self.eval()
        vlm = self.model.vlm_with_expert
        device = self.model.action_in_proj.weight.device
        _apply_tf32(cfg, device)
        vlm.make_capture_safe()
        if cfg.host_embeddings and not vlm.host_embeddings:
            vlm.keep_embeddings_on_host(True)
            if device.type == "cuda":
                torch.cuda.empty_cache()
        dtype = vlm.vlm_dtype if cfg.inference_expert_dtype == "auto" else resolve_dtype(cfg.inference_expert_dtype, None)
        if vlm.expert.norm.weight.dtype != dtype:
            self._fast = None
            vlm.expert.to(dtype)
        self._inference_prepared = True
        if fast is None:
            fast = cfg.fast_inference == "on" or (cfg.fast_inference == "auto" and device.type == "cuda")
        report: dict[str, Any] = {"path": "fast" if fast else "eager", "device": str(device),
                                  "expert_dtype": str(dtype).replace("torch.", ""),
                                  "host_embeddings": vlm.host_embeddings}
        if fast:
            self._fast = FastSampler(self.model, graphs=cfg.fast_cuda_graphs, compile=cfg.fast_compile,
                                     attention=cfg.fast_attention, compile_mode="default")
            self._fast.choose_attention()
        else:
            self._fast = None
        if warmup:
            example = batch if batch is not None else self.example_batch()
            t0 = time.perf_counter()
            for _ in range(2):
                self.predict_action_chunk(example)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            report["warmup_s"] = round(time.perf_counter() - t0, 2)
        if self._fast is not None:
            report.update(self._fast.report)
        self.reset()
        return report

    def example_batch(self, batch_size: int = 1) -> dict[str, Tensor]:
        """A batch shaped like the preprocessor's output (random images, zero state, a task of
        ``tokenizer_max_length`` tokens), on the policy's device: for warm-ups and benchmarks."""
        cfg = self.config
        device = self.model.action_in_proj.weight.device
        batch: dict[str, Tensor] = {}
        for key, ft in cfg.image_features.items():
            if not key.startswith(EMPTY_CAMERA_PREFIX):
                batch[key] = torch.rand(batch_size, *ft.shape, device=device)
        batch[OBS_STATE] = torch.zeros(batch_size, cfg.robot_state_feature.shape[0], device=device)
        tokens = torch.full((batch_size, cfg.tokenizer_max_length), self.model.pad_token_id, dtype=torch.long)
        tokens[:, 0] = self.model.bos_token_id
        batch[OBS_LANGUAGE_TOKENS] = tokens.to(device)
        batch[OBS_LANGUAGE_ATTENTION_MASK] = torch.ones_like(tokens, dtype=torch.bool).to(device)
        return batch

    def _fast_sampler(self):
        if self.training:
            return None
        fast = self._fast
        if fast is None and not self._inference_prepared and self.config.fast_inference == "on":
            # Callers that never call prepare_for_inference() (lerobot-rollout, lerobot-eval) get the fast path
            # when the config says "on"; its compile and capture then happen in the first chunks. Not for "auto":
            # lerobot-train's evaluation would get the expert cast to bfloat16 under its optimizer.
            self._log_once("lazy_fast", "setting the fast inference path up on the first chunk (compile and "
                                        "CUDA-graph capture take minutes once; prepare_for_inference() at start "
                                        "does it before the first real chunk)")
            self.prepare_for_inference(fast=True, warmup=False)
            fast = self._fast
        if fast is None:
            return None
        if fast.device != self.model.action_in_proj.weight.device:  # moved since: its buffers and graphs are stale
            self._fast = None
            self.prepare_for_inference(fast=True, warmup=False)
            fast = self._fast
        return fast

    def _save_pretrained(self, save_directory, state_dict: dict[str, Tensor] | None = None) -> None:
        # ``state_dict``: LeRobot 0.6 passes one gathered elsewhere (FSDP); 0.4.4 never does.
        if state_dict is None and (getattr(self, "_fast", None) is None or not self._fast.fused):
            return super()._save_pretrained(save_directory)
        # The fast path's fused expert projections make some weights views of one tensor, which safetensors'
        # save_model refuses: save own copies of every tensor instead.
        from pathlib import Path

        from huggingface_hub.constants import SAFETENSORS_SINGLE_FILE
        from safetensors.torch import save_file

        self.config._save_pretrained(save_directory)
        state = {k: v.detach().to("cpu", copy=True).contiguous()
                 for k, v in (self.state_dict() if state_dict is None else state_dict).items()}
        save_file(state, str(Path(save_directory) / SAFETENSORS_SINGLE_FILE), metadata={"format": "pt"})

    def get_optim_params(self):
        return [p for p in self.parameters() if p.requires_grad]

    # ------------------------------------------------------------------ input checks / preparation
    def _validate_batch(self, batch: dict[str, Any], training: bool) -> None:
        cfg = self.config
        if OBS_STATE not in batch:
            raise ValueError(f"Missing {OBS_STATE!r} in the batch; expected a [B, {cfg.robot_state_feature.shape[0]}] tensor.")
        _check_width(OBS_STATE, batch[OBS_STATE].shape[-1], "max_state_dim", cfg.max_state_dim,
                     cfg.robot_state_feature.shape[0])
        expected_images = [k for k in cfg.image_features if not k.startswith(EMPTY_CAMERA_PREFIX)]
        present = [k for k in cfg.image_features if k in batch]
        missing = [k for k in expected_images if k not in batch]
        unknown = [k for k in batch if k.startswith(f"{OBS_IMAGES}.") and k not in cfg.image_features
                   and not k.endswith("_padding_mask") and not k.endswith("_is_pad")]
        if missing or unknown or not present:
            raise ValueError(
                f"Expected cameras {expected_images}; missing {missing}, unexpected {unknown}."
            )
        for key in present:
            img = batch[key]
            shape = tuple(cfg.image_features[key].shape)
            if img.ndim not in (4, 5) or tuple(img.shape[-3:]) != shape:
                raise ValueError(f"Image {key!r} must be [B, {shape[0]}, {shape[1]}, {shape[2]}], got {tuple(img.shape)}.")
            if not img.is_floating_point():
                raise ValueError(
                    f"Image {key!r} must be floating point with pixels in [0, 1] (LeRobot's convention, which Gemma 3n's "
                    f"vision tower takes as is), got {img.dtype}: divide 8-bit images by 255."
                )
        for key in (OBS_LANGUAGE_TOKENS, OBS_LANGUAGE_ATTENTION_MASK):
            if key not in batch:
                raise ValueError(
                    f"Missing {key!r}: run the gemma3nvla preprocessor (make_gemma3nvla_pre_post_processors), "
                    "which tokenizes the task."
                )
        if batch[OBS_LANGUAGE_TOKENS].shape[-1] > cfg.tokenizer_max_length:
            raise ValueError(
                f"Task has {batch[OBS_LANGUAGE_TOKENS].shape[-1]} tokens, more than tokenizer_max_length="
                f"{cfg.tokenizer_max_length}."
            )
        # NaN/inf state, NaN/inf or out-of-[0, 1] pixels: refused (they would give NaN or wrong actions silently).
        # One device sync when all is well; the detailed checks say what is wrong.
        if not inputs_look_fine([batch[OBS_STATE]], [batch[key] for key in present]):
            check_finite(OBS_STATE, batch[OBS_STATE], batch.get("index"))
            for key in present:
                check_pixels(key, batch[key], batch.get("index"))
        if training:
            if ACTION not in batch:
                raise ValueError(f"Missing {ACTION!r} in the training batch.")
            act = batch[ACTION]
            expected_action = cfg.action_feature.shape[0]
            _check_width(ACTION, act.shape[-1], "max_action_dim", cfg.max_action_dim, expected_action)
            if act.ndim != 3 or act.shape[1] != cfg.chunk_size:
                raise ValueError(f"{ACTION} must be [B, chunk_size={cfg.chunk_size}, {expected_action}], got {tuple(act.shape)}.")

    def prepare_images(self, batch: dict[str, Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Resize to ``resize_imgs_with_padding`` (height, width) as ``resize_mode`` says; pixels stay in [0, 1]
        (Gemma 3n's tower takes them unnormalized). Missing empty cameras become zero images with a False mask."""
        images, masks = [], []
        ref = None
        for key in self.config.image_features:
            if key not in batch:
                continue
            img = batch[key][:, -1] if batch[key].ndim == 5 else batch[key]
            img = img.float()
            if self.config.resize_imgs_with_padding is not None:
                height, width = self.config.resize_imgs_with_padding
                img = resize_image(img, height, width, self.config.resize_mode, self.config.resize_antialias)
            bsize = img.shape[0]
            mask_key = f"{key}_padding_mask"
            mask = batch[mask_key].bool() if mask_key in batch else torch.ones(bsize, dtype=torch.bool, device=img.device)
            images.append(img)
            masks.append(mask)
            ref = img
        for key in self.config.image_features:
            if key not in batch:  # only empty cameras reach here (validated)
                images.append(torch.zeros_like(ref))
                masks.append(torch.zeros(ref.shape[0], dtype=torch.bool, device=ref.device))
        return images, masks

    def prepare_state(self, batch: dict[str, Tensor]) -> Tensor:
        state = batch[OBS_STATE][:, -1, :] if batch[OBS_STATE].ndim > 2 else batch[OBS_STATE]
        state = state.float()
        if self.config.adapt_to_pi_aloha:
            state = state.clone()
            for idx in (1, 2, 8, 9):
                state[:, idx] = -state[:, idx]
            for idx in (6, 13):
                state[:, idx] = aloha_gripper_to_angular(state[:, idx])
        return pad_vector(state, self.config.max_state_dim)

    def prepare_action(self, batch: dict[str, Tensor]) -> Tensor:
        actions = batch[ACTION].float()
        if self.config.adapt_to_pi_aloha:
            actions = actions.clone()
            for idx in (1, 2, 8, 9):
                actions[:, :, idx] = -actions[:, :, idx]
            for idx in (6, 13):
                actions[:, :, idx] = aloha_gripper_from_angular_inv(actions[:, :, idx])
        return pad_vector(actions, self.config.max_action_dim)

    def _encode_actions(self, actions: Tensor) -> Tensor:
        if self.config.adapt_to_pi_aloha:
            actions = actions.clone()
            for idx in (1, 2, 8, 9):
                actions[:, :, idx] = -actions[:, :, idx]
            for idx in (6, 13):
                actions[:, :, idx] = aloha_gripper_from_angular(actions[:, :, idx])
        return actions

    def _inputs(self, batch: dict[str, Tensor]):
        images, img_masks = self.prepare_images(batch)
        state = self.prepare_state(batch)
        return images, img_masks, batch[OBS_LANGUAGE_TOKENS], batch[OBS_LANGUAGE_ATTENTION_MASK], state

    # ------------------------------------------------------------------ LeRobot API
    def forward(self, batch: dict[str, Tensor], noise: Tensor | None = None, time: Tensor | None = None,
                reduction: str = "mean", generator: torch.Generator | None = None) -> tuple[Tensor, dict]:
        """Flow-matching loss over in-episode steps (``action_is_pad`` False) and the real action dims only.
        A NaN/inf action in an in-episode step is refused; in a padded step it is zeroed (it is never trained on,
        and would otherwise reach every step's loss through the expert's attention)."""
        self._validate_batch(batch, training=True)
        _apply_tf32(self.config, self.model.action_in_proj.weight.device)
        actions = self.prepare_action(batch)
        action_dim = self.config.action_feature.shape[0]
        if ACTION_IS_PAD in batch:
            in_episode = ~batch[ACTION_IS_PAD].bool()
        else:
            in_episode = torch.ones(actions.shape[:2], dtype=torch.bool, device=actions.device)
        nonfinite = ~torch.isfinite(actions)
        if bool(nonfinite.any()):
            _refuse_nonfinite_actions(nonfinite[..., :action_dim] & in_episode[..., None], batch.get("index"))
            actions = torch.where(nonfinite, torch.zeros((), dtype=actions.dtype, device=actions.device), actions)
        losses = self.model.forward(*self._inputs(batch), actions, noise=noise, time=time, generator=generator)
        losses = losses[:, :, :action_dim]
        valid = in_episode.to(losses.dtype)
        # Masked by selection (a NaN times 0 is still NaN).
        masked = torch.where(in_episode[..., None], losses, torch.zeros((), dtype=losses.dtype, device=losses.device))
        per_sample = masked.sum(dim=(1, 2)) / (valid.sum(dim=1) * action_dim).clamp(min=1)
        loss = masked.sum() / (valid.sum() * action_dim).clamp(min=1)
        info = {"loss": loss.item(), "valid_action_steps": float(valid.sum().item())}
        if reduction == "none":
            return per_sample, info
        return loss, info

    @torch.no_grad()
    def predict_action_chunk(self, batch: dict[str, Tensor], noise: Tensor | None = None,
                             generator: torch.Generator | None = None, *, inference_delay: int | None = None,
                             prev_chunk_left_over: Tensor | None = None, execution_horizon: int | None = None,
                             **kwargs: Any) -> Tensor:
        """[B, chunk_size, action_dim] actions (normalized; the postprocessor unnormalizes).

        Real-time chunking, as LeRobot's SmolVLA/pi0 take it (``config.rtc_config`` enabled): the chunk is guided
        towards ``prev_chunk_left_over``, the previous chunk's actions not yet executed when this observation
        was taken, in this method's output space (normalized) and aligned with this chunk's first step; its first
        ``inference_delay`` steps (executed before this chunk can take over) are frozen to them, the next ones up to
        ``execution_horizon`` (default ``rtc_config.execution_horizon``) guided with decaying weight. Without a
        leftover (the first chunk) or with RTC off the chunk is sampled as usual. A guided chunk runs on the fast
        path when it is prepared (its guidance needs no autograd there), except with ``rtc_config.debug`` (LeRobot's
        per-step tracker lives in the eager loop); on the eager path LeRobot's guidance takes a gradient, so it runs
        outside ``torch.inference_mode`` even when called inside it."""
        if self.training:  # eval() walks thousands of modules (tens of ms per chunk); only when needed
            self.eval()
        self._validate_batch(batch, training=False)
        if prev_chunk_left_over is not None and not self._rtc_enabled():
            self._log_once("rtc_off", "prev_chunk_left_over given but config.rtc_config is not enabled: ignored "
                                      "(set rtc_config=RTCConfig(enabled=True) and call init_rtc_processor())")
        if prev_chunk_left_over is None or not self._rtc_enabled():
            fast = self._fast_sampler()
            if fast is not None:
                actions = fast.sample_actions(*self._inputs(batch), noise=noise, generator=generator)
            else:
                actions = self.model.sample_actions(*self._inputs(batch), noise=noise, generator=generator,
                                                    rtc_processor=self.rtc_processor)
        else:
            actions = self._sample_guided(batch, noise, generator, inference_delay, prev_chunk_left_over,
                                          execution_horizon)
        actions = actions[:, :, : self.config.action_feature.shape[0]]
        return self._encode_actions(actions)

    def _sample_guided(self, batch, noise, generator, inference_delay, prev_chunk_left_over, execution_horizon):
        delay, horizon = count(inference_delay), count(execution_horizon)
        if delay is None:
            raise ValueError(f"inference_delay must be an integer >= 0 with prev_chunk_left_over, got {inference_delay!r}")
        if execution_horizon is not None and not horizon:
            raise ValueError(f"execution_horizon must be None or an integer > 0, got {execution_horizon!r}")
        inference_delay, execution_horizon = delay, horizon
        if self.rtc_processor is None or self.rtc_processor.rtc_config is not self.config.rtc_config:
            self.init_rtc_processor()  # rtc_config set or replaced without init_rtc_processor()
        max_weight = self.config.rtc_config.max_guidance_weight
        if isinstance(max_weight, bool) or not isinstance(max_weight, numbers.Real) or not 0 < max_weight < math.inf:
            raise ValueError(f"rtc_config.max_guidance_weight must be a finite number > 0, got {max_weight!r}")
        fast = self._fast_sampler()
        if fast is not None and not self.rtc_processor.is_debug_enabled():
            inputs = self._inputs(batch)
            prev = self._rtc_prefix(prev_chunk_left_over, inputs[-1].shape[0], inputs[-1].device)
            return fast.sample_actions(*inputs, noise=noise, generator=generator, rtc_processor=self.rtc_processor,
                                       rtc_enabled=True, inference_delay=inference_delay, prev_chunk_left_over=prev,
                                       execution_horizon=execution_horizon)
        # LeRobot's guidance differentiates through x_t: step out of inference_mode (a caller's, e.g. the runner's)
        # and work on ordinary tensors, or autograd refuses to save inference tensors.
        with torch.inference_mode(False):
            inputs = self._inputs(batch)
            state = inputs[-1]
            prev = self._rtc_prefix(prev_chunk_left_over, state.shape[0], state.device)
            return self.model.sample_actions(
                *inputs, noise=None if noise is None else noise.clone(), generator=generator,
                rtc_processor=self.rtc_processor, rtc_enabled=True, inference_delay=inference_delay,
                prev_chunk_left_over=prev, execution_horizon=execution_horizon,
            )

    @torch.no_grad()
    def select_action(self, batch: dict[str, Tensor], noise: Tensor | None = None,
                      generator: torch.Generator | None = None, **kwargs: Any) -> Tensor:
        if self.training:
            self.eval()
        if len(self._queues[ACTION]) == 0:
            actions = self.predict_action_chunk(batch, noise=noise, generator=generator)
            self._queues[ACTION].extend(actions.transpose(0, 1)[: self.config.n_action_steps])
        return self._queues[ACTION].popleft()


def _apply_tf32(config: Gemma3nVLAConfig, device: torch.device) -> None:
    if config.tf32 and device.type == "cuda" and not torch.backends.cuda.matmul.allow_tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def _refuse_nonfinite_actions(bad: Tensor, ids: Any = None) -> None:
    """``bad`` [B, chunk, action_dim]: non-finite actions in in-episode steps. Training on them would make every
    weight NaN: refused, naming the samples, steps and dims."""
    if not bool(bad.any()):
        return
    samples = torch.nonzero(bad.any(dim=(1, 2)).cpu()).flatten().tolist()
    steps = torch.nonzero(bad.any(dim=(0, 2)).cpu()).flatten().tolist()
    dims = torch.nonzero(bad.any(dim=(0, 1)).cpu()).flatten().tolist()
    where = f"samples {samples[:8]}"
    if ids is not None:
        try:
            where += f" (dataset index {[int(i) for i in torch.as_tensor(ids).reshape(-1)[samples[:8]].tolist()]})"
        except (TypeError, ValueError, IndexError, RuntimeError):
            pass
    raise InputRefused(
        f"{ACTION} is not finite in in-episode steps {steps[:16]} (dims {dims}) of {where}: not training on it; fix "
        f"those frames of the dataset (a NaN/inf in padded steps, {ACTION_IS_PAD}=True, is ignored)."
    )


def _check_width(key: str, width: int, max_name: str, max_dim: int, expected: int) -> None:
    if width > max_dim:
        raise ValueError(f"{key} has {width} values, more than {max_name}={max_dim}.")
    if width != expected:
        raise ValueError(
            f"{key} has {width} values but the policy was configured for {expected} (dataset/policy features mismatch)."
        )
