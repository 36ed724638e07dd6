"""``python -m graphc.backends.onnx [NAME ...] [--no-optimize]``: the per-model error table of the
bundled examples exported to ONNX and run in onnxruntime against graphc's reference interpreter."""

from __future__ import annotations

import argparse
import sys

import graphc.onnx


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m graphc.backends.onnx", description=__doc__)
    parser.add_argument("names", nargs="*", help="bundled examples (default: all)")
    parser.add_argument("--no-optimize", action="store_true", help="export the plain lowering")
    parser.add_argument("--batch", default="1,3", help="batch sizes, comma-separated (default 1,3)")
    args = parser.parse_args(argv)
    batches = tuple(int(b) for b in args.batch.split(","))
    table, ok = graphc.onnx.error_table(args.names or None, batch_sizes=batches, optimize=not args.no_optimize)
    print(table)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
