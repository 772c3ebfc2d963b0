"""`chatvla2 import`: a Hugging Face Qwen2-VL (and optionally a DexVLA-layout ScaleDP head) -> our checkpoint.

    chatvla2 import --qwen2vl DIR [--head DIR] --experts 8 --top-k 2 --out CHECKPOINT

1. The sources are checked before anything is written: config.json translates (models/
   import_qwen2vl.py), every shard is there and intact (models/hf_weights.py), the tokenizer
   loads with the special tokens the prompt layout needs.
2. The plan (models/import_plan.py) maps every source tensor onto ours; a source tensor left
   unmapped, or one of ours left unfilled, is an error naming it. The few with no source are
   initialised as documented (routers; the reasoning path of a DexVLA head; a whole head when
   none is given: ScaleDP's AdaLN-Zero initialisation, seeded) and listed in IMPORT.json.
3. The weights are written one tensor at a time in the order of the source shards (models/
   safetensors_stream.py): memory stays near the largest tensor (an upcycled expert stack), not
   the model, so a 2B Qwen2-VL imports on a 24 GB machine although its MoE checkpoint is ~21 GB.
4. The checkpoint (config.json with the `qwen2vl-chat` prompt layout, model.safetensors,
   tokenizer.json, normalization.json, the chat template, IMPORT.json) appears complete or not at
   all (written aside, checked against the config, then renamed).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from chatvla2.contract.bundle import NORMALIZATION_FILE, TOKENIZER_FILE
from chatvla2.contract.config import ModelConfig, MoEConfig, get_config
from chatvla2.contract.embodiment import ARM_DIM
from chatvla2.contract.normalization import NormalizationStats
from chatvla2.contract.prompt import IM_START
from chatvla2.contract.staging import staged_directory
from chatvla2.contract.tokenizer import TextTokenizer
from chatvla2.models.checkpoint import CONFIG_FILE, FORMAT_VERSION, SAFETENSORS_DTYPES, WEIGHTS_FILE, checkpoint_on_meta
from chatvla2.models.hf_weights import SourceError, WeightSource, read_json
from chatvla2.models.import_config import DTYPE_NAMES, ImportConfig
from chatvla2.models.import_plan import Fill, check_plan
from chatvla2.models.import_qwen2vl import language_config, qwen2vl_fills, tied_head_accounted, vision_config
from chatvla2.models.import_scaledp import PREFIX, head_config, head_fills

CHAT_TEMPLATE_FILE = "chat_template.jinja"
REPORT_FILE = "IMPORT.json"
# --dtype (models/import_config.py) -> torch's; None: the source's own.
DTYPES = dict(zip(DTYPE_NAMES, (None, torch.float32, torch.bfloat16, torch.float16), strict=True))


def find_chat_template(directory: Path) -> str | None:
    """The chat template as Hugging Face keeps it: chat_template.jinja, chat_template.json, or
    tokenizer_config.json's `chat_template`."""
    if (directory / CHAT_TEMPLATE_FILE).is_file():
        return (directory / CHAT_TEMPLATE_FILE).read_text()
    for name in ("chat_template.json", "tokenizer_config.json"):
        path = directory / name
        if path.is_file():
            template = read_json(path, "the chat template").get("chat_template")
            if isinstance(template, str):
                return template
    return None


def load_tokenizer(directory: Path, vocab_size: int) -> TextTokenizer:
    try:
        tokenizer = TextTokenizer.from_file(directory / TOKENIZER_FILE)
    except (ValueError, FileNotFoundError) as exc:
        raise SourceError(f"{directory}: {exc}") from None
    if tokenizer.backend.token_to_id(IM_START) is None:
        raise SourceError(f"{directory / TOKENIZER_FILE}: no {IM_START!r} token; Qwen2-VL's chat layout needs it")
    if tokenizer.vocab_size > vocab_size:
        raise SourceError(f"{directory / TOKENIZER_FILE}: {tokenizer.vocab_size} tokens, config.json's vocab_size is {vocab_size}")
    return tokenizer


