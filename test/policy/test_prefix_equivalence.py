"""Our prefix == transformers' Gemma 3n forward (same weights, same inputs, an image included).

Reference: ``Gemma3nModel.forward(input_ids, pixel_values)`` in eval mode with a plain ``DynamicCache`` (which
keeps every layer's full-length K/V and on which transformers performs KV sharing), ids laid out by
transformers' own ``Gemma3nProcessor``. The tiny prefix (2 images x 20 tokens + text + state) is much longer
than the tiny sliding window (8), and the tiny model has 2 KV-shared layers (4 <- 3, 5 <- 2).
"""
from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache, Gemma3nConfig
from transformers.models.gemma3n.modeling_gemma3n import Gemma3nModel

from gemma3nvla_ros.compat import rope_inv_freq
from gemma3nvla_ros.policy.gemma3n_with_expert import Gemma3nWithExpertModel, kv_source_layer, truncate_text_config

from helpers_policy import make_batch, make_config, our_prefix, rel

TOL = 1e-5


def reference_kv(model: Gemma3nModel, **inputs):
    cache = DynamicCache()
    out = model(**inputs, past_key_values=cache, use_cache=True, output_hidden_states=True, return_dict=True)
    tc = model.language_model.config
    keys, values = [], []
    for i, layer in enumerate(model.language_model.layers):
        attn = layer.self_attn
        if attn.is_kv_shared_layer:
            k, v = cache.shared_layers[attn.kv_shared_layer_index]
        else:
            k, v = cache.layers[i].keys, cache.layers[i].values
        keys.append(k)
        values.append(v)
    return out, keys, values, tc


def processor_ids(vlm_dir: str, task: str, n_images: int) -> torch.Tensor:
    """Token ids as transformers' Gemma3nProcessor lays them out."""
    from PIL import Image
    from transformers import AutoTokenizer, Gemma3nAudioFeatureExtractor, Gemma3nProcessor, SiglipImageProcessor

    tok = AutoTokenizer.from_pretrained(vlm_dir)
    cfg = Gemma3nConfig.from_pretrained(vlm_dir)
    proc = Gemma3nProcessor(
        feature_extractor=Gemma3nAudioFeatureExtractor(),
        image_processor=SiglipImageProcessor(size={"height": 64, "width": 64}, do_normalize=False),
        tokenizer=tok,
        image_seq_length=cfg.vision_soft_tokens_per_image,
    )
    img = Image.new("RGB", (64, 64))
    text = " ".join([tok.image_token] * n_images) + task  # the processor expands each placeholder
    return proc(text=[text], images=[[img] * n_images], return_tensors="pt")["input_ids"]


@pytest.fixture(scope="module")
def policy_factory(tiny_backbone):
    from gemma3nvla_ros.policy.modeling_gemma3nvla import Gemma3nVLAPolicy

    vlm_dir, _ = tiny_backbone
    cache = {}

    def get(num_vlm_layers: int, keep_full_backbone: bool):
        key = (num_vlm_layers, keep_full_backbone)
        if key not in cache:
            torch.manual_seed(1)
            cfg = make_config(vlm_dir, num_vlm_layers=num_vlm_layers, keep_full_backbone=keep_full_backbone,
                              num_expert_layers=-1)
            cache[key] = Gemma3nVLAPolicy(cfg).eval()
        return cache[key]

    return get


def test_layout_matches_gemma3n_processor(tiny_backbone, policy_factory):
    vlm_dir, _ = tiny_backbone
    policy = policy_factory(6, False)
    batch = make_batch(policy.config, batch_size=1)
    task = "pick the red cube\n"
    ref_ids = processor_ids(vlm_dir, task, n_images=2)
    net = policy.model
    tokens = batch["observation.language.tokens"][:, 1:]  # BOS moved to the front by our layout
    ours = torch.cat([torch.tensor([[net.bos_token_id]]), net.image_block_ids[None], net.image_block_ids[None], tokens], 1)
    assert torch.equal(ours, ref_ids), (ours, ref_ids)


