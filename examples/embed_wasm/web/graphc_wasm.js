// graphc_wasm.js -- run a model compiled by graphc for wasm32-wasi (NAME.wasm) in a browser.
//
// NAME.wasm is a WASI reactor exporting graphc's C ABI (graphc.h), malloc, free and its memory.
// Browsers have no WASI, so this file gives the module the few WASI calls it makes: a clock,
// stdout/stderr to the console, and one preopened directory "." holding files in memory (the
// weights file, for a model built with --weights external). Everything else answers ENOSYS.
//
//   const model = await GraphcModel.load("mlp.wasm", {weights: "mlp.weights"});
//   const outputs = model.run([{data: Float32Array, shape: [2, 64]}]);   // [{name, shape, data}]

const ESUCCESS = 0, EBADF = 8, EINVAL = 28, ENOENT = 44, ENOSYS = 52;
const PREOPEN_FD = 3;
const GC_MAX_RANK = 8;
// wasm32 layouts (4-byte pointers and size_t):
//   gc_tensor_t      {i32 dtype, i32 rank, i64 shape[8], u32 data, u32 size_bytes}       80 bytes
//   gc_tensor_desc_t {u32 name, i32 dtype, i32 rank, pad, i64 shape[8], u32 dim_names[8]} 112 bytes
//   gc_options_t     {u32 struct_size, i32 num_threads, allocator (3 x u32), u32 weights_path, ...}
const TENSOR_BYTES = 80, TENSOR_SHAPE = 8, TENSOR_DATA = 72, TENSOR_SIZE = 76;
const DESC_BYTES = 112, DESC_SHAPE = 16;
const OPTIONS_BYTES = 256, OPTIONS_WEIGHTS_PATH = 20;
export const DTYPES = {1: Float32Array, 2: Float64Array, 3: Int32Array, 4: BigInt64Array, 5: Int8Array,
                       6: Uint8Array, 7: Uint8Array};

export class GraphcError extends Error {}

