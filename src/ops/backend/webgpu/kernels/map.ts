/**
 * @file Elementwise kernels: one generic "map" kernel generator (any number of strided inputs, one
 * invocation per output element, any number of contiguous outputs; a vec4 variant when everything is
 * contiguous and aligned; the rank is read at run time, so one pipeline serves every rank) on which
 * unary, binary, select, cast, bitcast, materialising copies and threefry are built; plus fill, iota,
 * a strided scatter-copy
 * (`copyInto`, used by pad, concatenate and dynamicUpdateSlice) and the dynamic-slice kernels, whose
 * start indices are device scalars read and clamped in the shader.
 */
import { shapeSize, type DType, type Shape } from "../../../../autodiff/aval.js";
import { contiguousStrides } from "../../cpu/buffer.js";
import { collapse, GpuHandle, wgslType } from "../handle.js";
import type { Runtime } from "../runtime.js";
import { helperCode } from "../wgsl.js";
import {
  bindings,
  entry,
  gridFor,
  newHandle,
  offsetExpr,
  Params,
  pushLayout,
  pushStrided,
  stridedOffsets,
  unravel,
  WG,
} from "./common.js";

/** What a map kernel computes from its loaded inputs `vals` (WGSL names). */
export interface MapBody {
  /** Statements run before the stores (may declare `let`s). */
  readonly pre?: string;
  /** One WGSL expression per output. */
  readonly outs: readonly string[];
  readonly helpers?: readonly string[];
}

/**
 * Runs `body` over `shape` for strided `inputs` (all of that shape) into fresh contiguous outputs.
 * `name` must identify the body's semantics (it is the pipeline cache key with the dtypes and rank).
 */
export function runMap(
  rt: Runtime,
  name: string,
  inputs: readonly GpuHandle[],
  outDtypes: readonly DType[],
  shape: Shape,
  body: (vals: string[]) => MapBody,
): GpuHandle[] {
  const size = shapeSize(shape);
  const outs = outDtypes.map((d) => newHandle(rt, name, d, shape, size));
  if (size === 0) return outs;
  const c = collapse(shape, [contiguousStrides(shape), ...inputs.map((h) => h.strides)]);
  // Fast path: every input contiguous and 4-aligned (after collapsing): vec4 loads and stores.
  const flat = c.shape.length === 1 && c.strides.every((s) => s[0] === 1);
  if (flat && inputs.every((h) => h.offset % 4 === 0) && body(inputs.map((_, k) => `v${k}`)).pre === undefined) {
    runMapVec4(rt, name, inputs, outs, size, body);
    return outs;
  }
  const p = new Params();
  p.push(size);
  const rankAt = pushStrided(p, c.shape, inputs.map((h, k) => ({ offset: h.offset, strides: c.strides[k + 1]! })));
  const key = `map:${name}:${inputs.map((h) => h.dtype).join(",")}:${outDtypes.join(",")}`;
  rt.dispatch(
    {
      key,
      source: () => {
        const vals = inputs.map((_, k) => `v${k}`);
        const b = body(vals);
        const loads = inputs.map((_, k) => `  let v${k} = in${k}[u32(off${k})];`).join("\n");
        const stores = b.outs.map((x, k) => `  out${k}[i] = ${x};`).join("\n");
        return [
          bindings([
            ...inputs.map((h, k) => ({ name: `in${k}`, type: wgslType(h.dtype) })),
            ...outDtypes.map((d, k) => ({ name: `out${k}`, type: wgslType(d), write: true })),
          ]),
          helperCode(b.helpers ?? []),
          entry(`  if (i >= P[0]) { return; }\n${stridedOffsets("i", rankAt, inputs.length)}\n${loads}\n${b.pre ?? ""}\n${stores}`),
        ].join("\n");
      },
    },
    p.words,
    [...inputs.map((h) => h.buffer), ...outs.map((o) => o.buffer)],
    gridFor(rt, size),
  );
  return outs;
}

