"""Peak memory and time of `chatvla2 import` on a Qwen2-VL checkpoint that transformers writes.

    python benchmarks/import_memory.py --size medium [--head] [--dtype bfloat16] [--work DIR]

Sizes: `medium` a Qwen2-VL of ~150M parameters (a few hundred MB in bf16, in 64 MB shards), with
a ScaleDP-L-shaped DexVLA head when --head; `2b` Qwen2-VL-2B-Instruct's exact shapes (4.4 GB in
bf16, 2 GB shards) and a ScaleDP-H head. The source is written first (transformers, random
weights), then the import runs in its own process, which reports its peak resident memory
(VmHWM, which counts the pages of the shards it memory-maps and touched too), beside
the same interpreter's RSS once torch and the importer are imported (the floor), and the checkpoint's size; `chatvla2 info` runs on the result. A table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SIZES = {
    # ~150M parameters: 12 layers of width 768 (intermediate 3072), a 32k vocabulary, a 12-deep ViT.
    "medium": dict(text=dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, num_key_value_heads=2,
                             intermediate_size=3072, vocab_size=32000, mrope_section=[8, 12, 12]),
                   vision=dict(depth=12, embed_dim=512, num_heads=8), shard="64MB",
                   head=dict(depth=8, width=512, heads=8, combine=1024)),
    "2b": None,  # filled from tests/models/hf_qwen2vl.py's QWEN2VL_2B_* below
}
# Peak resident memory from /proc/self/status's VmHWM: it belongs to the process's own address
# space, whereas getrusage's ru_maxrss survives fork + exec (a child of a process that held the
# generated model would report that process's size).
PEAK = "int(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')))"
BASELINE = f"import chatvla2.models.import_checkpoint, chatvla2.models.vla\nprint({PEAK})"
MEASURE = ("import sys\nfrom chatvla2.cli import main\nrc = main(sys.argv[1:])\n"
           f"print('PEAK_KB', {PEAK}, file=sys.stderr)\nsys.exit(rc)")


def directory_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def write_sources(size: str, work: Path, with_head: bool) -> tuple[Path, Path | None, float]:
    import torch

    sys.path.insert(0, str(ROOT))  # tests/models/hf_qwen2vl.py: tests is not an installed package
    from tests.models.hf_qwen2vl import QWEN2VL_2B_TEXT, QWEN2VL_2B_VISION, write_dexvla_head, write_tiny_qwen2vl

    spec = SIZES[size] or dict(text=QWEN2VL_2B_TEXT, vision=QWEN2VL_2B_VISION, shard="2GB",
                               head=dict(depth=32, width=1280, heads=16, combine=1024))  # ScaleDP-H
    started = time.perf_counter()
    qwen = work / "qwen2vl"
    model, _, _ = write_tiny_qwen2vl(qwen, shard=spec["shard"], text=spec["text"], vision=spec["vision"],
                                     dtype=torch.bfloat16, random_extras=False)
    del model
    head = None
    if with_head:
        h = spec["head"]
        head = work / "scaledp"
        write_dexvla_head(head, cond_dim=spec["text"]["hidden_size"], depth=h["depth"], width=h["width"], chunk=50,
                          combine=h["combine"], heads=h["heads"], dtype=torch.bfloat16)
    return qwen, head, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=list(SIZES), default="medium")
    parser.add_argument("--head", action="store_true", help="also import a DexVLA-layout head")
    parser.add_argument("--dtype", default="auto", help="the import's --dtype (default: the source's, bf16)")
    parser.add_argument("--work", help="where the sources and the checkpoint go (default: a temporary directory, removed)")
    parser.add_argument("--reuse-sources", action="store_true", help="use the sources already in --work")
    args = parser.parse_args()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="import-memory-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        if args.reuse_sources:
            qwen, head, generate_s = work / "qwen2vl", (work / "scaledp" if args.head else None), 0.0
        else:
            qwen, head, generate_s = write_sources(args.size, work, args.head)
        out = work / "checkpoint"
        command = [sys.executable, "-c", MEASURE, "import", "--qwen2vl", str(qwen), "--out", str(out), "--force",
                   "--dtype", args.dtype, "--quiet"] + (["--head", str(head)] if head else [])
        started = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
        import_s = time.perf_counter() - started
        if result.returncode != 0:
            print(result.stderr, file=sys.stderr)
            return result.returncode
        peak_kb = int(next(line.split()[1] for line in result.stderr.splitlines() if line.startswith("PEAK_KB")))
        baseline_kb = int(subprocess.run([sys.executable, "-c", BASELINE], capture_output=True, text=True, cwd=ROOT).stdout)
        info = subprocess.run([sys.executable, "-m", "chatvla2", "info", "--checkpoint", str(out)],
                              capture_output=True, text=True, cwd=ROOT).stdout
        shards = sorted(p.stat().st_size for p in qwen.glob("*.safetensors"))
        figures = {
            "size": args.size, "head": bool(head), "dtype": args.dtype,
            "source_bytes": directory_bytes(qwen) + (directory_bytes(head) if head else 0),
            "largest_shard_bytes": shards[-1], "checkpoint_bytes": directory_bytes(out),
            "import_peak_rss_bytes": peak_kb * 1024, "python_torch_baseline_rss_bytes": baseline_kb * 1024, "import_s": round(import_s, 1), "generate_s": round(generate_s, 1),
        }
        print(result.stdout.rstrip())
        print(info.rstrip())
        print(f"\n{'measure':<28}{'value':>14}")
        for key in ("source_bytes", "largest_shard_bytes", "checkpoint_bytes", "import_peak_rss_bytes",
                    "python_torch_baseline_rss_bytes"):
            print(f"{key:<28}{figures[key] / 1e9:>11.3f} GB")
        print(f"{'import wall time':<28}{figures['import_s']:>12.1f} s")
        print(json.dumps(figures))
        return 0
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
