/**
 * @file Reductions, arg reductions and inclusive scans, with the CPU backend's semantics
 * (../../cpu/reduce.ts): identities for empty reductions, NaN-propagating float max/min, wrapping
 * integer sums and products, "any" / "all" on bool, the first index of the extreme for argmax/argmin
 * with NaN as the extreme.
 *
 * Two reduction strategies:
 * - one invocation per output, looping over the reduced dims (many outputs, or short reductions);
 * - one workgroup per (output, chunk) with a tree reduction in workgroup memory, then a second pass
 *   over the chunk partials (few outputs with long reductions: on lavapipe each workgroup runs on one
 *   CPU thread, so a single long loop would use one core).
 * Float sums are accumulated in blocks of 64 and 4096 (partial sums of partial sums), so the rounding
 * error grows like (128 + n / 4096)·eps instead of n·eps; compensated (Kahan) summation is not an option
 * because shader compilers simplify the compensation away.
 */
import { shapeSize, type DType } from "../../../../autodiff/aval.js";
import { contiguousStrides } from "../../cpu/buffer.js";
import type { ArgReduceOp, CumulativeOp, ReduceOp } from "../../kernel.js";
import { collapse, GpuHandle, wgslType } from "../handle.js";
import type { Runtime } from "../runtime.js";
import { helperCode } from "../wgsl.js";
import { bindings, entry, gridFor, newHandle, offsetExpr, Params, pushLayout, releaseTemp, unravel } from "./common.js";
import { fill, materialize } from "./map.js";

/** Workgroup size of the tree-reduction kernels. */
const RWG = 256;

interface Combiner {
  /** WGSL expression combining accumulator `a` with value `b`. */
  readonly combine: (a: string, b: string) => string;
  /** WGSL expression of the identity. */
  readonly init: string;
  readonly helpers: readonly string[];
  /** Float sums use blocked accumulation. */
  readonly blocked: boolean;
}

function combiner(op: ReduceOp | CumulativeOp, dtype: DType): Combiner {
  const t = wgslType(dtype);
  const float = dtype === "float32";
  const bool = dtype === "bool";
  const c = (combine: (a: string, b: string) => string, init: string, ...helpers: string[]): Combiner => ({
    combine,
    init,
    helpers,
    blocked: float && op === "sum",
  });
  switch (op) {
    case "sum":
      return bool ? c((a, b) => `(${a} | ${b})`, "0u") : c((a, b) => `(${a} + ${b})`, `${t}(0)`);
    case "prod":
      return bool ? c((a, b) => `(${a} & ${b})`, "1u") : c((a, b) => `(${a} * ${b})`, `${t}(1)`);
    case "max":
      if (float) return c((a, b) => `fmax(${a}, ${b})`, "-infF()", "fmax", "consts");
      if (bool) return c((a, b) => `(${a} | ${b})`, "0u");
      return c((a, b) => `max(${a}, ${b})`, dtype === "int32" ? "(-2147483647i - 1i)" : "0u");
    case "min":
      if (float) return c((a, b) => `fmin(${a}, ${b})`, "infF()", "fmin", "consts");
      if (bool) return c((a, b) => `(${a} & ${b})`, "1u");
      return c((a, b) => `min(${a}, ${b})`, dtype === "int32" ? "2147483647i" : "4294967295u");
    default:
      throw new Error(`reduce: unknown op ${String(op satisfies never)}`);
  }
}

/** WGSL statements folding value `v` into the accumulator state declared by `accDecl`. */
function accCode(cb: Combiner, t: string): { decl: string; add: (v: string) => string; result: string } {
  if (!cb.blocked) {
    return { decl: `var acc: ${t} = ${cb.init};`, add: (v) => `acc = ${cb.combine("acc", v)};`, result: "acc" };
  }
  return {
    decl: "var acc = 0.0; var mid = 0.0; var part = 0.0; var cnt = 0u;",
    add: (v) =>
      `part += ${v}; cnt++; if ((cnt & 63u) == 0u) { mid += part; part = 0.0; if ((cnt & 4095u) == 0u) { acc += mid; mid = 0.0; } }`,
    result: "(acc + (mid + part))",
  };
}

/** Shape, strides and element offset of x split into kept dims and reduced dims. */
interface Split {
  readonly keptShape: number[];
  readonly keptStrides: number[];
  readonly redShape: number[];
  readonly redStrides: number[];
}

function split(x: GpuHandle, axes: readonly number[]): Split {
  const red = new Set(axes);
  const s: Split = { keptShape: [], keptStrides: [], redShape: [], redStrides: [] };
  x.shape.forEach((n, d) => {
    if (red.has(d)) {
      s.redShape.push(n);
      s.redStrides.push(x.strides[d]!);
    } else {
      s.keptShape.push(n);
      s.keptStrides.push(x.strides[d]!);
    }
  });
  return s;
}

