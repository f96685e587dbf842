/**
 * @file WGSL for the jit compiler's fused kernels (src/ops/compile/fusion.ts): a small emitter that
 * renders `ScalarProgram`s with the op semantics of ../wgsl.ts (the same expressions the eager kernels
 * use, so a fused kernel computes what the ops compute one by one), and the three kernel templates:
 * map (scalar and vec4), reduce (one invocation per row, or one workgroup per row with a tree
 * combine) and dot_general with an epilogue (the 4x8 / 4x4 register tiles of ../kernels/matmul.ts).
 *
 * Shapes, strides and offsets are baked into the source (a compiled plan serves one signature), so
 * index arithmetic divides by constants. A kernel's cache key is a hash of its source. The one
 * exception is `DynamicOffsets`: the listed nodes (a scan body's inputs and outputs) take their
 * buffer's base element offset from a parameter word, so one kernel reads each step's xs slice in
 * place and writes each step's y straight into the stacked ys.
 */
import { shapeSize, type DType, type Shape } from "../../../../autodiff/aval.js";
import { contiguousStrides } from "../../strides.js";
import type { DotKernel, Leaf, MapKernel, Program, ReduceKernel } from "../../../compile/fusion.js";
import { dotGroups, matStrides } from "../../../compile/fusion.js";
import type { ScalarNode } from "../../../compile/scalar-program.js";
import { collapse, wgslType } from "../handle.js";
import { binaryExpr, castExpr, helperCode, unaryExpr } from "../wgsl.js";
import { gemmTileBody } from "../kernels/matmul.js";

/** A generated kernel: source, the buffers it binds (after P at binding 0) and its grid. */
export interface GeneratedKernel {
  readonly source: string;
  /** Nodes read, in binding order (bindings 1..). */
  readonly reads: readonly number[];
  /** Nodes written, in binding order after the reads. */
  readonly writes: readonly number[];
  /** One dispatch per entry: parameter words and workgroup counts. */
  readonly dispatches: readonly { readonly params: readonly number[]; readonly grid: readonly [number, number, number] }[];
  /**
   * Nodes whose base element offset is a run-time parameter: node `dynamic[j]` at word `DYN0 + j` of
   * P (the caller pads each dispatch's params to DYN0 words and appends the offsets). Empty unless
   * the kernel was generated with `DynamicOffsets`.
   */
  readonly dynamic: readonly number[];
}

/** First parameter word of the run-time offsets (every template's own params fit in words 0..3). */
export const DYN0 = 4;

/** Nodes whose buffer base offset (elements) is given at run time (see GeneratedKernel.dynamic). */
export interface DynamicOffsets {
  readonly nodes: ReadonlySet<number>;
  /** Every run-time offset is a multiple of 4 (vec4 loads and stores of those nodes stay valid). */
  readonly aligned4: boolean;
}

/** Index rendering for dynamic offsets: `at(node, idx)` adds the node's run-time base to a u32 index. */
function dynIndexer(dyn: DynamicOffsets | undefined): {
  list: number[];
  word: (node: number) => string | null;
  at: (node: number, idx: string) => string;
} {
  const list: number[] = [];
  const word = (node: number): string | null => {
    if (!dyn?.nodes.has(node)) return null;
    let j = list.indexOf(node);
    if (j < 0) {
      j = list.length;
      list.push(node);
    }
    return `P[${DYN0 + j}u]`;
  };
  return { list, word, at: (node, idx) => {
    const w = word(node);
    return w === null ? idx : `(${idx} + ${w})`;
  } };
}

export interface CodegenLimits {
  readonly maxWorkgroupsPerDimension: number;
  /** Bytes of workgroup memory a kernel may use (default: WebGPU's guaranteed 16 KiB). */
  readonly maxWorkgroupStorageSize?: number;
}

const WG = 256;

// ---------------------------------------------------------------------------------------------------
// Scalar programs

