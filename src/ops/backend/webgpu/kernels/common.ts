/**
 * @file Shared pieces of kernel generation: the parameter block builder, the entry-point signature
 * (a 2-D grid linearised to one invocation index), and the code that turns a linear index into strided
 * element offsets. Shapes and strides are never baked into WGSL: they are read from the parameter block
 * `P` (binding 0), so one pipeline serves every shape of a given rank.
 */
import type { DType } from "../../../../autodiff/aval.js";
import { GpuHandle, GpuStorage, wgslType } from "../handle.js";
import type { Runtime } from "../runtime.js";

/** Invocations per workgroup of the 1-D kernels. */
export const WG = 256;

/** The parameter block of one dispatch: u32 words; `at` hands out indices for the generated code. */
export class Params {
  readonly words: number[] = [];
  /** Appends u32 words (ints are stored two's complement), returns the index of the first. */
  push(...vals: number[]): number {
    const at = this.words.length;
    for (const v of vals) this.words.push(v >>> 0);
    return at;
  }
}

/** `@group(0) @binding(0)` parameter block plus the bindings for `buffers` (name, WGSL type, access). */
export function bindings(buffers: readonly { name: string; type: string; write?: boolean }[]): string {
  const lines = [`@group(0) @binding(0) var<storage, read> P: array<u32>;`];
  buffers.forEach((b, i) => {
    lines.push(`@group(0) @binding(${i + 1}) var<storage, ${b.write ? "read_write" : "read"}> ${b.name}: array<${b.type}>;`);
  });
  return lines.join("\n");
}

/** Entry point over a 2-D grid of WG-wide workgroups; `i` is the linear invocation index. */
export function entry(body: string, wg = WG): string {
  return `@compute @workgroup_size(${wg})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * (nwg.x * ${wg}u);
${body}
}`;
}

/**
 * WGSL that unravels `idx` over the shape stored at P[shapeAt..shapeAt+rank) into u32 coordinates
 * `${prefix}0..` (C order).
 */
export function unravel(idx: string, shapeAt: number, rank: number, prefix = "c"): string {
  if (rank === 1) return `  let ${prefix}0 = ${idx};`;
  const lines = [`  var ${prefix}_r = ${idx};`];
  for (let d = rank - 1; d >= 1; d--) {
    lines.push(`  let ${prefix}${d} = ${prefix}_r % P[${shapeAt + d}]; ${prefix}_r = ${prefix}_r / P[${shapeAt + d}];`);
  }
  lines.push(`  let ${prefix}0 = ${prefix}_r;`);
  return lines.join("\n");
}

/** An i32 expression: P[at] (offset) + Σ c_d · P[at + 1 + d] (strides, two's complement). */
export function offsetExpr(at: number, rank: number, prefix = "c"): string {
  let s = `i32(P[${at}])`;
  for (let d = 0; d < rank; d++) s += ` + i32(${prefix}${d}) * bitcast<i32>(P[${at + 1 + d}])`;
  return s;
}

/**
 * Shape and layouts for `stridedOffsets`: P[at] = rank, then the shape, then per operand its offset
 * and strides. Returns the index of the rank word.
 */
export function pushStrided(p: Params, shape: readonly number[], layouts: readonly { offset: number; strides: readonly number[] }[]): number {
  const at = p.push(shape.length, ...shape);
  for (const l of layouts) p.push(l.offset, ...l.strides);
  return at;
}

/**
 * WGSL declaring `var off0..` (i32 element offsets of `count` operands) for linear index `idx`, with the
 * rank read at run time from P[rankAt] (see `pushStrided`): one shader serves every rank, which keeps
 * the number of pipelines (and compile time) down for kernels reached with many ranks.
 */
export function stridedOffsets(idx: string, rankAt: number, count: number): string {
  const lines = [`  let rank = P[${rankAt}u];`, `  var rem = ${idx};`];
  for (let k = 0; k < count; k++) lines.push(`  var off${k} = i32(P[${rankAt + 1}u + rank + ${k}u * (rank + 1u)]);`);
  lines.push(`  for (var d = rank; d > 0u; d--) {`, `    let n = P[${rankAt}u + d];`, `    let c = i32(rem % n);`, `    rem = rem / n;`);
  for (let k = 0; k < count; k++) lines.push(`    off${k} += c * bitcast<i32>(P[${rankAt + 1}u + rank + ${k}u * (rank + 1u) + d]);`);
  lines.push(`  }`);
  return lines.join("\n");
}

/** Pushes an operand's offset and strides (the layout `offsetExpr` reads). */
export function pushLayout(p: Params, offset: number, strides: readonly number[]): number {
  return p.push(offset, ...strides);
}

/** A fresh contiguous handle of `shape` and `dtype` (storage from the pool). */
export function newHandle(rt: Runtime, op: string, dtype: DType, shape: readonly number[], size: number): GpuHandle {
  wgslType(dtype);
  const bytes = size * 4;
  return new GpuHandle(new GpuStorage(rt.alloc(op, bytes), bytes), dtype, shape);
}

/** Returns a kernel-internal temporary's storage to the pool. */
export function releaseTemp(rt: Runtime, h: GpuHandle): void {
  if (h.storage.buffer) {
    rt.release(h.storage.buffer);
    h.storage.buffer = null;
  }
  h.released = true;
}

/** Workgroups for `n` invocations of WG each, as a grid. */
export function gridFor(rt: Runtime, n: number, wg = WG): readonly [number, number] {
  const g = rt.grid(Math.ceil(n / wg));
  return [g[0], g[1] ?? 1];
}
