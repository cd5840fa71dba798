#!/usr/bin/env python
"""Gemma3nVLA policy benchmark: per-chunk latency of the eager and fast paths by phase (vision, text prefix,
denoising: wall time, GPU kernel time, kernel launches), fast-vs-eager parity on fresh random inputs, the
expert attention variants, peak memory with the token tables on the device or in host memory, LeRobot's
SmolVLA measured the same way, and the expert-only training step (samples/s, MFU).

Nothing is downloaded: the E2B backbone config is written out locally from its published numbers (random
weights, 262,400-token tables) with a small local tokenizer; SmolVLA's SmolVLM2-500M likewise.

    python benchmarks/bench_policy.py                       # full-size E2B, bf16, CUDA
    python benchmarks/bench_policy.py --device cpu --tiny   # quick smoke check with a tiny backbone
    bash benchmarks/device/run_h200.sh                      # on the lent H200 (see README: wheels, stubs)

Inference: two cameras (768x768), a 48-token task, chunk 50, 10 Euler steps, batch 1. Timings: CUDA events
between phases and a host clock around the chunk; medians over --reps repetitions of --iters chunks.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import statistics
import tempfile
import time
import traceback
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

PHASES = ("vision", "text", "denoise")
LAUNCH_APIS = ("cudaLaunchKernel", "cuLaunchKernel", "cuLaunchKernelEx", "cudaLaunchKernelExC", "cudaGraphLaunch",
               "cudaMemcpyAsync", "cudaMemsetAsync", "hipLaunchKernel", "hipGraphLaunch", "hipMemcpyAsync",
               "hipExtModuleLaunchKernel", "hipModuleLaunchKernel", "cudaLaunchCooperativeKernel")
H200_BF16_PEAK = 989e12  # dense bf16 datasheet rate (KINDS.md measured ~790e12 on an 8192^3 GEMM)
RESULTS: dict = {}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true", help="tiny random backbone (smoke check)")
    p.add_argument("--iters", type=int, default=None, help="timed chunks per repetition (default 20, tiny 2)")
    p.add_argument("--reps", type=int, default=None, help="repetitions of the timed loop (default 3)")
    p.add_argument("--train-batch", type=int, default=None, help="training batch (default 32, tiny 2)")
    p.add_argument("--train-steps", type=int, default=None, help="timed training steps (default 5, tiny 1)")
    p.add_argument("--text-tokens", type=int, default=48)
    p.add_argument("--skip", nargs="*", default=[],
                   help="sections to skip: eager parity attention fast-nocompile fast memory smolvla train profile")
    p.add_argument("--out", default=None, help="directory for bench.json, traces' summaries and the table")
    p.add_argument("--threads", type=int, default=None)
    return p.parse_args()


# ------------------------------------------------------------------------------------------- utilities
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def summarize(values: list[list[float]]) -> dict:
    """values: per repetition, per iteration (ms). Median of the repetitions' medians, overall p90, spread."""
    meds = [statistics.median(v) for v in values]
    flat = sorted(x for v in values for x in v)
    p90 = flat[min(len(flat) - 1, int(round(0.9 * (len(flat) - 1))))]
    return {"p50": statistics.median(meds), "p90": p90, "rep_p50_min": min(meds), "rep_p50_max": max(meds),
            "n": len(flat)}


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def time_phases(phases: dict, device: torch.device, reps: int, iters: int, warmup: int = 2) -> dict:
    """Runs the phase callables in order per chunk; CUDA events between phases, host clock around the chunk."""
    cuda = device.type == "cuda"
    per = {name: [] for name in [*phases, "total_gpu", "wall"]}
    for _ in range(warmup):
        for fn in phases.values():
            fn()
    sync(device)
    for _ in range(reps):
        rep = {name: [] for name in per}
        for _ in range(iters):
            evs = [torch.cuda.Event(enable_timing=True) for _ in range(len(phases) + 1)] if cuda else None
            sync(device)
            t0 = time.perf_counter()
            marks = [t0]
            if cuda:
                evs[0].record()
            for i, fn in enumerate(phases.values()):
                fn()
                if cuda:
                    evs[i + 1].record()
                else:
                    marks.append(time.perf_counter())
            sync(device)
            wall = (time.perf_counter() - t0) * 1e3
            for i, name in enumerate(phases):
                rep[name].append(evs[i].elapsed_time(evs[i + 1]) if cuda else (marks[i + 1] - marks[i]) * 1e3)
            rep["total_gpu"].append(evs[0].elapsed_time(evs[-1]) if cuda else wall)
            rep["wall"].append(wall)
        for name in per:
            per[name].append(rep[name])
    return {name: summarize(v) for name, v in per.items()}