/** A WGSL literal of `value` as `dtype` storage. */
export function literal(value: number, dtype: DType, helpers: Set<string>): string {
  switch (dtype) {
    case "float32": {
      if (Number.isNaN(value)) {
        helpers.add("consts");
        return "nanF()";
      }
      if (value === Infinity || value === -Infinity) {
        helpers.add("consts");
        return value > 0 ? "infF()" : "(-infF())";
      }
      const f = Math.fround(value);
      if (Object.is(f, -0)) return "bitcast<f32>(0x80000000u)";
      if (Number.isInteger(f) && Math.abs(f) < 1e7) return `${f}.0`;
      const u = new Uint32Array(new Float32Array([f]).buffer)[0]!;
      return `bitcast<f32>(0x${u.toString(16)}u)`;
    }
    case "int32":
      return `bitcast<i32>(${value >>> 0}u)`;
    case "uint32":
      return `${value >>> 0}u`;
    case "bool":
      return value !== 0 ? "1u" : "0u";
    default:
      return String(wgslType(dtype));
  }
}

/** Renders program nodes as `let` statements named `${prefix}${i}`; loads come from `load`. */
export function emitNodes(
  p: Program,
  prefix: string,
  load: (input: number, dtype: DType) => string,
  helpers: Set<string>,
): { lines: string[]; outs: string[] } {
  const lines: string[] = [];
  const name = (i: number) => `${prefix}${i}`;
  const used = new Set<number>();
  // Only nodes reachable from the outputs are emitted.
  const mark = (i: number) => {
    if (used.has(i)) return;
    used.add(i);
    const n = p.nodes[i]!;
    if (n.op === "unary" || n.op === "cast" || n.op === "bitcast") mark(n.x);
    else if (n.op === "binary") {
      mark(n.x);
      mark(n.y);
    } else if (n.op === "select") {
      mark(n.pred);
      mark(n.onTrue);
      mark(n.onFalse);
    }
  };
  p.outputs.forEach(mark);
  p.nodes.forEach((n: ScalarNode, i) => {
    if (!used.has(i)) return;
    const t = wgslType(n.dtype);
    let code: string;
    switch (n.op) {
      case "load":
        code = load(n.input, n.dtype);
        break;
      case "const":
        code = literal(n.value, n.dtype, helpers);
        break;
      case "iota":
        code = n.dtype === "float32" ? `f32(c${n.dim})` : n.dtype === "int32" ? `i32(c${n.dim})` : `u32(c${n.dim})`;
        break;
      case "unary": {
        const e = unaryExpr(n.fn, p.nodes[n.x]!.dtype, name(n.x));
        e.helpers.forEach((h) => helpers.add(h));
        code = e.code;
        break;
      }
      case "binary": {
        const e = binaryExpr(n.fn, p.nodes[n.x]!.dtype, name(n.x), name(n.y));
        e.helpers.forEach((h) => helpers.add(h));
        code = e.code;
        break;
      }
      case "select":
        code = `select(${name(n.onFalse)}, ${name(n.onTrue)}, ${name(n.pred)} != 0u)`;
        break;
      case "cast": {
        const e = castExpr(p.nodes[n.x]!.dtype, n.dtype, name(n.x));
        e.helpers.forEach((h) => helpers.add(h));
        code = e.code;
        break;
      }
      case "bitcast":
        code = wgslType(p.nodes[n.x]!.dtype) === t ? name(n.x) : `bitcast<${t}>(${name(n.x)})`;
        break;
      default:
        code = n satisfies never;
    }
    lines.push(`let ${name(i)}: ${t} = ${code};`);
  });
  return { lines, outs: p.outputs.map(name) };
}

/** Value of an iota leaf from its i32 index expression. */
function iotaValue(idx: string, dtype: DType): string {
  switch (dtype) {
    case "float32":
      return `f32(${idx})`;
    case "int32":
      return idx;
    case "uint32":
      return `bitcast<u32>(${idx})`;
    case "bool":
      return `select(0u, 1u, ${idx} != 0i)`;
    default:
      return wgslType(dtype);
  }
}

/**
 * Marks every binding as used (`arrayLength`), so the pipeline's automatic layout keeps bindings a
 * kernel happens not to read (an empty reduction never loads its operand).
 */
function touchBindings(source: string): string {
  const names = [...source.matchAll(/var<storage, [a-z_]+> (\w+):/g)].map((m) => m[1]!);
  const at = source.indexOf("{", source.indexOf("fn main(")) + 1;
  return source.slice(0, at) + `\n${names.map((n) => `  _ = arrayLength(&${n});`).join("\n")}` + source.slice(at);
}

