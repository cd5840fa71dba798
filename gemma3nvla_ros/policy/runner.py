"""Loading a Gemma3nVLA checkpoint and running it on one observation, exactly as LeRobot's own loop does.

Loading: ``Gemma3nVLAPolicy.from_pretrained`` + the checkpoint's saved pre/post processors
(``make_pre_post_processors(cfg, pretrained_path=...)``), with the device of the policy and of the
preprocessor's device step set to the chosen one (what LeRobot's policy server does). Running: the
observation goes through LeRobot's ``prepare_observation_for_inference`` (uint8 HWC frames -> float CHW
in [0, 1], batch dim), the preprocessor (tokenize, normalize), ``predict_action_chunk`` and the
postprocessor (unnormalize, CPU) — nothing else, so nothing is transformed twice or skipped, and frames are
never resized here (the checkpoint's image shape must be the camera's).

Every loading failure is a :class:`PolicyLoadError` whose message says what to do (the node exits with
code 2 on it). An observation the policy will not act on (no task, a state of the wrong width, NaN/inf, pixels
outside [0, 1]) is a ``ValueError`` from ``infer`` that says which input and why; nothing is published for it.
"""
from __future__ import annotations

import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from gemma3nvla_ros.control.rtc import RTC_SCHEDULES
from gemma3nvla_ros.policy.configuration_gemma3nvla import BACKBONE_DTYPES

DTYPES = BACKBONE_DTYPES  # auto (as the checkpoint says), float32, bfloat16, float16
PREPROCESSOR_FILE = "policy_preprocessor.json"
POSTPROCESSOR_FILE = "policy_postprocessor.json"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


class PolicyLoadError(RuntimeError):
    """The checkpoint cannot be loaded here; ``str()`` says why and what to do."""