/**
 * The contiguous case with vec4 loads and stores, each invocation handling VEC_PER_INVOCATION vec4s
 * (grid-strided): on lavapipe this is 3-4x the bandwidth of one scalar per invocation. The last vec4
 * may run past the logical end: its loads read padding (or are clamped by robust buffer access), its
 * stores land in the output's own padding (storage is allocated in 16-byte multiples).
 */
function runMapVec4(
  rt: Runtime,
  name: string,
  inputs: readonly GpuHandle[],
  outs: readonly GpuHandle[],
  size: number,
  body: (vals: string[]) => MapBody,
): void {
  const nVec = Math.ceil(size / 4);
  const p = new Params();
  p.push(nVec, ...inputs.map((h) => h.offset / 4));
  const key = `map4:${name}:${inputs.map((h) => h.dtype).join(",")}:${outs.map((o) => o.dtype).join(",")}`;
  rt.dispatch(
    {
      key,
      source: () => {
        const comps = ["x", "y", "z", "w"];
        const perComp = comps.map((q) => body(inputs.map((_, k) => `v${k}.${q}`)));
        const stores = outs
          .map((o, k) => `    out${k}[j] = vec4<${wgslType(o.dtype)}>(${perComp.map((b) => b.outs[k]).join(", ")});`)
          .join("\n");
        return [
          bindings([
            ...inputs.map((h, k) => ({ name: `in${k}`, type: `vec4<${wgslType(h.dtype)}>` })),
            ...outs.map((o, k) => ({ name: `out${k}`, type: `vec4<${wgslType(o.dtype)}>`, write: true })),
          ]),
          helperCode(perComp[0]!.helpers ?? []),
          entry(`  let total = nwg.x * nwg.y * ${WG}u;
  for (var q = 0u; q < ${VEC_PER_INVOCATION}u; q++) {
    let j = i + q * total;
    if (j >= P[0]) { return; }
${inputs.map((_, k) => `    let v${k} = in${k}[P[${k + 1}] + j];`).join("\n")}
${stores}
  }`),
        ].join("\n");
      },
    },
    p.words,
    [...inputs.map((h) => h.buffer), ...outs.map((o) => o.buffer)],
    gridFor(rt, Math.ceil(nVec / VEC_PER_INVOCATION)),
  );
}

const VEC_PER_INVOCATION = 4;

/** A contiguous copy of x (any view). */
export function materialize(rt: Runtime, x: GpuHandle): GpuHandle {
  return runMap(rt, "copy", [x], [x.dtype], x.shape, ([v]) => ({ outs: [v!] }))[0]!;
}

/** A fresh buffer of `shape` filled with the 32-bit pattern `bits`. */
export function fill(rt: Runtime, dtype: DType, shape: Shape, bits: number): GpuHandle {
  const size = shapeSize(shape);
  const out = newHandle(rt, "full", dtype, shape, size);
  fillInto(rt, out.buffer, 0, size, bits);
  return out;
}

/** Writes `bits` into `count` words of `buf` from word `at`. */
function fillInto(rt: Runtime, buf: GPUBuffer, at: number, count: number, bits: number): void {
  if (count === 0) return;
  if (bits === 0) {
    rt.clear(buf, at * 4, count * 4);
    return;
  }
  const p = new Params();
  p.push(count, at, bits);
  rt.dispatch(
    {
      key: "fill",
      source: () =>
        [bindings([{ name: "out", type: "u32", write: true }]), entry(`  if (i >= P[0]) { return; }\n  out[P[1] + i] = P[2];`)].join(
          "\n",
        ),
    },
    p.words,
    [buf],
    gridFor(rt, count),
  );
}

