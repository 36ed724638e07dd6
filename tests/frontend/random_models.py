"""Random, valid Keras functional architectures, written once against a Keras-compatible library.

``random_model(K, seed)`` builds a model with ``K`` = ``keras`` or ``graphc``: the same seed gives
the same architecture in both, so the two are twins a differential test can compare. Every
choice comes from ``random.Random(seed)`` and from the static shapes of the tensors built so far
(which both libraries must agree on); each step is logged with the shape and mask of what it
made, so a first disagreement between the twins is reported at the step that caused it, before
any number is compared.

A model starts from one or two inputs (sequences, images, volumes, vectors or token ids, some
with a free length) and grows for a few steps. Each step takes a tensor of the pool (mostly the
newest one) and applies a rule that fits its rank and sizes: a layer of almost every family graphc
implements (activation layers, every activation name, convolutions and their transposes in both
data formats, pooling, padding, cropping, resampling, normalization, preprocessing, noise,
recurrent layers and cells, attention, EinsumDense, reshaping), a ``keras.ops`` function or
operator on the symbolic tensor, or a merge with another tensor of the pool. Sizes stay small
(odd where it matters) and bounded, so one model compiles and runs in about a second.

``trainable=True`` leaves out what is random in training (dropout, noise), so one optimizer step
is deterministic. ``POISONS`` are Keras options graphc does not implement and ``KERAS_ONLY`` Keras
layers it does not have: ``random_model(..., poison=p)`` inserts one at a random step, and graphc
must refuse it by name, whether built with its own API or read from a file Keras wrote.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

ACTIVATIONS = ("linear", "relu", "leaky_relu", "relu6", "sigmoid", "tanh", "selu", "elu", "celu", "softplus",
               "softsign", "squareplus", "sparse_plus", "sparse_sigmoid", "silu", "swish", "gelu", "glu", "mish",
               "hard_sigmoid", "hard_silu", "hard_swish", "hard_tanh", "tanh_shrink", "soft_shrink", "hard_shrink",
               "log_sigmoid", "exponential", "softmax", "log_softmax", "sparsemax")
FREE_LENGTHS = (5, 7)  # the lengths free (None) axes take in the data: sizes are checked for each
MAX_ELEMENTS = 320  # per sample, for any tensor the generator makes
MAX_SIDE = 12  # largest spatial or time size


@dataclass(frozen=True)
class InputSpec:
    """One model input: its shape without the batch axis (None: free), dtype and, for ids, the vocabulary."""

    shape: tuple
    dtype: str = "float32"
    vocab: int = 0
    padded: bool = False  # a float sequence whose trailing steps are all zeros (for Masking)


@dataclass
class RandomModel:
    model: object
    inputs: list[InputSpec]
    steps: list[str]  # "Layer(config) -> shape [masked]" for every step, in order
    families: set[str] = field(default_factory=set)

    def data(self, rng: np.random.Generator, n: int, free: int | None = None):
        """Inputs for ``n`` samples (one array, or a list for several inputs); free sizes become ``free``."""
        arrays = [_sample(spec, rng, n, free) for spec in self.inputs]
        return arrays[0] if len(arrays) == 1 else arrays

    def targets(self, rng: np.random.Generator, outputs) -> list[np.ndarray] | np.ndarray:
        """Random regression targets shaped like the model's outputs."""
        outs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        ys = [rng.standard_normal(np.shape(o)).astype("float32") for o in outs]
        return ys[0] if len(ys) == 1 else ys


def _sample(spec: InputSpec, rng: np.random.Generator, n: int, free: int | None) -> np.ndarray:
    shape = (n,) + tuple(free if d is None else d for d in spec.shape)
    if spec.dtype != "int32":
        x = rng.standard_normal(shape).astype("float32")
        if spec.padded:
            for row in x:
                row[rng.integers(1, shape[1] + 1):] = 0.0
        return x
    ids = rng.integers(1, spec.vocab, size=shape)
    # Padding: trailing zeros of random length, and now and then a zero inside; the first id stays,
    # so no sequence is masked entirely (Keras gives NaN or garbage there, not a defined answer).
    length = shape[1]
    for row in ids:
        row[rng.integers(1, length + 1):] = 0
        if length > 2 and rng.random() < 0.3:
            row[rng.integers(1, length)] = 0
    return ids.astype("int32")


@dataclass
class _T:
    """A tensor of the pool, with the inputs it depends on."""

    x: object
    sources: frozenset
    masked: bool
    index: int
    used: bool = False
    terminal: bool = False  # ends its branch: nothing is applied to it (see ``_Generator.add``)
    family: str = "input"  # of the step that made it
    source_family: str = ""  # of the step that made its first input
    closed: bool = False  # nothing more may read it (a masked input of a MultiHeadAttention)
    lengths: tuple | None = None  # its free axis's length for each of FREE_LENGTHS (None: static or unknown)

    @property
    def shape(self) -> tuple:
        return tuple(self.x.shape)

    @property
    def rank(self) -> int:
        return len(self.x.shape)

    @property
    def static(self) -> bool:
        return None not in self.shape[1:]

    @property
    def size(self) -> int:
        return math.prod(d for d in self.shape[1:] if d is not None)