# ------------------------------------------------------------------ device / checkpoint resolution
def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU (NVIDIA and ROCm builds both answer to cuda) else ``cpu``."""
    import torch

    device = str(device).strip().lower()
    if not _DEVICE.match(device):
        raise PolicyLoadError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            gpu_build = torch.version.cuda or getattr(torch.version, "hip", None)
            todo = ("check that the GPU and its driver are visible here (nvidia-smi / rocm-smi, CUDA_VISIBLE_DEVICES / "
                    "HIP_VISIBLE_DEVICES)" if gpu_build else "install a CUDA or ROCm build of torch")
            raise PolicyLoadError(
                f"device {device!r} requested but torch {torch.__version__} sees no GPU: use device auto or cpu, or "
                f"{todo}"
            )
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise PolicyLoadError(
                f"device {device!r} requested but torch sees {torch.cuda.device_count()} GPU(s): use cuda:0..."
                f"{torch.cuda.device_count() - 1} or cuda"
            )
    return device


def resolve_checkpoint(checkpoint: str | Path) -> Path:
    """A local ``pretrained_model`` dir: as given, or found inside a checkpoint step dir
    (``<dir>/pretrained_model``) or a ``lerobot-train`` output dir (``<dir>/checkpoints/last/pretrained_model``);
    otherwise a hub id, fetched into (or found in) the Hugging Face cache."""
    text = str(checkpoint).strip()
    if not text:
        raise PolicyLoadError("no checkpoint given: pass a pretrained_model directory or a Hugging Face hub id")
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir():
            raise PolicyLoadError(f"checkpoint {path} is a file: pass the pretrained_model directory that holds it")
        for candidate in (path, path / "pretrained_model", path / "checkpoints" / "last" / "pretrained_model"):
            if (candidate / "config.json").is_file():
                return _check_files(candidate)
        raise PolicyLoadError(
            f"{path} holds no LeRobot checkpoint: expected config.json + model.safetensors in it, in "
            f"{path}/pretrained_model, or in {path}/checkpoints/last/pretrained_model (a lerobot-train output dir)"
        )
    if _HUB_ID.match(text):
        return _check_files(_download(text))
    raise PolicyLoadError(
        f"checkpoint directory {path} does not exist: pass an existing pretrained_model directory, a lerobot-train "
        "output directory, or a Hugging Face hub id (org/name)"
    )


def _check_files(path: Path) -> Path:
    missing = [f for f in ("config.json", "model.safetensors") if not (path / f).is_file()]
    if missing:
        raise PolicyLoadError(f"checkpoint {path} lacks {missing}: was it fully saved (or downloaded)?")
    missing = [f for f in (PREPROCESSOR_FILE, POSTPROCESSOR_FILE) if not (path / f).is_file()]
    if missing:
        raise PolicyLoadError(
            f"checkpoint {path} lacks the saved processors {missing} (normalization stats, tokenizer): save them "
            "with preprocessor.save_pretrained/postprocessor.save_pretrained (lerobot-train >= 0.4 does), or "
            "convert an older checkpoint with LeRobot's migrate_policy_normalization script"
        )
    return path


def _download(repo_id: str) -> Path:
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError

    offline_hint = (
        f"there is no local directory {repo_id!r}, and the hub id {repo_id!r} is not in the Hugging Face cache "
        f"({constants.HF_HUB_CACHE})"
    )
    todo = (
        f"download it on a machine with network (`hf download {repo_id}`, then copy the cache or the snapshot "
        "directory here) and pass the local pretrained_model directory"
    )
    try:
        return Path(snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors", "*.md"]))
    except LocalEntryNotFoundError:
        why = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else "the hub cannot be reached (no network?)"
        raise PolicyLoadError(f"{offline_hint} and {why}: {todo}") from None
    except RepositoryNotFoundError:
        raise PolicyLoadError(
            f"there is no local directory {repo_id!r}, and the hub has no model {repo_id!r} (or it is private: "
            "log in with `hf auth login`): check the name, or pass a local pretrained_model directory"
        ) from None
    except Exception as exc:  # noqa: BLE001 - network errors come in many types
        raise PolicyLoadError(f"{offline_hint}; fetching it failed ({type(exc).__name__}: {exc}): {todo}") from None


# ------------------------------------------------------------------ the runner
class PolicyRunner:
    """One loaded checkpoint. ``infer`` is not re-entrant: call it from one worker thread at a time."""

    def __init__(
        self,
        checkpoint: str,
        device: str = "auto",
        dtype: str = "auto",
        *,
        vlm_model_name: str | None = None,
        threads: int | None = None,
    ) -> None:
        """``dtype``: the backbone's (``backbone_dtype``): ``auto`` keeps the checkpoint's setting (whose own
        ``auto`` is bfloat16 on CUDA, float32 on CPU). ``vlm_model_name``: where the backbone's config and
        tokenizer are on this machine, if not where the checkpoint says. ``threads``: torch's intra-op CPU
        threads for this process (None: leave torch's default; on a small shared CPU, 1 avoids the
        oversubscription that makes inference many times slower)."""
        import torch

        if str(dtype) not in DTYPES:
            raise PolicyLoadError(f"unknown dtype {dtype!r}: use one of {list(DTYPES)}")
        if threads is not None:
            if int(threads) < 1:
                raise PolicyLoadError(f"threads must be >= 1, got {threads}")
            torch.set_num_threads(int(threads))
        self.device = resolve_device(device)
        self.checkpoint_path = resolve_checkpoint(checkpoint)
        self.config = self._load_config(dtype, vlm_model_name)
        self.policy, self.preprocessor, self.postprocessor = self._load(vlm_model_name)
        self._torch_device = torch.device(self.device)
        self.last_infer_s: float | None = None
        # The last chunk as the policy returned it, before the postprocessor: normalized, the space real-time
        # chunking's leftover must be given in.
        self.last_normalized: NDArray[np.float64] | None = None
        self.fast_report: dict[str, Any] = {}  # what prepare_for_inference set up (warmup)

    def _load_config(self, dtype: str, vlm_model_name: str | None):
        from lerobot.configs.policies import PreTrainedConfig

        from gemma3nvla_ros.policy.configuration_gemma3nvla import Gemma3nVLAConfig

        try:
            config = PreTrainedConfig.from_pretrained(self.checkpoint_path)
        except Exception as exc:  # noqa: BLE001 - draccus/json errors: the file is not a config we know
            raise PolicyLoadError(
                f"{self.checkpoint_path}/config.json is not a readable LeRobot policy config ({type(exc).__name__}: "
                f"{exc}): is it a gemma3nvla checkpoint saved by LeRobot (0.4.4 or 0.6)?"
            ) from None
        if not isinstance(config, Gemma3nVLAConfig):
            raise PolicyLoadError(
                f"{self.checkpoint_path} is a {config.type!r} policy; this runner loads gemma3nvla checkpoints"
            )
        config.device = self.device  # set after parsing: the config's own check would silently fall back to CPU
        if dtype != "auto":
            config.backbone_dtype = dtype
        if vlm_model_name:
            config.vlm_model_name = str(vlm_model_name)
        return config

    def _load(self, vlm_model_name: str | None):
        from lerobot.policies.factory import make_pre_post_processors

        from gemma3nvla_ros.policy.modeling_gemma3nvla import Gemma3nVLAPolicy

        pre_overrides: dict[str, Any] = {"device_processor": {"device": self.device}}
        if vlm_model_name:
            pre_overrides["tokenizer_processor"] = {"tokenizer_name": str(vlm_model_name)}
            pre_overrides["gemma3nvla_task_length_check"] = {"tokenizer_name": str(vlm_model_name)}
        try:
            policy = Gemma3nVLAPolicy.from_pretrained(self.checkpoint_path, config=self.config)
            pre, post = make_pre_post_processors(
                self.config, pretrained_path=str(self.checkpoint_path), preprocessor_overrides=pre_overrides
            )
        except OSError as exc:  # transformers: config/tokenizer of vlm_model_name not found (or not cached)
            raise PolicyLoadError(
                f"cannot load the backbone config/tokenizer {self.config.vlm_model_name!r} that {self.checkpoint_path} "
                f"names as vlm_model_name ({exc}): make it available here (`hf download {self.config.vlm_model_name}` "
                "where there is network), or pass vlm_model_name=<local dir with its config.json and tokenizer>"
            ) from None
        except ValueError as exc:  # a tensor missing/mismatching in model.safetensors, bad processor config
            raise PolicyLoadError(f"{self.checkpoint_path} does not load as saved: {exc}") from None
        from gemma3nvla_ros.policy.processor_gemma3nvla import add_input_check

        add_input_check(pre, self.config)  # a preprocessor saved before the input check existed gets it here
        policy.eval()
        return policy, pre, post

    # ------------------------------------------------------------------ features
    @property
    def input_features(self) -> Mapping[str, Any]:
        return self.config.input_features

    @property
    def output_features(self) -> Mapping[str, Any]:
        return self.config.output_features

    @property
    def chunk_size(self) -> int:
        return int(self.config.chunk_size)

    @property
    def image_shapes(self) -> dict[str, tuple[int, int]]:
        """``{camera key: (H, W)}`` the checkpoint takes (empty cameras, which the policy makes itself, left out)."""
        return {
            key: (int(ft.shape[1]), int(ft.shape[2]))
            for key, ft in self.config.image_features.items()
            if not key.startswith("observation.images.empty_camera_")
        }

    # ------------------------------------------------------------------ inference
    def configure_rtc(self, enabled: bool, execution_horizon: int = 10, max_guidance_weight: float = 10.0,
                      schedule: str = "LINEAR") -> None:
        """Real-time chunking on or off, as LeRobot's rollout switches it (``config.rtc_config`` +
        ``init_rtc_processor``). Call it from the thread that calls ``infer``."""
        from lerobot.configs.types import RTCAttentionSchedule
        from lerobot.policies.rtc.configuration_rtc import RTCConfig

        if schedule not in RTC_SCHEDULES:
            raise ValueError(f"unknown RTC schedule {schedule!r}: use one of {list(RTC_SCHEDULES)}")
        self.policy.config.rtc_config = RTCConfig(
            enabled=True, prefix_attention_schedule=RTCAttentionSchedule(schedule),
            max_guidance_weight=float(max_guidance_weight), execution_horizon=int(execution_horizon),
        ) if enabled else None
        self.policy.init_rtc_processor()

    def infer(self, values: Mapping[str, Any], noise: Any = None, *, inference_delay: int | None = None,
              prev_chunk_left_over: Any = None, execution_horizon: int | None = None) -> NDArray[np.float64]:
        """The action chunk ``(chunk_size, action_dim)`` in dataset units for ``Observation.values``; the policy's
        own (normalized) output is kept in ``last_normalized``.

        ``noise`` (optional): the initial flow-matching noise ``(1, chunk_size, max_action_dim)``, for
        reproducible runs; by default it is drawn from torch's RNG as the policy does.
        ``prev_chunk_left_over`` (normalized, ``(steps, action_dim)``), ``inference_delay``, ``execution_horizon``:
        real-time chunking's inputs, passed to ``predict_action_chunk`` as LeRobot's rollout passes them (used
        when ``configure_rtc`` switched it on).
        """
        import torch
        from lerobot.policies.utils import prepare_observation_for_inference

        task = values.get("task")
        if not isinstance(task, str) or not task.strip():
            raise ValueError(f"values need a non-empty 'task' string, got {task!r}")
        observation: dict[str, np.ndarray] = {}
        for key, (h, w) in self.image_shapes.items():
            if key not in values:
                raise ValueError(f"values lack camera {key!r} (the checkpoint takes {sorted(self.image_shapes)})")
            image = np.asarray(values[key])
            if image.dtype != np.uint8 or image.shape != (h, w, 3):
                raise ValueError(
                    f"camera {key!r}: frame is {image.dtype} {image.shape}, the checkpoint takes uint8 {(h, w, 3)} "
                    "HxWx3 RGB: set the camera to the resolution the dataset was recorded at"
                )
            observation[key] = image
        state_key = "observation.state"
        if state_key not in values:
            raise ValueError(f"values lack {state_key!r} (float32 joint vector in dataset units)")
        observation[state_key] = np.asarray(values[state_key], dtype=np.float32)
        rtc: dict[str, Any] = {}
        if prev_chunk_left_over is not None:
            rtc = {"inference_delay": inference_delay, "execution_horizon": execution_horizon,
                   "prev_chunk_left_over": torch.as_tensor(np.asarray(prev_chunk_left_over, dtype=np.float32),
                                                           device=self._torch_device)}
        start = time.perf_counter()
        # RTC guidance takes a gradient: no inference_mode around it (no_grad is enough for the rest).
        with torch.no_grad() if rtc else torch.inference_mode():
            batch = prepare_observation_for_inference(observation, self._torch_device, task, None)
            batch = self.preprocessor(batch)
            if noise is not None:
                noise = torch.as_tensor(noise, dtype=torch.float32, device=self._torch_device)
            chunk = self.policy.predict_action_chunk(batch, noise=noise, **rtc)
            self.last_normalized = chunk[0].to(torch.float64).cpu().numpy()  # a copy: the postprocessor may reuse it
            chunk = self.postprocessor(chunk)
        out = chunk[0].to(torch.float64).cpu().numpy()
        self.last_infer_s = time.perf_counter() - start
        return out

    def warmup(self, values: Mapping[str, Any], runs: int | None = None) -> None:
        """Run inference before reporting ready: the first call pays for cuDNN autotuning, lazy allocations and
        (with ``compile_model``) compilation and CUDA-graph capture, which take several calls. On CUDA the
        policy's fast path (whole-phase CUDA graphs, torch.compile; ``config.fast_inference``) is set up and
        warmed first — minutes on first use — so that no real chunk pays for a compile."""
        import torch

        self.fast_report = self.policy.prepare_for_inference(warmup=True)
        runs = runs if runs is not None else (3 if self.config.compile_model else 1)
        for _ in range(max(1, int(runs))):
            self.infer(values)
        if self.device.startswith("cuda"):
            torch.cuda.synchronize(self._torch_device)
