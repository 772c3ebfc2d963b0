"""The `cpu` export target: graphs shaped for ONNX Runtime's CPU kernels, never handed to TensorRT.

The TensorRT plans hold their precision as Q/DQ pairs (what TensorRT fuses); ONNX Runtime's CPU
execution provider runs those as float arithmetic around (de)quantization, slower than fp32. The
`cpu` target uses the operators ONNX Runtime's CPU kernels are built for instead:
- the mixture of experts as com.microsoft MoE / QMoE (`export.cpu_moe`): each token's top-2
  experts only, in prefill and decode, reading the chosen experts' weights in place;
- int8: the weight matrix products dynamically quantized (onnxruntime.quantization's
  quantize_dynamic: weights int8 per output channel, activations quantized per call, int8 GEMMs
  that use AVX512-VNNI / AVX-VNNI / ARM dot-product instructions where the CPU has them);
- int4: block-wise 4-bit weights as com.microsoft MatMulNBits (block 32, symmetric), accuracy
  level 4 (int8 activations into the dot products).
Nothing in these graphs is x86-only: ONNX Runtime picks the kernel for the CPU it runs on (a
Jetson's ARM cores too). The routers stay fp32 (their top-k decides which experts run at all), and
so do the attention products between activations (they are not weights).

`--precision auto` (the default of `chatvla2 export --target cpu`) is a rule, `AUTO_RULE`, not a
measurement: per engine, the first of `CANDIDATES` (int8, then fp32; prefill and decode together,
as their one language graph, each against its own budget) whose graph meets the engine's parity
budget (`export.thresholds`). Nothing is timed: int8 comes first because it is the cheaper
arithmetic on every CPU ONNX Runtime runs (4x fewer weight bytes, integer dot products: VNNI /
VPMADDUBSW on x86, SDOT/UDOT on ARM, Jetson Orin's Cortex-A78AE included). Parity is deterministic:
seeded inputs (`export.calibration_data.record_engine_inputs`), the same integer products on every
CPU for the CPU class the bundle is made for (below). The rule, its candidates and the CPU class go
in the manifest (`plan_rule`, `cpu_isa`, `int8_weight_bits`).

The CPU class (`--cpu-isa`, `CPU_ISAS`; default `generic`, never this machine's unless asked with
`native`) sets the range of the int8 weights, the one place where the CPU changes what a graph
computes. ONNX Runtime's x86 int8 kernels without VNNI (`x86-avx2`: AVX2 or AVX-512 without VNNI,
e.g. Zen 1-3, Haswell to Comet Lake) multiply uint8 activations by int8 weights with VPMADDUBSW,
which sums each pair of products in saturating int16 (255 x 127 x 2 = 64770 is clamped to 32767);
VNNI (VPDPBUSD) and ARM sum in int32. With that clamp emulated here on the shipped demo model's
8-bit int8 action head (each adjacent pair sum clipped to int16), its cosine falls from 0.99990
to 0.9787, relative error 0.23: outside the int8 budget (0.98, 0.2), which is how the same rule
gave that head fp32 on a Zen 3 exporter and int8 on this Zen 4. With 7-bit weights the clamp
changes nothing (0.99994 with and without it). So:
- `generic` (the default: any CPU) and `x86-avx2`: int8 weights in 7 bits (quantize_dynamic's
  reduce_range, [-64, 64]): 255 x 64 x 2 = 32640 never saturates, every CPU computes the same
  integers, and the parity the export measures (on whatever machine) is the robot's. The cost,
  the shipped demo model's auto plan on the 16 held-out scenes (benchmarks/policy_accuracy.py):
  token agreement 0.867 against 0.870 at 8 bits, 13/16 reasonings identical either way, worst
  joint error with the same reasoning 5.7 deg against 2.7 (the int8 policy budget: 10);
- `x86-vnni` (AVX512-VNNI or AVX-VNNI) and `arm64-dotprod` (ARMv8.2 dot product: Jetson Orin,
  Graviton 2+, Apple M): the full 8 bits. Their parity is measured exactly only where the
  exporting CPU does not saturate, so such an export on an x86 CPU without VNNI is refused
  (`check_parity_measurable`).
The experts' QMoE (MLAS's block-quantized kernels) and int4's MatMulNBits are not changed by the
class (int4 products are far from any limit; 8-bit QMoE on an AVX2-only CPU is not measured here).

Timing is a choice made on the robot's computer, never by the export: `chatvla2 bench BUNDLE...`
run there compares cpu bundles (e.g. auto against `--precision language=int4`, or the same plan
for `x86-vnni`), and the plan it favours is exported with an explicit `--precision` (the manifest's
`plan_rule` then records the plan as given). (`chatvla2 calibrate select --target cpu` times the
sweep's plans, which are the TensorRT graph forms run by ONNX Runtime, not the cpu target's.)
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import onnx

from chatvla2.contract.bundle import ENGINE_NAMES
from chatvla2.contract.errors import InvalidInput
from chatvla2.contract.names import UnknownChoice
from chatvla2.export.precision import LANGUAGE_ENGINES, ConversionReport, per_engine_plan, router_nodes

CPU_PRECISIONS = ("fp32", "int8", "int4")
# auto's fixed order, cheapest arithmetic first (int8 weights, integer dot products; no timing). Prefill and
# decode share one graph (`language`, one copy of the weights in memory) when the plan gives them
# one precision, so they are chosen together. int4 would be faster at `small` from ~12 reasoning
# tokens on (2 threads: a 150-token prefill 39 ms at int4 against 35 at int8, a decode step 1.23 ms
# against 1.60), and its graph meets the engines' int4 parity budgets, but not the policy's: on the
# shipped demo model an int4 language agrees with the fp32 reasoning on 0.38 of its tokens, outside
# the int4 policy budget of 0.5 (int8: 0.87; an int8 prefill with an int4 decode, two graphs: 0.55;
# benchmarks/policy_accuracy.py, docs/export-and-targets.md, "The cpu target"). So auto stops at int8; `--precision
# prefill=int4,decode=int4,...` or the two-graph mix remain a choice per deployment.
CANDIDATES = {
    "vision": ("int8", "fp32"),
    "language": ("int8", "fp32"),
    "action_head": ("int8", "fp32"),
}
AUTO_RULE = "cpu-auto: per engine, the first of int8, fp32 whose graph meets its parity budget (no timing)"
INT4_BLOCK = 32

# The CPU classes a cpu bundle can be made for -> the bits of its int8 weights (module docstring).
CPU_ISAS = {
    "generic": 7,  # any CPU: no x86 kernel can saturate
    "x86-avx2": 7,  # AVX2 / AVX-512 without VNNI: VPMADDUBSW sums pairs in saturating int16
    "x86-vnni": 8,  # AVX512-VNNI or AVX-VNNI: VPDPBUSD sums in int32
    "arm64-dotprod": 8,  # ARMv8.2 SDOT/UDOT (Jetson Orin's Cortex-A78AE): int32 sums
}
DEFAULT_CPU_ISA = "generic"
NATIVE = "native"  # the exporting machine's class: only when asked for


def native_cpu_isa() -> str:
    """This machine's class in `CPU_ISAS`, from the CPU flags the OS reports (Linux's
    /proc/cpuinfo; Apple's arm64 all have the dot product); `generic` when they cannot be read."""
    import platform

    machine = platform.machine().lower()
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip().lower() in ("flags", "features"):
                    flags.update(value.split())
    except OSError:
        pass
    if machine in ("x86_64", "amd64", "i686", "i386"):
        if flags & {"avx512_vnni", "avx_vnni"}:
            return "x86-vnni"
        return "x86-avx2" if "avx2" in flags else "generic"
    if machine in ("aarch64", "arm64") and ("asimddp" in flags or platform.system() == "Darwin"):
        return "arm64-dotprod"
    return "generic"