/** Reduces `axes` of x away (validated by the caller). */
export function reduce(rt: Runtime, op: ReduceOp, x: GpuHandle, axes: readonly number[]): GpuHandle {
  const s = split(x, axes);
  const nOut = shapeSize(s.keptShape);
  const nRed = shapeSize(s.redShape);
  const cb = combiner(op, x.dtype);
  if (nOut === 0 || nRed === 0) {
    const bits = identityBits(op, x.dtype);
    return fill(rt, x.dtype, s.keptShape, bits);
  }
  const kept = collapse(s.keptShape, [s.keptStrides]);
  const red = collapse(s.redShape, [s.redStrides]);
  if (nRed < 64 || nOut >= 4096) return reducePerOutput(rt, op, cb, x, x.offset, kept, red, s.keptShape);
  // Few long reductions: make the reduced dims one contiguous run, then workgroups over chunks.
  let src = x;
  let keptC = kept;
  let redStride = red.strides[0]![0]!;
  let copied = false;
  if (red.shape.length > 1) {
    const perm = [...x.shape.keys()].filter((d) => !axes.includes(d)).concat(axes);
    const t = new GpuHandle(x.storage, x.dtype, perm.map((d) => x.shape[d]!), perm.map((d) => x.strides[d]!), x.offset, false);
    src = materialize(rt, t);
    copied = true;
    keptC = collapse(s.keptShape, [contiguousStrides(s.keptShape).map((v) => v * nRed)]);
    redStride = 1;
  }
  const chunks = nOut >= 64 ? 1 : Math.max(1, Math.min(Math.ceil(nRed / 4096), Math.ceil(64 / nOut)));
  const chunkLen = Math.ceil(nRed / chunks);
  const partial = newHandle(rt, `reduce_${op}`, x.dtype, chunks === 1 ? s.keptShape : [nOut, chunks], nOut * chunks);
  const t = wgslType(x.dtype);
  const kr = keptC.shape.length;
  const p = new Params();
  p.push(nOut * chunks, chunks, chunkLen, nRed, redStride);
  const shapeAt = p.push(...keptC.shape);
  const xAt = pushLayout(p, src.offset, keptC.strides[0]!);
  const acc = accCode(cb, t);
  rt.dispatch(
    {
      key: `reduceWg:${op}:${x.dtype}:r${kr}`,
      source: () =>
        [
          bindings([
            { name: "x", type: t },
            { name: "out", type: t, write: true },
          ]),
          helperCode(cb.helpers),
          `var<workgroup> sh: array<${t}, ${RWG}>;`,
          `@compute @workgroup_size(${RWG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32, @builtin(num_workgroups) nwg: vec3<u32>) {
  let g = wid.x + wid.y * nwg.x;
  let live = g < P[0];
  let o = g / P[1];
  let chunk = g % P[1];
${unravel("o", shapeAt, kr)}
  let base = ${offsetExpr(xAt, kr)};
  let lo = chunk * P[2];
  let hi = min(lo + P[2], P[3]);
  let stride = bitcast<i32>(P[4]);
  ${acc.decl}
  if (live) {
    for (var r = lo + lid; r < hi; r += ${RWG}u) {
      let v = x[u32(base + i32(r) * stride)];
      ${acc.add("v")}
    }
  }
  sh[lid] = ${acc.result};
  workgroupBarrier();
  for (var w = ${RWG / 2}u; w > 0u; w = w >> 1u) {
    if (lid < w) { sh[lid] = ${cb.combine("sh[lid]", "sh[lid + w]")}; }
    workgroupBarrier();
  }
  if (live && lid == 0u) { out[g] = sh[0]; }
}`,
        ].join("\n"),
    },
    p.words,
    [src.buffer, partial.buffer],
    rt.grid(nOut * chunks),
  );
  if (copied) releaseTemp(rt, src);
  if (chunks === 1) return partial;
  const flat = reducePerOutput(
    rt,
    op,
    cb,
    partial,
    0,
    { shape: [nOut], strides: [[chunks]] },
    { shape: [chunks], strides: [[1]] },
    s.keptShape,
  );
  releaseTemp(rt, partial);
  return flat;
}