// The WASI imports the module needs, over `files` (name -> Uint8Array) in the directory ".".
export function wasiImports(files, getMemory, log = console.log) {
  const open = new Map();  // fd -> {data, pos}
  let nextFd = PREOPEN_FD + 1;
  const view = () => new DataView(getMemory().buffer);
  const bytes = () => new Uint8Array(getMemory().buffer);
  const lines = {1: "", 2: ""};
  const wasi = {
    clock_time_get(id, precision, out) {
      view().setBigUint64(out, BigInt(Math.round(performance.now() * 1e6)), true);
      return ESUCCESS;
    },
    fd_write(fd, iovs, count, written) {
      if (fd !== 1 && fd !== 2) return EBADF;
      let total = 0;
      for (let i = 0; i < count; i++) {
        const ptr = view().getUint32(iovs + 8 * i, true), len = view().getUint32(iovs + 8 * i + 4, true);
        lines[fd] += new TextDecoder().decode(bytes().slice(ptr, ptr + len));
        total += len;
      }
      const parts = lines[fd].split("\n");
      lines[fd] = parts.pop();
      parts.forEach((line) => log(line));
      view().setUint32(written, total, true);
      return ESUCCESS;
    },
    fd_prestat_get(fd, out) {
      if (fd !== PREOPEN_FD) return EBADF;
      view().setUint8(out, 0);  // a directory
      view().setUint32(out + 4, 1, true);  // its name: "."
      return ESUCCESS;
    },
    fd_prestat_dir_name(fd, path, len) {
      if (fd !== PREOPEN_FD || len < 1) return EBADF;
      bytes()[path] = 46;  // "."
      return ESUCCESS;
    },
    fd_fdstat_get(fd, out) {
      const type = fd === PREOPEN_FD ? 3 : open.has(fd) ? 4 : fd <= 2 ? 2 : -1;  // directory, file, tty
      if (type < 0) return EBADF;
      view().setUint8(out, type);
      view().setUint16(out + 2, 0, true);
      view().setBigUint64(out + 8, 0xffffffffffffffffn, true);  // every right
      view().setBigUint64(out + 16, 0xffffffffffffffffn, true);
      return ESUCCESS;
    },
    path_open(dirfd, dirflags, path, len, oflags, rights, inheriting, fdflags, out) {
      if (dirfd !== PREOPEN_FD) return EBADF;
      const name = new TextDecoder().decode(bytes().slice(path, path + len)).replace(/^\.\//, "");
      if (oflags !== 0) return ENOSYS;  // read-only: no creating or truncating
      if (!(name in files)) return ENOENT;
      open.set(nextFd, {data: files[name], pos: 0});
      view().setUint32(out, nextFd++, true);
      return ESUCCESS;
    },
    fd_filestat_get(fd, out) {
      const file = open.get(fd);
      if (!file) return EBADF;
      new Uint8Array(getMemory().buffer, out, 64).fill(0);
      view().setUint8(out + 16, 4);  // a regular file
      view().setBigUint64(out + 24, 1n, true);
      view().setBigUint64(out + 32, BigInt(file.data.length), true);
      return ESUCCESS;
    },
    fd_read(fd, iovs, count, nread) {
      const file = open.get(fd);
      if (!file) return EBADF;
      let total = 0;
      for (let i = 0; i < count; i++) {
        const ptr = view().getUint32(iovs + 8 * i, true), len = view().getUint32(iovs + 8 * i + 4, true);
        const chunk = file.data.subarray(file.pos, file.pos + len);
        bytes().set(chunk, ptr);
        file.pos += chunk.length;
        total += chunk.length;
      }
      view().setUint32(nread, total, true);
      return ESUCCESS;
    },
    fd_seek(fd, offset, whence, out) {
      const file = open.get(fd);
      if (!file) return EBADF;
      const base = [0, file.pos, file.data.length][whence];
      const pos = base + Number(offset);
      if (base === undefined || pos < 0) return EINVAL;
      file.pos = pos;
      view().setBigUint64(out, BigInt(pos), true);
      return ESUCCESS;
    },
    fd_close(fd) {
      return open.delete(fd) ? ESUCCESS : EBADF;
    },
    proc_exit(code) {
      throw new GraphcError(`the module exited with status ${code}`);
    },
  };
  // Any other WASI call (renaming, syncing, unlinking: only saving weights uses them) is unsupported.
  return new Proxy(wasi, {get: (target, name) => target[name] ?? (() => ENOSYS)});
}

export class GraphcModel {
  // Instantiates NAME.wasm (`url`) and creates one instance of its model; `weights`: the URL of a
  // weights file written by graphc (--weights external), for a model without embedded weights.
  static async load(url, {name = null, weights = null, log = console.log} = {}) {
    const files = {};
    if (weights) files["model.weights"] = new Uint8Array(await (await fetch(weights)).arrayBuffer());
    let memory = null;
    const imports = {wasi_snapshot_preview1: wasiImports(files, () => memory, log)};
    const {instance} = await WebAssembly.instantiateStreaming(fetch(url), imports);
    memory = instance.exports.memory;
    instance.exports._initialize();
    const stem = name ?? new URL(url, location.href).pathname.split("/").pop().replace(/\.wasm$/, "");
    return new GraphcModel(instance.exports, stem, weights ? "model.weights" : null);
  }

  constructor(exports, name, weightsPath) {
    this.x = exports;
    this.model = this.x[`gc_model_${name}`]();
    this.inputs = this.describe("gc_model_input", this.x.gc_model_num_inputs(this.model));
    this.outputs = this.describe("gc_model_output", this.x.gc_model_num_outputs(this.model));
    const options = this.malloc(OPTIONS_BYTES), handle = this.malloc(4);
    const path = weightsPath ? this.string(weightsPath) : 0;
    try {
      this.x.gc_options_init(options);
      this.view().setUint32(options + OPTIONS_WEIGHTS_PATH, path, true);
      this.check(this.x.gc_instance_create(this.model, options, handle));
      this.instance = this.view().getUint32(handle, true);
    } finally {
      [options, handle, path].forEach((p) => p && this.x.free(p));
    }
  }

  view() { return new DataView(this.x.memory.buffer); }

  malloc(n) {
    const p = this.x.malloc(Math.max(n, 1));
    if (!p) throw new GraphcError(`the module cannot allocate ${n} bytes`);
    return p;
  }

  string(text) {
    const encoded = new TextEncoder().encode(text + "\0");
    const p = this.malloc(encoded.length);
    new Uint8Array(this.x.memory.buffer).set(encoded, p);
    return p;
  }

  readString(p) {
    const mem = new Uint8Array(this.x.memory.buffer);
    let end = p;
    while (mem[end]) end++;
    return new TextDecoder().decode(mem.slice(p, end));
  }

  check(status) {
    if (!status) return;
    const message = this.readString(this.x.gc_status_message(status));
    this.x.gc_status_release(status);
    throw new GraphcError(message);
  }

  describe(which, count) {
    const descs = [];
    const p = this.malloc(DESC_BYTES);
    try {
      for (let i = 0; i < count; i++) {
        this.check(this.x[which](this.model, i, p));
        const v = this.view(), rank = v.getInt32(p + 8, true);
        const shape = Array.from({length: rank}, (_, d) => Number(v.getBigInt64(p + DESC_SHAPE + 8 * d, true)));
        descs.push({name: this.readString(v.getUint32(p, true)), dtype: v.getInt32(p + 4, true), shape});
      }
    } finally {
      this.x.free(p);
    }
    return descs;
  }

  // inputs: one {data (a typed array of the input's dtype), shape} per model input, in order.
  // Returns one {name, shape, data} per output (data copied out of the module's memory).
  run(inputs) {
    if (inputs.length !== this.inputs.length) {
      throw new GraphcError(`the model has ${this.inputs.length} inputs, got ${inputs.length}`);
    }
    const ins = this.malloc(TENSOR_BYTES * inputs.length), outs = this.malloc(TENSOR_BYTES * this.outputs.length);
    const buffers = [];
    try {
      inputs.forEach(({data, shape}, i) => {
        const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
        const p = this.malloc(bytes.length);
        buffers.push(p);
        new Uint8Array(this.x.memory.buffer).set(bytes, p);
        const t = ins + i * TENSOR_BYTES, v = this.view();
        new Uint8Array(this.x.memory.buffer, t, TENSOR_BYTES).fill(0);
        v.setInt32(t, this.inputs[i].dtype, true);
        v.setInt32(t + 4, shape.length, true);
        shape.forEach((d, k) => v.setBigInt64(t + TENSOR_SHAPE + 8 * k, BigInt(d), true));
        v.setUint32(t + TENSOR_DATA, p, true);
        v.setUint32(t + TENSOR_SIZE, bytes.length, true);
      });
      // outputs with data NULL: the instance owns their memory until its next run
      new Uint8Array(this.x.memory.buffer, outs, TENSOR_BYTES * this.outputs.length).fill(0);
      this.check(this.x.gc_instance_run(this.instance, ins, inputs.length, outs, this.outputs.length));
      return this.outputs.map((desc, j) => {
        const t = outs + j * TENSOR_BYTES, v = this.view(), rank = v.getInt32(t + 4, true);
        const shape = Array.from({length: rank}, (_, d) => Number(v.getBigInt64(t + TENSOR_SHAPE + 8 * d, true)));
        const Type = DTYPES[v.getInt32(t, true)];
        const count = shape.reduce((a, b) => a * b, 1);
        const data = new Type(this.x.memory.buffer.slice(v.getUint32(t + TENSOR_DATA, true),
                                                         v.getUint32(t + TENSOR_DATA, true) + count * Type.BYTES_PER_ELEMENT));
        return {name: desc.name, shape, data};
      });
    } finally {
      [...buffers, ins, outs].forEach((p) => this.x.free(p));
    }
  }

  close() { this.x.gc_instance_release(this.instance); }
}

// Inputs every host can make alike (the test computes the same in NumPy): element i of input k is
// ((37 i + 11 k) mod 101) / 101 - 0.5 for floating inputs, (7 i + 3 k) mod 13 + 1 for integer ones;
// free dimensions are `batch`.
export function patternInputs(descs, batch) {
  return descs.map((desc, k) => {
    const shape = desc.shape.map((d) => (d < 0 ? batch : d));
    const count = shape.reduce((a, b) => a * b, 1);
    const Type = DTYPES[desc.dtype];
    const data = new Type(count);
    for (let i = 0; i < count; i++) {
      const value = desc.dtype <= 2 ? ((37 * i + 11 * k) % 101) / 101 - 0.5 : ((7 * i + 3 * k) % 13) + 1;
      data[i] = Type === BigInt64Array ? BigInt(value) : value;
    }
    return {data, shape};
  });
}