def resolve_cpu_isa(name: str | None) -> str:
    """`--cpu-isa`: one of `CPU_ISAS`, `native` (this machine's class) or None (the default)."""
    name = DEFAULT_CPU_ISA if name is None else name.strip()
    if name == NATIVE:
        return native_cpu_isa()
    if name not in CPU_ISAS:
        raise UnknownChoice(f"unknown CPU class {name!r} for --cpu-isa; choose from {', '.join([*CPU_ISAS, NATIVE])}")
    return name


def check_parity_measurable(cpu_isa: str, exporting_isa: str | None = None) -> None:
    """Refuse to export 8-bit int8 weights (`x86-vnni`, `arm64-dotprod`) on an x86 CPU whose int8
    products saturate (no VNNI, or flags unknown): the parity measured here would not be the
    target's arithmetic, and the plan would depend on the exporting machine."""
    import platform

    if CPU_ISAS[cpu_isa] == 7:
        return
    exporting_isa = exporting_isa or native_cpu_isa()
    x86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "i386")
    if exporting_isa == "x86-avx2" or (exporting_isa == "generic" and x86):
        raise InvalidInput(
            f"--cpu-isa {cpu_isa}: this CPU ({exporting_isa}) has no VNNI, its int8 products saturate "
            "where the target's do not, so the export's parity check would not measure the target's "
            "arithmetic; export on a VNNI x86 or an ARM computer, or for --cpu-isa generic (7-bit weights)"
        )


def plan_rule(plan: dict) -> str:
    """How the plan's precisions are chosen, for the manifest and the log: `AUTO_RULE` for the
    auto plan, else each engine's candidates or given precision."""
    if plan == parse_cpu_plan("auto"):
        return AUTO_RULE
    shown = {e: "first of " + "|".join(p) + " within its parity budget" if isinstance(p, (tuple, list)) else p for e, p in plan.items()}
    return "cpu: " + ", ".join(f"{e} {p}" for e, p in shown.items())