/** One invocation per output, nested loops over the (collapsed) reduced dims. */
function reducePerOutput(
  rt: Runtime,
  op: ReduceOp,
  cb: Combiner,
  x: GpuHandle,
  offset: number,
  kept: { shape: number[]; strides: number[][] },
  red: { shape: number[]; strides: number[][] },
  outShape: number[],
): GpuHandle {
  const nOut = shapeSize(kept.shape);
  const out = newHandle(rt, `reduce_${op}`, x.dtype, outShape, nOut);
  const t = wgslType(x.dtype);
  const kr = kept.shape.length;
  const rr = red.shape.length;
  const p = new Params();
  p.push(nOut);
  const shapeAt = p.push(...kept.shape);
  const xAt = pushLayout(p, offset, kept.strides[0]!);
  const redAt = p.push(...red.shape, ...red.strides[0]!);
  const acc = accCode(cb, t);
  rt.dispatch(
    {
      key: `reduce:${op}:${x.dtype}:k${kr}:r${rr}`,
      source: () => {
        let idx = "base";
        let open = "";
        let close = "";
        for (let d = 0; d < rr; d++) {
          open += `  for (var r${d} = 0u; r${d} < P[${redAt + d}]; r${d}++) {\n`;
          close += "  }\n";
          idx += ` + i32(r${d}) * bitcast<i32>(P[${redAt + rr + d}])`;
        }
        return [
          bindings([
            { name: "x", type: t },
            { name: "out", type: t, write: true },
          ]),
          helperCode(cb.helpers),
          entry(
            `  if (i >= P[0]) { return; }\n${unravel("i", shapeAt, kr)}\n  let base = ${offsetExpr(xAt, kr)};\n  ${acc.decl}\n` +
              `${open}    let v = x[u32(${idx})];\n    ${acc.add("v")}\n${close}  out[i] = ${acc.result};`,
          ),
        ].join("\n");
      },
    },
    p.words,
    [x.buffer, out.buffer],
    gridFor(rt, nOut),
  );
  return out;
}

/** 32-bit pattern of the identity of `op` on `dtype` (for empty reductions). */
function identityBits(op: ReduceOp, dtype: DType): number {
  const f32 = dtype === "float32";
  switch (op) {
    case "sum":
      return 0;
    case "prod":
      return f32 ? 0x3f800000 : 1;
    case "max":
      return f32 ? 0xff800000 : dtype === "int32" ? 0x80000000 : 0;
    case "min":
      return f32 ? 0x7f800000 : dtype === "int32" ? 0x7fffffff : dtype === "uint32" ? 0xffffffff : 1;
    default:
      throw new Error(`reduce: unknown op ${String(op satisfies never)}`);
  }
}

/** WGSL `better(v, i, bv, bi)`: whether candidate (v, i) beats (bv, bi) for argmax / argmin. */
function betterFn(op: ArgReduceOp, t: string): string {
  const gt = op === "argmax" ? ">" : "<";
  const lt = op === "argmax" ? "<" : ">";
  const nan =
    t === "f32"
      ? `  let n1 = isNan(bv); let n2 = isNan(v);
  if (n1 || n2) { if (n1 && n2) { return ix < bi; } return n2; }\n`
      : "";
  return `fn better(v: ${t}, ix: u32, bv: ${t}, bi: u32) -> bool {
${nan}  if (v ${gt} bv) { return true; }
  if (v ${lt} bv) { return false; }
  return ix < bi;
}`;
}