def _fresh_head_fills(cfg: ModelConfig, seed: int) -> list[Fill]:
    """No head given: ScaleDP's own initialisation (DiT's, AdaLN-Zero), seeded."""
    from chatvla2.models.action_head import ScaleDP

    head = ScaleDP(cfg.action_head, cfg.scheduler, cfg.language.hidden)
    head.init_weights(generator=torch.Generator().manual_seed(seed))
    note = f"no head given: ScaleDP's AdaLN-Zero initialisation, seed {seed}"
    return [Fill(f"action_head.{name}", (lambda load, t=t: t), note=note) for name, t in head.state_dict().items()]


def plan_import(config: ImportConfig):
    """Everything checked and planned, nothing written: (config, tokenizer, stats, fills, loaders, report)."""
    qwen_dir = Path(config.qwen2vl)
    like = get_config(config.like)
    hf = read_json(qwen_dir / CONFIG_FILE, "the model's configuration")
    language = language_config(hf, like.language, MoEConfig(num_experts=config.experts, top_k=config.top_k))
    vision = like.vision
    if config.image_hw:
        height, width = config.image_hw
        vision = replace(vision, image_height=height, image_width=width)
    if config.views:
        vision = replace(vision, num_views=config.views)
    vision = vision_config(hf, vision, language.hidden)
    tokenizer = load_tokenizer(qwen_dir, language.vocab_size)
    source = WeightSource(qwen_dir)
    loaders = {"qwen2vl": source}
    head_cfg, scheduler, head_source = like.action_head, like.scheduler, None
    if config.head:
        head_dir = Path(config.head)
        head_source = WeightSource(head_dir, strip_prefix=PREFIX)
        head_json = read_json(head_dir / CONFIG_FILE, "the head's configuration") if (head_dir / CONFIG_FILE).is_file() else None
        head_cfg = head_config(head_source, head_json, like.action_head, language.hidden)
        if head_json and isinstance(head_json.get("num_inference_timesteps"), int):
            scheduler = replace(scheduler, inference_steps=head_json["num_inference_timesteps"],
                                train_steps=head_json.get("num_train_timesteps", scheduler.train_steps))
        loaders["head"] = head_source
    cfg = ModelConfig(name=f"{like.name}-qwen2vl", vision=vision, language=language, action_head=head_cfg,
                      scheduler=scheduler, tokenizer="hf", prompt_format="qwen2vl-chat")
    if config.normalization:
        stats = NormalizationStats.load(config.normalization)
    elif head_cfg.action_dim == head_cfg.state_dim and head_cfg.action_dim % ARM_DIM == 0:  # whole ARX arms
        stats = NormalizationStats.arx_bimanual(head_cfg.action_dim)
    else:
        raise SourceError(f"a {head_cfg.action_dim}-D head needs --normalization (a normalization.json)")

    from chatvla2.models.vla import ChatVLA2

    with torch.device("meta"):
        expected = {n: tuple(t.shape) for n, t in ChatVLA2(cfg, tokenizer, stats).state_dict().items()}
    fills = qwen2vl_fills(vision, language, float(hf.get("initializer_range", 0.02)), config.seed)
    fills += head_fills(head_cfg) if head_source else _fresh_head_fills(cfg, config.seed)
    accounted = {"qwen2vl": tied_head_accounted(source, language)}
    sources = {"qwen2vl": set(source.names), **({"head": set(head_source.names)} if head_source else {})}
    check_plan(fills, expected, sources, accounted)
    for fill in fills:  # every plain copy's shape against what our tensor needs, before writing
        if fill.origin and len(fill.sources) == 1 and not fill.note:
            got = loaders[fill.origin].shape(fill.sources[0])
            if got != expected[fill.target]:
                raise SourceError(f"{fill.origin} tensor {fill.sources[0]!r} has shape {got}, our {fill.target!r} needs {expected[fill.target]}")
    report = {
        "format": "chatvla2-import v1",
        "qwen2vl": str(qwen_dir.resolve()),
        "head": str(Path(config.head).resolve()) if config.head else None,
        "experts": config.experts, "top_k": config.top_k, "seed": config.seed, "like": config.like,
        "mapped": sum(1 for f in fills if f.origin and not f.note),
        "initialised": {f.target: f.note for f in fills if not f.origin},
        "derived": {f.target: f.note for f in fills if f.origin and f.note},
        "not_read": {f"{o}:{n}": why for o, items in accounted.items() for n, why in items.items()},
    }
    return cfg, tokenizer, stats, fills, loaders, expected, report


