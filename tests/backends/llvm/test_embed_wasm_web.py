"""examples/embed_wasm/web: a page that runs a model's .wasm in the browser, driven in headless Chromium.

The page is served on localhost beside the model's NAME.wasm (and NAME.weights for external
weights); Chromium loads it, the page's hand-written WASI imports let the module read the weights
file, and the outputs it prints into the page (read with ``--dump-dom``) must equal this machine's
native library on the same inputs. Needs Chromium (Debian: ``apt-get install chromium``) and the
wasm32-wasi toolchain; skips, saying which is missing, without them.
"""

from __future__ import annotations

import functools
import html
import re
import shutil
import subprocess
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

import graphc
from graphc import examples
from tests.backends.llvm.test_cross_aarch64 import _require_toolchain

WASM = "wasm32-wasi"
PAGE = Path(__file__).resolve().parents[3] / "examples" / "embed_wasm" / "web"
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def _browser() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    pytest.skip(f"the browser test needs Chromium (`apt-get install chromium`); none of {', '.join(BROWSERS)} "
                "is on PATH")


class _Quiet(SimpleHTTPRequestHandler):
    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, ".wasm": "application/wasm",
                      ".js": "text/javascript"}

    def log_message(self, *args):
        pass


@pytest.fixture
def serve():
    """Serves a directory on localhost for one test; yields a function directory -> base URL."""
    servers = []

    def start(directory: Path) -> str:
        server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(directory)))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _page(directory: Path) -> None:
    for name in ("index.html", "graphc_wasm.js"):
        shutil.copy(PAGE / name, directory / name)


def _open(url: str) -> tuple[str, str]:
    """The page's status line and printed outputs after Chromium ran it."""
    proc = subprocess.run([_browser(), "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=60000",
                           "--dump-dom", url], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    status = re.search(r'<p id="status">(.*?)</p>', proc.stdout, re.S)
    outputs = re.search(r'<pre id="outputs">(.*?)</pre>', proc.stdout, re.S)
    assert status and outputs, proc.stdout[-2000:]
    return html.unescape(status.group(1)), html.unescape(outputs.group(1))


def pattern_inputs(native, batch: int) -> list[np.ndarray]:
    """What the page's patternInputs makes: element i of input k is ((37 i + 11 k) mod 101) / 101 - 0.5
    (floats) or (7 i + 3 k) mod 13 + 1 (integers), free dimensions ``batch``."""
    arrays = []
    for k, (info, (_, dtype)) in enumerate(zip(native.library.inputs, native._in_dtypes)):
        shape = tuple(batch if d is None else d for d in info.shape)
        i = np.arange(int(np.prod(shape)), dtype=np.int64)
        values = ((37 * i + 11 * k) % 101) / 101 - 0.5 if np.dtype(dtype).kind == "f" else (7 * i + 3 * k) % 13 + 1
        arrays.append(values.astype(dtype).reshape(shape))
    return arrays


def _printed(text: str) -> dict[str, np.ndarray]:
    out = {}
    for line in text.strip().splitlines():
        name, shape, *values = line.split(" ")
        out[name] = np.array([float(v) for v in values]).reshape([int(d) for d in shape.split("x")])
    return out


@pytest.mark.parametrize(("name", "weights", "batch"), [("mlp", "external", 2), ("qa_two_inputs", "embedded", 2),
                                                        ("inception", "external", 1)])
def test_the_page_prints_the_host_outputs_in_headless_chromium(name, weights, batch, tmp_path, serve):
    _browser()
    _require_toolchain(WASM)
    native = graphc.build(examples.build(name, seed=5), target="native")
    native.export_library(tmp_path, name=name, triple=WASM, weights=weights)
    _page(tmp_path)
    status, printed = _open(f"{serve(tmp_path)}/index.html?model={name}&batch={batch}&weights={weights}")
    assert status.startswith("done:"), status
    got = _printed(printed)
    arrays = pattern_inputs(native, batch)
    want = native.run(dict(zip([n for n, _ in native._in_dtypes], arrays)))
    assert list(got) == list(native.output_names)
    for (key, w), g in zip(want.items(), got.values()):
        assert g.shape == w.shape, key
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5 * float(np.max(np.abs(w))), err_msg=key)


def test_the_page_reports_a_corrupt_weights_file(tmp_path, serve):
    _browser()
    _require_toolchain(WASM)
    native = graphc.build(examples.build("mlp", seed=5), target="native")
    files = native.export_library(tmp_path, name="mlp", triple=WASM, weights="external")
    blob = bytearray(files["weights"].read_bytes())
    blob[-1] ^= 0xFF  # one flipped bit of the last weight: its checksum no longer matches
    files["weights"].write_bytes(bytes(blob))
    _page(tmp_path)
    status, printed = _open(f"{serve(tmp_path)}/index.html?model=mlp&weights=external")
    assert status.startswith("failed:") and "checksum" in status.lower(), status
    assert printed == ""
