"""Pretrained Gemma 3n weights load through vlm_model_name=<dir>, load_vlm_weights=True (a tiny model saved with
transformers' save_pretrained + a tokenizer built with `tokenizers`), and the prefix equals the forward of the
same checkpoint loaded independently by transformers (AutoModelForImageTextToText.from_pretrained)."""
from __future__ import annotations

import torch
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText, AutoTokenizer, DynamicCache

from .conftest import make_batch, make_config
from .test_prefix_equivalence import our_prefix, rel


def test_pretrained_weights_load_and_prefix_matches(tiny_backbone):
    from gemma3nvla_ros.policy.modeling_gemma3nvla import Gemma3nVLAPolicy

    vlm_dir, _ = tiny_backbone
    tok = AutoTokenizer.from_pretrained(vlm_dir)  # the real loading path
    assert tok.bos_token_id == 2 and tok.convert_tokens_to_ids("<start_of_image>") == 255

    policy = Gemma3nVLAPolicy(make_config(vlm_dir, num_vlm_layers=6)).eval()
    vlm = policy.model.vlm_with_expert
    saved = {}
    import glob

    for f in glob.glob(f"{vlm_dir}/*.safetensors"):
        saved.update(load_file(f))
    ours = vlm.state_dict()
    per = vlm.text_config.hidden_size_per_layer_input
    n_cols = vlm.num_computed_layers * per
    checked = 0
    for key, value in ours.items():
        if key.startswith("expert."):
            continue
        src = saved["model." + key]
        if key.endswith("embed_tokens_per_layer.weight"):
            src = src[:, :n_cols]
        elif key.endswith("per_layer_model_projection.weight"):
            src = src[:n_cols]
        assert torch.equal(value, src), key
        checked += 1
    assert checked > 100
    # Nothing unused is kept: no audio tower, no LM head, no KV-shared decoder layers.
    assert not any(k.startswith(("audio", "embed_audio", "lm_head")) for k in ours)
    assert len(vlm.language_model.layers) == 4 and vlm.num_vlm_layers == 6

    ref = AutoModelForImageTextToText.from_pretrained(vlm_dir, dtype=torch.float32).eval()
    net = policy.model
    batch = make_batch(policy.config, batch_size=1, seed=9, task="push the blue ball")
    images, embeds, raw, pad, pos = our_prefix(net, batch, policy)
    with torch.no_grad():
        prefix = vlm.forward_prefix(embeds, raw, pad, pos)
        ids = torch.cat([torch.tensor([[net.bos_token_id]]), net.image_block_ids[None], net.image_block_ids[None],
                         batch["observation.language.tokens"][:, 1:]], 1)
        cache = DynamicCache()
        ref.model(input_ids=ids, pixel_values=torch.cat(images), past_key_values=cache, use_cache=True)
    n = ids.shape[1]
    for i in range(6):
        attn = ref.model.language_model.layers[i].self_attn
        k, v = (cache.shared_layers[attn.kv_shared_layer_index] if attn.is_kv_shared_layer
                else (cache.layers[i].keys, cache.layers[i].values))
        assert rel(prefix.keys[i][:, :, :n], k) <= 1e-5 and rel(prefix.values[i][:, :, :n], v) <= 1e-5, i


def test_build_from_config_without_weights(tiny_backbone):
    from gemma3nvla_ros.policy.modeling_gemma3nvla import Gemma3nVLAPolicy

    vlm_dir, hf = tiny_backbone
    torch.manual_seed(123)
    policy = Gemma3nVLAPolicy(make_config(vlm_dir, load_vlm_weights=False, num_vlm_layers=6))
    vlm = policy.model.vlm_with_expert
    ours = vlm.language_model.layers[0].self_attn.k_proj.weight
    theirs = hf.model.language_model.layers[0].self_attn.k_proj.weight
    assert ours.shape == theirs.shape and not torch.equal(ours, theirs)


def test_bfloat16_backbone_keeps_float32_rope(tiny_backbone):
    from gemma3nvla_ros.policy.modeling_gemma3nvla import Gemma3nVLAPolicy

    policy = Gemma3nVLAPolicy(make_config(tiny_backbone[0], num_vlm_layers=3, backbone_dtype="bfloat16")).eval()
    vlm = policy.model.vlm_with_expert
    assert vlm.language_model.embed_tokens.weight.dtype == torch.bfloat16
    assert vlm.vision_tower.timm_model.conv_stem.conv.weight.dtype == torch.bfloat16
    assert vlm.language_model.rotary_emb.inv_freq.dtype == torch.float32
    assert vlm.expert.norm.weight.dtype == torch.float32
    actions = policy.predict_action_chunk(make_batch(policy.config, with_actions=False),
                                          generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(actions).all()


def test_empty_cameras_are_masked(tiny_backbone):
    from gemma3nvla_ros.policy.modeling_gemma3nvla import Gemma3nVLAPolicy

    policy = Gemma3nVLAPolicy(make_config(tiny_backbone[0], num_vlm_layers=3, empty_cameras=1)).eval()
    assert "observation.images.empty_camera_0" in policy.config.image_features
    batch = make_batch(policy.config, with_actions=False)
    images, masks = policy.prepare_images(batch)
    assert len(images) == 3 and not masks[2].any()
    a = policy.predict_action_chunk(batch, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(a).all()


def test_expert_can_run_in_bfloat16(tiny_backbone):
    """Casting the trained expert to bf16 for inference (halves its weight traffic) keeps the actions close."""
    from gemma3nvla_ros.policy.modeling_gemma3nvla import Gemma3nVLAPolicy

    torch.manual_seed(0)
    policy = Gemma3nVLAPolicy(make_config(tiny_backbone[0], num_vlm_layers=3)).eval()
    batch = make_batch(policy.config, with_actions=False)
    a32 = policy.predict_action_chunk(batch, generator=torch.Generator().manual_seed(0))
    policy.model.vlm_with_expert.expert.to(torch.bfloat16)
    a16 = policy.predict_action_chunk(batch, generator=torch.Generator().manual_seed(0))
    assert a16.dtype == torch.float32
    torch.testing.assert_close(a16, a32, rtol=0.1, atol=0.05)