def trace_stats(path: str, n: int) -> dict:
    """Per-run kernel count and kernel time (sum; GPU busy = union of kernel/memcpy/memset intervals) and host
    launch calls, from a torch.profiler chrome trace of ``n`` runs."""
    with open(path) as f:
        events = json.load(f)["traceEvents"]
    kernels, gpu, launches, names = 0, [], 0, {}
    for e in events:
        cat = e.get("cat", "")
        if e.get("ph") != "X":
            continue
        if cat in ("kernel", "gpu_memcpy", "gpu_memset"):
            gpu.append((e["ts"], e["ts"] + e.get("dur", 0)))
            if cat == "kernel":
                kernels += 1
                key = e["name"][:90]
                cnt, dur = names.get(key, (0, 0.0))
                names[key] = (cnt + 1, dur + e.get("dur", 0))
        elif cat in ("cuda_runtime", "cuda_driver") and e.get("name") in LAUNCH_APIS:
            launches += 1
    busy, end = 0.0, -1.0
    for s, t in sorted(gpu):
        if t <= end:
            continue
        busy += t - max(s, end)
        end = t
    top = sorted(names.items(), key=lambda kv: -kv[1][1])[:25]
    return {"kernels": kernels / n, "kernel_ms": sum(d for _, (_, d) in names.items()) / n / 1e3,
            "gpu_busy_ms": busy / n / 1e3, "host_launches": launches / n,
            "top_kernels": [(k, c / n, d / n / 1e3) for k, (c, d) in top]}


def profile_phase(fn, device: torch.device, n: int, tag: str, out_dir: Path | None) -> dict:
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    fn()
    sync(device)
    with profile(activities=acts) as prof:
        for _ in range(n):
            fn()
        sync(device)
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tmp:
        path = tmp.name
    prof.export_chrome_trace(path)
    stats = trace_stats(path, n)
    os.unlink(path)
    return stats


def section(name: str, args) -> bool:
    if name in args.skip:
        log(f"-- {name}: skipped")
        return False
    log(f"-- {name}")
    return True


@contextlib.contextmanager
def guarded(name: str):
    try:
        yield
    except Exception as exc:  # one failing section must not cost the others
        RESULTS.setdefault("errors", {})[name] = f"{type(exc).__name__}: {exc}"
        log(f"!! {name} failed: {type(exc).__name__}: {exc}")
        traceback.print_exc()


def save(args) -> None:
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        with open(Path(args.out) / "bench.json", "w") as f:
            json.dump(RESULTS, f, indent=1, default=str)


# ------------------------------------------------------------------------------------------- builders
def build_gemma(args, device, img: int):
    from lerobot.configs.types import FeatureType, PolicyFeature

    from gemma3nvla_ros.policy.configuration_gemma3nvla import Gemma3nVLAConfig
    from gemma3nvla_ros.policy.local_backbone import e2b_config, tiny_config, write_backbone_dir
    from gemma3nvla_ros.policy.modeling_gemma3nvla import Gemma3nVLAPolicy

    vlm_cfg = tiny_config() if args.tiny else e2b_config()
    tmp = tempfile.mkdtemp(prefix="gemma3nvla_bench_")
    write_backbone_dir(tmp, vlm_cfg)
    cams = ("observation.images.top", "observation.images.wrist")
    inputs = {c: PolicyFeature(type=FeatureType.VISUAL, shape=(3, img, img)) for c in cams}
    inputs["observation.state"] = PolicyFeature(type=FeatureType.STATE, shape=(6,))
    outputs = {"action": PolicyFeature(type=FeatureType.ACTION, shape=(6,))}
    cfg = Gemma3nVLAConfig(
        vlm_model_name=tmp, load_vlm_weights=False, num_vlm_layers=vlm_cfg.text_config.num_hidden_layers,
        device=str(device), resize_imgs_with_padding=(img, img), input_features=inputs, output_features=outputs,
        push_to_hub=False, tokenizer_max_length=max(48, args.text_tokens),
    )
    torch.manual_seed(0)
    with torch.device(device):  # random init on the accelerator (CPU init of E2B takes minutes)
        policy = Gemma3nVLAPolicy(cfg)
    return policy.to(device).eval(), cams


def make_batch(policy, cams, img, device, text_tokens, bsize=1, seed=0, with_actions=False, task_seed=None):
    g = torch.Generator(device="cpu").manual_seed(seed)
    batch = {c: torch.rand(bsize, 3, img, img, generator=g).to(device) for c in cams}
    batch["observation.state"] = torch.randn(bsize, 6, generator=g).to(device)
    tg = torch.Generator(device="cpu").manual_seed(1000 + (task_seed if task_seed is not None else 0))
    words = torch.randint(6, 40, (bsize, text_tokens - 1), generator=tg)
    tokens = torch.cat([torch.full((bsize, 1), policy.model.bos_token_id), words], dim=1)
    batch["observation.language.tokens"] = tokens.to(device)
    batch["observation.language.attention_mask"] = torch.ones_like(tokens, dtype=torch.bool).to(device)
    if with_actions:
        batch["action"] = torch.randn(bsize, policy.config.chunk_size, 6, generator=g).to(device)
        batch["action_is_pad"] = torch.zeros(bsize, policy.config.chunk_size, dtype=torch.bool, device=device)
    return batch