/** Index (int32) of the first max / min along `axis` (len >= 1, validated by the caller). */
export function argReduce(rt: Runtime, op: ArgReduceOp, x: GpuHandle, axis: number): GpuHandle {
  const s = split(x, [axis]);
  const nOut = shapeSize(s.keptShape);
  const len = x.shape[axis]!;
  const out = newHandle(rt, op, "int32", s.keptShape, nOut);
  if (nOut === 0) return out;
  const kept = collapse(s.keptShape, [s.keptStrides]);
  const kr = kept.shape.length;
  const t = wgslType(x.dtype);
  const p = new Params();
  p.push(nOut, len, x.strides[axis]!);
  const shapeAt = p.push(...kept.shape);
  const xAt = pushLayout(p, x.offset, kept.strides[0]!);
  const helpers = helperCode(t === "f32" ? ["isNan"] : []);
  const head = [
    bindings([
      { name: "x", type: t },
      { name: "out", type: "i32", write: true },
    ]),
    helpers,
    betterFn(op, t),
  ];
  if (len < 256 || nOut >= 4096) {
    rt.dispatch(
      {
        key: `${op}:${t}:k${kr}`,
        source: () =>
          [
            ...head,
            entry(`  if (i >= P[0]) { return; }
${unravel("i", shapeAt, kr)}
  let base = ${offsetExpr(xAt, kr)};
  let stride = bitcast<i32>(P[2]);
  var bv = x[u32(base)];
  var bi = 0u;
  for (var k = 1u; k < P[1]; k++) {
    let v = x[u32(base + i32(k) * stride)];
    if (better(v, k, bv, bi)) { bv = v; bi = k; }
  }
  out[i] = i32(bi);`),
          ].join("\n"),
      },
      p.words,
      [x.buffer, out.buffer],
      gridFor(rt, nOut),
    );
    return out;
  }
  rt.dispatch(
    {
      key: `${op}Wg:${t}:k${kr}`,
      source: () =>
        [
          ...head,
          `var<workgroup> shv: array<${t}, ${RWG}>;`,
          `var<workgroup> shi: array<u32, ${RWG}>;`,
          `@compute @workgroup_size(${RWG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32, @builtin(num_workgroups) nwg: vec3<u32>) {
  let o = wid.x + wid.y * nwg.x;
  let live = o < P[0];
${unravel("o", shapeAt, kr)}
  let base = ${offsetExpr(xAt, kr)};
  let stride = bitcast<i32>(P[2]);
  let n = select(0u, P[1], live);
  let first = min(lid, n - 1u);
  var bv = x[u32(base + i32(first) * stride)];
  var bi = first;
  for (var k = lid + ${RWG}u; k < n; k += ${RWG}u) {
    let v = x[u32(base + i32(k) * stride)];
    if (better(v, k, bv, bi)) { bv = v; bi = k; }
  }
  shv[lid] = bv;
  shi[lid] = bi;
  workgroupBarrier();
  for (var w = ${RWG / 2}u; w > 0u; w = w >> 1u) {
    if (lid < w && better(shv[lid + w], shi[lid + w], shv[lid], shi[lid])) {
      shv[lid] = shv[lid + w];
      shi[lid] = shi[lid + w];
    }
    workgroupBarrier();
  }
  if (live && lid == 0u) { out[o] = i32(shi[0]); }
}`,
        ].join("\n"),
    },
    p.words,
    [x.buffer, out.buffer],
    rt.grid(nOut),
  );
  return out;
}

/** Inclusive scan along `axis` (from the end when `reverse`): one invocation per line. */
export function cumulative(rt: Runtime, op: CumulativeOp, x: GpuHandle, axis: number, reverse: boolean): GpuHandle {
  const size = x.size;
  const out = newHandle(rt, `cum${op}`, x.dtype, x.shape, size);
  if (size === 0) return out;
  const len = x.shape[axis]!;
  const outStrides = contiguousStrides(x.shape);
  const lineShape = x.shape.filter((_, d) => d !== axis);
  const lines = collapse(lineShape, [x.strides.filter((_, d) => d !== axis), outStrides.filter((_, d) => d !== axis)]);
  const lr = lines.shape.length;
  const cb = combiner(op, x.dtype);
  const t = wgslType(x.dtype);
  const p = new Params();
  // Reverse scans start at the last element and step backwards.
  const first = reverse ? len - 1 : 0;
  const xStep = reverse ? -x.strides[axis]! : x.strides[axis]!;
  const oStep = reverse ? -outStrides[axis]! : outStrides[axis]!;
  p.push(size / len, len, xStep, oStep);
  const shapeAt = p.push(...lines.shape);
  const xAt = pushLayout(p, x.offset + first * x.strides[axis]!, lines.strides[0]!);
  const oAt = pushLayout(p, first * outStrides[axis]!, lines.strides[1]!);
  const running = cb.blocked
    ? {
        decl: "var acc = 0.0; var part = 0.0;",
        add: "part += v; if ((k & 63u) == 63u) { acc += part; part = 0.0; }",
        result: "(acc + part)",
      }
    : { decl: `var acc: ${t} = ${cb.init};`, add: `acc = ${cb.combine("acc", "v")};`, result: "acc" };
  rt.dispatch(
    {
      key: `cum:${op}:${x.dtype}:r${lr}`,
      source: () =>
        [
          bindings([
            { name: "x", type: t },
            { name: "out", type: t, write: true },
          ]),
          helperCode(cb.helpers),
          entry(`  if (i >= P[0]) { return; }
${unravel("i", shapeAt, lr)}
  let xb = ${offsetExpr(xAt, lr)};
  let ob = ${offsetExpr(oAt, lr)};
  let xs = bitcast<i32>(P[2]);
  let os = bitcast<i32>(P[3]);
  ${running.decl}
  for (var k = 0u; k < P[1]; k++) {
    let v = x[u32(xb + i32(k) * xs)];
    ${running.add}
    out[u32(ob + i32(k) * os)] = ${running.result};
  }`),
        ].join("\n"),
    },
    p.words,
    [x.buffer, out.buffer],
    gridFor(rt, size / len),
  );
  return out;
}
