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


def write_tiny_qwen2vl(directory: Path, hidden: int = 64, layers: int = 2, vision_width: int = 32, shard: str = "60KB", seed: int = 0):
    """A tiny Qwen2-VL directory as transformers saves it (sharded safetensors); returns
    (model, tokenizer, image processor)."""
    import torch
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    directory.mkdir(parents=True, exist_ok=True)
    tokenizer, images = write_tokenizer_and_processor(directory)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL}
    config = Qwen2VLConfig(
        text_config=dict(
            hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=2 * hidden, vocab_size=len(tokenizer), rms_norm_eps=1e-6,
            rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]}, rope_theta=1_000_000.0,
            bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], tie_word_embeddings=True,
        ),
        vision_config=dict(depth=2, embed_dim=vision_width, num_heads=2, hidden_size=hidden, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(config).eval()
    with torch.no_grad():  # transformers zero-inits biases; random ones make the equivalence test bite
        for name, parameter in model.named_parameters():
            if name.endswith("bias") or "norm" in name or "ln_q" in name:
                parameter.add_(torch.randn_like(parameter) * 0.1)
    model.save_pretrained(str(directory), max_shard_size=shard)
    return model, tokenizer, images
