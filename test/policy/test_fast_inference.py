"""The fast inference path (fast_inference.FastSampler) computes the eager path's function on CPU (tiny backbone,
float32, fresh random inputs, tasks of different lengths so that padding and the fixed task width are covered);
its pieces (vision MQA through fused SDPA, capture-safe sparsity, folded-GQA attention, fused projections) match
what they replace; the Triton split-KV attention equals the others (run by Triton's CPU interpreter); the token
tables can live in host memory; prepare_for_inference sets the policy up."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from gemma3nvla_ros.policy import fast_inference
from gemma3nvla_ros.policy.fast_inference import FastSampler, attention_bmm, attention_sdpa, time_candidates

from helpers_policy import make_batch, make_config, rel

TOL = 1e-5


@pytest.fixture(scope="module")
def policy(tiny_backbone):
    from gemma3nvla_ros.policy.modeling_gemma3nvla import Gemma3nVLAPolicy

    vlm_dir, _ = tiny_backbone
    torch.manual_seed(1)
    return Gemma3nVLAPolicy(make_config(vlm_dir, num_expert_layers=-1)).eval()


def two_task_batch(policy, seed):
    from transformers import AutoTokenizer

    batch = make_batch(policy.config, batch_size=2, seed=seed)
    tok = AutoTokenizer.from_pretrained(policy.config.vlm_model_name)
    enc = tok(["pick the red cube\n", "push the blue ball into the left cup\n"], padding="longest", return_tensors="pt")
    batch["observation.language.tokens"] = enc["input_ids"]
    batch["observation.language.attention_mask"] = enc["attention_mask"].bool()
    return batch


@pytest.mark.parametrize("attention", ["sdpa", "bmm"])
def test_fast_path_equals_eager_on_fresh_inputs(policy, attention):
    policy._fast = None
    fast = FastSampler(policy.model, graphs=False, compile=False, attention=attention)
    try:
        for seed in (11, 12):
            batch = two_task_batch(policy, seed)
            noise = torch.randn(2, policy.config.chunk_size, policy.config.max_action_dim)
            policy._fast = None
            ref = policy.predict_action_chunk(batch, noise=noise)
            policy._fast = fast
            out = policy.predict_action_chunk(batch, noise=noise)
            assert out.shape == ref.shape
            assert rel(out, ref) <= TOL, (seed, rel(out, ref))
        assert len(fast._plans) == 1  # both batches have the same tasks: one plan, reused
        policy.predict_action_chunk(batch, noise=noise)
        assert len(fast._plans) == 1
    finally:
        policy._fast = None


def test_fast_prefix_kv_equals_eager(policy):
    fast = FastSampler(policy.model, graphs=False, compile=False)
    batch = two_task_batch(policy, 13)
    inputs = policy._inputs(batch)
    _, ref_kv = policy.model.compute_prefix(*inputs)
    s = fast.load(*inputs, torch.randn(2, policy.config.chunk_size, policy.config.max_action_dim))
    fast.run_phase(s, "vision")
    fast.run_phase(s, "text")
    # the fast path pads the task to tokenizer_max_length: compare the real (eager) positions of every layer
    n = ref_kv[0][0].shape[2]
    for (k, v), (rk, rv) in zip(s.prefix_kv, ref_kv):
        idx = torch.cat([torch.arange(n - 1), torch.tensor([k.shape[2] - 1])])  # the state token is last in both
        assert rel(k[:, :, idx], rk) <= TOL and rel(v[:, :, idx], rv) <= TOL


def test_attention_bmm_equals_sdpa():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 8, 5, 16, generator=g)
    k = torch.randn(2, 2, 11, 16, generator=g)
    v = torch.randn(2, 2, 11, 16, generator=g)
    bias = torch.zeros(2, 1, 5, 11).masked_fill(torch.rand(2, 1, 5, 11, generator=g) < 0.3, torch.finfo(torch.float32).min)
    assert rel(attention_bmm(q, k, v, bias, 4), attention_sdpa(q, k, v, bias, 4)) <= 1e-6


def test_attention_candidates_are_timed_only_when_they_agree_with_the_first():
    """The warm-up choice's rule (time_candidates), with a fake timer: a candidate that differs from the reference,
    returns NaN or raises is left out with the reason; one that agrees within bf16 rounding is kept."""
    x = torch.randn(4, 8)

    def broken(t):
        raise RuntimeError("no kernel image for this GPU")

    candidates = {"ref": lambda t: t * 2, "close": lambda t: t * 2 * (1 + 1e-3), "wrong": lambda t: t * 3,
                  "nan": lambda t: t * float("nan"), "broken": broken, "slow": lambda t: t + t}
    cost = {"ref": 5.0, "close": 3.0, "slow": 9.0}
    names = {id(fn): key for key, fn in candidates.items()}
    wrapped = []
    times, left_out = time_candidates(candidates, (x,), lambda fn, args: cost[names[id(fn)]],
                                      wrap=lambda fn: wrapped.append(fn) or fn)
    assert times == {"ref": 5.0, "close": 3.0, "slow": 9.0}
    assert set(left_out) == {"wrong", "nan", "broken"}
    assert "differs from ref" in left_out["wrong"] and "nan" in left_out["nan"]
    assert "no kernel image" in left_out["broken"]
    assert len(wrapped) == len(candidates)  # each ran as it would run (compiled, on a GPU)
    # no reference, no choice: when the first candidate fails nothing else is tried
    times, left_out = time_candidates({"broken": broken, "ref": lambda t: t}, (x,), lambda fn, args: 1.0)
    assert times == {} and list(left_out) == ["broken"]


def in_triton_interpreter(test_id: str) -> bool:
    """Runs the test ``test_id`` of this file again in a child pytest under Triton's CPU interpreter (the variable
    must be set before Triton builds its kernels) and returns False; returns True in that child."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        return True
    pytest.importorskip("triton")
    child = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"{__file__}::{test_id}"],
                           env={**os.environ, "TRITON_INTERPRET": "1"}, capture_output=True, text=True, timeout=900)
    assert child.returncode == 0, child.stdout[-4000:] + child.stderr[-2000:]
    assert "1 passed" in child.stdout, child.stdout[-2000:]
    return False


