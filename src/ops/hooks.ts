/**
 * @file Registers the array operations core needs (see CoreHooks in autodiff/core.ts). Imported for its
 * side effect by src/index.ts.
 */
import { ShapedArray } from "../autodiff/aval.js";
import { registerHooks, Tracer, Value } from "../autodiff/core.js";
import { ArgumentError } from "../autodiff/errors.js";
import { Array, getDefaultDevice, scalar } from "./array.js";
import { add, convert, full } from "./lax/elementwise.js";
import { broadcastInDim, reshape, sliceInDim, transpose } from "./lax/structural.js";
import { ShapeError } from "../autodiff/errors.js";
import { range } from "./lax/util.js";
import { installJitCompiler } from "./compile/index.js";
import { installCpuJitTarget } from "./backend/cpu/compile/index.js";

/** JS values at transform boundaries: arrays and tracers as they are, numbers as weak float32 scalars. */
export function asValue(x: unknown, what: string): Value {
  if (x instanceof Array || x instanceof Tracer) return x;
  if (typeof x === "number") return scalar(x, "float32", true);
  if (typeof x === "boolean") return scalar(x, "bool", false);
  throw new ArgumentError(
    `${what}: expected an array or a number, got ${x === null ? "null" : globalThis.Array.isArray(x) ? "a JS list" : typeof x}` +
      `\nTip: wrap data with np.array(...)`,
  );
}

registerHooks({
  asValue,
  zeros: (a: ShapedArray) => full(a.shape, 0, a.dtype),
  full: (a: ShapedArray, v: number) => full(a.shape, v, a.dtype),
  add: (x, y) => add(x, y),
  moveaxis: (x, from, to) => {
    const n = x.aval.ndim;
    const rest = range(n).filter((i) => i !== from);
    rest.splice(to, 0, from);
    return transpose(x, rest);
  },
  broadcastAxis: (x, size, axis) => {
    const s = [...x.aval.shape];
    s.splice(axis, 0, size);
    const dims = range(x.aval.ndim).map((i) => (i < axis ? i : i + 1));
    return broadcastInDim(x, s, dims);
  },
  convert: (x, a) => convert(x, a.dtype, a.weakType),
  literalValue: (x) => {
    if (!(x instanceof Array) || x.size !== 1 || !x.device.backend.readSync || x.isDisposed) return null;
    return x.itemSync();
  },
  isConcrete: (x): x is Array => x instanceof Array,
  contextKey: () => getDefaultDevice().id,
  release: (x) => {
    if (x instanceof Array) x.dispose();
  },
  unstack: (x) => {
    const s = x.aval.shape;
    if (s.length === 0) throw new ShapeError(`iteration: cannot iterate over a scalar ${x.aval.str()}`);
    return range(s[0]!).map((i) => reshape(sliceInDim(x, i, i + 1, 0), s.slice(1)));
  },
});

// jit compiles (fused kernels, static memory plan) on WebGPU and on the CPU. WEBGRAD_JIT=interpret keeps
// jit's op-by-op interpreter instead (for debugging a suspected compiler bug).
if (typeof process === "undefined" || process.env?.WEBGRAD_JIT !== "interpret") {
  installCpuJitTarget();
  installJitCompiler();
}