def output_dtype(name: str, loaders: dict[str, WeightSource]) -> torch.dtype:
    if DTYPES[name] is not None:
        return DTYPES[name]
    found = set().union(*(s.float_dtypes() for s in loaders.values()))
    return SAFETENSORS_DTYPES[found.pop()] if len(found) == 1 else torch.float32


def write_weights(path: Path, fills: list[Fill], loaders, expected, dtype: torch.dtype, progress: bool) -> int:
    origins = list(loaders)
    # Source shard by source shard, so each shard is opened once; initialised tensors last.
    order = sorted(range(len(fills)), key=lambda i: (
        origins.index(fills[i].origin) if fills[i].origin else len(origins),
        loaders[fills[i].origin].shard_index(fills[i].sources[0]) if fills[i].sources else 0, i))
    fills = [fills[i] for i in order]
    from chatvla2.models.safetensors_stream import SafetensorsStream

    declared = [(f.target, dtype, expected[f.target]) for f in fills]
    with SafetensorsStream(path, declared, {"format": "pt"}) as out:
        bar = _progress(out.data_size, progress)
        for fill in fills:
            loader = loaders[fill.origin].load if fill.origin else None
            tensor = fill.make(loader).to(dtype)
            if tuple(tensor.shape) != expected[fill.target]:
                raise SourceError(f"{fill.origin} {fill.sources} -> {fill.target}: shape {tuple(tensor.shape)}, needs {expected[fill.target]}")
            out.write(fill.target, tensor)
            bar.update(tensor.numel() * tensor.element_size())
            del tensor
        bar.close()
    for source in loaders.values():
        source.close()
    return out.data_size


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, desc="writing model.safetensors", disable=not enabled, file=sys.stderr)


def import_checkpoint(config: ImportConfig) -> dict:
    out = Path(config.out)
    if out.exists() and not config.force:
        raise FileExistsError(f"{out} exists; pass --force to replace it")
    cfg, tokenizer, stats, fills, loaders, expected, report = plan_import(config)
    dtype = output_dtype(config.dtype, loaders)
    started = time.perf_counter()
    with staged_directory(out) as staging:
        saved = {"format_version": FORMAT_VERSION, **cfg.to_dict()}
        (staging / CONFIG_FILE).write_text(json.dumps(saved, indent=2, sort_keys=True))
        shutil.copyfile(Path(config.qwen2vl) / TOKENIZER_FILE, staging / TOKENIZER_FILE)
        stats.save(staging / NORMALIZATION_FILE)
        template = find_chat_template(Path(config.qwen2vl))
        if template is not None:
            (staging / CHAT_TEMPLATE_FILE).write_text(template)
        size = write_weights(staging / WEIGHTS_FILE, fills, loaders, expected, dtype, not config.quiet)
        checkpoint_on_meta(staging)  # what was written reads back against the config
        report.update(dtype=str(dtype).removeprefix("torch."), weight_bytes=size,
                      chat_template=CHAT_TEMPLATE_FILE if template is not None else None,
                      seconds=round(time.perf_counter() - started, 1))
        (staging / REPORT_FILE).write_text(json.dumps(report, indent=2))
    return report


def main(config: ImportConfig) -> int:
    report = import_checkpoint(config)
    print(f"imported {report['qwen2vl']}" + (f" + head {report['head']}" if report["head"] else "") + f" -> {config.out}")
    print(f"  {report['mapped']} tensors mapped, {len(report['derived'])} derived, "
          f"{len(report['initialised'])} initialised here, weights {report['dtype']} "
          f"({report['weight_bytes'] / 1e9:.2f} GB) in {report['seconds']} s")
    notes: dict[str, int] = {}
    for note in list(report["derived"].values()) + list(report["initialised"].values()):
        key = note.split(" seeded")[0].split(", seed")[0]
        notes[key] = notes.get(key, 0) + 1
    for note, count in sorted(notes.items()):
        print(f"  {count:>5} x {note}")
    for name, why in report["not_read"].items():
        print(f"  not read: {name} ({why})")
    print(f"  details: {Path(config.out) / REPORT_FILE}; `chatvla2 info --checkpoint {config.out}` for the breakdown")
    return 0
