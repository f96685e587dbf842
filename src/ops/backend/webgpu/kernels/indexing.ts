/**
 * @file gather and scatterAdd (one gathered axis with leading batch dims, indices clamped), with the
 * CPU's semantics (../../cpu/indexing.ts). Deterministic without float atomics:
 * - gather: one invocation per output element;
 * - scatterAdd: the output starts as a copy of the operand; then either one invocation per "column"
 *   (batch, pre, post position) walks the indices in order and adds each update into its own column (no
 *   two invocations touch one element), or, when there are few columns and a short axis, one
 *   invocation per output element scans all indices for the ones that hit it. Both add duplicates in
 *   index order, as the CPU does, so float results match it bit for bit.
 */
import { shapeSize, type Shape } from "../../../../autodiff/aval.js";
import { contiguousStrides } from "../../cpu/buffer.js";
import { collapse, GpuHandle, wgslType } from "../handle.js";
import type { Runtime } from "../runtime.js";
import { bindings, entry, gridFor, newHandle, offsetExpr, Params, pushLayout, unravel } from "./common.js";
import { copyInto } from "./map.js";

/** x = [batch..., pre..., len, post...], idx = [batch..., ind...]. */
export interface GatherLayout {
  readonly batchDims: number;
  readonly axis: number;
  readonly nPre: number;
  readonly nInd: number;
  readonly nPost: number;
  readonly len: number;
  /** [batch..., pre..., ind..., post...]. */
  readonly gathered: Shape;
}

export function gatherLayout(x: Shape, idx: Shape, axis: number, batchDims: number): GatherLayout {
  const pre = x.slice(batchDims, axis);
  const post = x.slice(axis + 1);
  const ind = idx.slice(batchDims);
  return {
    batchDims,
    axis,
    nPre: pre.length,
    nInd: ind.length,
    nPost: post.length,
    len: x[axis]!,
    gathered: [...x.slice(0, batchDims), ...pre, ...ind, ...post],
  };
}

/** WGSL: a raw index clamped into [0, len - 1] (uint32 indices compare unsigned). */
function clampCode(t: string): string {
  return t === "i32"
    ? `fn clampIdx(raw: i32, len: u32) -> i32 { return clamp(raw, 0i, i32(len) - 1i); }`
    : `fn clampIdx(raw: u32, len: u32) -> i32 { return i32(min(raw, len - 1u)); }`;
}

/** Per gathered dim: the operand's stride (0 on index dims) and the indices' stride (0 on pre/post). */
function gatheredStrides(L: GatherLayout, xStrides: readonly number[], iStrides: readonly number[]): [number[], number[]] {
  const xs: number[] = [];
  const is: number[] = [];
  const b = L.batchDims;
  for (let d = 0; d < b; d++) {
    xs.push(xStrides[d]!);
    is.push(iStrides[d]!);
  }
  for (let d = 0; d < L.nPre; d++) {
    xs.push(xStrides[b + d]!);
    is.push(0);
  }
  for (let d = 0; d < L.nInd; d++) {
    xs.push(0);
    is.push(iStrides[b + d]!);
  }
  for (let d = 0; d < L.nPost; d++) {
    xs.push(xStrides[L.axis + 1 + d]!);
    is.push(0);
  }
  return [xs, is];
}

export function gather(rt: Runtime, x: GpuHandle, idx: GpuHandle, L: GatherLayout): GpuHandle {
  const size = shapeSize(L.gathered);
  const out = newHandle(rt, "gather", x.dtype, L.gathered, size);
  if (size === 0) return out;
  const [xs, is] = gatheredStrides(L, x.strides, idx.strides);
  const c = collapse(L.gathered, [contiguousStrides(L.gathered), xs, is]);
  const rank = c.shape.length;
  const t = wgslType(x.dtype);
  const ti = wgslType(idx.dtype);
  const p = new Params();
  p.push(size, L.len, x.strides[L.axis]!);
  const shapeAt = p.push(...c.shape);
  const xAt = pushLayout(p, x.offset, c.strides[1]!);
  const iAt = pushLayout(p, idx.offset, c.strides[2]!);
  rt.dispatch(
    {
      key: `gather:${t}:${ti}:r${rank}`,
      source: () =>
        [
          bindings([
            { name: "x", type: t },
            { name: "idx", type: ti },
            { name: "out", type: t, write: true },
          ]),
          clampCode(ti),
          entry(`  if (i >= P[0]) { return; }
${unravel("i", shapeAt, rank)}
  let k = clampIdx(idx[u32(${offsetExpr(iAt, rank)})], P[1]);
  out[i] = x[u32(${offsetExpr(xAt, rank)} + k * bitcast<i32>(P[2]))];`),
        ].join("\n"),
    },
    p.words,
    [x.buffer, idx.buffer, out.buffer],
    gridFor(rt, size),
  );
  return out;
}

