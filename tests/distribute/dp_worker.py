"""One rank of the data-parallel tests (started by tests/distribute/test_data_parallel.py with the
environment torchrun sets: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT).

    python dp_worker.py MODE OUT TARGET BATCH  (MODE: train | die; TARGET: reference | native)

``train`` fits the model of :func:`build` on :func:`data` for two epochs (``shuffle=True``) and saves the
weights and the logged losses to OUT; ``die`` makes rank 1 exit after its first batch, and rank 0 (whose
collective must then fail) saves the error it got."""

from __future__ import annotations

import os
import sys
import traceback

import numpy as np

SHUFFLE_SEED = 1234  # np.random's seed before fit: rank 0 draws the shuffling seed from it
SAMPLES = 48


def build(target: str):
    import graphc
    from graphc import Input, Model, layers, optimizers

    graphc.utils.set_random_seed(0)
    x = Input(shape=(5,))
    h = layers.Dense(8, activation="tanh")(x)
    model = Model(x, layers.Dense(2)(h))
    model.compile(optimizer=optimizers.SGD(learning_rate=0.1), loss="mse", metrics=["mae"])
    if target == "native":
        graphc.build(model, target="native", training=True, threads=1)
    return model


def data():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((SAMPLES, 5)).astype(np.float32)
    return x, np.stack([np.sin(x.sum(axis=1)), x[:, 0] * x[:, 1]], axis=1).astype(np.float32)


def main(argv: list[str]) -> int:
    from graphc.callbacks import LambdaCallback
    from graphc.distribute import DataParallel

    mode, out, target, batch = argv[0], argv[1], argv[2], int(argv[3])
    rank = int(os.environ["RANK"])
    model = build(target)
    x, y = data()
    np.random.seed(SHUFFLE_SEED)
    distribution = DataParallel(timeout=float(os.environ.get("DP_TIMEOUT", "60")))
    callbacks = []
    if mode == "die" and rank == 1:
        callbacks.append(LambdaCallback(on_train_batch_end=lambda step, logs: os._exit(3)))
    try:
        history = model.fit(x, y, batch_size=batch, epochs=2, shuffle=True, verbose=0, callbacks=callbacks,
                            distribution=distribution)
    except Exception as exc:  # the surviving rank reports what it got
        np.savez(out, error=f"{type(exc).__name__}: {exc}", trace=traceback.format_exc())
        return 1
    np.savez(out, loss=np.asarray(history.history["loss"]), **{f"w{i}": w for i, w in enumerate(model.get_weights())})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