def eager_phases(policy, batch):
    net = policy.model
    inputs = policy._inputs(batch)
    st: dict = {}
    cfg = policy.config

    def vision():
        st["emb"] = net.embed_prefix(*inputs)

    def text():
        embeds, raw, pad, pos = st["emb"]
        st["prefix"] = net.vlm_with_expert.forward_prefix(embeds, raw, pad, pos)
        st["kv"] = net.vlm_with_expert.expert_prefix_kv(st["prefix"])

    def denoise():
        x = net.real_dims_only(torch.randn(1, cfg.chunk_size, cfg.max_action_dim, device=inputs[4].device))
        dt = -1.0 / cfg.num_steps
        for s in range(cfg.num_steps):  # VLAFlowMatching.sample_actions' loop
            tt = torch.full((1,), 1.0 + s * dt, device=x.device)
            x = x + dt * net.real_dims_only(net.velocity(st["prefix"], st["kv"], x, tt))
        st["actions"] = x

    return {"vision": vision, "text": text, "denoise": denoise}


def fast_phases(policy, batch):
    fs = policy._fast
    inputs = policy._inputs(batch)
    noise = torch.randn(1, policy.config.chunk_size, policy.config.max_action_dim, device=inputs[4].device)
    st: dict = {}

    def load():
        st["s"] = fs.load(*inputs, noise)

    return {"load": load, **{name: (lambda n=name: fs.run_phase(st["s"], n)) for name in PHASES}}, st


def fast_body_phases(policy, batch):
    """The fast path's phase bodies without CUDA graphs (to count what the graphs contain, host launches)."""
    fs = policy._fast
    inputs = policy._inputs(batch)
    noise = torch.randn(1, policy.config.chunk_size, policy.config.max_action_dim, device=inputs[4].device)
    s = fs.load(*inputs, noise)
    for name in PHASES:
        fs.run_phase(s, name)
    return {name: (lambda n=name: fs._call_body(s, n)) for name in PHASES}


# ------------------------------------------------------------------------------------------- sections
def rtc_latency(policy, batch, device, args) -> None:
    """predict_action_chunk unguided vs guided by real-time chunking (a leftover of 40 steps, delay 5, LeRobot's
    default RTCConfig otherwise): both on the fast path, the guided one through the same graphs."""
    from lerobot.policies.rtc.configuration_rtc import RTCConfig

    chunk, action_dim = policy.config.chunk_size, policy.config.action_feature.shape[0]
    leftover = torch.randn(min(40, chunk), action_dim, device=device)
    policy.config.rtc_config = RTCConfig(enabled=True)
    policy.init_rtc_processor()
    try:
        parts = {"unguided": lambda: policy.predict_action_chunk(batch),
                 "RTC-guided": lambda: policy.predict_action_chunk(batch, inference_delay=5,
                                                                   prev_chunk_left_over=leftover)}
        timed = time_phases(parts, device, args.reps, args.iters)
        RESULTS["rtc_latency"] = {k: timed[k]["p50"] for k in parts}
    finally:
        policy.config.rtc_config = None
        policy.init_rtc_processor()
    log(f"RTC, predict_action_chunk p50 (ms): {RESULTS['rtc_latency']}")


def run_latency(tag, phases, device, args, policy=None, batch=None, iters=None):
    iters = iters or args.iters
    t = time_phases(phases, device, args.reps, iters)
    RESULTS.setdefault("latency", {})[tag] = t
    if policy is not None:  # the policy API end to end (validation, image prep, plan lookup, phases)
        def chunk():
            policy.predict_action_chunk(batch)
        e2e = time_phases({"chunk": chunk}, device, args.reps, iters)
        RESULTS["latency"][tag]["predict_action_chunk"] = e2e["wall"]
    log(f"{tag}: " + ", ".join(f"{k} {v['p50']:.2f}" for k, v in t.items()))


def run_profile(tag, phases, device, args, n=3):
    if "profile" in args.skip or device.type != "cuda":
        return
    prof = {}
    for name, fn in phases.items():
        prof[name] = profile_phase(fn, device, n, f"{tag}_{name}", None)
    RESULTS.setdefault("profile", {})[tag] = prof
    log(f"profile {tag}: " + ", ".join(
        f"{k}: {v['kernels']:.0f} kernels {v['kernel_ms']:.2f} ms launches {v['host_launches']:.0f}" for k, v in prof.items()))


