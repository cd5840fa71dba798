"""Expert + flow matching: cached sampling == uncached, seeded reproducibility, no input mutation, loss masking,
time distribution, and honest parameter accounting."""
from __future__ import annotations

import copy

import pytest
import torch

from helpers_policy import make_batch, make_config


@pytest.fixture(scope="module")
def policy(tiny_backbone):
    from gemma3nvla_ros.policy.modeling_gemma3nvla import Gemma3nVLAPolicy

    torch.manual_seed(0)
    cfg = make_config(tiny_backbone[0], num_vlm_layers=6, num_expert_layers=3)
    p = Gemma3nVLAPolicy(cfg).eval()
    # Give the action head some weight so sampled actions depend on everything upstream.
    with torch.no_grad():
        p.model.action_out_proj.weight.normal_(std=0.5)
    return p


def test_expert_mapping_and_lean_shape(policy):
    vlm = policy.model.vlm_with_expert
    assert vlm.expert_to_vlm == [0, 2, 4]
    assert vlm.cross_flags == [False, True, False]  # joint every 2nd expert layer (SmolVLA's scheme)
    tc = vlm.text_config
    assert vlm.expert_hidden_size == int(tc.hidden_size * 0.75)
    for layer in vlm.expert.layers:
        attn = layer.self_attn
        assert (attn.num_heads, attn.num_kv_heads, attn.head_dim) == (tc.num_attention_heads, tc.num_key_value_heads, tc.head_dim)
        assert attn.k_proj.in_features == (vlm.vlm_kv_width if attn.cross else vlm.expert_hidden_size)
        assert layer.mlp.activation_sparsity == 0.0
    names = {n for n, _ in vlm.expert.named_parameters()}
    assert not any("embed" in n or "per_layer" in n or "altup" in n or "laurel" in n for n in names)


def test_cached_sampling_equals_uncached(policy):
    batch = make_batch(policy.config, seed=1)
    net = policy.model
    args = policy._inputs(batch)
    noise = torch.randn(2, policy.config.chunk_size, policy.config.max_action_dim, generator=torch.Generator().manual_seed(5))
    cached = net.sample_actions(*args, noise=noise.clone(), use_cache=True)
    uncached = net.sample_actions(*args, noise=noise.clone(), use_cache=False)
    assert cached.abs().max() > 0
    torch.testing.assert_close(cached, uncached, rtol=1e-5, atol=1e-6)
    # and the Euler loop really integrates the velocity: x_0 = noise - mean velocity
    assert not torch.allclose(cached, noise)