/** Binding declarations: P, then named buffers. */
function bindingDecls(bufs: readonly { name: string; type: string; write?: boolean }[]): string {
  const lines = [`@group(0) @binding(0) var<storage, read> P: array<u32>;`];
  bufs.forEach((b, i) => {
    lines.push(`@group(0) @binding(${i + 1}) var<storage, ${b.write ? "read_write" : "read"}> ${b.name}: array<${b.type}>;`);
  });
  return lines.join("\n");
}

/** Unravels u32 `idx` over constant `shape` into `let ${p}d: u32` coordinates. */
function unravelConst(idx: string, shape: readonly number[], p: string): string[] {
  const lines: string[] = [];
  if (shape.length === 1) return [`let ${p}0 = ${idx};`];
  lines.push(`var ${p}r = ${idx};`);
  for (let d = shape.length - 1; d >= 1; d--) lines.push(`let ${p}${d} = ${p}r % ${shape[d]}u; ${p}r = ${p}r / ${shape[d]}u;`);
  lines.push(`let ${p}0 = ${p}r;`);
  return lines;
}

/** i32 expression `offset + Σ coord_d · strides_d`. */
function offsetSum(offset: number, strides: readonly number[], p: string): string {
  let s = `${offset}i`;
  strides.forEach((st, d) => {
    if (st === 0) return;
    s += st === 1 ? ` + i32(${p}${d})` : ` + i32(${p}${d}) * ${st}i`;
  });
  return s;
}

/** Distinct buffer nodes of leaves, in first-use order. */
function bufferNodes(leaves: readonly Leaf[]): number[] {
  const out: number[] = [];
  for (const l of leaves) if (l.kind === "buffer" && !out.includes(l.node)) out.push(l.node);
  return out;
}

export function grid2(groups: number, lim: CodegenLimits): [number, number, number] {
  const max = lim.maxWorkgroupsPerDimension;
  if (groups <= max) return [Math.max(groups, 0), 1, 1];
  const y = Math.ceil(groups / max);
  return [Math.ceil(groups / y), y, 1];
}

const ENTRY = (wg: number) =>
  `@compute @workgroup_size(${wg})\nfn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {\n  let i = gid.x + gid.y * (nwg.x * ${wg}u);`;

// ---------------------------------------------------------------------------------------------------
// map

const VEC_PER_INVOCATION = 4;

/**
 * `alias` maps an input node to the output (root index) that reuses its buffer (donation, in place):
 * the input is then read from that output's read_write binding (each element is read before the same
 * invocation overwrites it, which the caller guarantees by only aliasing identity-layout reads).
 */