export function scatterAdd(rt: Runtime, operand: GpuHandle, idx: GpuHandle, updates: GpuHandle, L: GatherLayout): GpuHandle {
  const shape = operand.shape;
  const out = newHandle(rt, "scatter_add", operand.dtype, shape, operand.size);
  const outStrides = contiguousStrides(shape);
  copyInto(rt, out, 0, outStrides, operand);
  if (updates.size === 0) return out;
  const b = L.batchDims;
  const t = wgslType(operand.dtype);
  const ti = wgslType(idx.dtype);
  const add = operand.dtype === "bool" ? (a: string, v: string) => `${a} | ${v}` : (a: string, v: string) => `${a} + ${v}`;
  // Column dims: batch, pre, post; loop dims: ind. Updates are [batch, pre, ind, post].
  const u = updates.strides;
  const colShape: number[] = [];
  const colOut: number[] = [];
  const colUpd: number[] = [];
  const colIdx: number[] = [];
  for (let d = 0; d < b + L.nPre; d++) {
    colShape.push(shape[d]!);
    colOut.push(outStrides[d]!);
    colUpd.push(u[d]!);
    colIdx.push(d < b ? idx.strides[d]! : 0);
  }
  for (let d = 0; d < L.nPost; d++) {
    colShape.push(shape[L.axis + 1 + d]!);
    colOut.push(outStrides[L.axis + 1 + d]!);
    colUpd.push(u[b + L.nPre + L.nInd + d]!);
    colIdx.push(0);
  }
  const indShape = idx.shape.slice(b);
  const ind = collapse(
    indShape,
    [indShape.map((_, d) => u[b + L.nPre + d]!), indShape.map((_, d) => idx.strides[b + d]!)],
  );
  const cols = collapse(colShape, [colOut, colUpd, colIdx]);
  const nCols = shapeSize(colShape);
  const cr = cols.shape.length;
  const ir = ind.shape.length;
  const perSlot = nCols < 256 && L.len <= 4096;
  const p = new Params();
  p.push(nCols, L.len, outStrides[L.axis]!);
  const shapeAt = p.push(...cols.shape);
  const oAt = pushLayout(p, 0, cols.strides[0]!);
  const uAt = pushLayout(p, updates.offset, cols.strides[1]!);
  const iAt = pushLayout(p, idx.offset, cols.strides[2]!);
  const indAt = p.push(...ind.shape, ...ind.strides[0]!, ...ind.strides[1]!);
  let uIdx = "ub";
  let iIdx = "ib";
  let open = "";
  let close = "";
  for (let d = 0; d < ir; d++) {
    open += `  for (var j${d} = 0u; j${d} < P[${indAt + d}]; j${d}++) {\n`;
    close += "  }\n";
    uIdx += ` + i32(j${d}) * bitcast<i32>(P[${indAt + ir + d}])`;
    iIdx += ` + i32(j${d}) * bitcast<i32>(P[${indAt + 2 * ir + d}])`;
  }
  const head = [
    bindings([
      { name: "idx", type: ti },
      { name: "upd", type: t },
      { name: "out", type: t, write: true },
    ]),
    clampCode(ti),
  ];
  if (perSlot) {
    // One invocation per (column, k): adds the updates whose index hits k, in index order.
    rt.dispatch(
      {
        key: `scatterSlot:${operand.dtype}:${ti}:c${cr}:i${ir}`,
        source: () =>
          [
            ...head,
            entry(`  if (i >= P[0] * P[1]) { return; }
  let col = i / P[1];
  let k = i32(i % P[1]);
${unravel("col", shapeAt, cr)}
  let ob = u32(${offsetExpr(oAt, cr)} + k * bitcast<i32>(P[2]));
  let ub = ${offsetExpr(uAt, cr)};
  let ib = ${offsetExpr(iAt, cr)};
  var acc = out[ob];
${open}    if (clampIdx(idx[u32(${iIdx})], P[1]) == k) { acc = ${add("acc", `upd[u32(${uIdx})]`)}; }
${close}  out[ob] = acc;`),
          ].join("\n"),
      },
      p.words,
      [idx.buffer, updates.buffer, out.buffer],
      gridFor(rt, nCols * L.len),
    );
    return out;
  }
  rt.dispatch(
    {
      key: `scatterCol:${operand.dtype}:${ti}:c${cr}:i${ir}`,
      source: () =>
        [
          ...head,
          entry(`  if (i >= P[0]) { return; }
${unravel("i", shapeAt, cr)}
  let obase = ${offsetExpr(oAt, cr)};
  let ub = ${offsetExpr(uAt, cr)};
  let ib = ${offsetExpr(iAt, cr)};
${open}    let o = u32(obase + clampIdx(idx[u32(${iIdx})], P[1]) * bitcast<i32>(P[2]));
    out[o] = ${add("out[o]", `upd[u32(${uIdx})]`)};
${close}`),
        ].join("\n"),
    },
    p.words,
    [idx.buffer, updates.buffer, out.buffer],
    gridFor(rt, nCols),
  );
  return out;
}
