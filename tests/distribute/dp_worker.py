"""One rank of the data-parallel tests, started by tests/distribute/test_data_parallel*.py either with the
environment torchrun sets (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT; ENGINE gloo) or by mpirun (ENGINE mpi).

    python dp_worker.py MODE OUT TARGET BATCH [MODEL [ENGINE]]

MODE: ``train`` fits MODEL (:data:`MODELS`: mlp, conv_bn, lstm, embedding; default mlp) on its data for two epochs
(``shuffle=True``) and saves the weights and the logged losses to OUT (``{rank}`` in OUT becomes the rank);
``die`` makes rank 1 exit (status 3) after its first batch, ``kill`` makes it kill itself with SIGKILL
there and ``hang`` makes it stop answering there; rank 0, whose collective must then fail, saves the error
it got; ``collectives`` saves what :func:`collectives` gets (no model). TARGET: ``reference`` (the tests'
default backend) or ``native`` (``graphc.build``). ENGINE: gloo (default) or mpi."""

from __future__ import annotations

import os
import signal
import sys
import time
import traceback

import numpy as np

SHUFFLE_SEED = 1234  # np.random's seed before fit: rank 0 draws the shuffling seed from it
SAMPLES = 48
EPOCHS = 2
BN_MOMENTUM = 0.5  # moving statistics that follow the last few batches, so a wrong average shows


def _mlp(graphc):
    x = graphc.Input(shape=(5,))
    h = graphc.layers.Dense(8, activation="tanh")(x)
    return x, graphc.layers.Dense(2)(h)


def conv_bn_layers(graphc) -> list:
    """The conv model's layers, in order (the test's twin calls the same layers on each half of a batch)."""
    layers = graphc.layers
    return [layers.Conv2D(3, 3, name="conv"), layers.BatchNormalization(momentum=BN_MOMENTUM, name="bn"),
            layers.Activation("relu"), layers.Flatten(), layers.Dense(2, name="head")]


def apply_layers(layer_list: list, x):
    for layer in layer_list:
        x = layer(x)
    return x


def _conv_bn(graphc):
    x = graphc.Input(shape=(6, 6, 2))
    return x, apply_layers(conv_bn_layers(graphc), x)


def _lstm(graphc):
    x = graphc.Input(shape=(5, 3))
    h = graphc.layers.LSTM(4)(x)
    return x, graphc.layers.Dense(2)(h)


VOCABULARY = 2048  # 2048 x 128 float32: 1 MiB, a table whose gradient the ranks exchange by rows


def _embedding(graphc):
    x = graphc.Input(shape=(6,), dtype="int32")
    h = graphc.layers.GlobalAveragePooling1D()(graphc.layers.Embedding(VOCABULARY, 128)(x))
    return x, graphc.layers.Dense(2)(h)


MODELS = {"mlp": _mlp, "conv_bn": _conv_bn, "lstm": _lstm, "embedding": _embedding}
INPUT_SHAPES = {"mlp": (5,), "conv_bn": (6, 6, 2), "lstm": (5, 3), "embedding": (6,)}


def compile_model(model, target: str):
    import graphc

    model.compile(optimizer=graphc.optimizers.SGD(learning_rate=0.1), loss="mse", metrics=["mae"])
    if target == "native":
        graphc.build(model, target="native", training=True, threads=1)
    return model


def build(target: str, model: str = "mlp"):
    import graphc

    graphc.utils.set_random_seed(0)
    x, y = MODELS[model](graphc)
    return compile_model(graphc.Model(x, y), target)


def data(model: str = "mlp"):
    rng = np.random.default_rng(7)
    if model == "embedding":  # ids spread over the table, the first ones most often (rows shared by the ranks)
        x = np.minimum(rng.geometric(0.01, (SAMPLES,) + INPUT_SHAPES[model]), VOCABULARY - 1).astype(np.int32)
        flat = np.cos(x.astype(np.float32))
    else:
        x = rng.standard_normal((SAMPLES,) + INPUT_SHAPES[model]).astype(np.float32)
        flat = x.reshape(SAMPLES, -1)
    return x, np.stack([np.sin(flat.sum(axis=1)), flat[:, 0] * flat[:, 1]], axis=1).astype(np.float32)


def rank_arrays(rank: int) -> dict[str, np.ndarray]:
    """What rank ``rank`` contributes to :func:`collectives` (odd sizes, several dtypes)."""
    base = np.arange(11, dtype=np.float64) * (rank + 1) + 0.25
    return {"f32": base.astype(np.float32), "f64": base.reshape(1, 11) / 3, "i64": np.arange(5, dtype=np.int64) + rank,
            "grid": np.full((3, 4), rank + 0.5, np.float32), "mask": np.arange(6) % (rank + 2) == 0,
            "scalar": np.asarray(rank + 7, np.int32)}


def collectives(engine: str) -> dict[str, np.ndarray]:
    """DataParallel's public collectives with 8-byte buckets (so every array goes in several pieces):
    in-place sums of f32, f64 and i64, broadcasts of grid, mask and scalar."""
    from graphc.distribute import DataParallel

    distribution = DataParallel(engine, timeout=float(os.environ.get("DP_TIMEOUT", "60")), bucket_mb=8 / 2 ** 20)
    arrays = rank_arrays(distribution.rank)
    for name in ("f32", "f64", "i64"):
        distribution.all_reduce_sum(arrays[name], f"summing {name}")
    for name in ("grid", "mask", "scalar"):
        arrays[name] = distribution.broadcast(arrays[name], f"broadcasting {name}")
    return {"rank": np.asarray(distribution.rank), "world": np.asarray(distribution.world_size), **arrays}


def main(argv: list[str]) -> int:
    from graphc.callbacks import LambdaCallback
    from graphc.distribute import DataParallel

    mode, out, target, batch = argv[0], argv[1], argv[2], int(argv[3])
    name = argv[4] if len(argv) > 4 else "mlp"
    engine = argv[5] if len(argv) > 5 else "gloo"
    if mode == "collectives":
        got = collectives(engine)
        np.savez(out.format(rank=int(got["rank"])), **got)
        return 0
    distribution = DataParallel(engine, timeout=float(os.environ.get("DP_TIMEOUT", "60")))
    rank = distribution.rank
    out = out.format(rank=rank)
    model = build(target, name)
    x, y = data(name)
    np.random.seed(SHUFFLE_SEED)
    callbacks = []
    if rank == 1 and mode != "train":
        leave = {"die": lambda: os._exit(3), "kill": lambda: os.kill(os.getpid(), signal.SIGKILL),
                 "hang": lambda: time.sleep(3600)}[mode]
        callbacks.append(LambdaCallback(on_train_batch_end=lambda step, logs: leave()))
    try:
        history = model.fit(x, y, batch_size=batch, epochs=EPOCHS, shuffle=True, verbose=0, callbacks=callbacks,
                            distribution=distribution)
    except Exception as exc:  # the surviving rank reports what it got
        np.savez(out, error=f"{type(exc).__name__}: {exc}", trace=traceback.format_exc())
        return 1
    np.savez(out, loss=np.asarray(history.history["loss"]), **{f"w{i}": w for i, w in enumerate(model.get_weights())})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
