"""Build local Gemma 3n backbone directories (config [+ weights] + a small word-level tokenizer), no network.

Used by the tests (tiny random models) and the benchmark (full-size E2B numbers, random weights). The
tokenizer is built with the ``tokenizers`` library and saved as a ``PreTrainedTokenizerFast`` so that
``AutoTokenizer.from_pretrained(<dir>)`` runs the real loading path. It is NOT Gemma's tokenizer: it has a
small word vocabulary plus Gemma 3n's special tokens at the config's ids.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import Gemma3nConfig

from gemma3nvla_ros.compat import make_backbone_dir_portable

# Gemma 3n's named special tokens (tokenizer attributes the processor reads, e.g. ``tokenizer.image_token``).
EXTRA_SPECIAL_TOKENS = {
    "boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>",
    "boa_token": "<start_of_audio>", "eoa_token": "<end_of_audio>", "audio_token": "<audio_soft_token>",
}
DEFAULT_WORDS = (
    "pick place push pull the a an red green blue yellow cube block ball cup box bowl left right up down into "
    "onto on in of to and move grasp open close gripper arm robot put take it at front back top bottom "
    "0 1 2 3 4 5 6 7 8 9 . ,"
).split()


def e2b_config(**vision_overrides: Any) -> Gemma3nConfig:
    """Gemma 3n E2B (google/gemma-3n-e2b-it) written out from its published numbers (see gemma3n.md)."""
    layers = 30
    text = dict(
        vocab_size=262_400, vocab_size_per_layer_input=262_144, hidden_size=2048, hidden_size_per_layer_input=256,
        intermediate_size=[8192] * layers, num_hidden_layers=layers, num_attention_heads=8, num_key_value_heads=2,
        head_dim=256, hidden_activation="gelu_pytorch_tanh", max_position_embeddings=32_768, rms_norm_eps=1e-6,
        rope_theta=1_000_000.0, rope_local_base_freq=10_000.0, sliding_window=512,
        layer_types=["full_attention" if (i + 1) % 5 == 0 else "sliding_attention" for i in range(layers)],
        altup_active_idx=0, altup_coef_clip=120.0, altup_correct_scale=True, altup_num_inputs=4,
        num_kv_shared_layers=10, laurel_rank=64, activation_sparsity_pattern=[0.95] * 10 + [0.0] * 20,
    )
    vision = dict(architecture="mobilenetv5_300m_enc", hidden_size=2048, vocab_size=128, vocab_offset=262_144,
                  do_pooling=False)
    vision.update(vision_overrides)
    return Gemma3nConfig(text_config=text, vision_config=vision, vision_soft_tokens_per_image=256)


def tiny_config(num_layers: int = 6, num_kv_shared_layers: int = 2, sliding_window: int = 8,
                msfa_resolution: int = 4) -> Gemma3nConfig:
    """A tiny Gemma 3n: 64-wide text model with sliding/full layers, KV sharing, sparsity, AltUp, LAuReL and
    PLE; a MobileNetV5 tower shrunk by channel_multiplier with msfa_resolution^2 soft tokens per image;
    a small id space (text < 512, vision hard tokens at 512, audio at 640)."""
    types = ["full_attention" if (i + 1) % 3 == 0 else "sliding_attention" for i in range(num_layers)]
    text = dict(
        vocab_size=768, vocab_size_per_layer_input=512, hidden_size=64, hidden_size_per_layer_input=16,
        intermediate_size=[128] * num_layers, num_hidden_layers=num_layers, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, max_position_embeddings=1024, sliding_window=sliding_window,
        layer_types=types, num_kv_shared_layers=num_kv_shared_layers, laurel_rank=8, altup_num_inputs=4,
        activation_sparsity_pattern=[0.95, 0.95] + [0.0] * (num_layers - 2),
        pad_token_id=0, eos_token_id=1, bos_token_id=2,
    )
    vision = dict(model_args={"channel_multiplier": 0.0625, "msfa_output_resolution": msfa_resolution},
                  vocab_offset=512, vocab_size=128)
    audio = dict(vocab_offset=640, vocab_size=128, hidden_size=32, conf_num_hidden_layers=1,
                 conf_num_attention_heads=2, sscp_conv_channel_size=[8, 4])
    return Gemma3nConfig(
        text_config=text, vision_config=vision, audio_config=audio,
        vision_soft_tokens_per_image=msfa_resolution**2,
        boi_token_id=255, eoi_token_id=512, image_token_id=513, boa_token_id=256, eoa_token_id=640,
        audio_token_id=641,
    )


def build_tokenizer(config: Gemma3nConfig, words: tuple[str, ...] = DEFAULT_WORDS):
    """A word-level ``PreTrainedTokenizerFast`` with Gemma 3n's special tokens at ``config``'s ids; adds BOS."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = {
        "<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3,
        "<start_of_image>": config.boi_token_id, "<end_of_image>": config.eoi_token_id,
        "<image_soft_token>": config.image_token_id, "<start_of_audio>": config.boa_token_id,
        "<end_of_audio>": config.eoa_token_id, "<audio_soft_token>": config.audio_token_id,
    }
    vocab = dict(specials)
    used = set(vocab.values())
    next_id = 4
    for piece in ["\n\n", "\n", *words]:
        while next_id in used:
            next_id += 1
        vocab[piece] = next_id
        used.add(next_id)
    # Fill the gaps so that ids are dense (some tokenizer utilities assume len(vocab) > max id).
    max_id = max(vocab.values())
    filler = 0
    for i in range(max_id + 1):
        if i not in used:
            vocab[f"<unused{filler}>"] = i
            filler += 1
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(" ", behavior="removed"), pre_tokenizers.Split(Regex(r"\n+|[.,]"), behavior="isolated")]
    )
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", 2)])
    tok.add_special_tokens(list(specials))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>",
        extra_special_tokens=dict(EXTRA_SPECIAL_TOKENS),
    )


def write_backbone_dir(directory: str | Path, config: Gemma3nConfig, model=None) -> Path:
    """Writes ``config`` (or ``model`` with its weights, via save_pretrained) and a tokenizer to ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if model is not None:
        model.save_pretrained(directory)
    else:
        config.save_pretrained(directory)
    build_tokenizer(config).save_pretrained(directory)
    make_backbone_dir_portable(directory, EXTRA_SPECIAL_TOKENS)
    return directory