def conv_length(n: int, k: int, s: int, d: int, padding: str) -> int:
    """Keras's output length of a convolution or pooling window."""
    if padding in ("same", "causal"):
        return -(-n // s)
    return (n - d * (k - 1) - 1) // s + 1


def same_padding(n: int, k: int, s: int) -> int:
    """The total padding of a 'same' window along an axis of length ``n``."""
    return max(0, (-(-n // s) - 1) * s + k - n)


def conv_transpose_length(n: int, k: int, s: int, d: int, padding: str, output_padding: int | None) -> int:
    """Keras's output length of a transposed convolution."""
    k = k + (k - 1) * (d - 1)
    if output_padding is None:
        return n * s if padding == "same" else n * s + max(k - s, 0)
    pad = k // 2 if padding == "same" else 0
    return (n - 1) * s + k - 2 * pad + output_padding


# Keras layers graphc does not have: (rank of the input, layer, config, name the error must give).
KERAS_ONLY: tuple[tuple[int, str, dict, str], ...] = (
    (3, "RMSNormalization", {}, "RMSNormalization"),
    (3, "AdaptiveAveragePooling1D", {"output_size": 2}, "AdaptiveAveragePooling1D"),
    (2, "Discretization", {"bin_boundaries": [0.0, 1.0]}, "Discretization"),
)

# Steps whose outputs are averages (of attention, pooling windows): nearly constant along their axes.
_AVERAGING = frozenset({"attention", "attention_masked", "pool", "pool_channels_first", "masked_pool", "ops_reduce"})

# Layers the generator may call again on another tensor (shared weights).
_SHAREABLE = frozenset({"Dense", "Conv1D", "Conv2D", "Conv3D", "DepthwiseConv1D", "DepthwiseConv2D", "SeparableConv1D",
                        "SeparableConv2D", "Conv1DTranspose", "Conv2DTranspose", "LSTM", "GRU", "SimpleRNN",
                        "LayerNormalization", "BatchNormalization", "EinsumDense", "PReLU", "GroupNormalization"})

# Steps whose output's free axis (if any) is as long as their first input's.
_LENGTH_PRESERVING = frozenset({
    "dense", "activation_names", "activation_layers", "layer_norm", "layer_norm_rms", "unit_norm", "batch_norm",
    "group_norm", "noise", "spatial_dropout", "activity_regularization", "rescaling", "normalization", "ops_scalar",
    "ops_unary", "merge", "ops_binary", "masking", "recurrent", "recurrent_masked", "bidirectional",
    "bidirectional_masked", "rnn_cells", "time_distributed", "identity", "embedding", "permute", "ops_shape",
    "ops_slice", "ops_reduce"})

# Keras options graphc does not implement: (rank of the input, layer, config, option named in the error).
POISONS: tuple[tuple[int, str, dict, str], ...] = (
    (2, "Dense", {"units": 3, "lora_rank": 2}, "lora_rank"),
    (3, "EinsumDense", {"equation": "abc,cd->abd", "output_shape": (None, 3), "lora_rank": 2}, "lora_rank"),
    (4, "Conv2D", {"filters": 2, "kernel_size": 1, "lora_rank": 1}, "lora_rank"),
    (2, "BatchNormalization", {"renorm": True}, "renorm"),
    (3, "LSTM", {"units": 2, "stateful": True}, "stateful"),
    (3, "GRU", {"units": 2, "stateful": True}, "stateful"),
    (3, "MultiHeadAttention", {"num_heads": 2, "key_dim": 2, "use_gate": True}, "use_gate"),
    (3, "MultiHeadAttention", {"num_heads": 1, "key_dim": 2, "flash_attention": True}, "flash_attention"),
    (4, "Resizing", {"height": 3, "width": 4, "interpolation": "bicubic"}, "interpolation"),
    (4, "Resizing", {"height": 3, "width": 4, "antialias": True}, "antialias"),
    (4, "UpSampling2D", {"size": 2, "interpolation": "bicubic"}, "interpolation"),
)


class _Generator:
    def __init__(self, K, seed: int, trainable: bool, max_steps: int, float_dtype: str = "float32"):
        self.K, self.L = K, K.layers
        self.float_dtype = float_dtype
        self.r = random.Random(seed)
        self.trainable = trainable
        self.max_steps = max_steps
        self.pool: list[_T] = []
        self.steps: list[str] = []
        self.families: set[str] = set()
        self.inputs: list[InputSpec] = []
        self.input_tensors: list = []
        self.counter = 0
        self.poisoned: _T | None = None
        self.shareable: list[tuple] = []  # (layer, description, input shape, family) of layers to call again

    # ------------------------------------------------------------------ plumbing
    @property
    def live(self) -> list[_T]:
        """The tensors new steps may read."""
        return [p for p in self.pool if not p.terminal and not p.closed]

    def choice(self, seq):
        return seq[self.r.randrange(len(seq))]

    def chance(self, p: float) -> bool:
        return self.r.random() < p

    def add(self, x, parents: list[_T], what: str, family: str, terminal: bool = False,
            lengths: tuple | None = None) -> _T:
        """Add a new tensor to the pool and log its step. A ``terminal`` tensor is only an output:
        Keras gives the result of 'glu' the input's static shape (its real last axis is half as
        long), so nothing may be built on it, and its logged shape is left out. ``lengths``: the
        free axis's lengths at run time, where the step computed them."""
        sources = frozenset().union(*(p.sources for p in parents))
        for p in parents:
            p.used = True
        masked = getattr(x, "_keras_mask", None) is not None
        t = _T(x, sources, masked, self.counter, terminal=terminal, family=family,
               source_family=parents[0].family if parents else "")
        if not t.static:
            keeps = family in _LENGTH_PRESERVING and parents
            t.lengths = lengths if lengths is not None else parents[0].lengths if keeps else None
        self.counter += 1
        self.pool.append(t)
        self.families.add(family)
        args = ", ".join(f"t{p.index}" for p in parents)
        shape = "(glu: half the last axis)" if terminal else t.shape
        self.steps.append(f"t{t.index} = {what}({args}) -> {shape}{' masked' if masked else ''}")
        return t

    def layer(self, family: str, name: str, parents: list[_T], config: dict, call: Callable | None = None,
              lengths: tuple | None = None):
        """Construct ``K.layers.<name>(**config)``, call it on the parents (or with ``call``), add its output."""
        layer = getattr(self.L, name)(**config)
        args = [p.x for p in parents]
        out = call(layer, args) if call else layer(args[0] if len(args) == 1 else args)
        glu = config.get("activation") == "glu"
        if name in _SHAREABLE and len(parents) == 1 and not glu:
            self.shareable.append((layer, f"{name}({_fmt(config)})", parents[0].shape, family))
        return self.add(out, parents, f"{name}({_fmt(config)})", "glu" if glu else family, terminal=glu,
                        lengths=lengths)

    def op(self, family: str, what: str, parents: list[_T], fn: Callable) -> _T:
        return self.add(fn(*[p.x for p in parents]), parents, f"ops.{what}", family)

    def fits(self, shape: tuple) -> bool:
        known = [d for d in shape[1:] if d is not None]
        return all(d >= 1 for d in known) and math.prod(known) <= MAX_ELEMENTS \
            and all(d <= MAX_SIDE for d in shape[1:-1] if d is not None)

    def activation(self, size: int | None = None) -> str | None:
        if self.chance(0.4):
            return None
        names = [a for a in ACTIVATIONS if a != "glu" or (size is not None and size % 2 == 0)]
        return self.choice(names)

    # ------------------------------------------------------------------ inputs
    def make_input(self) -> _T:
        K, r = self.K, self.r
        kind = self.choice(["seq", "seq", "img", "img", "vec", "ids", "ids", "vol", "free_seq", "free_ids"])
        if kind in ("ids", "free_ids"):
            length = None if kind == "free_ids" else self.choice([3, 5, 7])
            spec = InputSpec((length,), "int32", vocab=r.randint(4, 13))
        elif kind == "seq":
            spec = InputSpec((self.choice([3, 5, 6, 7]), r.randint(1, 6)), padded=self.chance(0.3))
        elif kind == "free_seq":
            spec = InputSpec((None, r.randint(1, 5)))
        elif kind == "img":
            spec = InputSpec((self.choice([4, 5, 7]), self.choice([3, 5, 6]), r.randint(1, 4)))
        elif kind == "vol":
            spec = InputSpec((self.choice([3, 4]), self.choice([3, 5]), 3, r.randint(1, 2)))
        else:
            spec = InputSpec((r.randint(1, 9),))
        i = len(self.inputs)
        x = K.Input(spec.shape, dtype=self.float_dtype if spec.dtype == "float32" else spec.dtype, name=f"in{i}")
        self.inputs.append(spec)
        self.input_tensors.append(x)
        t = _T(x, frozenset([i]), False, self.counter, lengths=None if None not in spec.shape else FREE_LENGTHS)
        self.counter += 1
        self.steps.append(f"t{t.index} = Input({spec.shape}, dtype={spec.dtype!r}) -> {t.shape}")
        if spec.dtype == "int32":
            return self.layer("embedding", "Embedding", [t], {"input_dim": spec.vocab, "output_dim": r.randint(2, 6),
                                                             "mask_zero": self.chance(0.6)})
        if spec.padded:
            self.pool.append(t)
            return self.layer("masking", "Masking", [t], {"mask_value": 0.0})
        self.pool.append(t)
        return t

    # ------------------------------------------------------------------ rules for any rank
    def r_dense(self, t: _T):
        if t.shape[-1] is None or t.rank > 4:
            return None
        units = self.r.randint(1, 6)
        act = self.activation(units)
        config = {"units": units, "activation": act, "use_bias": self.chance(0.8)}
        self.train_options(config)
        return self.layer("dense", "Dense", [t], config)

    def train_options(self, config: dict) -> None:
        """Regularizers and constraints (in training models): they change the loss and the update."""
        if not self.trainable:
            return
        if self.chance(0.3):
            config["kernel_regularizer"] = self.choice(["l2", "l1"])
        if self.chance(0.2) and config.get("use_bias", True):
            config["bias_regularizer"] = "l2"
        if self.chance(0.2):
            config["kernel_constraint"] = self.choice(["non_neg", "unit_norm", "max_norm"])
        if self.chance(0.15):
            config["activity_regularizer"] = "l2"

    def r_activation(self, t: _T):
        names = [a for a in ACTIVATIONS if a != "glu" or (t.shape[-1] or 1) % 2 == 0]
        return self.layer("activation_names", "Activation", [t], {"activation": self.choice(names)})

    def r_activation_layer(self, t: _T):
        r = self.r
        kind = self.choice(["ReLU", "LeakyReLU", "PReLU", "ELU", "Softmax"])
        if kind == "ReLU":
            config = {"max_value": self.choice([None, 6.0, 0.8, 1.5]), "negative_slope": self.choice([0.0, 0.1, 0.3]),
                      "threshold": self.choice([0.0, 0.0, 0.2, 0.5])}
        elif kind == "LeakyReLU":
            config = {"negative_slope": self.choice([0.3, 0.05, 1.5])}
        elif kind == "ELU":
            config = {"alpha": self.choice([1.0, 0.5, 2.0])}
        elif kind == "PReLU":
            axes = [a for a in range(1, t.rank) if self.chance(0.5)]
            if any(t.shape[a] is None for a in range(1, t.rank) if a not in axes):
                axes = [a for a in range(1, t.rank) if t.shape[a] is None] + axes
                axes = sorted(set(axes))
            config = {"shared_axes": axes or None}
        else:
            if t.masked:  # Keras adds a (batch, time) mask to the logits: only defined for rank-2 inputs
                return None
            axes = list(range(1, t.rank))
            axis = self.choice([-1, -1, self.choice(axes)] + ([sorted(r.sample(axes, 2))] if len(axes) > 1 else []))
            config = {"axis": axis}
        return self.layer("activation_layers", kind, [t], config)

    def r_layer_norm(self, t: _T):
        if t.shape[-1] is None:
            return None
        axis = -1
        # Pairs of axes Keras's torch backend can normalize: trailing, or not adjacent (it hands
        # adjacent ones to torch's layer_norm, which takes only trailing axes).
        known = [a for a in range(1, t.rank) if t.shape[a] is not None]
        pairs = [[a, b] for a in known for b in known if b > a and (b == t.rank - 1 or b - a > 1)]
        if pairs and self.chance(0.3):
            axis = self.choice(pairs)
        rms = self.chance(0.4)
        # (an epsilon of 1e-5 turns float32 rounding of a nearly constant input into errors of 1e-4)
        config = {"axis": axis, "epsilon": self.choice([1e-3, 1e-2]), "center": self.chance(0.7),
                  "scale": self.chance(0.8), "rms_scaling": rms}
        return self.layer("layer_norm_rms" if rms else "layer_norm", "LayerNormalization", [t], config)

    def r_unit_norm(self, t: _T):
        axes = list(range(1, t.rank))
        axis = -1 if self.chance(0.6) or len(axes) < 2 else sorted(self.r.sample(axes, 2))
        return self.layer("unit_norm", "UnitNormalization", [t], {"axis": axis})

    def r_batch_norm(self, t: _T):
        fresh = ("input", "embedding", "masking")
        if self.trainable and not (t.family in fresh or t.family in ("dense", "conv", "conv_channels_first")
                                   and t.source_family in fresh):
            # Batch statistics of a tensor whose mean is large against its spread (an attention's or a
            # pooling's average), or that hardly varies over the batch, are ill-conditioned in float32:
            # Keras's own step is off by 1e-4 and more there. Only data-fed tensors are normalized.
            return None
        axis = self.choice([-1, -1, 1]) if t.rank > 2 else -1
        if t.shape[axis] is None:
            return None
        config = {"axis": axis, "center": self.chance(0.8), "scale": self.chance(0.8),
                  "epsilon": self.choice([1e-3, 1e-2]), "momentum": self.choice([0.99, 0.9])}
        return self.layer("batch_norm", "BatchNormalization", [t], config)

    def r_group_norm(self, t: _T):
        if t.family in _AVERAGING:
            # (statistics over the steps of an average, which hardly varies along them, are ill-conditioned
            # in float32: Keras's own rounding then shows at 1e-4)
            return None
        axis = self.choice([-1, -1, 1]) if t.rank > 2 else -1
        c = t.shape[axis]
        if c is None:
            return None
        groups = self.choice([g for g in range(1, c + 1) if c % g == 0] + [-1])
        config = {"groups": groups, "axis": axis, "epsilon": 1e-3, "center": self.chance(0.7),
                  "scale": self.chance(0.7)}
        return self.layer("group_norm", "GroupNormalization", [t], config)

    def r_noise(self, t: _T):
        if self.trainable:
            return self.layer("activity_regularization", "ActivityRegularization", [t],
                              {"l1": self.choice([0.0, 0.01]), "l2": 0.02})
        kind = self.choice(["Dropout", "GaussianNoise", "GaussianDropout", "AlphaDropout", "Spatial",
                            "ActivityRegularization"])
        if kind == "Spatial":
            if not 3 <= t.rank <= 5:
                return None
            return self.layer("spatial_dropout", f"SpatialDropout{t.rank - 2}D", [t], {"rate": 0.4})
        config = {"ActivityRegularization": {"l1": 0.01}, "GaussianNoise": {"stddev": 0.5}}.get(kind, {"rate": 0.3})
        return self.layer("noise", kind, [t], config)

    def r_preprocessing(self, t: _T):
        if self.chance(0.5):
            scale = self.choice([1 / 255.0, 2.0, -0.5])
            return self.layer("rescaling", "Rescaling", [t], {"scale": scale, "offset": self.choice([0.0, -1.0])})
        c = t.shape[-1]
        if c is None:
            return None
        rs = np.random.default_rng(self.r.randrange(1 << 30))
        config = {"axis": -1}
        if self.chance(0.6):
            config["mean"] = [round(float(v), 3) for v in rs.normal(size=c)]
            config["variance"] = [round(float(v), 3) for v in rs.uniform(0.5, 2.0, size=c)]
        return self.layer("normalization", "Normalization", [t], config)

    def r_scalar_op(self, t: _T):
        c = self.choice([1.5, -0.5, 2.0, 0.25])
        kind = self.choice(["add", "mul", "sub", "rsub", "div"])
        fns = {"add": lambda x: x + c, "mul": lambda x: x * c, "sub": lambda x: x - c, "rsub": lambda x: c - x,
               "div": lambda x: x / c}
        return self.op("ops_scalar", f"{kind}({c})", [t], fns[kind])

    def r_unary_op(self, t: _T):
        ops = self.K.ops
        kind = self.choice(["tanh", "relu", "sigmoid", "abs", "square", "negative", "softmax", "gelu", "silu",
                            "sqrt_abs", "leaky_relu", "elu", "log1p_abs"])
        fns = {"sqrt_abs": lambda x: ops.sqrt(ops.abs(x)), "log1p_abs": lambda x: ops.log1p(ops.abs(x))}
        return self.op("ops_unary", kind, [t], fns.get(kind, getattr(ops, kind, None)))

    def r_reduce_op(self, t: _T):
        if t.rank < 3:
            return None
        axis = self.r.randint(1, t.rank - 1)
        if t.shape[axis] is None:
            return None
        keep = self.chance(0.4)
        kind = self.choice(["mean", "sum", "max", "min"])
        return self.op("ops_reduce", f"{kind}(axis={axis}, keepdims={keep})", [t],
                       lambda x: getattr(self.K.ops, kind)(x, axis=axis, keepdims=keep))

    def r_slice(self, t: _T):
        axis = self.r.randint(1, t.rank - 1)
        n = t.shape[axis]
        if n is None or n < 2:
            return None
        if t.rank >= 3 and self.chance(0.2):
            i = self.r.randrange(n)
            key = (slice(None),) * axis + (i,)
            return self.op("ops_slice", f"getitem[{axis}:{i}]", [t], lambda x: x[key])
        start = self.r.randrange(n - 1)
        stop = self.r.randint(start + 1, n)
        step = self.choice([1, 1, 2])
        key = (slice(None),) * axis + (slice(start, stop, step),)
        return self.op("ops_slice", f"getitem[{axis}:{start}:{stop}:{step}]", [t], lambda x: x[key])

    def r_shape_op(self, t: _T):
        """keras.ops that move axes: transpose, reshape, expand_dims + squeeze, matmul."""
        ops = self.K.ops
        kind = self.choice(["transpose", "reshape", "expand_squeeze", "matmul"])
        if kind == "transpose" and t.rank >= 3:
            perm = [0] + self.r.sample(range(1, t.rank), t.rank - 1)
            return self.op("ops_shape", f"transpose({perm})", [t], lambda x: ops.transpose(x, perm))
        if kind == "reshape" and t.static and t.rank >= 2:
            new = (t.size,) if t.rank > 2 else (1, t.shape[1])
            return self.op("ops_shape", f"reshape((-1, *{new}))", [t], lambda x: ops.reshape(x, (-1, *new)))
        if kind == "expand_squeeze":
            axis = self.r.randint(1, t.rank)
            return self.op("ops_shape", f"squeeze(expand_dims({axis}))", [t],
                           lambda x: ops.squeeze(ops.expand_dims(x, axis), axis=axis))
        if kind == "matmul" and t.rank == 3 and t.static:
            others = [o for o in self.live if o.rank == 3 and o.static and o.shape[-1] == t.shape[-1]
                      and str(o.x.dtype).startswith("float") and t.shape[1] * o.shape[1] <= MAX_ELEMENTS]
            if others:
                o = self.choice(others)
                return self.op("ops_matmul", "matmul(a, transpose(b))", [t, o],
                               lambda a, b: ops.matmul(a, ops.transpose(b, (0, 2, 1))))
        return None

    def r_einsum_dense(self, t: _T):
        if t.rank not in (2, 3) or not t.static:
            return None
        d, e = self.r.randint(1, 4), self.r.randint(1, 3)
        forms = {2: [("ab,bc->ac", (d,), "c")],
                 3: [("abc,cd->abd", (t.shape[1], d), "d"), ("abc,cde->abde", (t.shape[1], d, e), "de"),
                     ("abc,bcd->abd", (t.shape[1], d), "bd"), ("abc,cd->ad", (d,), "d"),
                     ("...b,bc->...c", (d,), "c")]}[t.rank]
        equation, out, bias = self.choice(forms)
        config = {"equation": equation, "output_shape": out, "bias_axes": bias if self.chance(0.7) else None,
                  "activation": self.activation()}
        if config["activation"] == "glu":
            config["activation"] = None
        return self.layer("einsum_dense", "EinsumDense", [t], config)

    def r_reshape(self, t: _T):
        if t.rank < 3 or not t.static:
            if t.rank == 2 and t.static and t.shape[1] > 1 and self.chance(0.5):
                n = t.shape[1]
                a = self.choice([f for f in range(1, n + 1) if n % f == 0])
                return self.layer("reshape", "Reshape", [t], {"target_shape": (a, n // a)})
            return None
        kind = self.choice(["Flatten", "Reshape", "Permute", "Identity"])
        if kind == "Flatten":
            return self.layer("flatten", "Flatten", [t], {})
        if kind == "Identity":
            return self.layer("identity", "Identity", [t], {})
        if kind == "Permute":
            dims = list(range(1, t.rank))
            self.r.shuffle(dims)
            return self.layer("permute", "Permute", [t], {"dims": tuple(dims)})
        shape = t.shape[1:]
        target = (-1, shape[-1]) if self.chance(0.5) else (math.prod(shape[:-1]), -1)
        return self.layer("reshape", "Reshape", [t], {"target_shape": target})

    def r_merge(self, t: _T):
        others = [o for o in self.live if o is not t and o.rank == t.rank and o.x.dtype == t.x.dtype
                  and o.shape[1:] == t.shape[1:] and str(o.x.dtype).startswith("float")
                  and (t.static or t.lengths is not None and o.lengths == t.lengths)]
        if not others:
            return self.r_concat(t)
        o = self.choice(others)
        kind = self.choice(["Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "ops_add", "ops_mul",
                            "ops_maximum"])
        if kind.startswith("ops_"):
            name = kind[4:]
            fns = {"add": lambda a, b: a + b, "mul": lambda a, b: a * b,
                   "maximum": lambda a, b: self.K.ops.maximum(a, b)}
            return self.op("ops_binary", name, [t, o], fns[name])
        return self.layer("merge", kind, [t, o], {})

    def r_concat(self, t: _T):
        if not t.static:
            return None
        axis = self.r.randint(1, t.rank - 1)
        others = [o for o in self.live if o is not t and o.rank == t.rank and o.static and o.x.dtype == t.x.dtype
                  and all(o.shape[a] == t.shape[a] for a in range(1, t.rank) if a != axis)]
        if not others:
            return None
        o = self.choice(others)
        out = list(t.shape)
        out[axis] += o.shape[axis]
        if not self.fits(tuple(out)):
            return None
        if self.chance(0.3):
            return self.op("ops_concat", f"concatenate(axis={axis})", [t, o],
                           lambda a, b: self.K.ops.concatenate([a, b], axis=axis))
        return self.layer("concatenate", "Concatenate", [t, o], {"axis": self.choice([axis, axis - t.rank])})

    def r_dot(self, t: _T):
        if t.rank not in (2, 3) or not t.static:
            return None
        others = [o for o in self.live if o is not t and o.rank == t.rank and o.static and o.shape[-1] == t.shape[-1]
                  and str(o.x.dtype).startswith("float")]
        if not others:
            return None
        o = self.choice(others)
        config = {"axes": -1 if t.rank == 2 else self.choice([2, (2, 2)]), "normalize": self.chance(0.4)}
        if t.rank == 3 and t.shape[1] * o.shape[1] > MAX_ELEMENTS:
            return None
        return self.layer("dot", "Dot", [t, o], config)

    # ------------------------------------------------------------------ spatial rules (rank 3, 4, 5)
    def spatial(self, t: _T, data_format: str) -> tuple[list, int | None]:
        """(spatial sizes, channels) of ``t`` read in ``data_format``."""
        if data_format == "channels_first":
            return list(t.shape[2:]), t.shape[1]
        return list(t.shape[1:-1]), t.shape[-1]

    def with_spatial(self, t: _T, data_format: str, sizes: list, channels: int) -> tuple:
        if data_format == "channels_first":
            return (None, channels, *sizes)
        return (None, *sizes, channels)

    def known_sizes(self, t: _T, data_format: str) -> tuple[list[list[int]], bool, int] | None:
        """(the spatial sizes in each run of the data, whether the (1-D) size is free, channels): one
        run when all are static, one per FREE_LENGTHS otherwise; None where the channel count, or
        the free length at run time, is unknown, or a free axis is not alone."""
        sizes, c = self.spatial(t, data_format)
        if c is None:
            return None
        if None not in sizes:
            return [sizes], False, c
        if len(sizes) > 1 or t.lengths is None:
            return None
        return [[m] for m in t.lengths], True, c

    def data_format(self) -> str:
        return "channels_first" if self.chance(0.25) else "channels_last"

    def r_conv(self, t: _T):
        n = t.rank - 2
        if not 1 <= n <= 3:
            return None
        fmt = self.data_format()
        known = self.known_sizes(t, fmt)
        if known is None:
            return None
        runs, free, c = known
        r = self.r
        kind = self.choice(["Conv", "Conv", "Transpose", "Depthwise", "Separable"] if n < 3 else ["Conv", "Transpose"])
        k = self.choice([1, 2, 3])
        padding = self.choice(["valid", "same"] + (["causal"] if n == 1 and kind == "Conv" else []))
        s = self.choice([1, 1, 2])
        d = self.choice([1, 2]) if s == 1 else 1
        if kind == "Transpose":
            op = self.choice([None, None] + list(range(max(s, d))))
            if op is not None and op >= s:
                op = None if s == 1 else s - 1
            outs = [[conv_transpose_length(m, k, s, d, padding, op) for m in run] for run in runs]
        else:
            outs = [[conv_length(m, k, s, d, padding) for m in run] for run in runs]
        filters = r.randint(1, 5)
        config = {"kernel_size": k, "strides": s, "padding": padding, "data_format": fmt,
                  "activation": self.activation(), "use_bias": self.chance(0.8)}
        if config["activation"] == "glu":
            config["activation"] = None
        if kind in ("Conv", "Transpose"):
            self.train_options(config)
        if kind == "Conv":
            groups = self.choice([g for g in range(1, c + 1) if c % g == 0]) if self.chance(0.3) else 1
            filters = groups * r.randint(1, 2) if groups > 1 else filters
            config.update(filters=filters, dilation_rate=d, groups=groups)
            name, channels = f"Conv{n}D", filters
        elif kind == "Transpose":
            config.update(filters=filters, dilation_rate=d, output_padding=op)
            name, channels = f"Conv{n}DTranspose", filters
        elif kind == "Depthwise":
            m = r.randint(1, 2)
            config.update(depth_multiplier=m, dilation_rate=d)
            name, channels = f"DepthwiseConv{n}D", c * m
        else:
            config.update(filters=filters, dilation_rate=d, depth_multiplier=r.randint(1, 2))
            name, channels = f"SeparableConv{n}D", filters
        if min(min(o) for o in outs) < 1 or not self.fits(self.with_spatial(t, fmt, _out(outs, free), channels)):
            return None
        family = {"Conv": "conv", "Transpose": "conv_transpose", "Depthwise": "conv_depthwise",
                  "Separable": "conv_separable"}[kind] + ("_channels_first" if fmt == "channels_first" else "")
        return self.layer(family, name, [t], config, lengths=_lengths(outs, free))

    def r_pool(self, t: _T):
        n = t.rank - 2
        if not 1 <= n <= 3:
            return None
        fmt = self.data_format()
        known = self.known_sizes(t, fmt)
        if known is None:
            return None
        runs, free, c = known
        kind = self.choice(["Max", "Average", "GlobalMax", "GlobalAverage"])
        family = "pool" + ("_channels_first" if fmt == "channels_first" else "")
        if kind.startswith("Global"):
            if t.masked and n == 1 and fmt == "channels_first":
                return None  # Keras broadcasts the (batch, steps) mask against the wrong axis and fails
            config = {"data_format": fmt, "keepdims": self.chance(0.3)}
            return self.layer(family, f"{kind}Pooling{n}D", [t], config)
        p = self.choice([1, 2, 3])
        s = self.choice([None, 1, 2])
        padding = self.choice(["valid", "same"])
        outs = [[conv_length(m, p, s or p, 1, padding) for m in run] for run in runs]
        if min(min(o) for o in outs) < 1:
            return None
        if kind == "Average" and padding == "same" and any(same_padding(m, p, s or p) % 2
                                                           for run in runs for m in run):
            # Keras's torch backend pads 'same' unevenly with zeros it then counts in the mean, unlike
            # its TensorFlow and JAX backends (and graphc), which leave padding out of the count.
            return None
        config = {"pool_size": p, "strides": s, "padding": padding, "data_format": fmt}
        return self.layer(family, f"{kind}Pooling{n}D", [t], config, lengths=_lengths(outs, free))

    def r_masked_pool(self, t: _T):
        """GlobalAveragePooling1D reads the mask (channels_last only in Keras)."""
        if t.rank != 3 or t.shape[-1] is None:
            return None
        return self.layer("masked_pool" if t.masked else "pool", "GlobalAveragePooling1D", [t], {})

    def r_pad_crop(self, t: _T):
        n = t.rank - 2
        if not 1 <= n <= 3:
            return None
        fmt = "channels_last" if n == 1 else self.data_format()
        known = self.known_sizes(t, fmt)
        if known is None:
            return None
        runs, free, c = known
        smallest = [min(sizes) for sizes in zip(*runs)]
        kind = self.choice(["ZeroPadding", "Cropping", "UpSampling"])
        config: dict = {} if n == 1 else {"data_format": fmt}
        if kind == "ZeroPadding":
            pads = [(self.r.randint(0, 2), self.r.randint(0, 2)) for _ in range(n)]
            config["padding"] = pads[0] if n == 1 else tuple(pads)
            outs = [[m + a + b for m, (a, b) in zip(run, pads)] for run in runs]
        elif kind == "Cropping":
            crops = [(self.r.randint(0, (m - 1) // 2), self.r.randint(0, (m - 1) // 2)) for m in smallest]
            config["cropping"] = crops[0] if n == 1 else tuple(crops)
            outs = [[m - a - b for m, (a, b) in zip(run, crops)] for run in runs]
        else:
            factors = [self.choice([1, 2, 3]) for _ in range(n)]
            config["size"] = factors[0] if n == 1 else tuple(factors)
            if n == 2:
                config["interpolation"] = self.choice(["nearest", "bilinear"])
            outs = [[m * f for m, f in zip(run, factors)] for run in runs]
        if min(min(o) for o in outs) < 1 or not self.fits(self.with_spatial(t, fmt, _out(outs, free), c)):
            return None
        family = {"ZeroPadding": "zero_padding", "Cropping": "cropping", "UpSampling": "upsampling"}[kind]
        if kind == "UpSampling" and config.get("interpolation") == "bilinear":
            family = "upsampling_bilinear"
        return self.layer(family, f"{kind}{n}D", [t], config, lengths=_lengths(outs, free))

    def r_image(self, t: _T):
        if t.rank != 4:
            return None
        fmt = self.data_format()
        sizes, c = self.spatial(t, fmt)
        if None in sizes or c is None:
            return None
        h, w = self.r.randint(1, 9), self.r.randint(1, 9)
        if not self.fits(self.with_spatial(t, fmt, [h, w], c)):
            return None
        if self.chance(0.3):
            h, w = min(h, sizes[0]), min(w, sizes[1])
            return self.layer("center_crop", "CenterCrop", [t], {"height": h, "width": w, "data_format": fmt})
        config = {"height": h, "width": w, "interpolation": self.choice(["nearest", "bilinear"]), "data_format": fmt}
        aspect = self.choice([None, None, "crop_to_aspect_ratio", "pad_to_aspect_ratio"])
        if aspect:
            config[aspect] = True
        return self.layer("resizing", "Resizing", [t], config)

    # ------------------------------------------------------------------ sequences
    def r_recurrent(self, t: _T):
        if t.rank != 3 or t.shape[-1] is None:
            return None
        r = self.r
        units = r.randint(1, 5)
        cell_kind = self.choice(["LSTM", "GRU", "SimpleRNN"])
        seqs = self.chance(0.5)

        def cell_config(kind):
            config = {"units": units, "use_bias": self.chance(0.8)}
            if self.chance(0.2):
                config["activation"] = self.choice(["relu", "sigmoid", "softsign"])
            if kind == "GRU" and self.chance(0.3):
                config["reset_after"] = False
            return config

        wrap = self.choice(["plain", "plain", "bidirectional", "rnn"])
        config = cell_config(cell_kind)
        if wrap == "plain":
            config.update(return_sequences=seqs, go_backwards=self.chance(0.25))
            family = "recurrent_masked" if t.masked else "recurrent"
            if self.chance(0.2):
                config["return_state"] = True
                outs = getattr(self.L, cell_kind)(**config)(t.x)
                what = f"{cell_kind}({_fmt(config)})"
                first = self.add(outs[0], [t], what + "[0]", family)
                for i, state in enumerate(outs[1:], 1):
                    self.add(state, [t], what + f"[{i}]", "recurrent_state")
                return first
            return self.layer(family, cell_kind, [t], config)
        if wrap == "bidirectional":
            mode = self.choice(["concat", "sum", "mul", "ave", None])
            inner = getattr(self.L, cell_kind)(**config, return_sequences=seqs)
            layer = self.L.Bidirectional(inner, merge_mode=mode)
            out = layer(t.x)
            what = f"Bidirectional({cell_kind}({_fmt(config)}, return_sequences={seqs}), merge_mode={mode})"
            if mode is None:
                a = self.add(out[0], [t], what + "[0]", "bidirectional")
                self.add(out[1], [t], what + "[1]", "bidirectional")
                return a
            return self.add(out, [t], what, "bidirectional_masked" if t.masked else "bidirectional")
        n_cells = self.choice([1, 1, 2])
        cells = [getattr(self.L, f"{cell_kind}Cell")(**cell_config(cell_kind)) for _ in range(n_cells)]
        layer = self.L.RNN(cells if n_cells > 1 else cells[0], return_sequences=seqs)
        what = f"RNN({n_cells}x{cell_kind}Cell(units={units}), return_sequences={seqs})"
        return self.add(layer(t.x), [t], what, "rnn_cells")

    def r_attention(self, t: _T):
        if t.rank not in (3, 4) or not t.static or t.shape[-1] is None:
            return None
        r = self.r
        kind = self.choice(["MultiHeadAttention", "MultiHeadAttention", "Attention", "AdditiveAttention"])
        if t.rank == 4 and kind != "MultiHeadAttention":
            return None
        # Keras's MultiHeadAttention erases the masks of the tensors it reads, and so the mask every
        # other layer reading them after it (in Keras's execution order) gets: it may take a masked
        # tensor only as its sole reader.
        mha = kind == "MultiHeadAttention"
        if mha and t.masked and (t.used or self.trainable):
            return None  # (and training: Keras's gradient of a fully masked query row is torch's, n times too large)

        def usable(o: _T) -> bool:
            if o.rank != t.rank or not o.static or not str(o.x.dtype).startswith("float"):
                return False
            if mha and o.masked and o.used:
                return False
            if kind != "MultiHeadAttention" and o.shape[-1] != t.shape[-1]:
                return False
            return t.rank == 3 or o.shape[1:-1] == t.shape[1:-1]

        values = [o for o in self.live if usable(o)]
        v = t if self.chance(0.5) or not values else self.choice(values)
        family = "attention_masked" if t.masked or v.masked else "attention"
        if mha:
            for read in (t, v):
                read.closed = read.closed or read.masked
        if kind == "MultiHeadAttention":
            config = {"num_heads": r.randint(1, 3), "key_dim": r.randint(1, 4),
                      "value_dim": self.choice([None, r.randint(1, 3)]), "use_bias": self.chance(0.8)}
            if self.chance(0.3):
                config["output_shape"] = r.randint(1, 4)
            if t.rank == 4:
                config["attention_axes"] = self.choice([(1,), (2,), (1, 2)])
            if not self.trainable and self.chance(0.2):
                config["dropout"] = 0.25  # inference: no effect
            causal = t.rank == 3 and v.shape[1] == t.shape[1] and self.chance(0.3)
            call = {"use_causal_mask": True} if causal else {}
            # Scores only where Keras gets them right: its static shape of them is wrong for other
            # attention axes and for keys of another length than the queries; with a mask (padding or
            # causal) its eager scores carry that mask, which later layers and its loss then apply.
            if t.rank == 3 and v.shape[1] == t.shape[1] and not (causal or t.masked or v.masked) \
                    and self.chance(0.2):
                call["return_attention_scores"] = True
                out = self.L.MultiHeadAttention(**config)(t.x, v.x, **call)
                what = f"{kind}({_fmt(config)}) called with {call}"
                first = self.add(out[0], [t] if v is t else [t, v], what + "[0]", family)
                self.add(out[1], [t] if v is t else [t, v], what + "[1]", "attention_scores")
                return first
            parents = [t] if v is t else [t, v]
            what = f"{kind}({_fmt(config)}) called with {call}"
            return self.add(self.L.MultiHeadAttention(**config)(t.x, v.x, **call), parents, what, family)
        config = {"use_scale": self.chance(0.5)}
        if kind == "Attention":
            config["score_mode"] = self.choice(["dot", "concat"])
        if not self.trainable and self.chance(0.2):
            config["dropout"] = 0.3  # inference: no effect
        causal = v.shape[1] == t.shape[1] and self.chance(0.3)
        scores = self.chance(0.2) and not (causal or t.masked or v.masked)
        parents = [t] if v is t else [t, v]
        what = f"{kind}({_fmt(config)}) called with use_causal_mask={causal}, return_attention_scores={scores}"
        out = getattr(self.L, kind)(**config)([t.x, v.x], use_causal_mask=causal, return_attention_scores=scores)
        if scores:
            first = self.add(out[0], parents, what + "[0]", family)
            self.add(out[1], parents, what + "[1]", "attention_scores")
            return first
        return self.add(out, parents, what, family)

    def r_time_distributed(self, t: _T):
        if t.rank != 3 or t.shape[-1] is None:
            return None
        units = self.r.randint(1, 4)
        layer = self.L.TimeDistributed(self.L.Dense(units, activation=self.choice([None, "tanh"])))
        return self.add(layer(t.x), [t], f"TimeDistributed(Dense({units}))", "time_distributed")

    def r_conv_lstm(self, t: _T):
        if t.rank != 4 or not t.static or t.masked:
            return None
        k = self.choice([1, 2, 3])
        padding = self.choice(["valid", "same"])
        if padding == "valid" and t.shape[2] < k:
            return None
        config = {"filters": self.r.randint(1, 3), "kernel_size": k, "padding": padding,
                  "return_sequences": self.chance(0.5)}
        return self.layer("conv_lstm", "ConvLSTM1D", [t], config)

    def r_shared(self, t: _T):
        """Call a layer made before once more, on another tensor of the shape it was built for."""
        fits = [entry for entry in self.shareable if entry[2] == t.shape and t.static]
        if not fits:
            return None
        layer, what, _, family = self.choice(fits)
        return self.add(layer(t.x), [t], f"shared {what}", "shared_layer")

    def r_nested(self, t: _T):
        """A small functional model (Dense, then LayerNormalization or an activation) called as a layer."""
        if not t.static or t.masked or t.shape[-1] is None:
            return None
        inner_in = self.K.Input(t.shape[1:])
        units = self.r.randint(1, 5)
        h = self.L.Dense(units, activation=self.choice([None, "relu", "tanh"]))(inner_in)
        second = self.choice(["LayerNormalization", "Activation"])
        h = self.L.LayerNormalization()(h) if second == "LayerNormalization" else self.L.Activation("gelu")(h)
        inner = self.K.Model(inner_in, h)
        return self.add(inner(t.x), [t], f"Model(Dense({units}) -> {second})", "nested_model")

    # ------------------------------------------------------------------ vectors
    def r_repeat(self, t: _T):
        if t.rank != 2 or t.shape[-1] is None:
            return None
        n = self.r.randint(1, 5)
        if n * t.shape[-1] > MAX_ELEMENTS:
            return None
        return self.layer("repeat_vector", "RepeatVector", [t], {"n": n})

    # ------------------------------------------------------------------ driver
    RULES: tuple[tuple[str, int], ...] = (
        ("r_dense", 5), ("r_activation", 3), ("r_activation_layer", 4), ("r_layer_norm", 2), ("r_unit_norm", 1),
        ("r_batch_norm", 2), ("r_group_norm", 2), ("r_noise", 2), ("r_preprocessing", 2), ("r_scalar_op", 2),
        ("r_unary_op", 2), ("r_reduce_op", 1), ("r_slice", 2), ("r_shape_op", 2), ("r_einsum_dense", 2),
        ("r_reshape", 2),
        ("r_merge", 4), ("r_concat", 1), ("r_dot", 1), ("r_conv", 8), ("r_pool", 3), ("r_masked_pool", 1),
        ("r_pad_crop", 4), ("r_image", 2), ("r_recurrent", 5), ("r_attention", 4), ("r_time_distributed", 1),
        ("r_conv_lstm", 1), ("r_repeat", 2), ("r_shared", 2), ("r_nested", 1),
    )

    def step(self, t: _T) -> _T | None:
        names = [n for n, w in self.RULES for _ in range(w)]
        for _ in range(12):
            out = getattr(self, self.choice(names))(t)
            if out is not None:
                return out
        return None

    def build(self, poison: tuple | None):
        n_inputs = 1 if self.chance(0.7) else 2
        heads = [self.make_input() for _ in range(n_inputs)]
        n_steps = self.r.randint(3, self.max_steps)
        poison_at = self.r.randrange(n_steps) if poison is not None else None
        for i in range(n_steps):
            if i < len(heads):
                t = heads[i]
            else:
                floats = [p for p in self.live if str(p.x.dtype).startswith("float")]
                if not floats:
                    break
                t = floats[-1] if self.chance(0.65) else self.choice(floats)
            if i == poison_at:
                self.apply_poison(t, poison)
            out = self.step(t)
            if out is not None and i < len(heads):
                heads[i] = out
        # Every branch ends in an output: the newest tensors nothing consumed (at most three).
        leaves = [p for p in self.pool if not p.used and not self.is_input(p)]
        outputs = leaves[-3:] or [self.pool[-1]]
        if self.poisoned is not None and all(o is not self.poisoned for o in outputs):
            outputs.append(self.poisoned)
        for i in range(n_inputs):
            if not any(i in o.sources for o in outputs):
                mine = [p for p in self.pool if i in p.sources and not self.is_input(p)]
                outputs.append(mine[-1] if mine else self.add_dense(self.pool_input(i)))
        xs = [o.x for o in outputs]
        ins = self.input_tensors
        return self.K.Model(ins[0] if len(ins) == 1 else ins, xs[0] if len(xs) == 1 else xs)

    def is_input(self, t: _T) -> bool:
        return any(t.x is x for x in self.input_tensors)

    def pool_input(self, i: int) -> _T:
        return next(p for p in self.pool if p.x is self.input_tensors[i])

    def add_dense(self, t: _T) -> _T:
        return self.layer("dense", "Dense", [t], {"units": 2})

    def apply_poison(self, t: _T, poison) -> None:
        """Call the poisoned layer on ``t`` brought to the rank it takes (it must refuse before it returns)."""
        rank, name, config, _ = poison
        x = t
        if x.rank > rank:
            x = self.layer("flatten", "Flatten", [x], {})
        while x.rank < rank:
            x = self.op("ops_expand", "expand_dims(-1)", [x], lambda v: self.K.ops.expand_dims(v, -1))
        self.poisoned = self.layer("poison", name, [x], dict(config), call=lambda layer, args: layer(args[0], args[0])
                                   if name == "MultiHeadAttention" else layer(args[0]))


def _out(outs: list[list[int]], free: bool) -> list[int | None]:
    """The static output sizes of a step computed for each run of the data."""
    return [None] if free else outs[0]


def _lengths(outs: list[list[int]], free: bool) -> tuple | None:
    """The free output length in each run of the data."""
    return tuple(o[0] for o in outs) if free else None


def _fmt(config: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in config.items())


def random_model(K, seed: int, *, trainable: bool = False, max_steps: int = 7, poison: tuple | None = None,
                 float_dtype: str = "float32") -> RandomModel:
    """The model of ``seed``, built with library ``K`` (``keras`` or ``graphc``).

    ``float_dtype="float64"`` gives the same architecture with float64 inputs (with Keras's floatx set
    to float64 too, a double-precision twin that serves as the exact answer).
    """
    gen = _Generator(K, seed, trainable, max_steps, float_dtype)
    model = gen.build(poison)
    return RandomModel(model, gen.inputs, gen.steps, gen.families)