def test_seeded_prediction_is_reproducible_and_inputs_untouched(policy):
    batch = make_batch(policy.config, seed=2)
    before = copy.deepcopy(batch)
    a = policy.predict_action_chunk(batch, generator=torch.Generator().manual_seed(7))
    b = policy.predict_action_chunk(batch, generator=torch.Generator().manual_seed(7))
    c = policy.predict_action_chunk(batch, generator=torch.Generator().manual_seed(8))
    assert a.shape == (2, policy.config.chunk_size, 6)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    for k, v in before.items():
        assert torch.equal(v, batch[k]), k
    policy.reset()
    first = policy.select_action(batch, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(first, a[:, 0])


def test_loss_masks_padded_steps_and_padded_dims(policy):
    cfg = policy.config
    batch = make_batch(cfg, seed=4)
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(2, cfg.chunk_size, cfg.max_action_dim, generator=g)
    time = torch.tensor([0.3, 0.8])
    batch["action_is_pad"][0, 5:] = True
    loss, _ = policy.forward(batch, noise=noise, time=time)

    # Manual: same per-element losses, averaged over in-episode steps and the 6 real dims only.
    elems = policy.model.forward(*policy._inputs(batch), policy.prepare_action(batch), noise=noise, time=time)
    valid = ~batch["action_is_pad"]
    manual = elems[:, :, :6][valid].mean()
    torch.testing.assert_close(loss, manual)
    assert not torch.isclose(loss, elems.mean())  # the 32-dim / all-steps mean would differ

    # Garbage in padded steps must not change the loss.
    garbage = dict(batch)
    garbage["action"] = batch["action"].clone()
    garbage["action"][0, 5:] = 1e3
    loss2, _ = policy.forward(garbage, noise=noise, time=time)
    torch.testing.assert_close(loss, loss2)
    # (x_t and the target u = noise - actions are checked against the model in test_euler_integration_sign_and_step.)


def test_time_distribution():
    from gemma3nvla_ros.policy.modeling_gemma3nvla import VLAFlowMatching

    t = VLAFlowMatching.sample_time(200_000, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert 0.001 <= t.min() and t.max() <= 1.0
    for x in (0.1, 0.3, 0.5, 0.7, 0.9):
        cdf = ((x - 0.001) / 0.999) ** 1.5  # 0.999 * Beta(1.5, 1) + 0.001
        assert abs((t <= x).float().mean().item() - cdf) < 0.005


def test_parameter_counts_are_honest(tiny_backbone):
    """'used' == parameters that receive gradient when everything is trainable (PLE counted per column)."""
    from gemma3nvla_ros.policy.modeling_gemma3nvla import Gemma3nVLAPolicy

    torch.manual_seed(0)
    cfg = make_config(tiny_backbone[0], num_vlm_layers=6, train_expert_only=False, freeze_vision_encoder=False)
    p = Gemma3nVLAPolicy(cfg)
    counts = p.parameter_counts
    assert counts["trainable"] == counts["total"]
    p.train()
    batch = make_batch(cfg, seed=0)
    loss, _ = p.forward(batch)
    loss.backward()
    lm = p.model.vlm_with_expert.language_model
    used = 0
    for name, param in p.named_parameters():
        g = param.grad
        if g is None:
            continue
        if param is lm.embed_tokens_per_layer.weight:
            used += param.shape[0] * int((g != 0).any(dim=0).sum())
        elif param is lm.per_layer_model_projection.weight:
            used += param.shape[1] * int((g != 0).any(dim=1).sum())
        elif bool((g != 0).any()):
            used += param.numel()
    assert used == counts["used"], (used, counts)
    assert counts["used"] < counts["total"]

    frozen = Gemma3nVLAPolicy(make_config(tiny_backbone[0], num_vlm_layers=6))
    expert_and_heads = sum(x.numel() for n, x in frozen.named_parameters() if not n.startswith(
        ("model.vlm_with_expert.vision_tower", "model.vlm_with_expert.embed_vision", "model.vlm_with_expert.language_model")))
    assert frozen.parameter_counts["trainable"] == expert_and_heads


def test_padding_does_not_change_a_sample(policy):
    """A sample's actions are the same alone and in a batch where its task is right-padded: padded tokens are
    never attended to and do not advance positions (prefix, sliding window, expert RoPE)."""
    from transformers import AutoTokenizer

    cfg = policy.config
    short = make_batch(cfg, batch_size=1, seed=6, task="push", with_actions=False)
    tok = AutoTokenizer.from_pretrained(cfg.vlm_model_name)
    enc = tok(["push\n", "pick the red cube into the blue box\n"], padding="longest", return_tensors="pt")
    pair = {k: torch.cat([v, torch.rand_like(v)]) if k.startswith("observation.images") else v for k, v in short.items()}
    pair["observation.state"] = torch.cat([short["observation.state"], torch.randn(1, 6)])
    pair["observation.language.tokens"] = enc["input_ids"]
    pair["observation.language.attention_mask"] = enc["attention_mask"].bool()
    assert not pair["observation.language.attention_mask"][0].all()  # the short task really is padded
    noise = torch.randn(2, cfg.chunk_size, cfg.max_action_dim, generator=torch.Generator().manual_seed(1))
    alone = policy.predict_action_chunk(short, noise=noise[:1].clone())
    batched = policy.predict_action_chunk(pair, noise=noise.clone())
    torch.testing.assert_close(batched[:1], alone, rtol=1e-4, atol=1e-5)


def test_self_attn_mode_cached_equals_uncached(tiny_backbone):
    from gemma3nvla_ros.policy.modeling_gemma3nvla import Gemma3nVLAPolicy

    torch.manual_seed(0)
    p = Gemma3nVLAPolicy(make_config(tiny_backbone[0], num_vlm_layers=5, attention_mode="self_attn")).eval()
    vlm = p.model.vlm_with_expert
    assert vlm.cross_flags == [False] * 5 and vlm.kv_source[4] == 3  # layer 4 reads layer 3's K/V
    with torch.no_grad():
        p.model.action_out_proj.weight.normal_(std=0.5)
    args = p._inputs(make_batch(p.config, seed=2))
    noise = torch.randn(2, p.config.chunk_size, p.config.max_action_dim, generator=torch.Generator().manual_seed(0))
    a = p.model.sample_actions(*args, noise=noise.clone(), use_cache=True)
    b = p.model.sample_actions(*args, noise=noise.clone(), use_cache=False)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_deepcopy_predicts_the_same(policy):
    clone = copy.deepcopy(policy)
    batch = make_batch(policy.config, seed=3, with_actions=False)
    a = policy.predict_action_chunk(batch, generator=torch.Generator().manual_seed(1))
    b = clone.predict_action_chunk(batch, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


def test_state_token_continuation_equals_full_prefix_pass(tiny_backbone):
    """With a frozen backbone, training runs the prefix without autograd and the state token as a one-token
    continuation; loss and the state projection's gradient equal those of the full differentiable pass."""
    from gemma3nvla_ros.policy.modeling_gemma3nvla import Gemma3nVLAPolicy

    torch.manual_seed(0)
    p = Gemma3nVLAPolicy(make_config(tiny_backbone[0], num_vlm_layers=5, num_expert_layers=5)).train()
    vlm = p.model.vlm_with_expert
    batch = make_batch(p.config, seed=8)
    noise = torch.randn(2, p.config.chunk_size, p.config.max_action_dim, generator=torch.Generator().manual_seed(0))
    time = torch.tensor([0.4, 0.9])

    def run():
        p.zero_grad(set_to_none=True)
        loss, _ = p.forward(batch, noise=noise, time=time)
        loss.backward()
        return loss.detach(), p.model.state_proj.weight.grad.clone()

    assert vlm.backbone_frozen()
    loss_split, grad_split = run()
    probe = vlm.language_model.layers[0].input_layernorm.weight
    probe.requires_grad_(True)  # any trainable backbone parameter forces the full differentiable pass
    try:
        assert not vlm.backbone_frozen()
        loss_full, grad_full = run()
    finally:
        probe.requires_grad_(False)
    assert grad_split.abs().sum() > 0
    torch.testing.assert_close(loss_split, loss_full, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(grad_split, grad_full, rtol=1e-3, atol=1e-6)  # summation order only


def test_padded_action_dims_carry_nothing(policy):
    """The loss covers the real action dims only, so the velocity of the padded dims (max_action_dim - action_dim)
    is never trained. Their noise must then not reach the network: otherwise training sees x_t = t * noise in the
    padded dims while sampling integrates them with the untrained velocity (off the training distribution at
    every step after the first). Noise that differs only in the padded dims gives the same loss and actions."""
    cfg = policy.config
    batch = make_batch(cfg, seed=5)
    g = torch.Generator().manual_seed(3)
    noise_a = torch.randn(2, cfg.chunk_size, cfg.max_action_dim, generator=g)
    noise_b = noise_a.clone()
    noise_b[..., 6:] = 5 * torch.randn(2, cfg.chunk_size, cfg.max_action_dim - 6, generator=g)
    time = torch.tensor([0.2, 0.7])
    loss_a, _ = policy.forward(batch, noise=noise_a, time=time)
    loss_b, _ = policy.forward(batch, noise=noise_b, time=time)
    torch.testing.assert_close(loss_a, loss_b)
    act_a = policy.predict_action_chunk(batch, noise=noise_a)
    act_b = policy.predict_action_chunk(batch, noise=noise_b)
    torch.testing.assert_close(act_a, act_b)

    # What the network sees in the padded dims is the same in training and in every sampling step (zeros).
    net = policy.model
    seen = []
    original = net.velocity

    def spy(prefix, prefix_kv, x_t, timestep):
        seen.append(x_t[..., 6:].clone())
        return original(prefix, prefix_kv, x_t, timestep)

    net.velocity = spy
    try:
        policy.forward(batch, noise=noise_b, time=time)
        policy.predict_action_chunk(batch, noise=noise_b)
    finally:
        del net.velocity
    assert len(seen) == 1 + cfg.num_steps
    for x in seen:
        assert torch.equal(x, torch.zeros_like(x))


def test_euler_integration_sign_and_step(policy):
    """Sampling integrates dx/dt = v from t=1 (noise) to t=0 in num_steps Euler steps at t = 1, 1 - 1/n, ...;
    with the exact velocity of a straight path to a target (v = noise - target) it lands on the target, and
    training feeds the network x_t = t * noise + (1 - t) * actions with the target u = noise - actions."""
    cfg = policy.config
    net = policy.model
    batch = make_batch(cfg, seed=6)
    args = policy._inputs(batch)
    noise = torch.zeros(2, cfg.chunk_size, cfg.max_action_dim)
    noise[..., :6] = torch.randn(2, cfg.chunk_size, 6, generator=torch.Generator().manual_seed(0))
    target = torch.zeros_like(noise)
    target[..., :6] = torch.randn(2, cfg.chunk_size, 6, generator=torch.Generator().manual_seed(1))
    times = []

    def exact(prefix, prefix_kv, x_t, timestep):
        times.append(timestep.clone())
        return noise - target

    net.velocity = exact
    try:
        out = net.sample_actions(*args, noise=noise.clone())
        torch.testing.assert_close(out, target, rtol=0, atol=1e-5)
        expected_t = [1.0 - k / cfg.num_steps for k in range(cfg.num_steps)]
        torch.testing.assert_close(torch.stack([t[0] for t in times]), torch.tensor(expected_t))

        captured = {}

        def capture(prefix, prefix_kv, x_t, timestep):
            captured["x_t"] = x_t.clone()
            return torch.zeros_like(x_t)

        net.velocity = capture
        time = torch.tensor([0.25, 0.6])
        actions = policy.prepare_action(batch)
        losses = net.forward(*args, actions, noise=noise.clone(), time=time)
        t = time[:, None, None]
        torch.testing.assert_close(captured["x_t"], t * noise + (1 - t) * actions)
        torch.testing.assert_close(losses, (noise - actions) ** 2)  # v = 0 -> loss = u^2 with u = noise - actions
    finally:
        del net.velocity


def test_select_action_queue_and_reset(tiny_backbone):
    """select_action pops n_action_steps actions of one chunk in order, then predicts a new chunk; reset() drops
    what is left of the current chunk."""
    from gemma3nvla_ros.policy.modeling_gemma3nvla import Gemma3nVLAPolicy

    torch.manual_seed(0)
    p = Gemma3nVLAPolicy(make_config(tiny_backbone[0], num_vlm_layers=3, n_action_steps=3)).eval()
    with torch.no_grad():
        p.model.action_out_proj.weight.normal_(std=0.5)
    batch = make_batch(p.config, seed=1, with_actions=False)
    calls = []
    original = p.predict_action_chunk

    def counting(b, **kwargs):
        calls.append(1)
        return original(b, **kwargs)

    p.predict_action_chunk = counting
    chunk = original(batch, generator=torch.Generator().manual_seed(3))
    popped = [p.select_action(batch, generator=torch.Generator().manual_seed(3)) for _ in range(3)]
    assert len(calls) == 1
    for k in range(3):
        torch.testing.assert_close(popped[k], chunk[:, k])
    nxt = p.select_action(batch, generator=torch.Generator().manual_seed(3))  # queue empty: a new chunk
    assert len(calls) == 2
    torch.testing.assert_close(nxt, chunk[:, 0])
    p.reset()
    p.select_action(batch, generator=torch.Generator().manual_seed(3))
    assert len(calls) == 3  # reset dropped the two actions left