def test_split_attention_equals_bmm():
    """Masked keys in the middle (padded task tokens), causal action keys, a split whose keys are all masked, a
    last block past the keys, one split or several, a broadcast (cross-attention) mask."""
    if not in_triton_interpreter("test_split_attention_equals_bmm"):
        return
    from gemma3nvla_ros.policy.triton_attention import SplitConfig, split_attention

    g = torch.Generator().manual_seed(0)
    bsz, kv, groups, length, prefix, dim = 2, 2, 4, 10, 40, 32
    q = torch.randn(bsz, length, kv * groups, dim, generator=g).transpose(1, 2)  # the expert's layout
    k = torch.randn(bsz, kv, prefix + length, dim, generator=g)
    v = torch.randn(bsz, kv, prefix + length, dim, generator=g)
    valid = torch.ones(bsz, prefix, dtype=torch.bool)
    valid[0, 16:32] = False  # with split_keys 16, the second split sees only masked keys
    valid[1, 5:9] = False
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    keep = torch.cat([valid[:, None, None].expand(bsz, 1, length, prefix), causal.expand(bsz, 1, length, length)], -1)
    bias = torch.zeros(keep.shape).masked_fill(~keep, torch.finfo(torch.float32).min)
    ref = attention_bmm(q, k, v, bias, groups)
    for cfg in (SplitConfig(16, 16, 16), SplitConfig(32, 16, 32), SplitConfig(16, 32, 64), SplitConfig(16, 16, 128)):
        out = split_attention(q, k, v, bias, groups, cfg)
        assert out.shape == ref.shape and out.transpose(1, 2).is_contiguous()
        assert rel(out, ref) <= 1e-6, (cfg, rel(out, ref))
    cross = torch.zeros(bsz, 1, 1, prefix).masked_fill(~valid[:, None, None], torch.finfo(torch.float32).min)
    kp, vp = k[:, :, :prefix], v[:, :, :prefix]
    out = split_attention(q, kp, vp, cross, groups, SplitConfig(16, 16, 16))
    assert rel(out, attention_bmm(q, kp, vp, cross, groups)) <= 1e-6
    with pytest.raises(ValueError, match="groups"):
        split_attention(q, k, v, bias, 3)


