"""The emitter facade through which ops describe their ONNX mapping.

An op's ``to_onnx(ctx, op)`` facet, written in its family module under ``graphc/ops``, sees
only an :class:`EmitContext`: the names and graphc types of the op's inputs and outputs,
its attributes, the data of constant inputs, and a few ways to add to the ONNX graph
(``ctx.node``, ``ctx.constant``, ``ctx.dim`` for symbolic dimensions, version-aware helpers
such as ``ctx.unsqueeze`` and ``ctx.reduce``). Op families never import onnx.

:class:`GraphEmitter` owns the ONNX graph under construction: node and value names,
initializers (small constants are shared), and the Shape/Gather/arithmetic nodes that
compute symbolic dimensions from the graph inputs at run time.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from graphc.ir.dims import Dim
from graphc.ir.graph import Graph, Op
from graphc.ir.types import TensorType
from graphc.ops.registry import get as get_opdef


class OnnxExportError(ValueError):
    """A graph that cannot be expressed in ONNX; the message names the layer."""


def where(op: Op) -> str:
    """How errors name an op: its user layer first, then the IR op."""
    if op.layer:
        return f"layer {op.layer!r} (op {op.id!r}, {op.type})"
    return f"op {op.id!r} ({op.type})"


def tensor_dtype(dtype: str) -> int:
    """The ONNX TensorProto element type of a graphc dtype name."""
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def _first_opset(op_type: str, domain: str) -> int | None:
    versions = [s.since_version for s in onnx.defs.get_all_schemas_with_history()
                if s.name == op_type and s.domain == domain]
    return min(versions) if versions else None


class GraphEmitter:
    """Collects the ONNX nodes and initializers for one graphc graph."""

    SHARE_LIMIT = 64  # constants up to this many elements are shared between uses

    def __init__(self, graph: Graph, opset: int):
        self.graph = graph
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: dict[str, np.ndarray] = {}
        self.defined: set[str] = set(graph.inputs) | set(graph.constants)
        self._names: set[str] = set(graph.values)
        self._node_names: set[str] = set()
        self._shared: dict[tuple, str] = {}
        self._dims: dict[Dim, str] = {}
        self._shapes: dict[str, str] = {}
        self._derived: dict[tuple[str, str], str] = {}
        self._schema_ok: set[tuple[str, str]] = set()

    # ------------------------------------------------------------------ names
    def fresh(self, base: str) -> str:
        """A value name not used yet, ``base`` if possible."""
        name, i = base, 0
        while name in self._names:
            i += 1
            name = f"{base}_{i}"
        self._names.add(name)
        return name

    def _node_name(self, base: str) -> str:
        name, i = base, 0
        while name in self._node_names:
            i += 1
            name = f"{base}:{i}"
        self._node_names.add(name)
        return name

    # ------------------------------------------------------------------ nodes
    def check_schema(self, op_type: str, domain: str, who: str) -> None:
        key = (op_type, domain)
        if key in self._schema_ok:
            return
        try:
            onnx.defs.get_schema(op_type, self.opset, domain)
        except onnx.defs.SchemaError:
            first = _first_opset(op_type, domain)
            if first is None:
                raise OnnxExportError(f"{who}: ONNX has no operator {op_type!r}") from None
            raise OnnxExportError(f"{who} needs ONNX opset {first} or newer (for {op_type}); "
                                  f"the export targets opset {self.opset}") from None
        self._schema_ok.add(key)

    def add_node(self, op_type: str, inputs: Sequence[str], outputs: Sequence[str], attrs: dict[str, Any],
                 *, origin: Op | None, domain: str = "") -> None:
        who = where(origin) if origin is not None else "the dimension computation"
        self.check_schema(op_type, domain, who)
        for name in inputs:
            if name and name not in self.defined:
                raise OnnxExportError(f"{who}: ONNX node {op_type} reads {name!r} before it is defined")
        for name in outputs:
            if name in self.defined:
                raise OnnxExportError(f"{who}: ONNX value {name!r} is defined twice")
            self.defined.add(name)
            self._names.add(name)
        if origin is None:
            base, doc = f"dims/{op_type}", "computes a dimension from the graph input shapes"
        else:
            base = f"{origin.layer}/{origin.id}" if origin.layer else origin.id
            doc = f"graphc op {origin.id!r} ({origin.type})" + (f" of layer {origin.layer!r}" if origin.layer else "")
        attrs = {k: (list(v) if isinstance(v, tuple) else v) for k, v in attrs.items() if v is not None}
        node = helper.make_node(op_type, list(inputs), list(outputs), name=self._node_name(base),
                                doc_string=doc, domain=domain or None, **attrs)
        self.nodes.append(node)

    # ------------------------------------------------------------------ constants
    def constant(self, array: np.ndarray, base: str) -> str:
        array = np.asarray(array)
        key = None
        if array.size <= self.SHARE_LIMIT:
            key = (array.dtype.str, array.shape, array.tobytes())
            if key in self._shared:
                return self._shared[key]
        name = self.fresh(base)
        self.initializers[name] = array
        self.defined.add(name)
        if key is not None:
            self._shared[key] = name
        return name

    def ints(self, values: Sequence[int]) -> str:
        values = [int(v) for v in values]
        label = "_".join(str(v) for v in values[:6]).replace("-", "m") or "empty"
        return self.constant(np.asarray(values, dtype=np.int64), f"const/i64_{label}")

    # ------------------------------------------------------------------ dims
    def input_shape(self, name: str) -> str:
        """The Shape of a graph input (one node per input)."""
        if name not in self._shapes:
            out = self.fresh(f"dims/shape_of_{name}")
            self.add_node("Shape", [name], [out], {}, origin=None)
            self._shapes[name] = out
        return self._shapes[name]

    def dim(self, d: Dim) -> str:
        """A 1-D int64 tensor of one element holding dimension ``d`` at run time."""
        if isinstance(d, (int, np.integer)):
            return self.ints([int(d)])
        try:
            tree = ast.parse(d.strip(), mode="eval").body
        except SyntaxError:
            raise OnnxExportError(f"cannot compute dimension expression {d!r} in ONNX") from None
        return self._dim_expr(tree, d)

    def _symbol(self, sym: str) -> str:
        for inp in self.graph.inputs:
            shape = self.graph.type_of(inp).shape
            for axis, s in enumerate(shape):
                if s == sym:
                    out = self.fresh(f"dims/{sym}")
                    self.add_node("Gather", [self.input_shape(inp), self.ints([axis])], [out], {"axis": 0},
                                  origin=None)
                    return out
        raise OnnxExportError(f"free dimension {sym!r} is not a dimension of any graph input "
                              f"({', '.join(self.graph.inputs)}), so ONNX cannot compute it")

    def _dim_expr(self, node: ast.AST, text: str) -> str:
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return self.ints([node.value])
        key = node.id if isinstance(node, ast.Name) else ast.unparse(node)
        if key not in self._dims:
            self._dims[key] = self._dim_node(node, text)
        return self._dims[key]

    def _dim_node(self, node: ast.AST, text: str) -> str:
        ops = {ast.Add: "Add", ast.Sub: "Sub", ast.Mult: "Mul", ast.FloorDiv: "Div"}
        if isinstance(node, ast.Name):
            return self._symbol(node.id)
        if isinstance(node, ast.BinOp) and type(node.op) in ops:
            a, b = self._dim_expr(node.left, text), self._dim_expr(node.right, text)
            if isinstance(node.op, ast.FloorDiv):
                # ONNX's integer Div truncates; Python's // floors: a // b = (a - a mod b) / b with
                # Mod(fmod=0) taking the divisor's sign, exactly as Python's %
                rem = self.fresh(f"dims/{ast.unparse(node.left)} mod {ast.unparse(node.right)}")
                self.add_node("Mod", [a, b], [rem], {"fmod": 0}, origin=None)
                exact = self.fresh(f"dims/{ast.unparse(node.left)} - mod")
                self.add_node("Sub", [a, rem], [exact], {}, origin=None)
                a = exact
            out = self.fresh(f"dims/{ast.unparse(node)}")
            self.add_node(ops[type(node.op)], [a, b], [out], {}, origin=None)
            return out
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            a = self._dim_expr(node.operand, text)
            out = self.fresh(f"dims/{ast.unparse(node)}")
            self.add_node("Neg", [a], [out], {}, origin=None)
            return out
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "max" and node.args:
            args = [self._dim_expr(a, text) for a in node.args]
            out = self.fresh(f"dims/{ast.unparse(node)}")
            self.add_node("Max", args, [out], {}, origin=None)
            return out
        raise OnnxExportError(f"cannot compute dimension expression {text!r} in ONNX")


class EmitContext:
    """What one op's ``to_onnx`` facet sees: its inputs, outputs, attributes and the emitter."""

    def __init__(self, emitter: GraphEmitter, op: Op):
        self._em = emitter
        self.op = op
        self.attrs: dict[str, Any] = get_opdef(op.type).resolve_attrs(op.attrs)

    # ------------------------------------------------------------------ the op
    @property
    def opset(self) -> int:
        return self._em.opset

    @property
    def layer(self) -> str | None:
        return self.op.layer

    @property
    def num_inputs(self) -> int:
        return len(self.op.inputs)

    @property
    def num_outputs(self) -> int:
        return len(self.op.outputs)

    def input_name(self, i: int) -> str:
        return self.op.inputs[i]

    def output_name(self, i: int = 0) -> str:
        return self.op.outputs[i]

    def input_type(self, i: int) -> TensorType:
        return self._em.graph.type_of(self.op.inputs[i])

    def output_type(self, i: int = 0) -> TensorType:
        return self._em.graph.type_of(self.op.outputs[i])

    def constant_input(self, i: int) -> np.ndarray | None:
        """The data of input ``i`` when it is a graph constant (a weight), else None."""
        return self._em.graph.constants.get(self.op.inputs[i])

    # ------------------------------------------------------------------ errors and versions
    def error(self, message: str) -> OnnxExportError:
        """An export error naming this op's layer (raise it)."""
        return OnnxExportError(f"{where(self.op)}: {message}")

    def require_opset(self, opset: int, why: str) -> None:
        """Refuse an older target opset: ``why`` says what needs ``opset``."""
        if self.opset < opset:
            raise OnnxExportError(f"{where(self.op)} needs ONNX opset {opset} or newer ({why}); "
                                  f"the export targets opset {self.opset}")

    # ------------------------------------------------------------------ building
    def node(self, op_type: str, inputs: Sequence[str], outputs: int | str | Sequence[str] | None = None, *,
             domain: str = "", **attrs: Any) -> Any:
        """Add an ONNX node; returns its output name (a tuple when it has several).

        ``outputs``: None (one new value), a count of new values, or explicit names such as
        ``ctx.output_name(0)``. Attributes whose value is None are left out.
        """
        if outputs is None:
            outputs = 1
        if isinstance(outputs, int):
            names = [self._em.fresh(f"{self.op.id}/{op_type.lower()}") for _ in range(outputs)]
        elif isinstance(outputs, str):
            names = [outputs]
        else:
            names = list(outputs)
        self._em.add_node(op_type, list(inputs), names, attrs, origin=self.op, domain=domain)
        return names[0] if len(names) == 1 else tuple(names)

    def constant(self, array: Any, name: str = "const", dtype: str | None = None) -> str:
        """An initializer holding ``array`` (small ones are shared across the graph)."""
        array = np.asarray(array, dtype=dtype)
        return self._em.constant(array, f"{self.op.id}/{name}")

    def scalar(self, value: float | int, dtype: str) -> str:
        """A 0-d initializer of ``dtype``."""
        return self._em.constant(np.asarray(value, dtype=dtype), f"const/{dtype}_{value}")

    def ints(self, values: Sequence[int]) -> str:
        """A 1-D int64 initializer (axes, shapes, pads...)."""
        return self._em.ints(values)

    def derived(self, i: int, transform: Callable[[np.ndarray], np.ndarray], tag: str) -> str | None:
        """An initializer holding ``transform`` of constant input ``i`` (None if it is not a constant).

        The result keeps the weight's own name when every reader of the weight derives it the
        same way (a kernel transposed for ONNX stays ``conv2d/kernel``); else ``name:tag``.
        """
        src = self.op.inputs[i]
        data = self.constant_input(i)
        if data is None:
            return None
        key = (src, tag)
        em = self._em
        if key not in em._derived:
            graph = em.graph
            uses = graph.consumers(src)
            same = all(o.type == self.op.type and idx == i for o, idx in uses) and src not in graph.outputs
            name = src if same and src not in em.initializers else em.fresh(f"{src}:{tag}")
            em.initializers[name] = np.asarray(transform(data))
            em.defined.add(name)
            em._derived[key] = name
        return em._derived[key]

    def dim(self, d: Dim) -> str:
        """A 1-D int64 tensor of one element: dimension ``d`` (an int or a symbolic dim) at run time."""
        return self._em.dim(d)

    def shape(self, dims: Sequence[Dim]) -> str:
        """A 1-D int64 shape tensor; symbolic entries are computed from the graph inputs."""
        dims = list(dims)
        if all(isinstance(d, (int, np.integer)) for d in dims):
            return self.ints(dims)
        parts: list[str] = []
        run: list[int] = []
        for d in dims:
            if isinstance(d, (int, np.integer)):
                run.append(int(d))
                continue
            if run:
                parts.append(self.ints(run))
                run = []
            parts.append(self.dim(d))
        if run:
            parts.append(self.ints(run))
        return self.node("Concat", parts, axis=0)

    def shape_of(self, x: str) -> str:
        """The run-time shape of value ``x`` (a 1-D int64 tensor)."""
        if x in self._em.graph.inputs:
            return self._em.input_shape(x)
        return self.node("Shape", [x])

    def filled(self, shape: str, value: float | int, dtype: str, outputs: Any = None) -> str:
        """A tensor of run-time shape ``shape`` (a 1-D int64 value) filled with ``value``."""
        fill = numpy_helper.from_array(np.asarray([value], dtype=dtype))
        return self.node("ConstantOfShape", [shape], outputs, value=fill)

    # ------------------------------------------------------------------ version-aware helpers
    def transpose(self, x: str, perm: Sequence[int], outputs: Any = None) -> str:
        return self.node("Transpose", [x], outputs, perm=[int(p) for p in perm])

    def cast(self, x: str, dtype: str, outputs: Any = None) -> str:
        return self.node("Cast", [x], outputs, to=tensor_dtype(dtype))

    def unsqueeze(self, x: str, axes: Sequence[int], outputs: Any = None) -> str:
        if self.opset >= 13:
            return self.node("Unsqueeze", [x, self.ints(axes)], outputs)
        return self.node("Unsqueeze", [x], outputs, axes=list(axes))

    def squeeze(self, x: str, axes: Sequence[int], outputs: Any = None) -> str:
        if self.opset >= 13:
            return self.node("Squeeze", [x, self.ints(axes)], outputs)
        return self.node("Squeeze", [x], outputs, axes=list(axes))

    def reduce(self, op_type: str, x: str, axes: Sequence[int], keepdims: bool, outputs: Any = None) -> str:
        """``ReduceSum``/``ReduceMean``/... over ``axes`` in the form the target opset wants."""
        since = 13 if op_type == "ReduceSum" else 18
        if self.opset >= since:
            return self.node(op_type, [x, self.ints(axes)], outputs, keepdims=int(keepdims))
        return self.node(op_type, [x], outputs, axes=list(axes), keepdims=int(keepdims))

    def slice(self, x: str, starts: Sequence[int], ends: Sequence[int], axes: Sequence[int],
              steps: Sequence[int] | None = None, outputs: Any = None) -> str:
        inputs = [x, self.ints(starts), self.ints(ends), self.ints(axes)]
        if steps is not None:
            inputs.append(self.ints(steps))
        return self.node("Slice", inputs, outputs)

    def split(self, x: str, sizes: Sequence[int], axis: int, outputs: Any = None) -> tuple[str, ...]:
        """Split ``x`` into pieces of ``sizes`` along ``axis``."""
        n = len(sizes) if outputs is None else outputs
        if self.opset >= 13:
            out = self.node("Split", [x, self.ints(sizes)], n, axis=axis)
        else:
            out = self.node("Split", [x], n, axis=axis, split=list(sizes))
        return out if isinstance(out, tuple) else (out,)