/** Indices along `dim`, broadcast over the other dims. */
export function iota(rt: Runtime, dtype: DType, shape: Shape, dim: number): GpuHandle {
  const size = shapeSize(shape);
  const out = newHandle(rt, "iota", dtype, shape, size);
  if (size === 0) return out;
  let inner = 1;
  for (let d = dim + 1; d < shape.length; d++) inner *= shape[d]!;
  const p = new Params();
  p.push(size, inner, shape[dim]!);
  const t = wgslType(dtype);
  const v = dtype === "float32" ? "f32(k)" : dtype === "int32" ? "i32(k)" : "k";
  rt.dispatch(
    {
      key: `iota:${dtype}`,
      source: () =>
        [
          bindings([{ name: "out", type: t, write: true }]),
          entry(`  if (i >= P[0]) { return; }\n  let k = (i / P[1]) % P[2];\n  out[i] = ${v};`),
        ].join("\n"),
    },
    p.words,
    [out.buffer],
    gridFor(rt, size),
  );
  return out;
}

/**
 * Copies src (any view) into `dst` at element `dstOffset` with `dstStrides` (indexed like src's shape).
 * With `starts` (a buffer of clamped-at-runtime start indices, see `dynamicStarts`), the destination
 * offset additionally moves by Σ start_d · dynStrides_d.
 */
export function copyInto(
  rt: Runtime,
  dst: GpuHandle,
  dstOffset: number,
  dstStrides: readonly number[],
  src: GpuHandle,
  dyn?: { starts: GPUBuffer; limits: readonly number[]; unsigned: readonly boolean[]; strides: readonly number[] },
): void {
  const size = src.size;
  if (size === 0) return;
  // A rank-0 dynamic copy has no starts to read: it is a static copy. (Fix added by the engineer of
  // tests/webgpu/properties.test.ts: with `dyn` kept, rank 0 bound an unused `starts` buffer — a
  // bind-group validation error — under the static copy's key "copyInto:<t>:d0".)
  if (dyn && dyn.limits.length === 0) dyn = undefined;
  const c = collapse(src.shape, [dstStrides, src.strides]);
  const nd = dyn ? dyn.limits.length : 0;
  const p = new Params();
  p.push(size);
  const dynAt = p.push(...(dyn ? dyn.limits.flatMap((l, d) => [l, dyn.unsigned[d] ? 1 : 0, dyn.strides[d]!]) : []));
  const rankAt = pushStrided(p, c.shape, [
    { offset: dstOffset, strides: c.strides[0]! },
    { offset: src.offset, strides: c.strides[1]! },
  ]);
  const t = wgslType(src.dtype);
  const key = `copyInto:${t}:d${nd}`;
  const buffers = [src.buffer, dst.buffer];
  if (dyn) buffers.push(dyn.starts);
  rt.dispatch(
    {
      key,
      source: () => {
        const bufs = [
          { name: "src", type: t },
          { name: "dst", type: t, write: true },
        ];
        if (dyn) bufs.push({ name: "starts", type: "u32" });
        let dynCode = "";
        if (nd > 0) {
          dynCode = `  for (var d = 0u; d < ${nd}u; d++) {\n    off0 += clampStart(starts[d], P[${dynAt} + 3u * d], P[${dynAt} + 3u * d + 1u]) * bitcast<i32>(P[${dynAt} + 3u * d + 2u]);\n  }`;
        }
        return [
          bindings(bufs),
          nd > 0 ? CLAMP_START : "",
          entry(`  if (i >= P[0]) { return; }\n${stridedOffsets("i", rankAt, 2)}\n${dynCode}\n  dst[u32(off0)] = src[u32(off1)];`),
        ].join("\n");
      },
    },
    p.words,
    buffers,
    gridFor(rt, size),
  );
}

/** start clamped into [0, limit] (as XLA); `unsigned` reads the start's bits as uint32. */
const CLAMP_START = `fn clampStart(bits: u32, limit: u32, unsigned: u32) -> i32 {
  if (unsigned == 0u) { return clamp(bitcast<i32>(bits), 0i, i32(limit)); }
  return i32(min(bits, limit));
}`;