export function mapKernel(
  k: MapKernel,
  dtypeOf: (node: number) => DType,
  lim: CodegenLimits,
  alias: ReadonlyMap<number, number> = new Map(),
  dyn?: DynamicOffsets,
): GeneratedKernel {
  const p = k.program;
  const size = shapeSize(k.shape);
  const dx = dynIndexer(dyn);
  const reads = bufferNodes(p.leaves).filter((n) => !alias.has(n));
  const writes = [...k.roots];
  const bufName = (n: number) => (alias.has(n) ? `out${alias.get(n)}` : `in${reads.indexOf(n)}`);
  const helpers = new Set<string>();
  const c = collapse(k.shape, [contiguousStrides(k.shape), ...p.leaves.map((l) => (l.kind === "local" ? k.shape.map(() => 0) : l.layout.strides))]);
  const flat = c.shape.length === 1;
  const vec =
    flat &&
    p.leaves.every((l, li) => {
      if (l.kind !== "buffer") return false;
      const s = c.strides[li + 1]![0]!;
      return (s === 1 && l.layout.offset % 4 === 0) || s === 0;
    }) &&
    c.strides[0]![0] === 1 &&
    (dyn === undefined || dyn.aligned4 || ![...p.leaves.map((l) => (l.kind === "buffer" ? l.node : -1)), ...k.roots].some((n) => dyn.nodes.has(n)));
  // vec4 index of a node's run-time base (aligned: a multiple of 4).
  const vbase = (n: number) => {
    const w = dx.word(n);
    return w === null ? "" : ` + (${w} >> 2u)`;
  };
  if (vec) {
    const bufs = [
      ...reads.map((n, r) => {
        const vecUse = p.leaves.some((l, li) => l.kind === "buffer" && l.node === n && c.strides[li + 1]![0] === 1);
        return { name: `in${r}`, type: vecUse ? `vec4<${wgslType(dtypeOf(n))}>` : wgslType(dtypeOf(n)) };
      }),
      ...writes.map((n, w) => ({ name: `out${w}`, type: `vec4<${wgslType(dtypeOf(n))}>`, write: true })),
    ];
    // An aliased input is read from its output's (vec4) binding.
    const vecBuf = (n: number) => alias.has(n) || bufs[reads.indexOf(n)]!.type.startsWith("vec4");
    const pre: string[] = [];
    p.leaves.forEach((l, li) => {
      if (l.kind !== "buffer") return;
      const name = bufName(l.node);
      const s = c.strides[li + 1]![0]!;
      if (alias.has(l.node) && !dyn?.nodes.has(l.node)) {
        pre.push(`    let L${li} = ${name}[j];`);
        return;
      }
      if (s === 1) pre.push(`    let L${li} = ${name}[${l.layout.offset / 4}u + j${vbase(l.node)}];`);
      else
        pre.push(
          `    let L${li} = ${name}[${vecBuf(l.node) ? `${Math.floor(l.layout.offset / 4)}u${vbase(l.node)}][${l.layout.offset % 4}` : dx.at(l.node, `${l.layout.offset}u`)}];`,
        );
    });
    const comps = ["x", "y", "z", "w"];
    const body: string[] = [];
    const outs: string[][] = [];
    comps.forEach((q, qi) => {
      const e = emitNodes(p, `n${q}_`, (input) => (c.strides[input + 1]![0] === 1 ? `L${input}.${q}` : `L${input}`), helpers);
      body.push(...e.lines.map((l) => `    ${l}`));
      outs.push(e.outs);
      void qi;
    });
    const stores = writes.map((n, w) => `    out${w}[j${vbase(n)}] = vec4<${wgslType(dtypeOf(n))}>(${outs.map((o) => o[w]).join(", ")});`);
    const nVec = Math.ceil(size / 4);
    const source = [
      bindingDecls(bufs),
      helperCode(helpers),
      `${ENTRY(WG)}
  let total = nwg.x * nwg.y * ${WG}u;
  for (var q = 0u; q < ${VEC_PER_INVOCATION}u; q++) {
    let j = i + q * total;
    if (j >= P[0]) { return; }
${pre.join("\n")}
${body.join("\n")}
${stores.join("\n")}
  }
}`,
    ].join("\n");
    return {
      source: touchBindings(source),
      reads,
      writes,
      dispatches: size === 0 ? [] : [{ params: [nVec], grid: grid2(Math.ceil(nVec / VEC_PER_INVOCATION / WG), lim) }],
      dynamic: dx.list,
    };
  }
  const bufs = [
    ...reads.map((n, r) => ({ name: `in${r}`, type: wgslType(dtypeOf(n)) })),
    ...writes.map((n, w) => ({ name: `out${w}`, type: wgslType(dtypeOf(n)), write: true })),
  ];
  const lines: string[] = [];
  const needCoords = p.leaves.some((l, li) => l.kind !== "local" && c.strides[li + 1]!.some((s, d) => s !== c.strides[0]![d]));
  if (needCoords) lines.push(...unravelConst("i", c.shape, "c"));
  const idxOf = (li: number, l: Leaf & { layout: unknown }): string => {
    const st = c.strides[li + 1]!;
    const lay = (l as { layout: { offset: number } }).layout;
    if (st.every((s, d) => s === c.strides[0]![d])) return lay.offset === 0 ? "i32(i)" : `(${lay.offset}i + i32(i))`;
    return `(${offsetSum(lay.offset, st, "c")})`;
  };
  const e = emitNodes(
    p,
    "n",
    (input, dtype) => {
      const l = p.leaves[input]!;
      if (l.kind === "buffer") return `${bufName(l.node)}[${dx.at(l.node, `u32(${idxOf(input, l)})`)}]`;
      if (l.kind === "iota") return iotaValue(idxOf(input, l), dtype);
      throw new Error("map kernel: no locals");
    },
    helpers,
  );
  lines.push(...e.lines);
  writes.forEach((n, w) => lines.push(`out${w}[${dx.at(n, "i")}] = ${e.outs[w]};`));
  const source = [
    bindingDecls(bufs),
    helperCode(helpers),
    `${ENTRY(WG)}\n  if (i >= P[0]) { return; }\n${lines.map((l) => `  ${l}`).join("\n")}\n}`,
  ].join("\n");
  return {
    source: touchBindings(source),
    reads,
    writes,
    dispatches: size === 0 ? [] : [{ params: [size], grid: grid2(Math.ceil(size / WG), lim) }],
    dynamic: dx.list,
  };
}

