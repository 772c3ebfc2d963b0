"""Tiny Qwen2-VL checkpoints written by `transformers` itself (dev extra), for the import tests.

A byte-level BPE tokenizer with Qwen2-VL's special tokens is trained on a few sentences
(`tokenizers`), wrapped in transformers' processor with Qwen2-VL-2B-Instruct's chat template, and
saved with a randomly initialised `Qwen2VLForConditionalGeneration` of a tiny config, in shards:
the files a user downloads from the Hub, at a size a test can afford.
"""

from __future__ import annotations

from pathlib import Path

# Qwen2-VL-2B-Instruct's chat template (its chat_template.json on the Hugging Face Hub).
QWEN2VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
CORPUS = [
    "You are a helpful assistant.", "system", "user", "assistant",
    "On the whiteboard is 56-42. 56-42=14. First, pick 1 from right.",
    "Pick up the card that shows the answer and place it on the tray.",
    "Put the toy in the basket. The toy is a red apple, the basket is on the left.",
]


def write_tokenizer_and_processor(directory: Path, vision_patch: int = 14, merge: int = 2):
    """tokenizer.json, tokenizer_config.json with the chat template, and the image processor's
    config; returns (tokenizer, image processor). (Qwen2VLProcessor itself needs torchvision for
    its video half, which this project does not install.)"""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2VLImageProcessor

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=420, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(CORPUS * 4, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer.chat_template = QWEN2VL_CHAT_TEMPLATE
    tokenizer.save_pretrained(str(directory))
    images = Qwen2VLImageProcessor(patch_size=vision_patch, merge_size=merge, min_pixels=28 * 28, max_pixels=400 * 28 * 28)
    images.save_pretrained(str(directory))
    return tokenizer, images


def expand_image_pads(text: str, tokens_per_image: int) -> str:
    """What Qwen2VLProcessor does to the chat template's text: each <|image_pad|> becomes one per
    merged patch of its image (grid_t * grid_h * grid_w / merge_size**2)."""
    return text.replace("<|image_pad|>", "<|image_pad|>" * tokens_per_image)


# Qwen2-VL-2B-Instruct's sizes (its config.json), for writing a checkpoint of the real shape.
QWEN2VL_2B_TEXT = dict(hidden_size=1536, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                       intermediate_size=8960, vocab_size=151936, mrope_section=[16, 24, 24])
QWEN2VL_2B_VISION = dict(depth=32, embed_dim=1280, num_heads=16)


def write_tiny_qwen2vl(directory: Path, shard: str = "60KB", seed: int = 0, text: dict | None = None,
                       vision: dict | None = None, dtype=None, random_extras: bool = True):
    """A Qwen2-VL directory as transformers saves it (sharded safetensors), tiny unless `text` /
    `vision` give other sizes; returns (model, tokenizer, image processor)."""
    import torch
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    directory.mkdir(parents=True, exist_ok=True)
    tokenizer, images = write_tokenizer_and_processor(directory)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL}
    text = dict(dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                     intermediate_size=128, vocab_size=len(tokenizer), mrope_section=[2, 3, 3]), **(text or {}))
    section = text.pop("mrope_section")
    vision = dict(dict(depth=2, embed_dim=32, num_heads=2), **(vision or {}))
    config = Qwen2VLConfig(
        text_config=dict(
            **text, rms_norm_eps=1e-6, rope_scaling={"type": "mrope", "mrope_section": section}, rope_theta=1_000_000.0,
            bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], tie_word_embeddings=True,
        ),
        vision_config=dict(**vision, hidden_size=text["hidden_size"], patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration._from_config(config, dtype=dtype or torch.float32).eval()
    if random_extras:
        with torch.no_grad():  # transformers zero-inits biases; random ones make the equivalence test bite
            for name, parameter in model.named_parameters():
                if name.endswith("bias") or "norm" in name or "ln_q" in name:
                    parameter.add_(torch.randn_like(parameter) * 0.1)
    model.save_pretrained(str(directory), max_shard_size=shard)
    return model, tokenizer, images


def write_dexvla_head(directory: Path, cond_dim: int, depth: int = 3, width: int = 32, chunk: int = 16,
                      action_dim: int = 14, state_dim: int = 14, combine: int = 48, prefix: str = "policy_head.",
                      heads: int = 4, dtype=None) -> dict:
    """A ScaleDP head in DexVLA's layout (the module names of its modeling_scaledp.py: blocks,
    x_embedder, t_embedder, combine, cond_obs_emb, final_layer), random values, one safetensors
    file and a config.json; returns the tensors without the prefix."""
    import json

    import torch
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(7)

    def r(*shape):
        return (torch.randn(*shape, generator=g) * 0.1).to(dtype or torch.float32)

    t = {"x_embedder.weight": r(width, action_dim), "x_embedder.bias": r(width), "pos_embed": r(1, chunk, width),
         "t_embedder.mlp.0.weight": r(width, 256), "t_embedder.mlp.0.bias": r(width),
         "t_embedder.mlp.2.weight": r(width, width), "t_embedder.mlp.2.bias": r(width),
         "combine.0.weight": r(combine, cond_dim + state_dim), "combine.0.bias": r(combine),
         "combine.2.weight": r(combine, combine), "combine.2.bias": r(combine),
         "combine.4.weight": r(cond_dim, combine), "combine.4.bias": r(cond_dim),
         "cond_obs_emb.weight": r(width, cond_dim), "cond_obs_emb.bias": r(width),
         "final_layer.linear.weight": r(action_dim, width), "final_layer.linear.bias": r(action_dim),
         "final_layer.adaLN_modulation.1.weight": r(2 * width, width), "final_layer.adaLN_modulation.1.bias": r(2 * width)}
    for i in range(depth):
        b = f"blocks.{i}."
        t |= {b + "attn.qkv.weight": r(3 * width, width), b + "attn.qkv.bias": r(3 * width),
              b + "attn.proj.weight": r(width, width), b + "attn.proj.bias": r(width),
              b + "mlp.fc1.weight": r(4 * width, width), b + "mlp.fc1.bias": r(4 * width),
              b + "mlp.fc2.weight": r(width, 4 * width), b + "mlp.fc2.bias": r(width),
              b + "adaLN_modulation.1.weight": r(6 * width, width), b + "adaLN_modulation.1.bias": r(6 * width)}
    directory.mkdir(parents=True, exist_ok=True)
    save_file({prefix + k: v for k, v in t.items()}, str(directory / "model.safetensors"))
    (directory / "config.json").write_text(json.dumps({"model_type": "scale_dp_policy", "num_heads": heads,
                                                        "num_inference_timesteps": 8, "num_train_timesteps": 100}))
    return t
