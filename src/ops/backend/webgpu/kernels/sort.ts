/**
 * @file Stable multi-operand sort along an axis, as ../../cpu/sort.ts: keys compared lexicographically,
 * NaN after everything, -0 equal to 0. Each line is sorted through a permutation of its positions by a
 * bitonic network (K. E. Batcher, "Sorting networks and their applications", AFIPS 1968) padded to a
 * power of two: padding compares greater than every element, and ties between equal keys are broken by
 * the original position, which makes the network stable. Keys are mapped to order-preserving u32 values
 * once into a packed [numKeys, lines, len] buffer, so the network kernels have one variant whatever the
 * dtypes, rank or number of keys. The operands are then gathered through the permutation.
 *
 * Compare distances below 512 run inside one dispatch on a workgroup-memory copy of the permutation:
 * lines of up to 512 elements take one dispatch for the whole network; longer lines add, per merge
 * size k > 512, one global pass per distance >= 512 and one in-workgroup pass for the rest.
 */
import { shapeSize } from "../../../../autodiff/aval.js";
import { contiguousStrides } from "../../cpu/buffer.js";
import { collapse, GpuHandle, wgslType } from "../handle.js";
import type { Runtime } from "../runtime.js";
import { helperCode } from "../wgsl.js";
import { bindings, entry, gridFor, newHandle, offsetExpr, Params, pushLayout, releaseTemp, unravel } from "./common.js";

/** Workgroup size of the local (in-workgroup) stages; they sort blocks of 2·LWG positions. */
const LWG = 256;

function keyExpr(t: string, v: string): string {
  if (t === "f32") return `sortKeyF(${v})`;
  if (t === "i32") return `(bitcast<u32>(${v}) ^ 0x80000000u)`;
  return v;
}