// ---------------------------------------------------------------------------------------------------
// reduce

interface Combine {
  readonly init: string;
  readonly combine: (a: string, b: string) => string;
  readonly blocked: boolean;
}

function combiner(op: string, dtype: DType, helpers: Set<string>): Combine {
  const t = wgslType(dtype);
  const float = dtype === "float32";
  const bool = dtype === "bool";
  const c = (combine: (a: string, b: string) => string, init: string): Combine => ({ combine, init, blocked: float && op === "sum" });
  switch (op) {
    case "sum":
      return bool ? c((a, b) => `(${a} | ${b})`, "0u") : c((a, b) => `(${a} + ${b})`, `${t}(0)`);
    case "prod":
      return bool ? c((a, b) => `(${a} & ${b})`, "1u") : c((a, b) => `(${a} * ${b})`, `${t}(1)`);
    case "max":
      if (float) {
        helpers.add("fmax");
        helpers.add("consts");
        return c((a, b) => `fmax(${a}, ${b})`, "(-infF())");
      }
      if (bool) return c((a, b) => `(${a} | ${b})`, "0u");
      return c((a, b) => `max(${a}, ${b})`, dtype === "int32" ? "(-2147483647i - 1i)" : "0u");
    case "min":
      if (float) {
        helpers.add("fmin");
        helpers.add("consts");
        return c((a, b) => `fmin(${a}, ${b})`, "infF()");
      }
      if (bool) return c((a, b) => `(${a} & ${b})`, "1u");
      return c((a, b) => `min(${a}, ${b})`, dtype === "int32" ? "2147483647i" : "4294967295u");
    default:
      throw new Error(`reduce: unknown op ${op}`);
  }
}

/** Rows at least this long get a workgroup each (tree combine); shorter rows an invocation each. */
const WG_ROW_MIN = 128;
const RWG = 64;

