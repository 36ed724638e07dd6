"""Data-parallel training throughput: samples per second of ``fit`` on 1 and 2 processes, and a model of N machines.

::

    python -m benchmarks.data_parallel                       # the MLP and the conv seed models, batch 32 per rank
    python -m benchmarks.data_parallel --models residual --rounds 3 --bandwidth 10,25,100

Each case is one seed model (:mod:`graphc.examples`) compiled to a native training step (RMSprop, MSE on every
output, as :mod:`benchmarks.training`), one intra-op thread per process:

- 1 process: plain ``fit`` (the fused step), batch ``--batch``;
- 2 processes: ``fit(distribution=DataParallel())`` launched as ``torchrun --nproc-per-node 2`` would (the same
  environment: ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR=127.0.0.1``...), gloo over loopback TCP, ``--batch``
  samples per rank, so twice the samples per step.

Every process builds, warms up (the first ``fit`` compiles), then times ``--repeat`` fits of the same number
of steps (chosen by the 1-process run so that a fit lasts about ``--seconds``). Launches alternate between
1 and 2 processes for ``--rounds`` rounds, so load drifting on a shared machine hits both alike; reported
values are medians over every timed fit. Each rank also records its CPU time, the time it spends in
``train_step`` and, within it, waiting for the all-reduce (the exchange itself and any wait for the slower
rank), and after the fits the time of a bare all-reduce of a buffer the size of the gradients.

The model of N machines: a ring all-reduce moves ``2 (N - 1) / N x bytes`` through each machine's link, so
``t_allreduce = 2 (N - 1) / N x gradient bytes / bandwidth`` and, with no overlap of the exchange and the
backward pass (graphc reduces the whole buffer after the gradient step), ``efficiency = t_step / (t_step +
t_allreduce)`` and ``speedup = N x efficiency``, from the measured 1-process step time and gradient size.
The markdown report goes to ``benchmarks/results/<date>-data_parallel.md`` with the raw numbers as ``.json``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
MODELS = ("mlp", "inception", "residual", "separable_conv_bn", "conv1d_text")
MACHINES = (2, 4, 8, 16, 64)


# ------------------------------------------------------------------------------------------ the model of N machines


def allreduce_seconds(nbytes: float, machines: int, gbit_per_s: float, latency_s: float = 0.0) -> float:
    """A ring all-reduce of ``nbytes`` over ``machines``: each link carries 2 (N - 1) / N x bytes, in 2 (N - 1)
    messages that each pay ``latency_s``."""
    return 2.0 * (machines - 1) / machines * nbytes * 8.0 / (gbit_per_s * 1e9) + 2.0 * (machines - 1) * latency_s


def efficiency(step_s: float, nbytes: float, machines: int, gbit_per_s: float, latency_s: float = 0.0) -> float:
    """The share of a data-parallel step spent computing, the exchange not overlapped with it."""
    return step_s / (step_s + allreduce_seconds(nbytes, machines, gbit_per_s, latency_s))


# ------------------------------------------------------------------------------------------ one rank


def _timed_data_parallel():
    """DataParallel that keeps time: in ``train_step``, and waiting for its all-reduces within it."""
    from graphc.distribute import DataParallel

    class TimedDataParallel(DataParallel):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.reset()

        def reset(self) -> None:
            self.step_s = self.wait_s = 0.0
            self.gradient_bytes = 0

        def wait(self, pending: list, what: str) -> None:
            start = time.perf_counter()
            super().wait(pending, what)
            self.wait_s += time.perf_counter() - start

        def train_step(self, step, *args, **kwargs):
            start = time.perf_counter()
            result = super().train_step(step, *args, **kwargs)
            self.step_s += time.perf_counter() - start
            self.gradient_bytes = int(step.gradient_buffer().nbytes)
            return result

    return TimedDataParallel(timeout=600.0)


def _data(model, name: str, samples: int, seed: int):
    """Inputs of seed model ``name`` and random MSE targets shaped like its outputs."""
    from graphc import examples

    rng = np.random.default_rng(seed)
    x = examples.inputs(name, rng, samples)
    targets = [rng.standard_normal((samples, *t.shape[1:])).astype(np.float32) for t in model.outputs]
    return x, targets[0] if len(targets) == 1 else targets


def run_rank(name: str, batch: int, steps: int, repeat: int, seconds: float, out: Path) -> None:
    """One process of a case: build, warm up, time ``repeat`` fits of ``steps`` steps (0: chosen to last about
    ``seconds``), and write what was measured to ``out`` (JSON)."""
    import torch

    torch.set_num_threads(1)
    import graphc
    from graphc import examples

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    dp = _timed_data_parallel() if world > 1 else None
    model = examples.build(name, seed=0)
    model.compile(optimizer="rmsprop", loss="mse")
    graphc.build(model, target="native", training=True, threads=1)

    def fit(x, y) -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        model.fit(x, y, batch_size=batch, epochs=1, shuffle=False, verbose=0, distribution=dp)
        return time.perf_counter() - wall, time.process_time() - cpu

    start = time.perf_counter()
    fit(*_data(model, name, 2 * batch * world, seed=1))  # compiles (or loads the cached library)
    warmup_s = time.perf_counter() - start
    if steps <= 0:  # the 1-process run chooses the steps of the case
        probe, _ = fit(*_data(model, name, 3 * batch, seed=2))
        steps = int(min(5000, max(3, math.ceil(seconds / max(probe / 3, 1e-6)))))
    x, y = _data(model, name, steps * batch * world, seed=0)
    record: dict = {"model": name, "rank": rank, "world": world, "batch": batch, "steps": steps,
                    "warmup_s": warmup_s, "fit_s": [], "cpu_s": [], "train_step_s": [], "wait_s": []}
    for _ in range(repeat):
        if dp is not None:
            dp.reset()
        wall, cpu = fit(x, y)
        record["fit_s"].append(wall)
        record["cpu_s"].append(cpu)
        if dp is not None:
            record["train_step_s"].append(dp.step_s)
            record["wait_s"].append(dp.wait_s)
    record["gradient_bytes"] = int(sum(np.asarray(w.value).nbytes for w in model.trainable_weights))
    record["parameters"] = int(sum(np.asarray(w.value).size for w in model.trainable_weights))
    if dp is not None:
        record["gradient_buffer_bytes"] = dp.gradient_bytes
        buffer, token = np.zeros(dp.gradient_bytes // 4, np.float32), np.zeros(1, np.float32)
        times = []
        for _ in range(10):
            dp.all_reduce_sum(token, "a barrier")  # both ranks start the timed all-reduce together
            begin = time.perf_counter()
            dp.all_reduce_sum(buffer, "the timed all-reduce")
            times.append(time.perf_counter() - begin)
        record["allreduce_s"] = times
    out.write_text(json.dumps(record))


# ------------------------------------------------------------------------------------------ the launcher


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(name: str, world: int, *, batch: int, steps: int, repeat: int, seconds: float, timeout: float,
           workdir: Path) -> list[dict]:
    """Start ``world`` processes of one case as torchrun would (loopback); returns every rank's record."""
    port = _free_port()
    procs, outs = [], []
    for rank in range(world):
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
            filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
            env.pop(key, None)
        if world > 1:
            env.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                       MASTER_PORT=str(port))
        out = workdir / f"{name}-{world}-{rank}-{time.monotonic_ns()}.json"
        outs.append(out)
        procs.append(subprocess.Popen([sys.executable, "-m", "benchmarks.data_parallel", "--rank-of", name,
                                       "--out", str(out), "--batch", str(batch), "--steps", str(steps),
                                       "--repeat", str(repeat), "--seconds", str(seconds)],
                                      cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    errors = []
    deadline = time.monotonic() + timeout
    try:
        for p in procs:
            _, err = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            if p.returncode:
                errors.append(err.strip().splitlines()[-1] if err.strip() else f"exit status {p.returncode}")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    if errors:
        raise RuntimeError(f"{name} on {world} process(es): {'; '.join(errors)}")
    return [json.loads(out.read_text()) for out in outs]


# ------------------------------------------------------------------------------------------ the case and its report


def _median(values: Sequence[float]) -> float:
    return float(np.median(values)) if len(values) else float("nan")


def summarize(name: str, one: list[dict], two: list[list[dict]]) -> dict:
    """A case's figures from its 1-process records and its 2-process ranks' records (per round)."""
    steps, batch = one[0]["steps"], one[0]["batch"]
    fit1 = [s for r in one for s in r["fit_s"]]
    cpu1 = [s for r in one for s in r["cpu_s"]]
    fit2 = [s for ranks in two for s in ranks[0]["fit_s"]]
    case = {"model": name, "batch": batch, "steps": steps, "parameters": one[0]["parameters"],
            "gradient_bytes": two[0][0]["gradient_buffer_bytes"] if two else one[0]["gradient_bytes"],
            "samples_per_s_1": steps * batch / _median(fit1), "step_ms_1": _median(fit1) / steps * 1e3,
            "step_cpu_ms_1": _median(cpu1) / steps * 1e3, "cpu_per_wall_1": _median(cpu1) / _median(fit1)}
    if two:
        case["samples_per_s_2"] = steps * batch * 2 / _median(fit2)
        case["speedup"] = case["samples_per_s_2"] / case["samples_per_s_1"]
        case["step_ms_2"] = _median(fit2) / steps * 1e3
        for rank in (0, 1):
            records = [ranks[rank] for ranks in two]
            case[f"wait_ms_rank{rank}"] = _median([s for r in records for s in r["wait_s"]]) / steps * 1e3
            case[f"cpu_per_wall_rank{rank}"] = (_median([s for r in records for s in r["cpu_s"]])
                                                / _median([s for r in records for s in r["fit_s"]]))
        case["allreduce_ms"] = _median([s for ranks in two for s in ranks[0]["allreduce_s"]]) * 1e3
        # samples per CPU-second of both ranks against one process's: how much work the parallel fit added,
        # whatever share of the cores the machine's other load left to it
        cpu2 = sum(_median([s for ranks in two for s in ranks[rank]["cpu_s"]]) for rank in (0, 1))
        case["cpu_speedup"] = (steps * batch * 2 / cpu2) / (steps * batch / _median(cpu1)) * 2
    case["records"] = {"1": one, "2": two}
    return case


def _num(value: float | None, digits: int = 3) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:.{digits}g}" if abs(value) < 10 ** digits else f"{value:.0f}"


def to_markdown(machine: dict, settings: dict, cases: list[dict], bandwidths: Sequence[float],
                notes: Sequence[str], latency_us: float = 0.0) -> str:
    lines = ["# graphc data-parallel training benchmark", "",
             f"- date: {machine.get('date', '?')}",
             f"- CPU: {machine.get('cpu', '?')} ({machine.get('logical_cpus', '?')} logical CPUs); load average at "
             f"the start: {machine.get('load_average', '?')}, at the end: {machine.get('load_average_end', '?')}",
             "- versions: " + ", ".join(f"{k} {v}" for k, v in machine.get("versions", {}).items()),
             f"- settings: {settings}"]
    lines += [f"- {n}" for n in notes]
    lines += ["", "## Measured: 1 process against 2 (gloo over loopback), one thread each", "",
              "Samples per second of `fit` (median over the timed fits); `step ms`: wall time per step (on 2 "
              "processes, of the global step: twice the samples); `wait ms`: per step, the time rank 0 / rank 1 "
              "spends waiting for the all-reduce of the gradients and logged totals (the exchange and any wait "
              "for the slower rank); `all-reduce ms`: a bare all-reduce of a buffer of the gradients' size, both "
              "ranks starting together; `CPU/wall`: each process's CPU time over its wall time (below 1: it did "
              "not have a core to itself); `speedup if 2 free cores`: the speedup the two processes' CPU time "
              "implies had each had a core of its own (2 x one process's CPU seconds per sample / the two "
              "processes' CPU seconds per sample: what data parallelism itself costs, apart from the machine's "
              "other load; an upper bound, since time spent waiting for the exchange uses no CPU).", "",
              "| model | parameters | gradient MB | batch/rank | samples/s 1 proc | samples/s 2 procs | speedup | "
              "speedup if 2 free cores | step ms 1 proc | step ms 2 procs | wait ms rank 0 / 1 | all-reduce ms | "
              "CPU/wall 1 proc | CPU/wall 2 procs |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c in cases:
        lines.append(
            f"| {c['model']} | {c['parameters']:,} | {c['gradient_bytes'] / 1e6:.3g} | {c['batch']} | "
            f"{_num(c['samples_per_s_1'])} | {_num(c.get('samples_per_s_2'))} | "
            f"{_num(c.get('speedup'), 2)}x | {_num(c.get('cpu_speedup'), 2)}x | {_num(c['step_ms_1'])} | "
            f"{_num(c.get('step_ms_2'))} | "
            f"{_num(c.get('wait_ms_rank0'))} / {_num(c.get('wait_ms_rank1'))} | {_num(c.get('allreduce_ms'))} | "
            f"{c['cpu_per_wall_1']:.2f} | {_num(c.get('cpu_per_wall_rank0'), 2)} / "
            f"{_num(c.get('cpu_per_wall_rank1'), 2)} |")
    latency = f" + 2(N-1) x {latency_us:g} us (each message's latency)" if latency_us else ""
    for gbit in bandwidths:
        lines += ["", f"## Model: N machines at {gbit:g} Gbit/s", "",
                  "Efficiency t_step / (t_step + t_allreduce) with t_allreduce = 2(N-1)/N x gradient bytes / "
                  f"bandwidth{latency} and t_step the 1-process step's CPU time (what it takes on a core of its "
                  "own: the wall time on this shared machine includes waiting for a core); in brackets the "
                  "expected speedup over one machine (N x efficiency).", "",
                  "| model | t_step ms | gradient MB | " + " | ".join(f"N={n}" for n in MACHINES) + " |",
                  "|---|---:|---:|" + "---:|" * len(MACHINES)]
        for c in cases:
            step_s = c["step_cpu_ms_1"] / 1e3
            cells = []
            for n in MACHINES:
                e = efficiency(step_s, c["gradient_bytes"], n, gbit, latency_us * 1e-6)
                cells.append(f"{e:.0%} ({n * e:.1f}x)")
            lines.append(f"| {c['model']} | {_num(c['step_cpu_ms_1'])} | {c['gradient_bytes'] / 1e6:.3g} | "
                         + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------ command line


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.data_parallel", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(MODELS), help=f"bundled examples (default {','.join(MODELS)})")
    p.add_argument("--batch", type=int, default=32, help="samples per rank and step (default 32)")
    p.add_argument("--rounds", type=int, default=2, help="launches of each process count, alternated (default 2)")
    p.add_argument("--repeat", type=int, default=3, help="timed fits per launch (default 3)")
    p.add_argument("--seconds", type=float, default=3.0, help="about how long one timed fit lasts (default 3)")
    p.add_argument("--bandwidth", default="10,25", help="link speeds of the model of N machines, Gbit/s")
    p.add_argument("--latency-us", type=float, default=0.0,
                   help="the model's latency of one message, microseconds (default 0: bandwidth only)")
    p.add_argument("--report", default=None, metavar="JSON",
                   help="re-render the report of an earlier run's .json (new --bandwidth, --latency-us) and exit")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds one launch may take")
    p.add_argument("--out", default=None, help="report path (default benchmarks/results/<date>-data_parallel.md)")
    p.add_argument("--no-write", action="store_true", help="print only")
    p.add_argument("--rank-of", default=None, help=argparse.SUPPRESS)  # one process of a launch (internal)
    p.add_argument("--steps", type=int, default=0, help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.rank_of:
        run_rank(args.rank_of, args.batch, args.steps, args.repeat, args.seconds, Path(args.out))
        return 0
    from graphc import examples
    from graphc.bench import machine_info

    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in examples.names()]
    if unknown:
        print(f"unknown model(s) {unknown}; bundled examples are: {', '.join(examples.names())}", file=sys.stderr)
        return 2
    bandwidths = [float(b) for b in args.bandwidth.split(",") if b.strip()]
    if args.report:
        saved = json.loads(Path(args.report).read_text())
        cases = [summarize(c["model"], c["records"]["1"], c["records"]["2"]) for c in saved["cases"]]
        print(to_markdown(saved["machine"], saved["settings"], cases, bandwidths, saved.get("notes", []),
                          args.latency_us))
        return 0
    machine = machine_info()
    started = time.perf_counter()
    cases = []
    with tempfile.TemporaryDirectory(prefix="graphc-dp-bench-") as tmp:
        for name in names:
            one, two, steps = [], [], 0
            for round_ in range(args.rounds):
                common = dict(batch=args.batch, repeat=args.repeat, seconds=args.seconds, timeout=args.timeout,
                              workdir=Path(tmp))
                one += launch(name, 1, steps=steps, **common)
                steps = one[0]["steps"]
                two.append(launch(name, 2, steps=steps, **common))
                print(f"[{time.strftime('%H:%M:%S')}] {name}: round {round_ + 1} of {args.rounds}", file=sys.stderr,
                      flush=True)
            cases.append(summarize(name, one, two))
    machine["load_average_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    settings = {"batch per rank": args.batch, "rounds": args.rounds, "fits per launch": args.repeat,
                "seconds per fit": args.seconds, "threads per process": 1, "backend": "gloo, loopback TCP",
                "optimizer": "rmsprop", "loss": "mse"}
    notes = [f"whole run {time.perf_counter() - started:.0f} s"]
    text = to_markdown(machine, settings, cases, bandwidths, notes, args.latency_us)
    print(text)
    if not args.no_write:
        path = Path(args.out) if args.out else RESULTS / f"{_dt.date.today().isoformat()}-data_parallel.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.with_suffix(".json").write_text(json.dumps({"machine": machine, "settings": settings, "notes": notes,
                                                         "cases": cases, "bandwidths_gbit": bandwidths,
                                                         "latency_us": args.latency_us}, indent=1))
        print(f"wrote {path} and {path.with_suffix('.json').name}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