def test_fast_path_with_triton_attention_equals_eager(policy):
    if not in_triton_interpreter("test_fast_path_with_triton_attention_equals_eager"):
        return
    fast = FastSampler(policy.model, graphs=False, compile=False, attention="triton")
    assert fast.attention == "triton" and not fast.report["fallbacks"]
    assert fast.text_attention is not None  # the backbone's prefix attention too
    calls = []
    kernel = fast_inference.triton_attention.split_attention
    fast_inference.triton_attention.split_attention = lambda *a, **k: calls.append(a[0].shape) or kernel(*a, **k)
    batch = two_task_batch(policy, 14)
    noise = torch.randn(2, policy.config.chunk_size, policy.config.max_action_dim)
    policy._fast = None
    ref = policy.predict_action_chunk(batch, noise=noise)
    policy._fast = fast
    try:
        out = policy.predict_action_chunk(batch, noise=noise)
    finally:
        policy._fast = None
        fast_inference.triton_attention.split_attention = kernel
    assert rel(out, ref) <= TOL, rel(out, ref)
    chunk = policy.config.chunk_size
    text = policy.model.vlm_with_expert.num_computed_layers
    expert = len(policy.model.vlm_with_expert.expert.layers) * policy.config.num_steps
    assert sum(shape[2] == chunk for shape in calls) == expert and len(calls) == expert + text, (len(calls), text)
    # outside the text phase the backbone has its own attention again
    assert {layer.self_attn.config._attn_implementation for layer in policy.model.vlm_with_expert.language_model.layers} == {"sdpa"}


def test_triton_attention_without_a_gpu_falls_back_to_bmm(policy):
    if os.environ.get("TRITON_INTERPRET") == "1":
        pytest.skip("Triton's interpreter runs the kernel on the CPU")
    fast = FastSampler(policy.model, graphs=False, compile=False, attention="triton")
    assert fast.attention == "bmm"
    assert any("triton" in message and "bmm" in message for message in fast.report["fallbacks"])


def test_fused_projections_are_views_and_saving_works(policy, tmp_path):
    from gemma3nvla_ros.policy.modeling_gemma3nvla import Gemma3nVLAPolicy

    fast = FastSampler(policy.model, graphs=False, compile=False)
    layer = policy.model.vlm_with_expert.expert.layers[0]
    fused = fast.fused[0]["gate_up"]
    assert layer.mlp.gate_proj.weight.data_ptr() == fused.data_ptr()
    policy._fast = fast
    try:
        policy.save_pretrained(tmp_path)  # safetensors refuses shared views: the policy saves own copies
    finally:
        policy._fast = None
    loaded = Gemma3nVLAPolicy.from_pretrained(tmp_path, config=policy.config).eval()
    batch = make_batch(policy.config, batch_size=1, seed=4)
    noise = torch.randn(1, policy.config.chunk_size, policy.config.max_action_dim)
    assert rel(loaded.predict_action_chunk(batch, noise=noise), policy.predict_action_chunk(batch, noise=noise)) <= TOL


def test_vision_mqa_fused_equals_timm():
    from timm.layers.attention2d import MultiQueryAttention2d

    from gemma3nvla_ros.policy.gemma3n_with_expert import FusedMultiQueryAttention2d, fuse_vision_attention

    torch.manual_seed(0)
    mqa = MultiQueryAttention2d(32, num_heads=4, key_dim=8, value_dim=8, query_strides=2, kv_stride=2).eval()
    x = torch.randn(2, 32, 8, 8)
    with torch.no_grad():
        ref = mqa(x)
        holder = torch.nn.Sequential(mqa)
        assert fuse_vision_attention(holder) == 1 and type(mqa) is FusedMultiQueryAttention2d
        out = mqa(x)
    assert rel(out, ref) <= 1e-5


def test_capture_safe_sparsity_equals_transformers(policy):
    from gemma3nvla_ros.policy.gemma3n_with_expert import CaptureSafeGaussianTopK

    mlp = next(layer.mlp for layer in policy.model.vlm_with_expert.language_model.layers if layer.mlp.activation_sparsity > 0)
    x = torch.randn(3, 7, 128)
    ref = type(mlp)._gaussian_topk(mlp, x)
    assert torch.equal(CaptureSafeGaussianTopK(mlp, torch.device("cpu"))(x), ref)


