"""Configuration of the Gemma3nVLA policy (LeRobot policy type ``gemma3nvla``, LeRobot 0.4.4 and 0.6).

Gemma3nVLA is SmolVLA's recipe (a VLM prefix + a lean action expert trained by flow matching) with Google's
Gemma 3n as the vision-language backbone. The defaults are the seed notes' values; every field is validated in
``__post_init__`` / ``validate_features`` with an error that says what was expected.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lerobot.configs.policies import PreTrainedConfig
from lerobot.configs.types import FeatureType, NormalizationMode, PolicyFeature
from lerobot.optim.optimizers import AdamWConfig
from lerobot.optim.schedulers import CosineDecayWithWarmupSchedulerConfig
from lerobot.policies.rtc.configuration_rtc import RTCConfig
from lerobot.utils.constants import ACTION, OBS_IMAGES, OBS_STATE

# Known Gemma 3n checkpoints and their text depth (used only to validate num_vlm_layers early, before any
# download; local directories and other names are validated against their config when the model is built).
KNOWN_VLM_LAYERS = {
    "google/gemma-3n-e2b-it": 30,
    "google/gemma-3n-e2b": 30,
    "google/gemma-3n-e4b-it": 35,
    "google/gemma-3n-e4b": 35,
}

ATTENTION_MODES = ("cross_attn", "self_attn")
RESIZE_MODES = ("stretch", "pad")
# The fields of a config.json saved before resize_mode / resize_antialias existed (draccus writes every field):
# never add to this set.
_FIELDS_BEFORE_RESIZE_MODE = frozenset((
    "chunk_size n_action_steps normalization_mapping max_state_dim max_action_dim resize_imgs_with_padding "
    "empty_cameras adapt_to_pi_aloha use_delta_joint_actions_aloha tokenizer_max_length pad_language_to "
    "truncate_long_tasks num_steps use_cache freeze_vision_encoder train_expert_only train_state_proj optimizer_lr "
    "optimizer_betas optimizer_eps optimizer_weight_decay optimizer_grad_clip_norm scheduler_warmup_steps "
    "scheduler_decay_steps scheduler_decay_lr vlm_model_name load_vlm_weights vlm_config_overrides backbone_dtype "
    "attn_implementation keep_full_backbone attention_mode num_expert_layers num_vlm_layers self_attn_every_n_layers "
    "expert_width_multiplier compile_model compile_mode min_period max_period"
).split())
BACKBONE_DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass
class Gemma3nVLAConfig(PreTrainedConfig):
    # A field of LeRobot 0.6's PreTrainedConfig (the hub revision to load from), declared here too so that a
    # config.json saved by LeRobot 0.6 (which writes it) parses under LeRobot 0.4.4 (which does not know it).
    pretrained_revision: str | None = None

    # Input / output structure.
    n_obs_steps: int = 1
    chunk_size: int = 50
    n_action_steps: int = 50

    normalization_mapping: dict[str, NormalizationMode] = field(
        default_factory=lambda: {
            "VISUAL": NormalizationMode.IDENTITY,
            "STATE": NormalizationMode.MEAN_STD,
            "ACTION": NormalizationMode.MEAN_STD,
        }
    )

    # Shorter state and action vectors are zero-padded to these widths; wider ones are an error.
    max_state_dim: int = 32
    max_action_dim: int = 32

    # Every camera is resized to this (height, width) before the vision tower (None: taken as it is). Gemma 3n's
    # MobileNetV5 tower is trained at 768x768 with pixels in [0, 1] and no mean/std normalization.
    resize_imgs_with_padding: tuple[int, int] | None = (768, 768)
    # How: "stretch" scales the whole frame to (height, width), as Gemma 3n's own image processor does (what the
    # pretrained tower saw); "pad" keeps the aspect ratio and zero-pads on the left/top, as SmolVLA does (a 4:3
    # frame spends 25% of a square on black bars, a 16:9 one 44%). A checkpoint saved before this option existed
    # loads as "pad" without antialiasing, as it was trained (see __new__).
    resize_mode: str = "stretch"
    # Low-pass (antialiased bilinear, as Gemma 3n's processor) when downscaling; no effect when upscaling.
    resize_antialias: bool = True

    # Extra all-zero, masked-out cameras (as SmolVLA: e.g. the ALOHA sim's missing wrist cameras).
    empty_cameras: int = 0

    # ALOHA adaptations, as SmolVLA has them: convert joints/gripper from the standard Aloha space to the
    # space of pi's internal runtime. Delta joint actions are not ported (as in SmolVLA).
    adapt_to_pi_aloha: bool = False
    use_delta_joint_actions_aloha: bool = False

    # Tokenizer. Tasks that tokenize to more than tokenizer_max_length tokens are an error unless
    # truncate_long_tasks is set (then they are cut, as SmolVLA does silently).
    tokenizer_max_length: int = 48
    pad_language_to: str = "longest"  # "longest" | "max_length"
    truncate_long_tasks: bool = False

    # Decoding.
    num_steps: int = 10
    use_cache: bool = True

    # Real-Time Chunking (arXiv 2506.07339) at inference, LeRobot's RTCConfig as SmolVLA carries it: None = off
    # (LeRobot's rollout sets it for `--inference.type=rtc`; the ROS policy node for `rtc: true`). Guidance runs
    # on the eager path: the fast path is used for chunks without a leftover to guide towards.
    rtc_config: RTCConfig | None = None

    # Finetuning settings.
    freeze_vision_encoder: bool = True
    train_expert_only: bool = True
    train_state_proj: bool = True

    # Training presets (seed notes: lr 5e-5 for the bigger backbone, decay to 1.25e-6).
    optimizer_lr: float = 5e-5
    optimizer_betas: tuple[float, float] = (0.9, 0.95)
    optimizer_eps: float = 1e-8
    optimizer_weight_decay: float = 1e-10
    optimizer_grad_clip_norm: float = 10.0

    scheduler_warmup_steps: int = 1_000
    scheduler_decay_steps: int = 30_000
    scheduler_decay_lr: float = 1.25e-6

    # Backbone. vlm_model_name is a hub id (E2B default, E4B) or a local directory holding a Gemma 3n
    # config (+ weights when load_vlm_weights) and tokenizer. vlm_config_overrides is merged into the loaded
    # Gemma3nConfig dict (nested dicts merge), e.g. to shrink a model for tests.
    vlm_model_name: str = "google/gemma-3n-e2b-it"
    load_vlm_weights: bool = False
    vlm_config_overrides: dict[str, Any] | None = None
    backbone_dtype: str = "auto"  # "auto": bfloat16 on CUDA, float32 otherwise
    attn_implementation: str = "sdpa"  # "sdpa" | "eager"
    # Diagnostics: keep the KV-shared decoder layers, final norm and AltUp un-embedding, which no action
    # depends on (the expert reads per-layer K/V; a KV-shared layer's K/V are its source layer's), so that the
    # backbone's final hidden state can be computed. Off: they are not kept in memory.
    keep_full_backbone: bool = False

    # Expert.
    attention_mode: str = "cross_attn"
    num_expert_layers: int = -1  # <= 0: as many as the (truncated) backbone
    num_vlm_layers: int = 30  # first num_vlm_layers text layers of Gemma 3n (E2B has 30, E4B 35)
    self_attn_every_n_layers: int = 2
    expert_width_multiplier: float = 0.75

    # torch.compile the denoising step (the expert over the action tokens), which is launch-bound on GPUs;
    # "reduce-overhead" replays it as a CUDA graph. Off by default.
    compile_model: bool = False
    compile_mode: str = "reduce-overhead"

    # Inference setup applied by Gemma3nVLAPolicy.prepare_for_inference() (the ROS node calls it at start).
    # fast_inference: "auto" = the fast path (fast_inference.py: per-task plan, fused expert projections, one
    # CUDA graph per phase, torch.compile) on CUDA devices, the eager reference path elsewhere; "on" / "off".
    fast_inference: str = "auto"
    fast_compile: bool = True  # torch.compile the fast path's phases where Triton works (falls back if it fails)
    fast_cuda_graphs: bool = True  # capture each phase as a CUDA graph (CUDA / ROCm builds)
    fast_attention: str = "auto"  # expert attention: "auto" (timed at warm-up), "sdpa", "bmm" or "triton"
    inference_expert_dtype: str = "auto"  # dtype the expert is cast to for inference; "auto": the backbone's
    # Keep the per-layer-embedding table and embed_tokens (E2B: 1.34 B + 0.54 B parameters) in host memory, as
    # Gemma 3n is designed for; only the prefix's rows are gathered and copied (cached per task in the fast path).
    host_embeddings: bool = False
    # Let float32 matrix products use TF32 on CUDA (PyTorch's global switches; the fp32 expert's training step).
    tf32: bool = True

    # Sine-cosine time embedding range.
    min_period: float = 4e-3
    max_period: float = 4.0

    def __new__(cls, *args: Any, **kwargs: Any):
        # draccus builds a loaded config as cls(**<the fields in config.json>). A file holding every field of the
        # schema before resize_mode but not resize_mode was saved when images were always padded, unantialiased:
        # such a checkpoint keeps that preprocessing (an explicit resize_mode, e.g. a CLI override, wins).
        self = super().__new__(cls)
        if not args and "resize_mode" not in kwargs and _FIELDS_BEFORE_RESIZE_MODE <= kwargs.keys():
            self.__dict__["_saved_before_resize_mode"] = True
        return self

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.__dict__.pop("_saved_before_resize_mode", False):
            self.resize_mode, self.resize_antialias = "pad", False
        self._validate_scalars()

    # ------------------------------------------------------------------ validation
    def _validate_scalars(self) -> None:
        def positive_int(name: str) -> None:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")

        for name in ("chunk_size", "n_action_steps", "max_state_dim", "max_action_dim", "tokenizer_max_length",
                     "num_steps", "num_vlm_layers", "n_obs_steps"):
            positive_int(name)
        if self.n_obs_steps != 1:
            raise ValueError(f"`n_obs_steps` must be 1 for gemma3nvla (one observation frame), got {self.n_obs_steps}.")
        if self.n_action_steps > self.chunk_size:
            raise ValueError(
                "The chunk size is the upper bound for the number of action steps per model invocation. Got "
                f"{self.n_action_steps} for `n_action_steps` and {self.chunk_size} for `chunk_size`."
            )
        if not isinstance(self.vlm_model_name, str) or not self.vlm_model_name:
            raise ValueError(f"`vlm_model_name` must be a hub id or a local directory, got {self.vlm_model_name!r}.")
        known = KNOWN_VLM_LAYERS.get(self.vlm_model_name)
        if known is not None and self.num_vlm_layers > known:
            raise ValueError(
                f"`num_vlm_layers` must be in [1, {known}] for {self.vlm_model_name} ({known} text layers), "
                f"got {self.num_vlm_layers}."
            )
        if not isinstance(self.num_expert_layers, int):
            raise ValueError(f"`num_expert_layers` must be an integer (-1 = same as the VLM), got {self.num_expert_layers!r}.")
        if self.num_expert_layers > 0:
            if self.num_expert_layers > self.num_vlm_layers or self.num_vlm_layers % self.num_expert_layers != 0:
                raise ValueError(
                    f"`num_expert_layers` ({self.num_expert_layers}) must divide `num_vlm_layers` "
                    f"({self.num_vlm_layers}): expert layers map onto every n-th backbone layer."
                )
        if not (0.0 < float(self.expert_width_multiplier) <= 4.0):
            raise ValueError(f"`expert_width_multiplier` must be in (0, 4], got {self.expert_width_multiplier}.")
        if self.attention_mode not in ATTENTION_MODES:
            raise ValueError(f"`attention_mode` must be one of {ATTENTION_MODES}, got {self.attention_mode!r}.")
        if not isinstance(self.self_attn_every_n_layers, int) or self.self_attn_every_n_layers < 0:
            raise ValueError(
                "`self_attn_every_n_layers` must be an integer >= 0 (0: no joint layers in cross_attn mode), "
                f"got {self.self_attn_every_n_layers!r}."
            )
        if self.resize_imgs_with_padding is not None:
            size = tuple(self.resize_imgs_with_padding)
            if len(size) != 2 or any((not isinstance(s, int)) or s <= 0 for s in size):
                raise ValueError(
                    f"`resize_imgs_with_padding` must be None or (height, width) positive ints, got {self.resize_imgs_with_padding!r}."
                )
            self.resize_imgs_with_padding = size
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"`resize_mode` must be one of {RESIZE_MODES}, got {self.resize_mode!r}.")
        if not isinstance(self.resize_antialias, bool):
            raise ValueError(f"`resize_antialias` must be a bool, got {self.resize_antialias!r}.")
        visual = self.normalization_mapping.get("VISUAL", NormalizationMode.IDENTITY)
        if NormalizationMode(visual) is not NormalizationMode.IDENTITY:
            raise ValueError(
                f"normalization_mapping['VISUAL'] must be IDENTITY, got {visual}: Gemma 3n's vision tower takes pixels "
                "in [0, 1] as they are."
            )
        if not isinstance(self.empty_cameras, int) or self.empty_cameras < 0:
            raise ValueError(f"`empty_cameras` must be an integer >= 0, got {self.empty_cameras!r}.")
        if self.use_delta_joint_actions_aloha:
            raise NotImplementedError(
                "`use_delta_joint_actions_aloha` is used by pi0/smolvla for aloha real models; it is not ported "
                "(as in LeRobot's SmolVLA)."
            )
        if self.pad_language_to not in ("longest", "max_length"):
            raise ValueError(f"`pad_language_to` must be 'longest' or 'max_length', got {self.pad_language_to!r}.")
        if self.backbone_dtype not in BACKBONE_DTYPES:
            raise ValueError(f"`backbone_dtype` must be one of {BACKBONE_DTYPES}, got {self.backbone_dtype!r}.")
        if self.compile_mode not in ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"):
            raise ValueError(f"`compile_mode` must be a torch.compile mode, got {self.compile_mode!r}.")
        if self.fast_inference not in ("auto", "on", "off"):
            raise ValueError(f"`fast_inference` must be 'auto', 'on' or 'off', got {self.fast_inference!r}.")
        if self.fast_attention not in ("auto", "sdpa", "bmm", "triton"):
            raise ValueError(f"`fast_attention` must be 'auto', 'sdpa', 'bmm' or 'triton', got {self.fast_attention!r}.")
        if self.inference_expert_dtype not in BACKBONE_DTYPES:
            raise ValueError(
                f"`inference_expert_dtype` must be one of {BACKBONE_DTYPES}, got {self.inference_expert_dtype!r}."
            )
        if self.attn_implementation not in ("sdpa", "eager"):
            raise ValueError(f"`attn_implementation` must be 'sdpa' or 'eager', got {self.attn_implementation!r}.")
        betas = tuple(self.optimizer_betas)
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"`optimizer_betas` must be two floats in [0, 1), got {self.optimizer_betas!r}.")
        self.optimizer_betas = betas
        for name in ("optimizer_lr", "scheduler_decay_lr", "optimizer_eps"):
            if getattr(self, name) <= 0:
                raise ValueError(f"`{name}` must be > 0, got {getattr(self, name)}.")
        if self.optimizer_weight_decay < 0 or self.optimizer_grad_clip_norm <= 0:
            raise ValueError(
                "`optimizer_weight_decay` must be >= 0 and `optimizer_grad_clip_norm` > 0, got "
                f"{self.optimizer_weight_decay} and {self.optimizer_grad_clip_norm}."
            )
        if self.scheduler_warmup_steps < 0 or self.scheduler_decay_steps <= 0:
            raise ValueError(
                "`scheduler_warmup_steps` must be >= 0 and `scheduler_decay_steps` > 0, got "
                f"{self.scheduler_warmup_steps} and {self.scheduler_decay_steps}."
            )
        if self.min_period <= 0 or self.max_period <= self.min_period:
            raise ValueError(f"need 0 < min_period < max_period, got {self.min_period}, {self.max_period}.")
        if self.rtc_config is not None:
            if not isinstance(self.rtc_config, RTCConfig):
                raise ValueError(f"`rtc_config` must be None or a LeRobot RTCConfig, got {type(self.rtc_config)}.")
            horizon = self.rtc_config.execution_horizon
            if not isinstance(horizon, int) or isinstance(horizon, bool) or horizon <= 0:
                raise ValueError(f"`rtc_config.execution_horizon` must be a positive integer, got {horizon!r}.")
        if self.vlm_config_overrides is not None and not isinstance(self.vlm_config_overrides, dict):
            raise ValueError(f"`vlm_config_overrides` must be a dict or None, got {type(self.vlm_config_overrides)}.")

    def validate_features(self) -> None:
        """Adds the empty cameras and checks the features against the policy's limits."""
        for i in range(self.empty_cameras):
            key = f"{OBS_IMAGES}.empty_camera_{i}"
            if key not in self.input_features:
                self.input_features[key] = PolicyFeature(type=FeatureType.VISUAL, shape=(3, 480, 640))

        if not self.image_features:
            raise ValueError(
                "gemma3nvla needs at least one image feature (observation.images.*) in the dataset/input "
                f"features; got {sorted(self.input_features)}."
            )
        for key, ft in self.image_features.items():
            if len(ft.shape) != 3 or ft.shape[0] != 3:
                raise ValueError(f"Image feature {key!r} must have shape (3, H, W), got {tuple(ft.shape)}.")
        if self.resize_imgs_with_padding is None:
            shapes = {key: tuple(ft.shape) for key, ft in self.image_features.items()
                      if not key.startswith(f"{OBS_IMAGES}.empty_camera_")}  # empty cameras take the others' shape
            if len(set(shapes.values())) > 1:
                raise ValueError(
                    "With resize_imgs_with_padding=None the cameras go through the vision tower as they are and "
                    f"must all have the same shape; got {shapes}. Set resize_imgs_with_padding=(H, W)."
                )
        state = self.robot_state_feature
        if state is None:
            raise ValueError(
                f"gemma3nvla needs a state feature {OBS_STATE!r}; got input features {sorted(self.input_features)}."
            )
        if len(state.shape) != 1 or state.shape[0] > self.max_state_dim:
            raise ValueError(
                f"{OBS_STATE} must be a vector of at most max_state_dim={self.max_state_dim} values, "
                f"got shape {tuple(state.shape)}."
            )
        action = self.action_feature
        if action is None:
            raise ValueError(f"gemma3nvla needs an output feature {ACTION!r}; got {sorted(self.output_features)}.")
        if len(action.shape) != 1 or action.shape[0] > self.max_action_dim:
            raise ValueError(
                f"{ACTION} must be a vector of at most max_action_dim={self.max_action_dim} values, "
                f"got shape {tuple(action.shape)}."
            )
        if self.adapt_to_pi_aloha and (state.shape[0] < 14 or action.shape[0] < 14):
            raise ValueError("`adapt_to_pi_aloha` needs 14-dim ALOHA state and action vectors.")

    def get_optimizer_preset(self) -> AdamWConfig:
        return AdamWConfig(
            lr=self.optimizer_lr,
            betas=self.optimizer_betas,
            eps=self.optimizer_eps,
            weight_decay=self.optimizer_weight_decay,
            grad_clip_norm=self.optimizer_grad_clip_norm,
        )

    def get_scheduler_preset(self) -> CosineDecayWithWarmupSchedulerConfig:
        return CosineDecayWithWarmupSchedulerConfig(
            peak_lr=self.optimizer_lr,
            decay_lr=self.scheduler_decay_lr,
            num_warmup_steps=self.scheduler_warmup_steps,
            num_decay_steps=self.scheduler_decay_steps,
        )

    @property
    def observation_delta_indices(self) -> list:
        return [0]

    @property
    def action_delta_indices(self) -> list:
        return list(range(self.chunk_size))

    @property
    def reward_delta_indices(self) -> None:
        return None