@pytest.mark.parametrize(
    "num_vlm_layers,keep_full",
    [(6, True), (6, False), (5, True), (5, False), (3, True), (4, False)],
    ids=["full-kept", "full-dropped", "trunc5-into-shared-kept", "trunc5-into-shared-dropped", "trunc3", "trunc4"],
)
def test_prefix_kv_and_hidden_match_transformers(tiny_backbone, policy_factory, num_vlm_layers, keep_full):
    vlm_dir, hf = tiny_backbone
    policy = policy_factory(num_vlm_layers, keep_full)
    net = policy.model
    vlm = net.vlm_with_expert
    batch = make_batch(policy.config, batch_size=2, seed=3)
    images, embeds, raw, pad, pos = our_prefix(net, batch, policy)
    assert embeds.shape[1] > 4 * vlm.text_config.sliding_window  # sliding windows really cut the context
    with torch.no_grad():
        prefix = vlm.forward_prefix(embeds, raw, pad, pos, output_hidden=keep_full)

    # Reference 1: the full transformers model over the image + text ids (everything but our state token;
    # the prefix is causal, so the state token cannot change earlier positions).
    ids = torch.cat([torch.full((2, 1), net.bos_token_id), net.image_block_ids[None].expand(2, -1),
                     net.image_block_ids[None].expand(2, -1), batch["observation.language.tokens"][:, 1:]], 1)
    pixel_values = torch.cat([images[0][:, None], images[1][:, None]], 1).flatten(0, 1)  # row-major image order
    with torch.no_grad():
        out, keys, values, full_tc = reference_kv(hf.model, input_ids=ids, pixel_values=pixel_values)
    n = ids.shape[1]
    for i in range(num_vlm_layers):
        assert vlm.kv_source[i] == kv_source_layer(full_tc, i)
        assert rel(prefix.keys[i][:, :, :n], keys[i]) <= TOL, f"layer {i} K"
        assert rel(prefix.values[i][:, :, :n], values[i]) <= TOL, f"layer {i} V"
    if keep_full and num_vlm_layers == 6:
        assert rel(prefix.last_hidden_state[:, :n], out.last_hidden_state) <= TOL

    # Reference 2: transformers' model of the *truncated* config, loaded with our backbone weights, over our
    # full prefix embeddings (state token included) with the raw per-layer inputs.
    ref_cfg = Gemma3nConfig.from_dict(hf.config.to_dict())
    ref_cfg.text_config = truncate_text_config(hf.config.text_config, num_vlm_layers)
    torch.manual_seed(0)
    ref = Gemma3nModel(ref_cfg).eval()
    state = {k: v for k, v in vlm.state_dict().items() if not k.startswith("expert.")}
    if not keep_full:
        ref.language_model.layers = ref.language_model.layers[: vlm.num_computed_layers]
        ref.language_model.config.num_hidden_layers = vlm.num_computed_layers
        Gemma3nWithExpertModel._slice_per_layer_tables(ref.language_model, vlm.num_computed_layers)
    missing, unexpected = ref.load_state_dict(state, strict=False)
    assert not unexpected, unexpected
    assert all(k.startswith(("audio_tower.", "embed_audio.", "language_model.norm", "language_model.altup_unembed"))
               for k in missing), missing
    with torch.no_grad():
        cache = DynamicCache()
        out2 = ref.language_model(inputs_embeds=embeds, per_layer_inputs=raw, past_key_values=cache, use_cache=True,
                                  position_ids=pos, return_dict=True)
    for i in range(vlm.num_computed_layers):
        attn = ref.language_model.layers[i].self_attn
        k, v = (cache.shared_layers[attn.kv_shared_layer_index] if attn.is_kv_shared_layer
                else (cache.layers[i].keys, cache.layers[i].values))
        assert rel(prefix.keys[i], k) <= TOL and rel(prefix.values[i], v) <= TOL, f"layer {i}"
    for i in range(vlm.num_computed_layers, num_vlm_layers):  # dropped KV-shared layers: their source's K/V
        src = vlm.kv_source[i]
        assert rel(prefix.keys[i], cache.shared_layers[src][0]) <= TOL
    if keep_full:
        assert rel(prefix.last_hidden_state, out2.last_hidden_state) <= TOL


def test_rope_tables_are_float32_and_bases_per_layer_type(policy_factory):
    vlm = policy_factory(6, False).model.vlm_with_expert
    lm = vlm.language_model
    d = vlm.text_config.head_dim
    for layer_type, base in (("sliding_attention", 1e4), ("full_attention", 1e6)):
        inv_freq = rope_inv_freq(lm, layer_type)
        assert inv_freq.dtype == torch.float32
        assert torch.allclose(inv_freq, 1.0 / (base ** (torch.arange(0, d, 2).float() / d))), layer_type
