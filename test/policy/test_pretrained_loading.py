"""Pretrained Gemma 3n weights load through vlm_model_name=<dir>, load_vlm_weights=True (a tiny model saved with
transformers' save_pretrained + a tokenizer built with `tokenizers`), and the prefix equals the forward of the
same checkpoint loaded independently by transformers (AutoModelForImageTextToText.from_pretrained)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from lerobot.configs.policies import PreTrainedConfig
from safetensors.torch import load_file, save_file
from transformers import AutoModelForImageTextToText, AutoTokenizer, DynamicCache

from gemma3nvla_ros.compat import rope_inv_freq

from helpers_policy import make_batch, make_config
from helpers_policy import our_prefix, rel


def test_pretrained_weights_load_and_prefix_matches(tiny_backbone):
    from gemma3nvla_ros.policy.modeling_gemma3nvla import Gemma3nVLAPolicy

    vlm_dir, _ = tiny_backbone
    tok = AutoTokenizer.from_pretrained(vlm_dir)  # the real loading path
    assert tok.bos_token_id == 2 and tok.convert_tokens_to_ids("<start_of_image>") == 255

    policy = Gemma3nVLAPolicy(make_config(vlm_dir, num_vlm_layers=6)).eval()
    vlm = policy.model.vlm_with_expert
    # The weights written to vlm_dir (compared in memory: transformers 4.x and 5.x lay the file's keys out
    # differently).
    saved = tiny_backbone[1].model.state_dict()
    ours = vlm.state_dict()
    per = vlm.text_config.hidden_size_per_layer_input
    n_cols = vlm.num_computed_layers * per
    checked = 0
    for key, value in ours.items():
        if key.startswith("expert."):
            continue
        src = saved[key]
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
    assert {rope_inv_freq(vlm.language_model, t).dtype for t in ("sliding_attention", "full_attention")} == {torch.float32}
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


def test_checkpoint_loads_with_backbone_config_only(tiny_backbone, tmp_path):
    """A saved policy holds every backbone weight, so from_pretrained must not load Gemma 3n's weights again from
    vlm_model_name (on a robot: a second multi-GB load, or a download). Another machine needs only the backbone's
    config + tokenizer, at any path given through the config."""
    from gemma3nvla_ros.policy.modeling_gemma3nvla import Gemma3nVLAPolicy

    vlm_dir = tiny_backbone[0]
    torch.manual_seed(0)
    policy = Gemma3nVLAPolicy(make_config(vlm_dir, num_vlm_layers=3)).eval()
    with torch.no_grad():
        policy.model.action_out_proj.weight.normal_(std=0.5)
        for p in policy.model.vlm_with_expert.language_model.parameters():
            p.add_(0.01)  # the checkpoint's backbone differs from the one at vlm_model_name (fine-tuned)
    policy.save_pretrained(tmp_path / "ckpt")
    batch = make_batch(policy.config, with_actions=False)
    expected = policy.predict_action_chunk(batch, generator=torch.Generator().manual_seed(4))

    light = tmp_path / "gemma3n_config_and_tokenizer_only"
    light.mkdir()
    for f in Path(vlm_dir).iterdir():
        if f.is_file() and ".safetensors" not in f.name and not f.name.endswith(".bin"):
            shutil.copy(f, light / f.name)
    cfg = PreTrainedConfig.from_pretrained(tmp_path / "ckpt")
    assert cfg.load_vlm_weights and cfg.vlm_model_name == vlm_dir
    cfg.vlm_model_name = str(light)
    loaded = Gemma3nVLAPolicy.from_pretrained(tmp_path / "ckpt", config=cfg)
    got = loaded.predict_action_chunk(batch, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    # and from the checkpoint alone (vlm_model_name as saved)
    again = Gemma3nVLAPolicy.from_pretrained(tmp_path / "ckpt")
    torch.testing.assert_close(again.predict_action_chunk(batch, generator=torch.Generator().manual_seed(4)),
                               expected, rtol=0, atol=0)

    # Built without random init, so a checkpoint that lacks a tensor must be an error, not silent garbage.
    tensors = load_file(str(tmp_path / "ckpt" / "model.safetensors"))
    del tensors["model.action_out_proj.weight"]
    save_file(tensors, str(tmp_path / "ckpt" / "model.safetensors"))
    with pytest.raises(ValueError, match=r"lacks 1 tensors.*action_out_proj"):
        Gemma3nVLAPolicy.from_pretrained(tmp_path / "ckpt", config=cfg)


def test_bfloat16_prefix_matches_transformers_bfloat16(tiny_backbone):
    """In bfloat16 (the CUDA default) the prefix is still transformers' own computation: K/V of every layer equal
    those of the checkpoint loaded by transformers in bfloat16 (float32 RoPE tables, its norms and casts)."""
    from gemma3nvla_ros.policy.modeling_gemma3nvla import Gemma3nVLAPolicy

    vlm_dir, _ = tiny_backbone
    policy = Gemma3nVLAPolicy(make_config(vlm_dir, num_vlm_layers=6, backbone_dtype="bfloat16")).eval()
    ref = AutoModelForImageTextToText.from_pretrained(vlm_dir, dtype=torch.bfloat16).eval()
    # Our vision tower routes timm's multi-query attention through fused SDPA (same function, checked in float32
    # in test_fast_inference); in bfloat16 the kernels round differently, so the reference gets the same switch.
    from gemma3nvla_ros.policy.gemma3n_with_expert import fuse_vision_attention

    fuse_vision_attention(ref.model.vision_tower)
    net = policy.model
    vlm = net.vlm_with_expert
    batch = make_batch(policy.config, batch_size=1, seed=9)
    images, embeds, raw, pad, pos = our_prefix(net, batch, policy)
    assert embeds.dtype == torch.bfloat16
    with torch.no_grad():
        prefix = vlm.forward_prefix(embeds, raw, pad, pos)
        ids = torch.cat([torch.tensor([[net.bos_token_id]]), net.image_block_ids[None], net.image_block_ids[None],
                         batch["observation.language.tokens"][:, 1:]], 1)
        cache = DynamicCache()
        ref.model(input_ids=ids, pixel_values=torch.cat(images).to(torch.bfloat16), past_key_values=cache,
                  use_cache=True)
    n = ids.shape[1]
    for i in range(6):
        attn = ref.model.language_model.layers[i].self_attn
        k, v = (cache.shared_layers[attn.kv_shared_layer_index] if attn.is_kv_shared_layer
                else (cache.layers[i].keys, cache.layers[i].values))
        assert prefix.keys[i].dtype == torch.bfloat16
        assert rel(prefix.keys[i][:, :, :n], k) <= 1e-6 and rel(prefix.values[i][:, :, :n], v) <= 1e-6, i


def test_files_written_on_one_stack_read_on_the_other(tmp_path):
    """A backbone directory and a checkpoint config written under either LeRobot/transformers stack load under
    the other (checked across the two stacks by hand: same actions from the same checkpoint to 1e-5): the
    backbone's tokenizer and config in the spelling transformers 4.57 reads (5.x reads it too), and a
    config.json holding LeRobot 0.6's ``pretrained_revision`` parses under 0.4.4 too."""
    import json

    from gemma3nvla_ros.policy.configuration_gemma3nvla import Gemma3nVLAConfig
    from gemma3nvla_ros.policy.local_backbone import EXTRA_SPECIAL_TOKENS, tiny_config, write_backbone_dir

    backbone = write_backbone_dir(tmp_path / "backbone", tiny_config())
    tokenizer_config = json.loads((backbone / "tokenizer_config.json").read_text())
    assert tokenizer_config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert tokenizer_config["extra_special_tokens"] == EXTRA_SPECIAL_TOKENS
    text = json.loads((backbone / "config.json").read_text())["text_config"]
    assert (text["rope_theta"], text["rope_local_base_freq"]) == (1e6, 1e4)
    tok = AutoTokenizer.from_pretrained(backbone)
    assert tok.image_token == "<image_soft_token>" and tok.convert_tokens_to_ids(tok.boi_token) == 255

    cfg = make_config(str(backbone), num_vlm_layers=3)
    cfg.save_pretrained(tmp_path / "ckpt")
    saved = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    saved["pretrained_revision"] = "main"
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(saved))
    loaded = PreTrainedConfig.from_pretrained(tmp_path / "ckpt")
    assert isinstance(loaded, Gemma3nVLAConfig) and loaded.pretrained_revision == "main"
