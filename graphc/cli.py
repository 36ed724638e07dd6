"""The ``graphc`` command line: one verb per job, all sharing one way of naming a model.

A verb is a function ``(args) -> exit status`` registered with :func:`command`, which also
declares its arguments; ``graphc --help`` lists every registered verb and ``graphc VERB --help``
its arguments. Adding a verb is writing that one function::

    @command("plan", "the memory plan of MODEL", model_argument(), arg("--batch", type=int, default=1))
    def plan(args):
        model = load_model(args.model)
        ...
        return 0

MODEL, wherever a verb takes one, is ``file.py`` (its module-level ``model``), ``file.py:name``
(a Model in that file, or a function returning one), a ``.keras`` archive, or the name of a
bundled example (``graphc examples`` lists them).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


class CLIError(Exception):
    """A user-facing error: printed as ``graphc: error: ...`` with exit status 1."""


# ---------------------------------------------------------------------------------------------
# Registration.


@dataclass
class Argument:
    """One ``add_argument`` call: its flags and keyword arguments."""

    flags: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Command:
    name: str
    help: str
    run: Callable[[argparse.Namespace], int]
    arguments: tuple[Argument, ...]
    description: str | None = None


COMMANDS: dict[str, Command] = {}


def arg(*flags: str, **options: Any) -> Argument:
    """An argument of a verb, given as to ``argparse``'s ``add_argument``."""
    return Argument(flags, options)


def model_argument() -> Argument:
    return arg("model", metavar="MODEL",
               help="file.py (its module-level `model`), file.py:name (a Model or a function returning one), "
                    "a .keras file, or a bundled example name (see `graphc examples`)")