/**
 * Gathers scalar start handles (int32 / uint32 device scalars, possibly views) into one small buffer of
 * words, by buffer copies, so one kernel can read them all.
 */
export function dynamicStarts(rt: Runtime, starts: readonly GpuHandle[]): GpuHandle {
  const out = newHandle(rt, "dynamic_slice", "uint32", [starts.length], starts.length);
  starts.forEach((s, d) => rt.copy(s.buffer, s.offset * 4, out.buffer, d * 4, 4));
  return out;
}

/** A contiguous copy of the window of `sizes` at clamped dynamic starts (read in the shader). */
export function dynamicSliceKernel(
  rt: Runtime,
  x: GpuHandle,
  startsBuf: GpuHandle,
  unsigned: readonly boolean[],
  sizes: readonly number[],
): GpuHandle {
  const size = shapeSize(sizes);
  const out = newHandle(rt, "dynamic_slice", x.dtype, sizes, size);
  if (size === 0) return out;
  const rank = Math.max(sizes.length, 1);
  const shape = sizes.length === 0 ? [1] : sizes;
  const strides = sizes.length === 0 ? [0] : x.strides;
  const p = new Params();
  p.push(size);
  const shapeAt = p.push(...shape);
  const xAt = pushLayout(p, x.offset, strides);
  const nd = sizes.length;
  const dynAt = p.push(...sizes.flatMap((s, d) => [x.shape[d]! - s, unsigned[d] ? 1 : 0, x.strides[d]!]));
  const t = wgslType(x.dtype);
  rt.dispatch(
    {
      key: `dynamicSlice:${t}:r${rank}:d${nd}`,
      source: () =>
        [
          bindings([
            { name: "src", type: t },
            { name: "starts", type: "u32" },
            { name: "dst", type: t, write: true },
          ]),
          CLAMP_START,
          entry(
            `  if (i >= P[0]) { return; }\n${unravel("i", shapeAt, rank)}\n  var base = 0i;\n` +
              `  for (var d = 0u; d < ${nd}u; d++) {\n    base += clampStart(starts[d], P[${dynAt} + 3u * d], P[${dynAt} + 3u * d + 1u]) * bitcast<i32>(P[${dynAt} + 3u * d + 2u]);\n  }\n` +
              `  dst[i] = src[u32(base + ${offsetExpr(xAt, rank)})];`,
          ),
        ].join("\n"),
    },
    p.words,
    [x.buffer, startsBuf.buffer, out.buffer],
    gridFor(rt, size),
  );
  return out;
}

// Threefry-2x32, 20 rounds (Salmon et al., SC 2011, https://doi.org/10.1145/2063384.2063405), as
// ../cpu/threefry.ts: rotations [13, 15, 26, 6] / [17, 29, 16, 24], key schedule k0, k1, k0^k1^0x1BD11BDA.
const ROTATIONS = [13, 15, 26, 6, 17, 29, 16, 24];

/** The threefry body over loaded u32 values k0, k1, x0, x1; outputs y0, y1. */
export function threefryBody([k0, k1, x0, x1]: string[]): MapBody {
  const lines = [
    `  let ks0 = ${k0}; let ks1 = ${k1}; let ks2 = ks0 ^ ks1 ^ 0x1BD11BDAu;`,
    `  var a = ${x0} + ks0; var b = ${x1} + ks1;`,
  ];
  const ks = ["ks0", "ks1", "ks2"];
  for (let g = 0; g < 5; g++) {
    const r = (g & 1) * 4;
    for (let q = r; q < r + 4; q++) {
      const rot = ROTATIONS[q]!;
      lines.push(`  a = a + b; b = ((b << ${rot}u) | (b >> ${32 - rot}u)) ^ a;`);
    }
    lines.push(`  a = a + ${ks[(g + 1) % 3]}; b = b + ${ks[(g + 2) % 3]} + ${g + 1}u;`);
  }
  return { pre: lines.join("\n"), outs: ["a", "b"] };
}
