#!/usr/bin/env python
"""Gemma3nVLA policy benchmark: inference latency (prefix vs denoising), peak memory, parameter counts, and
expert-only training step time. Nothing is downloaded: the E2B backbone config is written out locally from its
published numbers (random weights, 262,400-token embedding tables), with a small locally built tokenizer.

    python benchmarks/bench_policy.py                       # full-size E2B, bf16, CUDA
    python benchmarks/bench_policy.py --device cpu --tiny   # quick smoke check with a tiny backbone

Inference: two cameras (768x768), a 48-token task, chunk 50, 10 Euler steps, prefix K/V computed once.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true", help="tiny random backbone (smoke check)")
    p.add_argument("--dtype", default=None, choices=["bfloat16", "float32", "float16"],
                   help="backbone dtype (default: bfloat16 on CUDA, float32 on CPU)")
    p.add_argument("--iters", type=int, default=None, help="timed iterations (default 20, tiny 3)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up iterations (default 3, tiny 1)")
    p.add_argument("--train-batch-sizes", type=int, nargs="*", default=None, help="default 8 32 (tiny: 2 4)")
    p.add_argument("--train-steps", type=int, default=None, help="timed training steps (default 10, tiny 2)")
    p.add_argument("--num-vlm-layers", type=int, default=None)
    p.add_argument("--chunk-size", type=int, default=50)
    p.add_argument("--num-steps", type=int, default=10)
    p.add_argument("--text-tokens", type=int, default=48)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--compile", action="store_true", help="compile_model=True (torch.compile of the denoising step)")
    p.add_argument("--compile-mode", default="reduce-overhead")
    p.add_argument("--expert-dtype", default="float32", choices=["float32", "bfloat16"],
                   help="expert dtype for the inference measurement (training always uses the float32 expert)")
    return p.parse_args()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    from lerobot.configs.types import FeatureType, PolicyFeature

    from gemma3nvla_ros.policy.configuration_gemma3nvla import Gemma3nVLAConfig
    from gemma3nvla_ros.policy.local_backbone import e2b_config, tiny_config, write_backbone_dir
    from gemma3nvla_ros.policy.modeling_gemma3nvla import Gemma3nVLAPolicy

    tiny = args.tiny
    iters = args.iters or (3 if tiny else 20)
    warmup = args.warmup if args.warmup is not None else (1 if tiny else 3)
    train_bs = args.train_batch_sizes if args.train_batch_sizes is not None else ([2, 4] if tiny else [8, 32])
    train_steps = args.train_steps or (2 if tiny else 10)
    img = 64 if tiny else 768
    dtype = args.dtype or ("bfloat16" if device.type == "cuda" else "float32")
    vlm_cfg = tiny_config() if tiny else e2b_config()
    n_layers = args.num_vlm_layers or vlm_cfg.text_config.num_hidden_layers

    tmp = tempfile.mkdtemp(prefix="gemma3nvla_bench_")
    write_backbone_dir(tmp, vlm_cfg)
    cams = ("observation.images.top", "observation.images.wrist")
    inputs = {c: PolicyFeature(type=FeatureType.VISUAL, shape=(3, img, img)) for c in cams}
    inputs["observation.state"] = PolicyFeature(type=FeatureType.STATE, shape=(6,))
    outputs = {"action": PolicyFeature(type=FeatureType.ACTION, shape=(6,))}
    cfg = Gemma3nVLAConfig(
        vlm_model_name=tmp, load_vlm_weights=False, num_vlm_layers=n_layers, device=str(device),
        backbone_dtype=dtype, resize_imgs_with_padding=(img, img), chunk_size=args.chunk_size,
        n_action_steps=args.chunk_size, num_steps=args.num_steps, input_features=inputs, output_features=outputs,
        push_to_hub=False, tokenizer_max_length=max(48, args.text_tokens), compile_model=args.compile,
        compile_mode=args.compile_mode,
    )
    t0 = time.perf_counter()
    torch.manual_seed(0)
    with torch.device(device):  # random init on the accelerator (CPU init of E2B takes minutes)
        policy = Gemma3nVLAPolicy(cfg)
    policy = policy.to(device).eval()
    build_s = time.perf_counter() - t0
    net = policy.model
    counts = policy.parameter_counts

    def make_batch(bsize: int, with_actions: bool) -> dict:
        g = torch.Generator(device="cpu").manual_seed(bsize)
        batch = {c: torch.rand(bsize, 3, img, img, generator=g).to(device) for c in cams}
        batch["observation.state"] = torch.randn(bsize, 6, generator=g).to(device)
        words = torch.randint(6, 40, (bsize, args.text_tokens - 1), generator=g)
        tokens = torch.cat([torch.full((bsize, 1), net.bos_token_id), words], dim=1)
        batch["observation.language.tokens"] = tokens.to(device)
        batch["observation.language.attention_mask"] = torch.ones_like(tokens, dtype=torch.bool).to(device)
        if with_actions:
            batch["action"] = torch.randn(bsize, cfg.chunk_size, 6, generator=g).to(device)
            batch["action_is_pad"] = torch.zeros(bsize, cfg.chunk_size, dtype=torch.bool, device=device)
        return batch

    # ---------------------------------------------------------------- inference
    expert = net.vlm_with_expert.expert
    expert.to(getattr(torch, args.expert_dtype))
    batch = make_batch(1, with_actions=False)
    inputs_ = policy._inputs(batch)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    vision, prefix_t, denoise_t, total_t = [], [], [], []
    prefix_len = None
    with torch.no_grad():
        for i in range(warmup + iters):
            sync(device)
            a = time.perf_counter()
            embeds, raw, pad, pos = net.embed_prefix(*inputs_)
            sync(device)
            b = time.perf_counter()
            prefix = net.vlm_with_expert.forward_prefix(embeds, raw, pad, pos)
            prefix_kv = net.vlm_with_expert.expert_prefix_kv(prefix)
            sync(device)
            c = time.perf_counter()
            x = net.real_dims_only(torch.randn(1, cfg.chunk_size, cfg.max_action_dim, device=device))
            dt = -1.0 / cfg.num_steps
            for s in range(cfg.num_steps):  # VLAFlowMatching.sample_actions' loop
                tt = torch.full((1,), 1.0 + s * dt, device=device)
                x = x + dt * net.real_dims_only(net.velocity(prefix, prefix_kv, x, tt))
            sync(device)
            d = time.perf_counter()
            prefix_len = embeds.shape[1]
            if i >= warmup:
                vision.append((b - a) * 1e3)
                prefix_t.append((c - a) * 1e3)
                denoise_t.append((d - c) * 1e3)
                total_t.append((d - a) * 1e3)
    infer_peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")

    # ---------------------------------------------------------------- training (expert only)
    expert.to(torch.float32)
    if args.compile:
        del net.velocity  # train with the plain (uncompiled) denoising step
    train_rows = []
    policy.train()
    opt = torch.optim.AdamW(policy.get_optim_params(), lr=cfg.optimizer_lr, betas=cfg.optimizer_betas,
                            weight_decay=cfg.optimizer_weight_decay)
    for bs in train_bs:
        try:
            tb = make_batch(bs, with_actions=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            times = []
            for i in range(1 + train_steps):
                sync(device)
                a = time.perf_counter()
                loss, _ = policy.forward(tb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(policy.get_optim_params(), cfg.optimizer_grad_clip_norm)
                opt.step()
                sync(device)
                if i >= 1:
                    times.append((time.perf_counter() - a) * 1e3)
            peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
            train_rows.append((bs, f"{statistics.median(times):.1f}", f"{bs / (statistics.median(times) / 1e3):.1f}",
                               f"{peak:.2f}"))
        except torch.OutOfMemoryError:
            train_rows.append((bs, "OOM", "-", "-"))
            opt.zero_grad(set_to_none=True)

    # ---------------------------------------------------------------- report
    name = "tiny" if tiny else "E2B (random weights)"
    dev = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"\nGemma3nVLA benchmark | backbone {name} | {n_layers} VLM layers | dtype {dtype} | device {dev}"
          f"{' | compiled denoising step (' + args.compile_mode + ')' if args.compile else ''}")
    print(f"prefix {prefix_len} tokens (2 cameras {img}x{img}, {args.text_tokens} text tokens, 1 state) | "
          f"chunk {cfg.chunk_size} | {cfg.num_steps} Euler steps | build {build_s:.1f} s")
    print("\nparameters")
    for key in ("total", "trainable", "used", "backbone", "expert"):
        print(f"  {key:<10} {counts[key]:>15,}")
    print(f"\ninference per chunk, batch 1, expert {args.expert_dtype} (ms)   p50        p90")
    for label, vals in (("vision + embeddings", vision), ("prefix total (incl. vision)", prefix_t),
                        (f"denoising ({cfg.num_steps} steps)", denoise_t), ("total", total_t)):
        print(f"  {label:<32} {pct(vals, 50):>9.2f} {pct(vals, 90):>10.2f}")
    print(f"  peak memory (GiB)                {infer_peak:>9.2f}")
    print("\ntraining step, expert only (train_expert_only, frozen vision)")
    print("  batch    step ms   samples/s   peak GiB")
    for bs, ms, sps, peak in train_rows:
        print(f"  {bs:>5} {ms:>10} {sps:>11} {peak:>10}")


if __name__ == "__main__":
    main()