def test_host_tables_stay_on_host_and_give_the_same_actions(tiny_backbone):
    from gemma3nvla_ros.policy.modeling_gemma3nvla import Gemma3nVLAPolicy

    vlm_dir, _ = tiny_backbone
    torch.manual_seed(1)
    policy = Gemma3nVLAPolicy(make_config(vlm_dir, num_expert_layers=-1, host_embeddings=True)).eval()
    batch = make_batch(policy.config, batch_size=2, seed=6)
    noise = torch.randn(2, policy.config.chunk_size, policy.config.max_action_dim)
    ref = policy.predict_action_chunk(batch, noise=noise)
    report = policy.prepare_for_inference(fast=True, warmup=False)
    vlm = policy.model.vlm_with_expert
    assert report["host_embeddings"] and vlm.host_embeddings
    assert rel(policy.predict_action_chunk(batch, noise=noise), ref) <= TOL
    # later moves leave the host-kept tables where they are
    policy.to("meta")
    assert all(t.weight.device.type == "cpu" for t in vlm.host_tables())
    assert vlm.language_model.per_layer_model_projection.weight.device.type == "meta"


def test_prepare_for_inference_and_select_action(tiny_backbone):
    from gemma3nvla_ros.policy.modeling_gemma3nvla import Gemma3nVLAPolicy

    vlm_dir, _ = tiny_backbone
    torch.manual_seed(1)
    policy = Gemma3nVLAPolicy(make_config(vlm_dir, num_expert_layers=-1))
    report = policy.prepare_for_inference()  # CPU: "auto" keeps the eager path
    assert report["path"] == "eager" and policy._fast is None and "warmup_s" in report
    report = policy.prepare_for_inference(fast=True)
    assert report["path"] == "fast" and report["graphs"] is False and report["compile"] is False
    assert report["fallbacks"] == []
    batch = make_batch(policy.config, batch_size=1, seed=8, with_actions=False)
    action = policy.select_action(batch)
    assert action.shape == (1, policy.config.action_feature.shape[0]) and torch.isfinite(action).all()
    policy.prepare_for_inference(fast=False, warmup=False)
    assert policy._fast is None


def test_first_chunk_sets_up_the_fast_path_when_nobody_prepared_it(tiny_backbone):
    """lerobot-rollout and lerobot-eval never call prepare_for_inference(): fast_inference="on" must still give
    them the fast path, with the eager path's actions; an explicit choice stands; "auto" never casts lazily."""
    from gemma3nvla_ros.policy.modeling_gemma3nvla import Gemma3nVLAPolicy

    vlm_dir, _ = tiny_backbone
    torch.manual_seed(1)
    policy = Gemma3nVLAPolicy(make_config(vlm_dir, num_expert_layers=-1, fast_inference="on")).eval()
    batch = make_batch(policy.config, batch_size=1, seed=9, with_actions=False)
    noise = torch.randn(1, policy.config.chunk_size, policy.config.max_action_dim)
    policy.prepare_for_inference(fast=False, warmup=False)
    ref = policy.predict_action_chunk(batch, noise=noise)
    assert policy._fast is None  # chosen explicitly: stays eager

    policy._inference_prepared = False  # as loaded, never prepared
    out = policy.predict_action_chunk(batch, noise=noise)
    assert policy._fast is not None and rel(out, ref) <= TOL

    auto = Gemma3nVLAPolicy(make_config(vlm_dir, num_expert_layers=-1)).eval()  # "auto": only prepare_for_inference
    auto.predict_action_chunk(batch)
    assert getattr(auto, "_fast", None) is None


def test_config_validates_fast_fields(tiny_backbone):
    vlm_dir, _ = tiny_backbone
    for field, value in (("fast_inference", "sometimes"), ("fast_attention", "flash"), ("inference_expert_dtype", "int8")):
        with pytest.raises(ValueError, match=field):
            make_config(vlm_dir, **{field: value})