def attention_micro(policy, device, args):
    """Expert attention at the denoising shapes, and the vision tower's multi-query attention, per call (µs),
    each variant replayed from a CUDA graph of 20 calls (kernel time without launch gaps; median of 10 replays)."""
    import torch.nn.functional as F  # noqa: N812
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from gemma3nvla_ros.policy import triton_attention
    from gemma3nvla_ros.policy.fast_inference import attention_bmm, attention_sdpa, time_in_graph

    vlm = policy.model.vlm_with_expert
    tc = vlm.expert_config
    nh, nkv, d = tc.num_attention_heads, tc.num_key_value_heads, tc.head_dim
    chunk, keys = policy.config.chunk_size, 569 + policy.config.chunk_size
    dt = torch.bfloat16
    q = torch.randn(1, nh, chunk, d, device=device, dtype=dt)
    k = torch.randn(1, nkv, keys, d, device=device, dtype=dt)
    v = torch.randn_like(k)
    bias = torch.zeros(1, 1, chunk, keys, device=device, dtype=dt)
    bias[..., -chunk:] = torch.triu(torch.full((chunk, chunk), torch.finfo(dt).min, device=device, dtype=dt), 1)
    kr, vr = k.repeat_interleave(nh // nkv, 1), v.repeat_interleave(nh // nkv, 1)
    variants = {
        "sdpa(mask) default dispatch": lambda: attention_sdpa(q, k, v, bias, nh // nkv),
        "bmm (GQA folded, fp32 softmax)": lambda: attention_bmm(q, k, v, bias, nh // nkv),
    }
    for backend in ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "MATH"):
        be = getattr(SDPBackend, backend, None)
        if be is None:
            continue
        use_mask = backend != "FLASH_ATTENTION"

        def fn(be=be, use_mask=use_mask):
            with sdpa_kernel([be]):
                return F.scaled_dot_product_attention(q, kr, vr, attn_mask=bias if use_mask else None, scale=1.0)
        variants[f"sdpa {backend.lower()}{'(mask)' if use_mask else '(no mask)'}"] = fn
    try:
        cb = torch.compile(attention_bmm, dynamic=False)
        variants["bmm compiled"] = lambda: cb(q, k, v, bias, nh // nkv)
    except Exception:
        pass
    qt = q.transpose(1, 2).contiguous().transpose(1, 2)  # the expert's layout: [B, L, H, D] underneath
    for cfg in triton_attention.CONFIGS:
        variants[f"triton split-KV {cfg}"] = (
            lambda cfg=cfg: triton_attention.split_attention(qt, k, v, bias, nh // nkv, cfg))
    # vision tower MQA (stage of 8 heads: 48x48 queries over 24x24 keys, 2 images, head dim 64)
    qv = torch.randn(2, 8, 48 * 48, 64, device=device, dtype=dt)
    kv1 = torch.randn(2, 1, 24 * 24, 64, device=device, dtype=dt)
    vv1 = torch.randn_like(kv1)
    variants["vision MQA timm (broadcast K/V -> math)"] = lambda: F.scaled_dot_product_attention(qv, kv1, vv1)
    variants["vision MQA fused (expanded K/V)"] = lambda: F.scaled_dot_product_attention(
        qv, kv1.expand(-1, 8, -1, -1).contiguous(), vv1.expand(-1, 8, -1, -1).contiguous())
    out = {}
    for name, fn in variants.items():
        try:
            out[name] = round(time_in_graph(fn, (), 20, reps=10), 2)
        except Exception as exc:
            out[name] = f"n/a ({type(exc).__name__}: {str(exc)[:80]})"
    RESULTS["attention_us"] = out
    for k_, v_ in out.items():
        log(f"  attention {k_}: {v_}")


def parity(policy, cams, img, device, args, n=3):
    """Fast vs eager on fresh random inputs (images, state, task, noise): actions and the expert's prefix K/V;
    the configured fast path, then graphs without compile and neither (phase bodies), to place a difference."""
    from gemma3nvla_ros.policy.fast_inference import FastSampler

    main = policy._fast
    RESULTS["parity"] = parity_rows(policy, cams, img, device, args, n)
    with guarded("parity-fp32"):
        parity_fp32(policy, cams, img, device, args, n)
    log(f"parity: {RESULTS['parity']}")
    for tag, graphs in (("graphs, no compile", True), ("no graphs, no compile", False)):
        policy._fast = FastSampler(policy.model, graphs=graphs, compile=False, attention=main.attention)
        RESULTS[f"parity ({tag})"] = parity_rows(policy, cams, img, device, args, 1)
        log(f"parity ({tag}): {RESULTS[f'parity ({tag})']}")
    policy._fast = None
    gc.collect()
    policy._fast = main


def parity_fp32(policy, cams, img, device, args, n):
    """The eager bf16 path and the fast path, each against a float32 copy of the same policy (eager): with random
    weights the bf16 network amplifies rounding, so "within bf16 tolerance" means: no farther from float32 than
    the eager bf16 path is."""
    import copy

    from gemma3nvla_ros.policy.fast_inference import FastSampler

    main = policy._fast
    policy._fast = None
    ref_policy = copy.deepcopy(policy).float()
    ref_policy._fast = None
    nocompile = FastSampler(policy.model, graphs=True, compile=False, attention=main.attention)
    rows = []
    for i in range(n):
        batch = make_batch(policy, cams, img, device, args.text_tokens, seed=300 + i, task_seed=300 + i)
        noise = torch.randn(1, policy.config.chunk_size, policy.config.max_action_dim, device=device)
        ref = ref_policy.predict_action_chunk(batch, noise=noise)
        _, ref_kv = ref_policy.model.compute_prefix(*ref_policy._inputs(batch))
        policy._fast = None
        eager = policy.predict_action_chunk(batch, noise=noise)
        _, eager_kv = policy.model.compute_prefix(*policy._inputs(batch))
        row = {"eager_bf16": rel(eager, ref), "eager_bf16_kv_layer0": rel(eager_kv[0][0], ref_kv[0][0]),
               "eager_bf16_kv_max": max(rel(eager_kv[e][0], ref_kv[e][0]) for e in range(len(ref_kv)))}
        for tag, fs in (("fast", main), ("fast_nocompile", nocompile)):
            policy._fast = fs
            out = policy.predict_action_chunk(batch, noise=noise)
            s = fs.load(*policy._inputs(batch), noise)
            fs.run_phase(s, "vision")
            fs.run_phase(s, "text")
            row[tag] = rel(out, ref)
            row[tag + "_kv_layer0"] = rel(s.prefix_kv[0][0], ref_kv[0][0])
            row[tag + "_kv_max"] = max(rel(s.prefix_kv[e][0], ref_kv[e][0]) for e in range(len(ref_kv)))
        rows.append(row)
        log(f"parity vs float32: {row}")
    RESULTS["parity_vs_fp32"] = rows
    policy._fast = main
    del ref_policy, nocompile
    gc.collect()
    torch.cuda.empty_cache()


def parity_rows(policy, cams, img, device, args, n):
    fs = policy._fast
    rows = []
    for i in range(n):
        batch = make_batch(policy, cams, img, device, args.text_tokens, seed=100 + i, task_seed=100 + i)
        noise = torch.randn(1, policy.config.chunk_size, policy.config.max_action_dim, device=device)
        policy._fast = None
        ref = policy.predict_action_chunk(batch, noise=noise)
        _, ref_kv = policy.model.compute_prefix(*policy._inputs(batch))
        policy._fast = fs
        out = policy.predict_action_chunk(batch, noise=noise)
        s = fs.load(*policy._inputs(batch), noise)
        fs.run_phase(s, "vision")
        fs.run_phase(s, "text")
        kv_err = max(rel(s.prefix_kv[e][j], ref_kv[e][j]) for e in range(len(ref_kv)) for j in range(2))
        feats_err = rel(s.feats, policy.model.vlm_with_expert.get_image_features(torch.cat(policy._inputs(batch)[0])))
        per_layer = [round(max(rel(s.prefix_kv[e][j], ref_kv[e][j]) for j in range(2)), 4) for e in range(len(ref_kv))]
        rows.append({"actions_rel": rel(out, ref), "prefix_kv_rel_max": kv_err, "feats_rel": feats_err,
                     "finite": bool(torch.isfinite(out).all()), "prefix_kv_rel_per_layer": per_layer})
    return rows


def memory(policy, cams, img, device, args):
    """Peak inference memory, token tables on the device vs in host memory (fast path), and what host tables
    cost in latency (same task: cached rows; a new task every chunk; eager path)."""
    vlm = policy.model.vlm_with_expert
    out = {}

    def measure(tag, eager=False):
        batch = make_batch(policy, cams, img, device, args.text_tokens, seed=7)
        torch.cuda.reset_peak_memory_stats(device)
        policy.predict_action_chunk(batch)
        sync(device)
        n = 3 if eager else max(5, args.iters // 2)
        def same():
            policy.predict_action_chunk(batch)
        t_same = time_phases({"chunk": same}, device, args.reps, n, warmup=1)["wall"]
        tasks = [make_batch(policy, cams, img, device, args.text_tokens, seed=7, task_seed=t) for t in range(12)]
        it = iter(range(10**9))
        def new_task():
            policy.predict_action_chunk(tasks[next(it) % len(tasks)])
        t_new = t_same if eager else time_phases({"chunk": new_task}, device, args.reps, n, warmup=1)["wall"]
        out[tag] = {"weights_gib": torch.cuda.memory_allocated(device) / 2**30,
                    "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30,
                    "reserved_gib": torch.cuda.memory_reserved(device) / 2**30,
                    "chunk_same_task_ms": t_same, "chunk_new_task_ms": t_new}
        log(f"memory {tag}: {out[tag]['weights_gib']:.2f} GiB allocated, peak {out[tag]['peak_gib']:.2f} GiB, "
            f"same task {t_same['p50']:.2f} ms, new task {t_new['p50']:.2f} ms")

    def reset_fast():
        policy._fast = None
        gc.collect()
        torch.cuda.empty_cache()

    policy.config.fast_compile = False  # a new sampler would recompile; graphs alone show the memory and copies
    reset_fast()
    policy.prepare_for_inference(fast=True)
    measure("fast (graphs), tables on GPU")
    reset_fast()
    vlm.keep_embeddings_on_host(True)
    torch.cuda.empty_cache()
    policy.prepare_for_inference(fast=True)
    measure("fast (graphs), tables on host")
    reset_fast()
    policy.prepare_for_inference(fast=False)
    measure("eager, tables on host", eager=True)
    vlm.keep_embeddings_on_host(False)
    reset_fast()
    policy.prepare_for_inference(fast=False)
    measure("eager, tables on GPU", eager=True)
    RESULTS["memory"] = out


def build_smolvla(device, img):
    """LeRobot's SmolVLA at its defaults with random weights, its SmolVLM2-500M config written out locally from
    the published numbers (no processor files: the processor is only read for two special-token ids)."""
    import types

    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.policies.smolvla import smolvlm_with_expert
    from lerobot.policies.smolvla.configuration_smolvla import SmolVLAConfig
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy
    from transformers import SmolVLMConfig

    tmp = tempfile.mkdtemp(prefix="smolvlm2_")
    SmolVLMConfig(
        text_config=dict(model_type="llama", hidden_size=960, intermediate_size=2560, num_hidden_layers=32,
                         num_attention_heads=15, num_key_value_heads=5, head_dim=64, vocab_size=49280,
                         max_position_embeddings=8192, rope_theta=100000.0, rms_norm_eps=1e-5, pad_token_id=2,
                         tie_word_embeddings=False),
        vision_config=dict(model_type="smolvlm_vision", hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                           num_attention_heads=12, patch_size=16, image_size=512),
        scale_factor=4, image_token_id=49190, vocab_size=49280,
    ).save_pretrained(tmp)
    tok = types.SimpleNamespace(fake_image_token_id=49189, global_image_token_id=49152)
    smolvlm_with_expert.AutoProcessor = types.SimpleNamespace(
        from_pretrained=lambda *_a, **_k: types.SimpleNamespace(tokenizer=tok))
    cams = ("observation.images.top", "observation.images.wrist")
    inputs = {c: PolicyFeature(type=FeatureType.VISUAL, shape=(3, img, img)) for c in cams}
    inputs["observation.state"] = PolicyFeature(type=FeatureType.STATE, shape=(6,))
    outputs = {"action": PolicyFeature(type=FeatureType.ACTION, shape=(6,))}
    cfg = SmolVLAConfig(vlm_model_name=tmp, input_features=inputs, output_features=outputs, device=str(device),
                        push_to_hub=False)
    torch.manual_seed(0)
    with torch.device(device):
        policy = SmolVLAPolicy(cfg)
    return policy.to(device).eval(), cams


def smolvla_phases(policy, batch):
    from lerobot.policies.smolvla.modeling_smolvla import make_att_2d_masks

    net = policy.model
    images, img_masks = policy.prepare_images(batch)
    state = policy.prepare_state(batch)
    lang_tokens, lang_masks = batch["observation.language.tokens"], batch["observation.language.attention_mask"]
    st: dict = {}
    cfg = policy.config

    def vision():
        st["emb"] = net.embed_prefix(images, img_masks, lang_tokens, lang_masks, state=state)

    def text():
        embs, pad, att = st["emb"]
        st["pad"] = pad
        _, st["kv"] = net.vlm_with_expert.forward(
            attention_mask=make_att_2d_masks(pad, att), position_ids=torch.cumsum(pad, dim=1) - 1,
            past_key_values=None, inputs_embeds=[embs, None], use_cache=cfg.use_cache, fill_kv_cache=True)

    def denoise():
        x = torch.randn(1, cfg.chunk_size, cfg.max_action_dim, device=state.device)
        dt = -1.0 / cfg.num_steps
        for s in range(cfg.num_steps):  # SmolVLA's sample_actions loop
            tt = torch.tensor(1.0 + s * dt, dtype=torch.float32, device=state.device).expand(1)
            x = x + dt * net.denoise_step(x_t=x, prefix_pad_masks=st["pad"], past_key_values=st["kv"], timestep=tt)

    return {"vision": vision, "text": text, "denoise": denoise}


def training(policy, cams, img, device, args):
    from torch.utils.flop_counter import FlopCounterMode

    cfg = policy.config
    policy._fast = None
    vlm = policy.model.vlm_with_expert
    vlm.expert.to(torch.float32)
    policy.train()
    params = policy.get_optim_params()
    opt = torch.optim.AdamW(params, lr=cfg.optimizer_lr, betas=cfg.optimizer_betas, weight_decay=cfg.optimizer_weight_decay)
    bs = args.train_batch
    tb = make_batch(policy, cams, img, device, args.text_tokens, bsize=bs, seed=3, with_actions=True)
    expert_params = sum(p.numel() for p in vlm.expert.parameters())
    rows = {}

    def step(autocast: bool):
        ctx = torch.autocast(device.type, dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
        with ctx:
            loss, _ = policy.forward(tb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.optimizer_grad_clip_norm)
        opt.step()

    flops = None
    try:  # forward FLOPs under no_grad (whole forward, and the frozen prefix alone); backward = 2x the expert's
        with torch.no_grad():
            with FlopCounterMode(display=False) as fc:
                policy.forward(tb)
            total_fwd = fc.get_total_flops()
            with FlopCounterMode(display=False) as fc:
                policy.model.compute_prefix(*policy._inputs(tb))
            prefix_fwd = fc.get_total_flops()
        flops = total_fwd + 2 * (total_fwd - prefix_fwd)
        RESULTS["train_flops"] = {"forward": total_fwd, "prefix_forward": prefix_fwd, "step": flops}
    except Exception as exc:
        log(f"flop count failed: {exc}")
    for mode in ("fp32", "tf32", "bf16 autocast"):
        try:
            cfg.tf32 = mode != "fp32"
            torch.backends.cuda.matmul.allow_tf32 = mode != "fp32"
            torch.backends.cudnn.allow_tf32 = mode != "fp32"
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            autocast = mode == "bf16 autocast"
            step(autocast)
            t = time_phases({"step": lambda: step(autocast)}, device, 1, args.train_steps, warmup=1)["wall"]
            ms = t["p50"]
            peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
            rows[mode] = {"step_ms": ms, "samples_s": bs / (ms / 1e3), "peak_gib": peak,
                          "mfu_counted": (flops or float("nan")) / (ms / 1e3) / H200_BF16_PEAK,
                          "mfu_expert_6N": 6 * expert_params * bs * cfg.chunk_size / (ms / 1e3) / H200_BF16_PEAK}
            log(f"train {mode}: {rows[mode]}")
        except torch.OutOfMemoryError:
            rows[mode] = "OOM"
            opt.zero_grad(set_to_none=True)
    RESULTS["train"] = {"batch": bs, "flops_per_step_counted": flops, "expert_params": expert_params, "rows": rows}
    policy.eval()


# ------------------------------------------------------------------------------------------- report
def report(args) -> str:
    r = RESULTS
    lines = [f"\nGemma3nVLA benchmark | {r.get('setup', '')}"]
    lat, prof = r.get("latency", {}), r.get("profile", {})
    if lat:
        lines.append("\nper chunk, batch 1 (ms; median of repetition medians [min-max of those], p90)")
        lines.append(f"  {'path':<28}{'phase':<10}{'wall p50':>10}{'range':>16}{'p90':>9}{'kernels':>9}{'kernel ms':>11}{'launches':>10}")
        for tag, t in lat.items():
            for ph in [*PHASES, "load", "total_gpu", "wall", "predict_action_chunk"]:
                if ph not in t:
                    continue
                v = t[ph]
                pg = prof.get(tag, {}).get(ph, {})
                p = pg if pg.get("kernels") else prof.get(tag + " (bodies)", {}).get(ph, pg)
                extra = (f"{p.get('kernels', float('nan')):>9.0f}{p.get('kernel_ms', float('nan')):>11.2f}"
                         f"{pg.get('host_launches', p.get('host_launches', float('nan'))):>10.0f}") if p else ""
                lines.append(f"  {tag:<28}{ph:<10}{v['p50']:>10.2f}  [{v['rep_p50_min']:>6.2f}-{v['rep_p50_max']:>6.2f}]"
                             f"{v['p90']:>9.2f}{extra}")
    if "smolvla_ratio" in r:
        lines.append(f"\nSmolVLA / Gemma3nVLA fast, per-chunk wall p50: {r['smolvla_ratio']:.2f}")
    if r.get("parity_vs_fp32"):
        lines.append("\nrelative L2 error of actions against a float32 copy (eager), per fresh input: " + "; ".join(
            f"eager bf16 {p['eager_bf16']:.3f}, fast {p['fast']:.3f}, fast w/o compile {p['fast_nocompile']:.3f} "
            f"(prefix K layer 0: {p['eager_bf16_kv_layer0']:.4f} / {p['fast_kv_layer0']:.4f} / {p['fast_nocompile_kv_layer0']:.4f};"
            f" max over layers {p['eager_bf16_kv_max']:.3f} / {p['fast_kv_max']:.3f} / {p['fast_nocompile_kv_max']:.3f})"
            for p in r["parity_vs_fp32"]))
    for key in [k for k in r if k.startswith("parity") and k != "parity_vs_fp32"]:
        lines.append(f"\n{key}: fast vs eager on fresh random inputs (rel. L2 error): " + "; ".join(
            f"actions {p['actions_rel']:.2e}, prefix K/V max {p['prefix_kv_rel_max']:.2e}, vision {p['feats_rel']:.2e}"
            for p in r[key]))
    if r.get("host_breakdown"):
        lines.append(f"\nhost-side breakdown of predict_action_chunk (ms, p50): {r['host_breakdown']}")
    if r.get("rtc_latency"):
        lines.append(f"\npredict_action_chunk, fast path, unguided vs RTC-guided (ms, p50): {r['rtc_latency']}")
    if "attention_us" in r:
        lines.append("\nattention per call (µs, replayed from a CUDA graph)")
        for k, v in r["attention_us"].items():
            lines.append(f"  {k:<44}{v}")
    if "memory" in r:
        lines.append("\nmemory (GiB) and chunk wall p50 (ms)")
        for k, v in r["memory"].items():
            lines.append(f"  {k:<32} allocated {v['weights_gib']:.2f}  peak {v['peak_gib']:.2f}  "
                         f"same task {v['chunk_same_task_ms']['p50']:.2f}  new task every chunk {v['chunk_new_task_ms']['p50']:.2f}")
    if "train" in r:
        t = r["train"]
        lines.append(f"\nexpert-only training step, batch {t['batch']} ({t['flops_per_step_counted'] / 1e12 if t['flops_per_step_counted'] else float('nan'):.1f} TFLOP counted per step)")
        for mode, v in t["rows"].items():
            if isinstance(v, dict):
                lines.append(f"  {mode:<16} {v['step_ms']:>8.1f} ms  {v['samples_s']:>7.1f} samples/s  peak {v['peak_gib']:.1f} GiB  "
                             f"MFU {100 * v['mfu_counted']:.1f}% (counted FLOPs), {100 * v['mfu_expert_6N']:.1f}% (6·N_expert·tokens)")
            else:
                lines.append(f"  {mode:<16} {v}")
    if r.get("fast_report"):
        lines.append(f"\nfast path: {r['fast_report']}")
    if r.get("errors"):
        lines.append(f"\nerrors: {r['errors']}")
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    args.iters = args.iters or (2 if args.tiny else 20)
    args.reps = args.reps or (2 if args.tiny else 3)
    args.train_batch = args.train_batch or (2 if args.tiny else 32)
    args.train_steps = args.train_steps or (1 if args.tiny else 5)
    img = 64 if args.tiny else 768
    cuda = device.type == "cuda"
    t0 = time.perf_counter()
    policy, cams = build_gemma(args, device, img)
    counts = policy.parameter_counts
    dev_name = torch.cuda.get_device_name(device) if cuda else "cpu"
    RESULTS["setup"] = (f"{'tiny' if args.tiny else 'E2B (random weights)'}, bf16 backbone, device {dev_name}, torch "
                        f"{torch.__version__}, 2 cameras {img}x{img}, {args.text_tokens} task tokens, chunk "
                        f"{policy.config.chunk_size}, {policy.config.num_steps} steps; {args.reps} reps x {args.iters} chunks")
    RESULTS["parameters"] = counts
    log(f"built in {time.perf_counter() - t0:.1f} s: {counts}")
    batch = make_batch(policy, cams, img, device, args.text_tokens)

    # eager reference (bf16 expert, as the fast path)
    policy.prepare_for_inference(fast=False, warmup=False)
    if section("eager", args):
        with guarded("eager"):
            if cuda:
                torch.cuda.reset_peak_memory_stats(device)
            ph = eager_phases(policy, batch)
            run_latency("eager", ph, device, args, policy, batch, iters=max(2, args.iters // 2))
            if cuda:
                RESULTS["latency"]["eager"]["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
            run_profile("eager", ph, device, args, n=2)
    save(args)

    for tag, compile_ in (("fast, graphs, no compile", False), ("fast", True)):
        key = "fast-nocompile" if not compile_ else "fast"
        if not section(key, args):
            continue
        with guarded(key):
            policy._fast = None
            gc.collect()
            if cuda:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            policy.config.fast_compile = compile_
            t1 = time.perf_counter()
            rep = policy.prepare_for_inference(fast=True)
            log(f"{tag}: prepared in {time.perf_counter() - t1:.1f} s: {rep}")
            RESULTS.setdefault("fast_reports", {})[tag] = rep
            RESULTS["fast_report"] = rep
            ph, _ = fast_phases(policy, batch)
            run_latency(tag, ph, device, args, policy, batch)
            if cuda:
                RESULTS["latency"][tag]["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
            run_profile(tag, {k: v for k, v in ph.items() if k != "load"}, device, args, n=5)
            if "profile-bodies" not in args.skip:
                run_profile(tag + " (bodies)", fast_body_phases(policy, batch), device, args, n=2)
            st: dict = {}
            parts = {"eval()": lambda: policy.eval(), "validate": lambda: policy._validate_batch(batch, training=False),
                     "prepare inputs": lambda: st.__setitem__("in", policy._inputs(batch)),
                     "fast.sample_actions": lambda: policy._fast.sample_actions(*st["in"])}
            RESULTS.setdefault("host_breakdown", {})[tag] = {
                k: v["p50"] for k, v in time_phases(parts, device, args.reps, 10).items()}
            log(f"host breakdown: {RESULTS['host_breakdown'][tag]}")
            if compile_:
                rtc_latency(policy, batch, device, args)
        save(args)

    if policy._fast is not None and section("parity", args):
        with guarded("parity"):
            parity(policy, cams, img, device, args)
        save(args)

    if cuda and section("attention", args):
        with guarded("attention"):
            attention_micro(policy, device, args)
        save(args)

    if cuda and section("memory", args):
        with guarded("memory"):
            memory(policy, cams, img, device, args)
        save(args)

    if section("train", args):
        with guarded("train"):
            training(policy, cams, img, device, args)
        save(args)

    if section("smolvla", args) and not args.tiny:
        with guarded("smolvla"):
            del policy
            gc.collect()
            if cuda:
                torch.cuda.empty_cache()
            smol, scams = build_smolvla(device, img)
            sbatch = {c: torch.rand(1, 3, img, img, device=device) for c in scams}
            sbatch["observation.state"] = torch.randn(1, 6, device=device)
            sbatch["observation.language.tokens"] = torch.randint(10, 40000, (1, args.text_tokens), device=device)
            sbatch["observation.language.attention_mask"] = torch.ones(1, args.text_tokens, dtype=torch.bool, device=device)
            if cuda:
                torch.cuda.reset_peak_memory_stats(device)
            ph = smolvla_phases(smol, sbatch)
            run_latency("smolvla (eager, defaults)", ph, device, args, smol, sbatch, iters=max(2, args.iters // 2))
            if cuda:
                RESULTS["latency"]["smolvla (eager, defaults)"]["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
            run_profile("smolvla (eager, defaults)", ph, device, args, n=2)
            fast = RESULTS["latency"].get("fast", {}).get("wall")
            if fast:
                RESULTS["smolvla_ratio"] = RESULTS["latency"]["smolvla (eager, defaults)"]["wall"]["p50"] / fast["p50"]
        save(args)

    text = report(args)
    print(text, flush=True)
    if args.out:
        (Path(args.out) / "bench.txt").write_text(text + "\n")
        save(args)


if __name__ == "__main__":
    main()