def command(name: str, help: str, *arguments: Argument, description: str | None = None):
    """Register the decorated function as verb ``name`` taking ``arguments``."""
    def register(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        if name in COMMANDS:
            raise ValueError(f"graphc verb {name!r} is registered twice")
        COMMANDS[name] = Command(name, help, fn, arguments, description or fn.__doc__)
        return fn
    return register


# ---------------------------------------------------------------------------------------------
# Naming a model.


def _load_file(path: str):
    if not os.path.isfile(path):
        raise CLIError(f"no such file: {path}")
    module_name = "_graphc_model_" + "".join(c if c.isalnum() else "_" for c in os.path.abspath(path))
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise CLIError(f"cannot import {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    directory = os.path.dirname(os.path.abspath(path))
    sys.path.insert(0, directory)
    try:
        spec.loader.exec_module(module)
    finally:
        if sys.path and sys.path[0] == directory:
            sys.path.pop(0)
    return module


def load_model(spec: str):
    """The Model that ``spec`` names (see the module docstring for the forms)."""
    from graphc import examples
    from graphc.frontend.model import Model

    path, _, attr = spec.partition(":") if ".py:" in spec else (spec, "", "")
    if path.endswith(".py"):
        module = _load_file(path)
        name = attr or "model"
        if not hasattr(module, name):
            found = sorted(k for k, v in vars(module).items() if isinstance(v, Model))
            hint = f"; Model objects it defines: {', '.join(found)} (use {path}:NAME)" if found else ""
            raise CLIError(f"{path} defines no `{name}`{hint}")
        obj = getattr(module, name)
        if not isinstance(obj, Model) and callable(obj):
            obj = obj()
        if not isinstance(obj, Model):
            raise CLIError(f"{spec} is of type {type(obj).__name__!r}, not a graphc Model (nor a function "
                           "returning one)")
        return obj
    if path.endswith(".keras"):
        if not os.path.isfile(path):
            raise CLIError(f"no such file: {path}")
        from graphc.models import load_model as load_keras

        return load_keras(path)
    if spec in examples.EXAMPLES:
        try:
            return examples.build(spec, seed=0)
        except examples.ExampleError as exc:
            raise CLIError(str(exc)) from exc
    raise CLIError(f"cannot find model {spec!r}: not a .py or .keras file, nor a bundled example "
                   f"({', '.join(examples.names())})")


# ---------------------------------------------------------------------------------------------
# Verbs.


def _optimized(graph, level: int, print_after_all: bool = False, *, print_before=(), print_after=(),
               disable=(), report: bool = False):
    if level == 0 and not (print_after_all or print_before or print_after):
        return graph
    from graphc.passes import LEVELS, run_pipeline

    if level not in LEVELS:
        raise CLIError(f"-O must be one of {', '.join(map(str, LEVELS))}, got {level}")
    after = ["all"] if print_after_all else list(print_after)
    out, pass_report = run_pipeline(graph, level, print_after=after, print_before=list(print_before),
                                    disable=list(disable), stream=sys.stdout)
    if report:
        print(pass_report.format(), file=sys.stderr)
    return out


def _csv(text: str | None) -> list[str]:
    return [t for t in (text or "").split(",") if t]


def _ints(text: str, what: str) -> list[int]:
    try:
        values = [int(t) for t in _csv(text)]
    except ValueError:
        raise CLIError(f"{what} must be comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise CLIError(f"{what} must be positive integers, got {text!r}")
    return values


def _dims(items: list[str] | None) -> dict[str, int]:
    dims = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not value.isdigit():
            raise CLIError(f"--dim takes NAME=SIZE (e.g. text_len=100), got {item!r}")
        dims[name] = int(value)
    return dims


@command("demo", "build a bundled model, print its summary and IR, run it on random inputs",
         arg("--model", default=None, metavar="NAME", help="which bundled example (default: the richest that "
             "this graphc can build)"),
         arg("--batch", type=int, default=2, help="samples in the random batch (default 2)"),
         arg("--seed", type=int, default=0, help="seed for the weights and the inputs (default 0)"))
def demo(args: argparse.Namespace) -> int:
    """The main job end to end on a bundled model: front end, IR, reference run."""
    import graphc
    from graphc import examples
    from graphc.backends.reference.interpreter import bind_inputs, run

    if args.batch < 1:
        raise CLIError(f"--batch must be at least 1, got {args.batch}")
    candidates = [args.model] if args.model else list(DEMO_MODELS)
    model, name, skipped = None, None, []
    for candidate in candidates:
        try:
            model, name = examples.build(candidate, seed=args.seed), candidate
            break
        except examples.ExampleError as exc:
            if args.model:
                raise CLIError(str(exc)) from exc
            skipped.append(f"{candidate} ({exc})")
    if model is None:
        raise CLIError("no bundled example can be built: " + "; ".join(skipped))
    for note in skipped:
        print(f"note: skipped example {note}", file=sys.stderr)

    print(f"== {name}: {examples.get(name).description}")
    print()
    model.summary()
    graph = graphc.lower(model)
    graphc.verify(graph)
    print()
    print(f"== IR: {len(graph)} ops, {len(graph.constants)} constants, {graph.param_count():,} parameters")
    print(graph)
    rng = np.random.default_rng(args.seed)
    data = examples.inputs(name, rng, args.batch)
    compiled = graphc.build(model, target="reference")
    feeds = compiled.feeds(data)
    _, bindings = bind_inputs(graph, feeds)
    outputs = compiled.run(feeds)
    print()
    print(f"== reference interpreter (inputs from seed {args.seed}): "
          + ", ".join(f"{k}={v}" for k, v in bindings.items()))
    for key, value in feeds.items():
        print(f"input  {key}: {graph.type_of(key)} <- {tuple(np.shape(value))}")
    for key in graph.outputs:
        value = outputs[key]
        print(f"output {key}: {graph.type_of(key)} -> {tuple(value.shape)} checksum={checksum(value):.6f}")

    level = 2
    optimized = _optimized(graph, level)
    opt_outputs = run(optimized, feeds)
    worst = max(float(np.max(np.abs(opt_outputs[k] - outputs[k]), initial=0.0)) for k in graph.outputs)
    print()
    print(f"== optimized at -O{level}: {len(graph)} ops -> {len(optimized)} ops "
          f"({_counts(optimized)}); max |difference| {worst:.3g}")
    _demo_native_and_onnx(model, graph, optimized, feeds, outputs, level)
    return 0


def _demo_native_and_onnx(model, graph, optimized, feeds, outputs, level: int) -> None:
    """Compile native code and export ONNX; compare both with the reference; time them.

    Lines with timings start with "timing:" (everything else repeats exactly)."""
    import time

    import graphc
    from graphc.backends.llvm import NativeLoweringError, ToolchainError

    t0 = time.perf_counter()
    try:
        native = graphc.build(model, target="native", level=level, threads=1)
    except (ToolchainError, NativeLoweringError) as exc:
        print(f"\n== native code: not available ({exc})")
        return
    compile_s = time.perf_counter() - t0
    got = native.run(feeds)
    worst = max(float(np.max(np.abs(got[k] - outputs[k]), initial=0.0)) for k in graph.outputs)
    stats = native.compile_stats
    print()
    print(f"== native code (-O{level}): lib{native.files.symbol}.so {stats.get('so_bytes', 0) / 1e6:.2f} MB, "
          f"{int(stats.get('kernels', 0))} kernel launches ({int(stats.get('kernel_functions', 0))} distinct "
          f"kernels); max |native - reference| {worst:.3g}")
    session = None
    try:
        import onnxruntime as ort

        import graphc.onnx

        proto = graphc.onnx.export(optimized)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        session = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        ort_feeds = {k: np.asarray(v, dtype=graph.type_of(k).dtype) for k, v in feeds.items()}
        ort_out = dict(zip([o.name for o in session.get_outputs()], session.run(None, ort_feeds)))
        worst = max(float(np.max(np.abs(ort_out[k] - outputs[k]), initial=0.0)) for k in graph.outputs)
        print(f"== onnxruntime (opset {proto.opset_import[0].version}): max |onnxruntime - reference| {worst:.3g}")
    except Exception as exc:  # onnx missing or an export failure: the native part still stands
        print(f"== onnxruntime: not available ({type(exc).__name__}: {exc})")

    def best(fn, repeat: int = 20) -> float:
        fn()
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return min(times)

    arrays = {k: np.asarray(v, dtype=graph.type_of(k).dtype) for k, v in feeds.items()}
    t_native = best(lambda: native.run(arrays))
    line = f"timing: compile {compile_s:.2f} s; one batch on 1 thread, best of 20: native {t_native * 1e3:.3f} ms"
    if session is not None:
        t_ort = best(lambda: session.run(None, arrays))
        line += f", onnxruntime {t_ort * 1e3:.3f} ms ({t_ort / t_native:.2f}x)"
    print(line)


def checksum(value: np.ndarray) -> float:
    """A position-sensitive sum: each element weighted by 1 + its flat index / size."""
    flat = np.asarray(value, dtype=np.float64).ravel()
    return float(flat @ np.linspace(1.0, 2.0, flat.size)) if flat.size else 0.0


def _counts(graph) -> str:
    return ", ".join(f"{n} {op}" for op, n in graph.op_counts().items())


# Bundled examples ``graphc demo`` tries, richest first.
DEMO_MODELS = ("qa_two_inputs", "merge", "mlp")


@command("summary", "print the Keras-style summary of MODEL", model_argument(),
         arg("--line-length", type=int, default=None, help="total width of the table"),
         arg("--expand-nested", action="store_true", help="also list the layers of nested models"),
         arg("--show-trainable", action="store_true", help="add a column saying whether each layer trains"))
def summary(args: argparse.Namespace) -> int:
    """The table ``model.summary()`` prints, with Keras's parameter counts."""
    model = load_model(args.model)
    model.summary(line_length=args.line_length, expand_nested=args.expand_nested,
                  show_trainable=args.show_trainable)
    return 0


@command("ir", "print the IR of MODEL (optimized with -O)", model_argument(),
         arg("-O", dest="level", type=int, default=0, metavar="N", help="optimization level 0-3 (default 0)"),
         arg("--print-after-all", action="store_true", help="print the IR after every pass"),
         arg("--print-before", metavar="PASSES", default="", help="print the IR before these passes (comma list)"),
         arg("--print-after", metavar="PASSES", default="", help="print the IR after these passes (comma list)"),
         arg("--disable", metavar="PASSES", default="", help="skip these passes (comma list; see --list-passes)"),
         arg("--list-passes", action="store_true", help="list the passes and exit"),
         arg("--timings", action="store_true", help="print each pass's time and what it changed (stderr)"),
         arg("--save", metavar="FILE", default=None, help="also save the graph to FILE (an .npz archive)"))
def ir(args: argparse.Namespace) -> int:
    """The verified IR graph in its stable text form."""
    import graphc
    from graphc.ir import save

    if args.list_passes:
        from graphc.passes import PASSES

        for name, p in sorted(PASSES.items()):
            print(f"{name:<28} {getattr(p, 'doc', '') or ''}")
        return 0
    model = load_model(args.model)
    graph = graphc.lower(model)
    graphc.verify(graph)
    graph = _optimized(graph, args.level, args.print_after_all, print_before=_csv(args.print_before),
                       print_after=_csv(args.print_after), disable=_csv(args.disable), report=args.timings)
    print(graph)
    if args.save:
        save(graph, args.save)
        print(f"saved to {args.save}", file=sys.stderr)
    return 0


@command("plan", "print the static memory plan of MODEL", model_argument(),
         arg("--batch", type=int, default=1, help="batch size to plan for (default 1)"),
         arg("--dim", action="append", metavar="NAME=SIZE", help="size of another free dimension (repeatable)"),
         arg("-O", dest="level", type=int, default=2, metavar="N", help="optimization level first (default 2)"),
         arg("--native", action="store_true",
             help="the plan the native code runs, as its runtime makes it (built and run once on random inputs)"),
         arg("--threads", type=int, default=None, help="threads of the native run (with --native; default 1)"))
def plan(args: argparse.Namespace) -> int:
    """Every intermediate tensor's offset and lifetime in one arena, with arena, naive and peak bytes; with
    --native, the scratch arena of the compiled code (its kernels' buffers, sub-batches, per-thread copies)."""
    import graphc
    from graphc.memory.planner import free_dims

    if args.batch < 1:
        raise CLIError(f"--batch must be at least 1, got {args.batch}")
    if args.threads is not None and not args.native:
        raise CLIError("--threads is for the native plan: add --native")
    if args.threads is not None and args.threads < 1:
        raise CLIError(f"--threads must be at least 1, got {args.threads}")
    model = load_model(args.model)
    graph = graphc.lower(model)
    dims = _dims(args.dim)
    missing = [d for d in free_dims(graph) if d != "batch" and d not in dims]
    if missing:
        flags = " ".join(f"--dim {d}=100" for d in missing)
        raise CLIError(f"model {graph.name!r} has free dimension(s) {', '.join(missing)}: give their sizes, "
                       f"e.g. {flags}")
    if args.native:
        cm = graphc.build(model, target="native", level=args.level, threads=args.threads or 1)
        print(cm.memory_plan(graphc.onnx.random_inputs(graph, batch_size=args.batch, dims=dims)).format())
        return 0
    graph = _optimized(graph, args.level)
    memory_plan = graphc.plan_memory(graph, batch_size=args.batch, **dims)
    print(memory_plan.format())
    return 0


@command("verify", "compare MODEL across engines on random inputs", model_argument(),
         arg("--vs", choices=("onnxruntime", "native", "keras"), default="onnxruntime",
             help="what to compare the reference interpreter with (default onnxruntime)"),
         arg("--batch", type=int, default=2, help="samples in the random batch (default 2)"),
         arg("--dim", action="append", metavar="NAME=SIZE", help="size of another free dimension (repeatable)"),
         arg("-O", dest="level", type=int, default=2, metavar="N", help="optimization level (default 2)"),
         arg("--per-layer", action="store_true", help="also compare every layer's output"),
         arg("--rtol", type=float, default=1e-4), arg("--atol", type=float, default=1e-5))
def verify_model(args: argparse.Namespace) -> int:
    """Max absolute/relative error per output; exit status 1 when any exceeds the tolerance."""
    import graphc

    model = load_model(args.model)
    inputs = graphc.onnx.random_inputs(model, batch_size=args.batch, dims=_dims(args.dim))
    if args.vs == "onnxruntime":
        report = graphc.onnx.verify(model, inputs, per_layer=args.per_layer, rtol=args.rtol, atol=args.atol,
                                    optimize=args.level)
        print(report.table())
        return 0 if report.ok else 1
    from graphc.verify_engines import verify_engine

    if args.vs == "keras":
        os.environ.setdefault("KERAS_BACKEND", "torch")  # graphc's keras extra installs the torch backend
        if importlib.util.find_spec("keras") is None:
            raise CLIError("--vs keras needs Keras 3 (pip install 'graphc[keras]')")
    report = verify_engine(model, inputs, engine=args.vs, level=args.level, per_layer=args.per_layer,
                           rtol=args.rtol, atol=args.atol)
    print(report.table())
    return 0 if report.ok else 1


_QUANTIZE_ARGS = (
    arg("--quantize", choices=("int8",), default=None, help="post-training int8 quantization (QDQ) "
        "calibrated on --calibration; onnx target only (native int8 kernels are not available yet)"),
    arg("--calibration", default=None, metavar="DATA.npz", help="--quantize: calibration samples, one "
        "array per model input named after it (a single-input model: any one array)"),
    arg("--calibration-method", default="minmax", choices=("minmax", "percentile", "entropy"),
        help="--quantize: how activation ranges are calibrated (default minmax)"),
    arg("--exclude", default=None, help="--quantize: layers that stay float, comma-separated"),
)


@command("compile", "compile MODEL to an ONNX file or a native library", model_argument(),
         arg("--target", choices=("native", "onnx"), required=True,
             help="native: libNAME.so, libNAME.a and NAME.h; onnx: a .onnx file"),
         arg("-O", dest="level", type=int, default=2, metavar="N", help="optimization level (default 2)"),
         arg("-o", "--output", required=True, metavar="OUT",
             help="native: the directory to write into; onnx: the .onnx file, or a directory (ending in /) to "
                  "write NAME.onnx into"),
         arg("--name", default=None, help="the library's name, a C identifier (default: the model's name)"),
         arg("--weights", choices=("embedded", "external"), default="embedded",
             help="native: weights inside the library (default) or in NAME.weights"),
         arg("--cpu", default=None, help="native: 'host' (default) or a portable level: generic, x86-64-v2, "
             "x86-64-v3, x86-64-v4; with --triple aarch64-linux-gnu: generic (default), cortex-a72, neoverse-n1, "
             "apple-m1; wasm32-wasi: generic (SIMD128, default), mvp"),
         arg("--triple", default=None, help="native: build for another platform (cross-compile): "
             "aarch64-linux-gnu, wasm32-wasi, x86_64-linux-gnu; `graphc targets` lists what this machine can "
             "build for"),
         arg("--opset", type=int, default=None, help="onnx: the opset (default: the newest onnxruntime supports)"),
         arg("--precision", choices=("float32", "bf16"), default="float32",
             help="native: bf16 runs matrix products and convolutions on bf16 inputs with float32 accumulation "
                  "(AVX512-BF16; elsewhere a warning and float32 code)"),
         arg("--training", action="store_true", help="native: export the training step (forward, loss, gradients, "
             "optimizer update; gc_instance_train_step) instead of inference"),
         arg("--optimizer", default=None, help="--training: the optimizer (default: the model's compile(), else "
             "rmsprop)"),
         arg("--loss", default=None, help="--training: the loss (default: the model's compile(), else mse)"),
         arg("--learning-rate", type=float, default=None, help="--training: the initial learning rate (the "
             "library's default; gc_instance_set_hyperparameter changes it)"),
         *_QUANTIZE_ARGS)
def compile_model(args: argparse.Namespace) -> int:
    """Write a deployable artifact of MODEL."""
    import graphc
    from graphc.backends.llvm.codegen import library_symbol

    try:
        symbol = library_symbol(args.name) if args.name else None
    except ValueError as exc:
        raise CLIError(f"--name: {exc}") from None
    if args.training and args.target != "native":
        raise CLIError("--training exports native libraries only (--target native)")
    if args.precision != "float32" and (args.target != "native" or args.training):
        raise CLIError(f"--precision {args.precision}: native inference libraries only (--target native, "
                       "without --training)")
    if args.triple is not None:
        _check_native_target(args)
    if args.quantize and (args.training or args.precision != "float32"):
        raise CLIError("--quantize int8: inference libraries at --precision float32 only (not with --training)")
    if args.calibration and not args.quantize:
        raise CLIError("--calibration calibrates --quantize int8")
    model = load_model(args.model)
    if args.target == "onnx":
        import graphc.onnx

        path = args.output
        if os.path.isdir(path) or path.endswith(os.sep):
            os.makedirs(path, exist_ok=True)
            path = os.path.join(path, f"{symbol or model.name}.onnx")
        if args.quantize:
            quantized, report = _quantized(model, args)
            print(report.table())
            proto = graphc.onnx.export(quantized, path, opset=args.opset, optimize=False)
            print(f"wrote {path}: int8 QDQ, opset {proto.opset_import[0].version}, {len(proto.graph.node)} nodes")
            return 0
        proto = graphc.onnx.export(model, path, opset=args.opset, optimize=args.level)
        print(f"wrote {path}: opset {proto.opset_import[0].version}, {len(proto.graph.node)} nodes")
        return 0
    if args.training:
        return _compile_training(model, args, symbol)
    from graphc.backends.llvm import build_native, compile_library, export_files

    graph = graphc.lower(model)
    graphc.verify(graph)
    if args.quantize:  # int8 kernels where the quantized products fold (graphc.passes.fold_qdq)
        from graphc.quantization import fold_integer_products

        quantized, report = _quantized(model, args)
        print(report.table())
        graph = fold_integer_products(_optimized(quantized, args.level))
    else:
        graph = _optimized(graph, args.level)
    loaded = args.triple is None and args.cpu in (None, "host")  # this machine's own code: built and loaded
    if loaded:
        native = build_native(graph, cpu=args.cpu, precision=args.precision)
        files = native.export_library(args.output, name=symbol, weights=args.weights)
        stats = native.compile_stats
    else:  # a library for another machine (or CPU, which this one may not run): built, never loaded here
        from graphc.backends.llvm.target import resolve_target

        built = compile_library(graph, symbol, weights=args.weights, cpu=args.cpu, triple=args.triple,
                                precision=args.precision)
        files = export_files(built, args.output)
        stats = built.stats
        target = resolve_target(args.triple, args.cpu)
        print(f"target: {target.platform}, cpu {target.cpu} ({target.vector_bits}-bit vectors, "
              f"{target.num_vector_registers} registers)")
    for kind, path in sorted(files.items()):
        print(f"wrote {path} ({kind})")
    if args.precision != "float32":
        ran = native.precision if loaded else built.precision
        missing = "" if ran == args.precision else f" ({args.precision} unavailable on this target)"
        print(f"precision: {ran}{missing}")
    print(f"{int(stats.get('kernels', 0))} kernel launches, {int(stats.get('kernel_functions', 0))} distinct "
          f"kernels, {stats.get('object_bytes', 0) / 1e3:.0f} kB of code")
    return 0


def _calibration_data(model, path: str | None) -> dict[str, np.ndarray]:
    """The arrays of a calibration .npz file, by model input name."""
    if not path:
        raise CLIError("--quantize int8 needs --calibration DATA.npz (calibration samples)")
    if not os.path.isfile(path):
        raise CLIError(f"no such file: {path}")
    with np.load(path) as archive:
        arrays = {k: archive[k] for k in archive.files}
    import graphc

    names = list(graphc.lower(model).inputs)
    if len(arrays) == 1 and len(names) == 1:
        return {names[0]: next(iter(arrays.values()))}
    missing = [n for n in names if n not in arrays]
    if missing:
        raise CLIError(f"{path} holds {', '.join(sorted(arrays)) or 'no arrays'}; the model's inputs are "
                       f"{', '.join(names)} (missing: {', '.join(missing)})")
    return {n: arrays[n] for n in names}


def _quantized(model, args: argparse.Namespace):
    """MODEL quantized as --calibration, --calibration-method and --exclude say, with its per-layer report."""
    import graphc
    from graphc.quantization import QuantizationError

    data = _calibration_data(model, args.calibration)
    try:
        quantized = graphc.quantize(model, data, method=args.calibration_method, exclude=_csv(args.exclude),
                                    level=args.level)
        return quantized, graphc.quantize_report(model, quantized, data)
    except QuantizationError as exc:
        raise CLIError(str(exc)) from None


@command("quantize", "quantize MODEL to int8 on calibration data and print each layer's error against float",
         model_argument(), *_QUANTIZE_ARGS[1:],
         arg("-O", dest="level", type=int, default=2, metavar="N", help="optimization level (default 2)"))
def quantize_report(args: argparse.Namespace) -> int:
    """Quantize MODEL on --calibration and print each layer's error against the float model (on the same
    data), so that layers to keep float can be chosen with --exclude."""
    model = load_model(args.model)
    _, report = _quantized(model, args)
    print(report.table())
    return 0


def _check_native_target(args: argparse.Namespace) -> None:
    """--triple and --cpu name a target graphc knows (before any model is loaded)."""
    from graphc.backends.llvm.target import resolve_target

    if args.target != "native":
        raise CLIError("--triple chooses the machine of a native library (--target native)")
    if args.training:
        raise CLIError("--training builds for this machine only: --triple is not supported with it")
    try:
        resolve_target(args.triple, args.cpu)
    except ValueError as exc:
        raise CLIError(str(exc)) from None


def _compile_training(model, args: argparse.Namespace, symbol: str | None) -> int:
    """``compile --training``: the model's training step as a library (graphc.training.native_step)."""
    from graphc.backends.llvm import export_files
    from graphc.training.native_step import train_step_library

    if args.optimizer or args.loss or getattr(model, "_graphc_trainer", None) is None:
        model.compile(optimizer=args.optimizer or "rmsprop", loss=args.loss or "mse")
    if args.learning_rate is not None:
        model._graphc_trainer.optimizer.learning_rate = args.learning_rate
    files = train_step_library(model, name=symbol, weights=args.weights, cpu=args.cpu)
    for kind, path in sorted(export_files(files, args.output).items()):
        print(f"wrote {path} ({kind})")
    print(f"training step: {int(files.stats.get('kernels', 0))} kernel launches, "
          f"{files.stats.get('object_bytes', 0) / 1e3:.0f} kB of code")
    return 0


@command("bench", "time MODEL as native code against onnxruntime and PyTorch; profile its kernels; measure "
         "this machine's peak",
         arg("model", metavar="MODEL", nargs="?",
             help="file.py (its module-level `model`), file.py:name (a Model or a function returning one), "
                  "a .keras file, or a bundled example name (see `graphc examples`); not needed with --peak"),
         arg("--batch", default="1,32", help="batch sizes, comma-separated (default 1,32)"),
         arg("--threads", default="1,2", help="thread counts, comma-separated (default 1,2)"),
         arg("--vs", default="onnxruntime,torch", help="engines to compare with: onnxruntime, torch"),
         arg("--unfused", action="store_true", help="also time the unoptimized (-O0) native code"),
         arg("--repeat", type=int, default=10, help="measurement rounds (default 10); medians are reported"),
         arg("--peak", action="store_true",
             help="measure this machine's FMA peak per vector width (1 core and all), and its memory bandwidth"),
         arg("--profile", action="store_true",
             help="time every kernel of MODEL's native code (per fused op, named by layer) against the peak"),
         arg("--runs", type=int, default=10, help="--profile: timed runs per batch and thread count (default 10)"),
         arg("--trace", metavar="OUT.json",
             help="--profile: write the kernel launches as a Chrome/Perfetto trace (one file per batch and "
                  "thread count when there are several: OUT.b32.t1.json...)"))
def bench(args: argparse.Namespace) -> int:
    """Interleaved timings of the same model, batch and threads on every engine; ratios of medians.
    With --peak, this machine's limits; with --profile, the native code's time per kernel."""
    from graphc import examples
    from graphc.bench import BenchError, run_benchmark

    batches = _ints(args.batch, "--batch")
    threads = _ints(args.threads, "--threads")
    if args.trace and not args.profile:
        raise CLIError("--trace writes the kernel launches of --profile: add --profile")
    if args.peak:
        from graphc.bench.peak import measure_peak

        print(measure_peak(refresh=True).to_markdown())
        if args.model is None:
            return 0
    if args.model is None:
        raise CLIError("bench needs a MODEL (or --peak alone)")
    model = args.model if args.model in examples.names() else load_model(args.model)
    if args.profile:
        return _bench_profile(model, batches, threads, args)
    try:
        report = run_benchmark(model, batch_sizes=args.batch, threads=args.threads, vs=_csv(args.vs),
                               unfused=args.unfused, repeat=args.repeat,
                               progress=lambda line: print(line, file=sys.stderr))
    except (BenchError, examples.ExampleError) as exc:
        raise CLIError(str(exc)) from exc
    print(report.to_markdown())
    return 0


def _bench_profile(model, batches: list[int], threads: list[int], args: argparse.Namespace) -> int:
    """``bench --profile``: each batch and thread count's kernel table (and trace)."""
    from graphc import examples
    from graphc.bench.native_profile import profile_model

    if args.runs < 1:
        raise CLIError(f"--runs must be at least 1, got {args.runs}")
    several = len(batches) * len(threads) > 1
    for batch in batches:
        for t in threads:
            try:
                report = profile_model(model, batch=batch, threads=t, runs=args.runs)
            except examples.ExampleError as exc:
                raise CLIError(str(exc)) from exc
            print(report.to_markdown())
            print()
            if args.trace:
                root, ext = os.path.splitext(args.trace)
                path = f"{root}.b{batch}.t{t}{ext or '.json'}" if several else args.trace
                report.write_trace(path)
                print(f"wrote {path} ({len(report.events)} events; open in ui.perfetto.dev or chrome://tracing)")
    return 0


@command("cache", "show or empty the build cache of native libraries",
         arg("action", choices=("info", "clear"), metavar="ACTION",
             help="info: where it is, its size and limit; clear: empty it"))
def cache(args: argparse.Namespace) -> int:
    """The cache of compiled runtimes and model libraries ($GRAPHC_CACHE_DIR, else ~/.cache/graphc),
    trimmed to $GRAPHC_CACHE_SIZE (default 2G) by removing the least recently used entries."""
    import time

    from graphc.backends.llvm import cache as build_cache

    if args.action == "clear":
        n, nbytes = build_cache.clear()
        print(f"removed {n} entries ({build_cache.format_bytes(nbytes)}) from {build_cache.cache_dir()}")
        return 0
    summary = build_cache.info()
    print(f"build cache: {summary['directory']}")
    print(f"size: {build_cache.format_bytes(summary['bytes'])} of {build_cache.format_bytes(summary['limit'])} "
          "(the limit: $GRAPHC_CACHE_SIZE; least recently used entries go first)")
    for kind, (n, nbytes) in summary["entries"].items():
        print(f"  {kind:<12} {n:>5} entries  {build_cache.format_bytes(nbytes):>10}")
    if summary["newest"] is not None:
        def when(t: float) -> str:
            return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))

        print(f"last used: {when(summary['newest'])}; least recently used: {when(summary['oldest'])}")
    return 0


@command("targets", "list the platforms this machine can build native libraries for, and what is missing")
def targets(args: argparse.Namespace) -> int:
    """Each platform graphc generates code for: its CPUs, whether its C toolchain (and an emulator
    to run its programs here) is installed, and the packages that provide what is missing."""
    from graphc.backends.llvm.toolchain import target_report

    ready = 0
    for t in target_report():
        state = "ready" if t.toolchain else "missing toolchain"
        ready += bool(t.toolchain)
        print(f"{t.platform}{' (this machine)' if t.host else ''}: {state}")
        print(f"  {t.description}")
        print(f"  cpus: {', '.join(t.cpus)}")
        print(f"  C toolchain: {t.toolchain or 'not found: ' + t.install}")
        if not t.host:
            print(f"  run here: {t.emulator or 'no emulator: ' + t.emulator_install}")
    print(f"{ready} platform(s) ready; build with `graphc compile MODEL --target native --triple PLATFORM "
          "[--cpu CPU] -o DIR`")
    return 0


@command("examples", "list the bundled example models")
def list_examples(args: argparse.Namespace) -> int:
    """Names usable as MODEL, with what each builds."""
    from graphc import examples

    width = max(len(n) for n in examples.names())
    for name in examples.names():
        print(f"{name:<{width}}  {examples.get(name).description}")
    return 0


# ---------------------------------------------------------------------------------------------
# Entry point.


def build_parser() -> argparse.ArgumentParser:
    import graphc

    parser = argparse.ArgumentParser(
        prog="graphc",
        description="graphc: compile Keras-style functional models to an optimized IR, ONNX and native code.",
        epilog="MODEL is file.py, file.py:name, a .keras file or a bundled example name. "
               "`graphc VERB --help` describes a verb.")
    parser.add_argument("--version", action="version", version=f"graphc {graphc.__version__}")
    parser.add_argument("--traceback", action="store_true",
                        help="on an error, show the full Python traceback instead of a one-line message")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", title="verbs")
    for cmd in COMMANDS.values():
        sub = verbs.add_parser(cmd.name, help=cmd.help, description=cmd.description or cmd.help)
        for a in cmd.arguments:
            sub.add_argument(*a.flags, **a.options)
        sub.set_defaults(_command=cmd)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``graphc`` with ``argv`` (default: the process's arguments); returns the exit status."""
    from graphc.frontend.state import clear_session

    parser = build_parser()
    args = parser.parse_args(argv)
    cmd = getattr(args, "_command", None)
    if cmd is None:
        parser.print_help()
        return 2
    clear_session()
    try:
        return int(cmd.run(args) or 0)
    except BrokenPipeError:  # the reader (`| head`) went away: stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except CLIError as exc:
        if args.traceback:
            raise
        print(f"graphc: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"graphc {cmd.name}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.traceback:
            raise
        print(error_line(cmd.name, exc), file=sys.stderr)
        return 1


# What a verb may raise on bad input or a bad environment (no C compiler, a model graphc cannot
# compile, a failed native call): reported as a one-line error. Anything else is a bug in graphc.
EXPECTED_ERRORS = (ValueError, TypeError, NotImplementedError, OSError, RuntimeError, ImportError)


def error_line(verb: str, exc: BaseException) -> str:
    """One line for a failed verb: the error's type and first line (a compiler's output follows
    only with --traceback)."""
    lines = str(exc).strip().splitlines() or [""]
    more = f" ({len(lines) - 1} more line(s): rerun with --traceback)" if len(lines) > 1 else ""
    kind = "error" if isinstance(exc, EXPECTED_ERRORS) else "internal error (please report it)"
    return f"graphc {verb}: {kind}: {type(exc).__name__}: {lines[0]}{more}"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