export function reduceKernel(
  k: ReduceKernel,
  dtypeOf: (node: number) => DType,
  lim: CodegenLimits,
  alias: ReadonlyMap<number, number> = new Map(),
  dyn?: DynamicOffsets,
): GeneratedKernel {
  const S = k.shape;
  const dx = dynIndexer(dyn);
  const K = k.kept;
  const axes = k.axes;
  const R = S.filter((_, d) => axes.includes(d));
  const nOut = shapeSize(K);
  const nRed = shapeSize(R);
  const helpers = new Set<string>();
  const elemProgs = [...k.steps.map((s) => s.program), k.elem];
  const allLeaves = [...elemProgs.flatMap((p) => p.leaves), ...k.row.leaves];
  const reads = bufferNodes(allLeaves).filter((n) => !alias.has(n));
  const bufName = (n: number) => (alias.has(n) ? `out${alias.get(n)}` : `in${reads.indexOf(n)}`);
  const writes = [...k.rowRoots, ...k.elemRoots];
  const bufs = [
    ...reads.map((n, r) => ({ name: `in${r}`, type: wgslType(dtypeOf(n)) })),
    ...writes.map((n, w) => ({ name: `out${w}`, type: wgslType(dtypeOf(n)), write: true })),
  ];
  // Reduced coordinates: collapse R over every elem leaf's reduced strides and the elem outputs'.
  const redStrides = (st: readonly number[]) => st.filter((_, d) => axes.includes(d));
  const keptStrides = (st: readonly number[]) => st.filter((_, d) => !axes.includes(d));
  const elemLayouts: { prog: number; li: number; strides: readonly number[]; offset: number }[] = [];
  elemProgs.forEach((p, pi) =>
    p.leaves.forEach((l, li) => {
      if (l.kind !== "local") elemLayouts.push({ prog: pi, li, strides: l.layout.strides, offset: l.layout.offset });
    }),
  );
  const sC = contiguousStrides(S);
  const rc = collapse(R.length ? R : [1], [
    R.length ? contiguousStrides(R) : [0],
    ...(R.length ? [...elemLayouts.map((e) => redStrides(e.strides)), redStrides(sC)] : []),
  ]);
  const outRedStrides = R.length ? rc.strides[rc.strides.length - 1]! : [0];
  const leafRed = (j: number) => (R.length ? rc.strides[j + 1]! : [0]);
  // One workgroup per row needs a combine buffer per reduction in workgroup memory.
  const wgRows = nRed >= WG_ROW_MIN && k.steps.length * RWG * 4 <= (lim.maxWorkgroupStorageSize ?? 16384);
  const L: string[] = [];
  const ind = (n: number) => "  ".repeat(n);
  // Row coordinates and per-leaf row bases.
  L.push(...(K.length ? unravelConst("o", K, "k") : []));
  const base = (offset: number, kept: readonly number[]) => offsetSum(offset, kept, "k");
  elemLayouts.forEach((e, j) => L.push(`let b${j} = ${base(e.offset, keptStrides(e.strides))};`));
  L.push(`let bo = ${base(0, keptStrides(sC))};`);
  const elemIdx = (pi: number, li: number): string => {
    const j = elemLayouts.findIndex((e) => e.prog === pi && e.li === li);
    return `(b${j} + ${offsetSum(0, leafRed(j), "q")})`;
  };
  const elemLoad = (pi: number) => (input: number, dtype: DType) => {
    const p = elemProgs[pi]!;
    const l = p.leaves[input]!;
    if (l.kind === "local") return l.name;
    const idx = elemIdx(pi, input);
    return l.kind === "buffer" ? `${bufName(l.node)}[${dx.at(l.node, `u32(${idx})`)}]` : iotaValue(idx, dtype);
  };
  const loopOpen = (body: string[], depth: number): string[] => {
    if (nRed === 0) return [];
    const rIdx = wgRows ? "r" : "r";
    const head = wgRows ? `for (var r = lid; r < ${nRed}u; r += ${RWG}u) {` : `for (var r = 0u; r < ${nRed}u; r++) {`;
    return [
      `${ind(depth)}${head}`,
      ...unravelConst(rIdx, rc.shape, "q").map((l) => `${ind(depth + 1)}${l}`),
      ...body.map((l) => `${ind(depth + 1)}${l}`),
      `${ind(depth)}}`,
    ];
  };
  const wgDecls: string[] = [];
  k.steps.forEach((s, si) => {
    const t = wgslType(s.dtype);
    const cb = combiner(s.op, s.dtype, helpers);
    const e = emitNodes(s.program, `s${si}_`, elemLoad(si), helpers);
    const v = e.outs[0]!;
    if (cb.blocked) {
      L.push(`var acc${si} = 0.0; var mid${si} = 0.0; var part${si} = 0.0; var cnt${si} = 0u;`);
      L.push(
        ...loopOpen(
          [
            ...e.lines,
            `part${si} += ${v}; cnt${si}++;`,
            `if ((cnt${si} & 63u) == 0u) { mid${si} += part${si}; part${si} = 0.0; if ((cnt${si} & 4095u) == 0u) { acc${si} += mid${si}; mid${si} = 0.0; } }`,
          ],
          0,
        ),
      );
      L.push(`var a${si}: ${t} = (acc${si} + (mid${si} + part${si}));`);
    } else {
      L.push(`var a${si}: ${t} = ${cb.init};`);
      L.push(...loopOpen([...e.lines, `a${si} = ${cb.combine(`a${si}`, v)};`], 0));
    }
    if (wgRows) {
      wgDecls.push(`var<workgroup> sh${si}: array<${t}, ${RWG}>;`);
      L.push(`sh${si}[lid] = a${si};`, `workgroupBarrier();`);
      L.push(`for (var w = ${RWG / 2}u; w > 0u; w = w >> 1u) {`, `  if (lid < w) { sh${si}[lid] = ${cb.combine(`sh${si}[lid]`, `sh${si}[lid + w]`)}; }`, `  workgroupBarrier();`, `}`);
      L.push(`let red${s.node}: ${t} = sh${si}[0];`, `workgroupBarrier();`);
    } else L.push(`let red${s.node}: ${t} = a${si};`);
  });
  // Row outputs.
  if (k.rowRoots.length) {
    const rowLoad = (input: number, dtype: DType) => {
      const l = k.row.leaves[input]!;
      if (l.kind === "local") return l.name;
      const idx = `(${base(l.layout.offset, l.layout.strides)})`;
      return l.kind === "buffer" ? `${bufName(l.node)}[${dx.at(l.node, `u32(${idx})`)}]` : iotaValue(idx, dtype);
    };
    const e = emitNodes(k.row, "rw", rowLoad, helpers);
    const stores = k.rowRoots.map((n, w) => `out${w}[${dx.at(n, "o")}] = ${e.outs[w]};`);
    if (wgRows) L.push(`if (lid == 0u) {`, ...e.lines.map((l) => `  ${l}`), ...stores.map((l) => `  ${l}`), `}`);
    else L.push(...e.lines, ...stores);
  }
  if (k.elemRoots.length) {
    const pi = elemProgs.length - 1;
    const e = emitNodes(k.elem, "el", elemLoad(pi), helpers);
    const stores = k.elemRoots.map(
      (n, w) => `out${k.rowRoots.length + w}[${dx.at(n, `u32(bo + ${offsetSum(0, outRedStrides, "q")})`)}] = ${e.outs[w]};`,
    );
    L.push(...loopOpen([...e.lines, ...stores], 0));
  }
  const body = L.map((l) => `  ${l}`).join("\n");
  let entry: string;
  let dispatches: GeneratedKernel["dispatches"];
  if (wgRows) {
    entry = `${wgDecls.join("\n")}
@compute @workgroup_size(${RWG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32, @builtin(num_workgroups) nwg: vec3<u32>) {
  let o = wid.x + wid.y * nwg.x;
  if (o >= P[0]) { return; }
${body}
}`;
    dispatches = nOut === 0 ? [] : [{ params: [nOut], grid: grid2(nOut, lim) }];
  } else {
    entry = `${ENTRY(WG)}
  let o = i;
  if (o >= P[0]) { return; }
${body}
}`;
    dispatches = nOut === 0 ? [] : [{ params: [nOut], grid: grid2(Math.ceil(nOut / WG), lim) }];
  }
  const source = [bindingDecls(bufs), helperCode(helpers), entry].join("\n");
  return { source: touchBindings(source), reads, writes, dispatches, dynamic: dx.list };
}