def parse_cpu_plan(text: str | None) -> dict[str, str | tuple[str, ...]]:
    """`auto` (or None): every engine's `CANDIDATES` (prefill and decode: the language's, together);
    `int8`: every engine at int8; or one per engine, `vision=int8,prefill=int8,decode=int4,action_head=fp32`
    (engines left out: fp32; prefill and decode at different precisions get a graph each);
    `language=P` stands for `prefill=P,decode=P` (their one shared graph)."""
    text = (text or "auto").strip()
    if text == "auto":
        return {
            "vision": CANDIDATES["vision"],
            "prefill": CANDIDATES["language"],
            "decode": CANDIDATES["language"],
            "action_head": CANDIDATES["action_head"],
        }
    if "=" not in text:
        if text not in CPU_PRECISIONS:
            raise UnknownChoice(
                f"the cpu target has no precision {text!r}; choose from auto, {', '.join(CPU_PRECISIONS)} or a plan per engine"
            )
        return dict.fromkeys(ENGINE_NAMES, text)
    return per_engine_plan(text, CPU_PRECISIONS, "the cpu target has no precision", aliases={"language": LANGUAGE_ENGINES})


def shares_language(plan: dict) -> bool:
    """Prefill and decode are one graph (`export.graphs.LanguageGraph`, one copy of the language
    model's weights in memory) when the plan gives them the same precision or the same candidates."""
    return plan["prefill"] == plan["decode"]


def cpu_quantize(fp32_path: Path, precision: str, cpu_isa: str = DEFAULT_CPU_ISA) -> tuple[onnx.ModelProto, ConversionReport]:
    """The traced fp32 graph at `precision` for ONNX Runtime's CPU kernels on a `cpu_isa` CPU
    (`CPU_ISAS`: the bits of the int8 weights)."""
    if precision not in CPU_PRECISIONS:
        raise UnknownChoice(f"the cpu target has no precision {precision!r}; choose from {', '.join(CPU_PRECISIONS)}")
    model = onnx.load(str(fp32_path))
    if precision == "fp32":
        return model, ConversionReport(method="traced fp32 (cpu target)")
    excluded = router_nodes(model)
    if precision == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        root = logging.getLogger()  # the quantizer advises shape pre-processing on the root logger
        level = root.level
        with tempfile.TemporaryDirectory() as scratch:
            out = Path(scratch) / "int8.onnx"
            root.setLevel(logging.ERROR)
            try:
                # MatMulConstBOnly: only products with a constant weight; attention's q @ k and p @ v stay float.
                # reduce_range: 7-bit weights, [-64, 64], for CPUs whose int8 products saturate (module docstring).
                quantize_dynamic(
                    str(fp32_path),
                    str(out),
                    op_types_to_quantize=["MatMul", "Gemm"],
                    per_channel=True,
                    reduce_range=CPU_ISAS[cpu_isa] == 7,
                    weight_type=QuantType.QInt8,
                    nodes_to_exclude=excluded,
                    extra_options={"MatMulConstBOnly": True},
                )
            finally:
                root.setLevel(level)
            model = onnx.load(str(out))
        method = f"onnxruntime quantize_dynamic int8 (per-channel {CPU_ISAS[cpu_isa]}-bit weights for {cpu_isa}, dynamic activations)"
    else:
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        quantizer = MatMulNBitsQuantizer(
            model, bits=4, block_size=INT4_BLOCK, is_symmetric=True, accuracy_level=4, nodes_to_exclude=excluded
        )
        quantizer.process()
        model = quantizer.model.model
        method = f"onnxruntime MatMulNBits int4 (block {INT4_BLOCK}, symmetric, accuracy level 4)"
    moe_bits = {"int8": 8, "int4": 4}[precision]
    moe_nodes = [n for n in model.graph.node if n.op_type == "MoE" and n.domain == "com.microsoft"]
    if moe_nodes:
        from chatvla2.export.cpu_moe import quantize_moe

        block = moe_block_size(model, moe_nodes[0])
        model = quantize_moe(model, bits=moe_bits, block_size=block, accuracy_level=4)
        method += f"; experts QMoE int{moe_bits} (block {block}, accuracy level 4)"
    return model, ConversionReport(method=method, not_quantized=excluded)


def moe_block_size(model: onnx.ModelProto, node: onnx.NodeProto) -> int:
    """QMoE's block along K: the largest power of two up to 128 dividing the hidden and the expert
    width. Blocks, not one scale per row: ONNX Runtime 1.32 runs per-row experts by dequantizing
    the chosen ones to fp32 on every call (a weight copy, 2-3x slower); block 128 measured fastest
    at the `small` shapes (benchmarks/cpu_moe.py: decode 0.095 ms/layer vs 0.10 at block 32)."""
    fc1 = next(t for t in model.graph.initializer if t.name == node.input[2])
    hidden, inter = fc1.dims[2], fc1.dims[1] // 2
    block = 128
    while block > 16 and (hidden % block or inter % block):
        block //= 2
    return block