export function sort(rt: Runtime, xs: readonly GpuHandle[], axis: number, numKeys: number): GpuHandle[] {
  const shape = xs[0]!.shape;
  const size = shapeSize(shape);
  const outs = xs.map((x) => newHandle(rt, "sort", x.dtype, shape, size));
  if (size === 0) return outs;
  const len = shape[axis]!;
  const lines = size / len;
  let P = 1;
  while (P < len) P *= 2;
  // The axis moved last: keys are written in [lines, len] order.
  const perm = [...shape.keys()].filter((d) => d !== axis).concat([axis]);
  const moved = perm.map((d) => shape[d]!);

  // 1. Order-preserving u32 keys of every key operand, packed as [numKeys, lines, len].
  const keys = newHandle(rt, "sort", "uint32", [numKeys, lines, len], numKeys * size);
  xs.slice(0, numKeys).forEach((x, q) => {
    const c = collapse(moved, [perm.map((d) => x.strides[d]!)]);
    const r = c.shape.length;
    const t = wgslType(x.dtype);
    const p = new Params();
    p.push(size, q * size);
    const sAt = p.push(...c.shape);
    const xAt = pushLayout(p, x.offset, c.strides[0]!);
    rt.dispatch(
      {
        key: `sortKeys:${t}:r${r}`,
        source: () =>
          [
            bindings([
              { name: "x", type: t },
              { name: "keys", type: "u32", write: true },
            ]),
            helperCode(t === "f32" ? ["sortKeyF"] : []),
            entry(`  if (i >= P[0]) { return; }\n${unravel("i", sAt, r)}\n  keys[P[1] + i] = ${keyExpr(t, `x[u32(${offsetExpr(xAt, r)})]`)};`),
          ].join("\n"),
      },
      p.words,
      [x.buffer, keys.buffer],
      gridFor(rt, size),
    );
  });

  // Positions a, b of line `line`: padding (>= len) after everything, then keys, then position.
  const less = `fn less(a: u32, b: u32) -> bool {
  if (a >= LEN) { return false; }
  if (b >= LEN) { return true; }
  for (var q = 0u; q < NK; q++) {
    let ka = K[q * S + LINE + a];
    let kb = K[q * S + LINE + b];
    if (ka != kb) { return ka < kb; }
  }
  return a < b;
}`;
  const decls = `var<private> LEN: u32;\nvar<private> NK: u32;\nvar<private> S: u32;\nvar<private> LINE: u32;\n${less}`;
  const setup = `  LEN = P[2]; NK = P[5]; S = P[6]; LINE = line * LEN;`;
  const sortBindings = bindings([
    { name: "K", type: "u32" },
    { name: "perm", type: "u32", write: true },
  ]);
  // Params of the network kernels: lines, P, len, k, j, numKeys, lines·len.
  const params = (k: number, j: number): number[] => [lines, P, len, k, j, numKeys, size];
  const permBuf = newHandle(rt, "sort", "uint32", [lines, P], lines * P);
  const buffers = [keys.buffer, permBuf.buffer];

  // 2. Local stages: init the permutation and sort blocks of 2·LWG positions in workgroup memory.
  const block = Math.min(P, 2 * LWG);
  const blocksPerLine = P / block;
  rt.dispatch(
    {
      key: "sortLocal",
      source: () =>
        [
          sortBindings,
          decls,
          `var<workgroup> sh: array<u32, ${2 * LWG}>;`,
          `@compute @workgroup_size(${LWG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32, @builtin(num_workgroups) nwg: vec3<u32>) {
  let g = wid.x + wid.y * nwg.x;
  let B = min(P[1], ${2 * LWG}u);
  let perLine = P[1] / B;
  let line = min(g / perLine, P[0] - 1u);
  let live = g < P[0] * perLine;
  let start = (g % perLine) * B;
${setup}
  for (var t = lid; t < B; t += ${LWG}u) { sh[t] = start + t; }
  workgroupBarrier();
  for (var k = 2u; k <= B; k = k << 1u) {
    for (var j = k >> 1u; j > 0u; j = j >> 1u) {
      if (lid < B / 2u) {
        let i = 2u * j * (lid / j) + (lid % j);
        let up = ((start + i) & k) == 0u;
        let a = sh[i]; let b = sh[i + j];
        if (select(less(a, b), less(b, a), up)) { sh[i] = b; sh[i + j] = a; }
      }
      workgroupBarrier();
    }
  }
  if (live) { for (var t = lid; t < B; t += ${LWG}u) { perm[line * P[1] + start + t] = sh[t]; } }
}`,
        ].join("\n"),
    },
    params(0, 0),
    buffers,
    rt.grid(lines * blocksPerLine),
  );
  // 3. Longer distances: global compare-exchange passes, then a merge inside each block.
  for (let k = block * 2; k <= P; k *= 2) {
    for (let j = k / 2; j >= block; j /= 2) {
      rt.dispatch(
        {
          key: "sortGlobal",
          source: () =>
            [
              sortBindings,
              decls,
              entry(`  let half = P[1] / 2u;
  if (i >= P[0] * half) { return; }
  let line = i / half;
  let t = i % half;
  let k = P[3]; let j = P[4];
${setup}
  let a = 2u * j * (t / j) + (t % j);
  let up = (a & k) == 0u;
  let base = line * P[1];
  let pa = perm[base + a]; let pb = perm[base + a + j];
  if (select(less(pa, pb), less(pb, pa), up)) { perm[base + a] = pb; perm[base + a + j] = pa; }`),
            ].join("\n"),
        },
        params(k, j),
        buffers,
        gridFor(rt, lines * (P / 2)),
      );
    }
    rt.dispatch(
      {
        key: "sortMerge",
        source: () =>
          [
            sortBindings,
            decls,
            `var<workgroup> sh: array<u32, ${2 * LWG}>;`,
            `@compute @workgroup_size(${LWG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32, @builtin(num_workgroups) nwg: vec3<u32>) {
  let g = wid.x + wid.y * nwg.x;
  let B = ${2 * LWG}u;
  let perLine = P[1] / B;
  let line = min(g / perLine, P[0] - 1u);
  let live = g < P[0] * perLine;
  let start = (g % perLine) * B;
  let k = P[3];
${setup}
  let base = line * P[1] + start;
  if (live) { for (var t = lid; t < B; t += ${LWG}u) { sh[t] = perm[base + t]; } }
  workgroupBarrier();
  let up = (start & k) == 0u;
  for (var j = B >> 1u; j > 0u; j = j >> 1u) {
    let i = 2u * j * (lid / j) + (lid % j);
    let a = sh[i]; let b = sh[i + j];
    if (live && select(less(a, b), less(b, a), up)) { sh[i] = b; sh[i + j] = a; }
    workgroupBarrier();
  }
  if (live) { for (var t = lid; t < B; t += ${LWG}u) { perm[base + t] = sh[t]; } }
}`,
          ].join("\n"),
      },
      params(k, 0),
      buffers,
      rt.grid(lines * blocksPerLine),
    );
  }
  releaseTemp(rt, keys);
  // 4. Gather every operand through the permutation.
  const lineShape = shape.filter((_, d) => d !== axis);
  const outStrides = contiguousStrides(shape);
  xs.forEach((x, q) => {
    const c = collapse(lineShape, [x.strides.filter((_, d) => d !== axis), outStrides.filter((_, d) => d !== axis)]);
    const r = c.shape.length;
    const t = wgslType(x.dtype);
    const p = new Params();
    p.push(size, len, P, x.strides[axis]!, outStrides[axis]!);
    const sAt = p.push(...c.shape);
    const xAt = pushLayout(p, x.offset, c.strides[0]!);
    const oAt = pushLayout(p, 0, c.strides[1]!);
    rt.dispatch(
      {
        key: `sortGather:${t}:r${r}`,
        source: () =>
          [
            bindings([
              { name: "x", type: t },
              { name: "perm", type: "u32" },
              { name: "out", type: t, write: true },
            ]),
            entry(`  if (i >= P[0]) { return; }
  let line = i / P[1];
  let j = i % P[1];
${unravel("line", sAt, r)}
  let src = perm[line * P[2] + j];
  out[u32(${offsetExpr(oAt, r)} + i32(j) * bitcast<i32>(P[4]))] = x[u32(${offsetExpr(xAt, r)} + i32(src) * bitcast<i32>(P[3]))];`),
          ].join("\n"),
      },
      p.words,
      [x.buffer, permBuf.buffer, outs[q]!.buffer],
      gridFor(rt, size),
    );
  });
  releaseTemp(rt, permBuf);
  return outs;
}