// ---------------------------------------------------------------------------------------------------
// dot_general with an epilogue

const T = 4;
const WGX = 32;
const WGY = 2;

export function dotKernel(
  k: DotKernel,
  dtypeOf: (node: number) => DType,
  lim: CodegenLimits,
  alias: ReadonlyMap<number, number> = new Map(),
  dyn?: DynamicOffsets,
): GeneratedKernel {
  const dx = dynIndexer(dyn);
  const lhsShape = k.lhs.layout.shape;
  const rhsShape = k.rhs.layout.shape;
  const lg = dotGroups(lhsShape, k.dims, 0);
  const rg = dotGroups(rhsShape, k.dims, 1);
  const a = matStrides(k.lhs.layout, lg)!;
  const b = matStrides(k.rhs.layout, rg)!;
  const nb = shapeSize(lg[0].map((x) => lhsShape[x]!));
  const M = shapeSize(lg[1].map((x) => lhsShape[x]!));
  const K = shapeSize(lg[2].map((x) => lhsShape[x]!));
  const N = shapeSize(rg[2].map((x) => rhsShape[x]!));
  const t = wgslType(k.dtype);
  const float = k.dtype === "float32";
  const vecRows = (s: [number, number, number], off: number) => s[2] === 1 && s[1] % 4 === 0 && s[0] % 4 === 0 && off % 4 === 0;
  const dynOperand = dyn !== undefined && !dyn.aligned4 && (dyn.nodes.has(k.lhs.node) || dyn.nodes.has(k.rhs.node));
  const variant: "nn" | "gen" = float && !dynOperand && vecRows(a, k.lhs.layout.offset) && vecRows(b, k.rhs.layout.offset) ? "nn" : "gen";
  const helpers = new Set<string>();
  const ep = k.epilogue;
  const epReads = bufferNodes(ep.leaves).filter((n) => !alias.has(n));
  const reads = [k.lhs.node, k.rhs.node, ...epReads];
  const writes = [...k.roots];
  const bufs = [
    { name: "A", type: variant === "nn" ? "vec4<f32>" : t },
    { name: "B", type: variant === "nn" ? "vec4<f32>" : t },
    ...epReads.map((n, r) => ({ name: `in${r}`, type: wgslType(dtypeOf(n)) })),
    ...writes.map((n, w) => ({ name: `out${w}`, type: wgslType(dtypeOf(n)), write: true })),
  ];
  // Epilogue: at linear output index `lin` (u32) with the product `acc`.
  const O = k.shape;
  const oc = collapse(O.length ? O : [1], [O.length ? contiguousStrides(O) : [0], ...ep.leaves.map((l) => (l.kind === "local" ? (O.length ? O.map(() => 0) : [0]) : O.length ? l.layout.strides : [0]))]);
  const needCoords = ep.leaves.some((l, li) => l.kind !== "local" && oc.strides[li + 1]!.some((s, d) => s !== oc.strides[0]![d]));
  const e = emitNodes(
    ep,
    "e",
    (input, dtype) => {
      const l = ep.leaves[input]!;
      if (l.kind === "local") return l.name;
      const st = oc.strides[input + 1]!;
      const idx = st.every((s, d) => s === oc.strides[0]![d]) ? `(${l.layout.offset}i + i32(lin))` : `(${offsetSum(l.layout.offset, st, "c")})`;
      return l.kind === "buffer"
        ? `${alias.has(l.node) ? `out${alias.get(l.node)}` : `in${epReads.indexOf(l.node)}`}[${dx.at(l.node, `u32(${idx})`)}]`
        : iotaValue(idx, dtype);
    },
    helpers,
  );
  const storeOne = [
    ...(needCoords ? unravelConst("lin", oc.shape, "c") : []),
    ...e.lines,
    ...writes.map((n, w) => `out${w}[${dx.at(n, "lin")}] = ${e.outs[w]};`),
  ];
  const aW = dx.word(k.lhs.node);
  const bW = dx.word(k.rhs.node);
  const aDyn = aW === null ? "" : ` + ${aW}`;
  const bDyn = bW === null ? "" : ` + ${bW}`;
  const prologue = `@compute @workgroup_size(${WGX}, ${WGY})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let M = ${M}u; let N = ${N}u; let K = ${K}u;
  let bz = gid.z + P[0];
  let i0 = P[1] + gid.y * ${T}u;
  let j0 = gid.x * ${variant === "nn" ? 2 * T : T}u;
  if (i0 >= M || j0 >= N) { return; }
  let aB = ${k.lhs.layout.offset}u${aDyn} + bz * ${a[0]}u; let aR = ${a[1]}u; let aC = ${a[2]}u;
  let bB = ${k.rhs.layout.offset}u${bDyn} + bz * ${b[0]}u; let bR = ${b[1]}u; let bC = ${b[2]}u;
  let r0 = aB + min(i0, M - 1u) * aR; let r1 = aB + min(i0 + 1u, M - 1u) * aR;
  let r2 = aB + min(i0 + 2u, M - 1u) * aR; let r3 = aB + min(i0 + 3u, M - 1u) * aR;`;
  const body = gemmTileBody(variant, t);
  const groups = variant === "nn" ? 2 : 1;
  const store = `
  let cb = bz * M * N;
  for (var g = 0u; g < ${groups}u; g++) {
    let jg = j0 + 4u * g;
    for (var r = 0u; r < 4u; r++) {
      let i = i0 + r;
      if (i < M && jg < N) {
        let v = cs[r + 4u * g];
        for (var q = 0u; q < 4u; q++) {
          if (jg + q < N) {
            let lin = cb + i * N + jg + q;
            let acc: ${t} = v[q];
${storeOne.map((l) => `            ${l}`).join("\n")}
          }
        }
      }
    }
  }
}`;
  const source = touchBindings([bindingDecls(bufs), helperCode(helpers), prologue, body, store].join("\n"));
  const dispatches: { params: number[]; grid: [number, number, number] }[] = [];
  const max = lim.maxWorkgroupsPerDimension;
  if (nb * M * N > 0) {
    const gx = Math.ceil(N / (variant === "nn" ? 2 * T : T) / WGX);
    const rowsPerDispatch = max * T * WGY;
    for (let b0 = 0; b0 < nb; b0 += max) {
      for (let i0 = 0; i0 < M; i0 += rowsPerDispatch) {
        dispatches.push({ params: [b0, i0], grid: [gx, Math.ceil(Math.min(rowsPerDispatch, M - i0) / T / WGY), Math.min(max, nb - b0)] });
      }
    }
  }
  return { source, reads, writes, dispatches, dynamic: dx.list };
}
