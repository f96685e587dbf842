/**
 * @file The per-row properties, as plain functions of a spec row and generated inputs; the
 * primitives-*.test.ts files run them with fast-check for every row of spec.ts. Each check throws an
 * Error describing the mismatch (fast-check then prints the shrunk counterexample and its seed).
 *
 * Every primitive is applied directly with `bind` (no np/lax wrapper in between), so what is tested is
 * the primitive's own rules: impl/lower, abstractEval, jvp, transpose, vmap.
 */
import fc from "fast-check";
import { bind, primitiveRegistry } from "../../src/autodiff/core.js";
import type { Value } from "../../src/autodiff/core.js";
import { evalShape, grad, jit, jvp, np, vjp, vmap } from "../../src/index.js";
import type { DType, ShapedArray } from "../../src/index.js";
import {
  assertClose,
  axpy,
  centralDiff,
  EXACT,
  fromLib,
  HostArray,
  isFloatDtype,
  noise,
  Rng,
  seedArb,
  stack,
  sumAbs,
  toLib,
  Tol,
  vdot,
} from "./harness.js";
import { FD_TOL_DEFAULT, makeData, OpRow, Sig, TOL64_DEFAULT } from "./spec.js";

/** The row's primitive applied to operands: always a list of outputs. */
export function applyFn(row: OpRow, params: unknown): (...xs: Value[]) => Value[] {
  const prim = primitiveRegistry.get(row.name);
  if (!prim) throw new Error(`spec row ${row.name}: no such primitive is registered`);
  return (...xs: Value[]) => bind(prim, xs, params);
}

export function tolFor(row: OpRow, dtype: DType): Tol {
  return dtype === "float32" ? row.tol32 : dtype === "float64" ? (row.tol64 ?? TOL64_DEFAULT) : EXACT;
}

const describeSig = (sig: Sig) =>
  `operands ${sig.operands.map((o) => `${o.dtype}[${o.shape.join(",")}]`).join(", ")} params ${JSON.stringify(sig.params)}`;

function hosts(outs: readonly Value[]): HostArray[] {
  return outs.map((o) => fromLib(o));
}

// ---------------------------------------------------------------------------------------------------
// Inputs

export interface ValueCase {
  readonly sig: Sig;
  readonly data: HostArray[];
}

/** Host arrays as fast-check prints them in counterexamples (the data, not the domain functions). */
function hostStr(x: HostArray): string {
  return `${x.dtype}[${x.shape.join(",")}] ${JSON.stringify(Array.from(x.data))}`;
}

/** Makes fast-check print a case as its signature and data instead of the raw object. */
function printable<T extends object>(c: T, str: () => string): T {
  return Object.assign(c, { [fc.toStringMethod]: str });
}

export function valueCaseArb(row: OpRow, mode: "value" | "ad" = "value"): fc.Arbitrary<ValueCase> {
  return fc
    .tuple(row.sig(mode), seedArb)
    .map(([sig, seed]) => {
      const data = makeData(sig, seed, mode);
      return printable({ sig, data }, () => `params ${JSON.stringify(sig.params)}; operands ${data.map(hostStr).join("; ")}`);
    });
}

// ---------------------------------------------------------------------------------------------------
// Values: reference, abstract evaluation, jit

/** Result ≈ the float64 reference, with the reference's shapes and dtypes. */
export function checkReference(row: OpRow, { sig, data }: ValueCase): void {
  const outs = hosts(applyFn(row, sig.params)(...data.map(toLib)));
  const want = row.ref(data, sig.params);
  if (outs.length !== want.length) throw new Error(`${row.name}: ${outs.length} outputs, expected ${want.length}`);
  outs.forEach((o, i) => assertClose(o, want[i]!, tolFor(row, want[i]!.dtype), `${row.name} output ${i} (${describeSig(sig)})`));
}

/**
 * evalShape's avals == the real outputs' shapes, dtypes and weak types, and every real output's buffer
 * holds exactly as many elements as its aval says (an Array takes its shape from the aval, so a
 * backend returning a wrongly sized buffer would otherwise go unnoticed here).
 */
export function checkAbstract(row: OpRow, { sig, data }: ValueCase): void {
  const f = applyFn(row, sig.params);
  const ops = data.map(toLib);
  const avals = evalShape(f, ...ops) as ShapedArray[];
  const outs = f(...ops);
  if (avals.length !== outs.length) throw new Error(`${row.name}: evalShape gives ${avals.length} outputs, eager ${outs.length}`);
  outs.forEach((o, i) => {
    const a = avals[i]!;
    const same = a.dtype === o.aval.dtype && a.weakType === o.aval.weakType && a.shape.length === o.aval.shape.length && a.shape.every((d, k) => d === o.aval.shape[k]);
    if (!same) {
      throw new Error(
        `${row.name} output ${i}: evalShape gives ${a.str()}${a.weakType ? " (weak)" : ""}, eager ${o.aval.str()}${o.aval.weakType ? " (weak)" : ""} (${describeSig(sig)})`,
      );
    }
    const n = fromLib(o).data.length;
    if (n !== o.aval.size) throw new Error(`${row.name} output ${i}: buffer holds ${n} elements, aval ${o.aval.str()} has ${o.aval.size}`);
  });
}

/** jit(f) == f. */
export function checkJit(row: OpRow, { sig, data }: ValueCase): void {
  const f = applyFn(row, sig.params);
  const ops = data.map(toLib);
  const eager = hosts(f(...ops));
  const jitted = hosts(jit(f)(...ops) as Value[]);
  eager.forEach((e, i) => assertClose(jitted[i]!, e, tolFor(row, e.dtype), `${row.name} jit output ${i} (${describeSig(sig)})`));
}

// ---------------------------------------------------------------------------------------------------
// vmap

export interface VmapCase {
  readonly sig: Sig;
  readonly size: number;
  /** Per operand: null (unbatched) or an axis of the batched operand, possibly negative. */
  readonly inAxes: (number | null)[];
  /**
   * The output axis as a fraction in [0, 1), mapped onto [-(r+1), r] once the output rank r is known
   * (one axis for all outputs: they share a rank in every row).
   */
  readonly outAxisFrac: number;
  /** examples[b][i]: operand i of example b (unbatched operands are the same in every example). */
  readonly examples: HostArray[][];
}

export function vmapCaseArb(row: OpRow): fc.Arbitrary<VmapCase> {
  return fc
    .tuple(row.sig("value"), fc.constantFrom(0, 1, 2, 2, 3, 3), seedArb)
    .map(([sig, size, seed]) => {
      const rng = new Rng(seed);
      const n = sig.operands.length;
      let inAxes: (number | null)[] = sig.operands.map((o) => {
        if (rng.next() < 0.25) return null;
        const r = o.shape.length + 1;
        return rng.int(-r, r - 1);
      });
      if (n > 0 && !inAxes.some((a) => a !== null)) {
        const k = rng.int(0, n - 1);
        inAxes[k] = rng.int(-(sig.operands[k]!.shape.length + 1), sig.operands[k]!.shape.length);
      }
      // Sometimes no operand is batched at all (then axisSize gives the size).
      if (rng.next() < 0.1) inAxes = inAxes.map(() => null);
      const examples: HostArray[][] = [];
      const shared = makeData(sig, rng.uint32(), "value");
      for (let b = 0; b < Math.max(size, 1); b++) {
        const own = makeData(sig, rng.uint32(), "value");
        examples.push(own.map((x, i) => (inAxes[i] === null ? shared[i]! : x)));
      }
      const c: VmapCase = { sig, size, inAxes, outAxisFrac: rng.next(), examples };
      return printable(c, () =>
        `size ${size} inAxes ${JSON.stringify(inAxes)} outAxisFrac ${c.outAxisFrac.toFixed(3)} params ${JSON.stringify(sig.params)}; ` +
          `examples ${examples.slice(0, Math.max(size, 1)).map((ex) => `(${ex.map(hostStr).join("; ")})`).join(" ")}`,
      );
    });
}

/** vmap(f) with random in/out axes == stacking f over the examples. */
export function checkVmap(row: OpRow, c: VmapCase): void {
  const f = applyFn(row, c.sig.params);
  // Per-example results (example 0 also gives the output shapes when size is 0).
  const per = c.examples.map((ex) => hosts(f(...ex.map(toLib))));
  const outRank = per[0]!.length > 0 ? per[0]![0]!.shape.length : 0;
  const r = outRank + 1;
  const outAxis = Math.floor(c.outAxisFrac * 2 * r) - r;
  const outNorm = outAxis < 0 ? outAxis + r : outAxis;
  const axes = c.inAxes.map((a, i) => (a === null ? null : a < 0 ? a + c.sig.operands[i]!.shape.length + 1 : a));
  const batchedOps = c.sig.operands.map((o, i) => {
    const a = axes[i];
    if (a === null) return c.examples[0]![i]!;
    const ex = c.examples.slice(0, c.size).map((e) => e[i]!);
    return stack(ex, a!, o.shape, o.dtype);
  });
  const allNull = c.inAxes.every((a) => a === null);
  const opts = { inAxes: c.inAxes, outAxes: outAxis, ...(allNull ? { axisSize: c.size } : {}) };
  const got = hosts(vmap(f, opts)(...batchedOps.map(toLib)) as Value[]);
  per[0]!.forEach((p0, k) => {
    const want = stack(per.slice(0, c.size).map((p) => p[k]!), outNorm, p0.shape, p0.dtype);
    assertClose(
      got[k]!,
      want,
      tolFor(row, p0.dtype),
      `${row.name} vmap output ${k} (size ${c.size}, inAxes ${JSON.stringify(c.inAxes)}, outAxes ${outAxis}; ${describeSig(c.sig)})`,
    );
  });
}

// ---------------------------------------------------------------------------------------------------
// Differentiation (float64)

export interface AdCase extends ValueCase {
  readonly tangentSeed: number;
}

export function adCaseArb(row: OpRow): fc.Arbitrary<AdCase> {
  return fc.tuple(valueCaseArb(row, "ad"), seedArb).map(([c, tangentSeed]) =>
    printable({ sig: c.sig, data: c.data, tangentSeed }, () => `${String(c)}; tangent seed ${tangentSeed}`),
  );
}

/** Which operands are differentiated (the row's diffArgs that exist and are float). */
function diffIndices(row: OpRow, sig: Sig): number[] {
  return row.diffArgs.filter((i) => i < sig.operands.length && isFloatDtype(sig.operands[i]!.dtype));
}

/** f restricted to the differentiated operands (the others are closed over). */
function restricted(row: OpRow, c: ValueCase): { fd: (...xs: Value[]) => Value[]; idx: number[]; primals: HostArray[] } {
  const idx = diffIndices(row, c.sig);
  const f = applyFn(row, c.sig.params);
  const fixed = c.data.map(toLib);
  const fd = (...xs: Value[]) => {
    const ops: Value[] = [...fixed];
    idx.forEach((k, j) => (ops[k] = xs[j]!));
    return f(...ops);
  };
  return { fd, idx, primals: idx.map((k) => c.data[k]!) };
}

const EPS = 1e-6;

function fdScale(outs: readonly HostArray[]): number {
  let m = 0;
  for (const o of outs) for (const v of o.data) if (Number.isFinite(v)) m = Math.max(m, Math.abs(v));
  return 1 + m;
}

/** jvp ≈ central finite differences along a random tangent. */
export function checkJvpFd(row: OpRow, c: AdCase): void {
  const { fd, idx, primals } = restricted(row, c);
  if (idx.length === 0) return;
  const rng = new Rng(c.tangentSeed);
  const tangents = primals.map((p) => noise(p.shape, rng));
  const [outs, touts] = jvp(fd, primals.map(toLib), tangents.map(toLib)) as [Value[], Value[]];
  const out = hosts(outs);
  const plus = hosts(fd(...primals.map((p, j) => toLib(axpy(p, EPS, tangents[j]!)))));
  const minus = hosts(fd(...primals.map((p, j) => toLib(axpy(p, -EPS, tangents[j]!)))));
  const tol = row.fdTol ?? FD_TOL_DEFAULT;
  const scale = fdScale(out);
  hosts(touts).forEach((t, k) => {
    if (row.ad === "zero") {
      if (t.data.some((v) => v !== 0)) throw new Error(`${row.name}: jvp output ${k} should be zero, got ${Array.from(t.data)}`);
      return;
    }
    const want = centralDiff(plus[k]!, minus[k]!, EPS);
    assertClose(t, want, { rtol: tol.rtol, atol: tol.atol * scale }, `${row.name} jvp vs finite differences, output ${k} (${describeSig(c.sig)})`, false);
  });
}

/** ⟨ct, J·t⟩ = ⟨Jᵀ·ct, t⟩ with J·t from jvp and Jᵀ·ct from vjp. */
export function checkTranspose(row: OpRow, c: AdCase): void {
  const { fd, idx, primals } = restricted(row, c);
  if (idx.length === 0) return;
  const rng = new Rng(c.tangentSeed);
  const tangents = primals.map((p) => noise(p.shape, rng));
  const [outs, touts] = jvp(fd, primals.map(toLib), tangents.map(toLib)) as [Value[], Value[]];
  const cts = hosts(outs).map((o) => noise(o.shape, rng, o.dtype));
  const [, vjpFn] = vjp(fd, ...primals.map(toLib));
  const ctIn = hosts(vjpFn(cts.map(toLib)) as Value[]);
  const jt = hosts(touts);
  let lhs = 0;
  let scale = 1;
  cts.forEach((ct, k) => {
    lhs += vdot(ct, jt[k]!);
    scale += sumAbs(ct) * sumAbs(jt[k]!);
  });
  let rhs = 0;
  ctIn.forEach((g, j) => {
    rhs += vdot(g, tangents[j]!);
    scale += sumAbs(g) * sumAbs(tangents[j]!);
  });
  if (!(Math.abs(lhs - rhs) <= 1e-11 * scale)) {
    throw new Error(`${row.name}: <ct, J t> = ${lhs} but <J^T ct, t> = ${rhs} (${describeSig(c.sig)})`);
  }
}

/** jvp of grad ≈ finite differences of grad, for g(x) = Σ w·f(x). */
export function checkSecondOrder(row: OpRow, c: AdCase): void {
  const { fd, idx, primals } = restricted(row, c);
  if (idx.length === 0) return;
  const rng = new Rng(c.tangentSeed);
  const outShapes = hosts(fd(...primals.map(toLib)));
  const weights = outShapes.map((o) => toLib(noise(o.shape, rng)));
  const g = (...xs: Value[]) => {
    const outs = fd(...xs);
    let s: Value = np.sum(np.multiply(outs[0]!, weights[0]!));
    for (let k = 1; k < outs.length; k++) s = np.add(s, np.sum(np.multiply(outs[k]!, weights[k]!)));
    return s;
  };
  const argnums = idx.map((_, j) => j);
  const gradG = (...xs: Value[]) => grad(g, { argnums })(...xs) as Value[];
  const tangents = primals.map((p) => noise(p.shape, rng));
  const [, hvp] = jvp(gradG, primals.map(toLib), tangents.map(toLib)) as [Value[], Value[]];
  const g0 = hosts(gradG(...primals.map(toLib)));
  const plus = hosts(gradG(...primals.map((p, j) => toLib(axpy(p, EPS, tangents[j]!)))));
  const minus = hosts(gradG(...primals.map((p, j) => toLib(axpy(p, -EPS, tangents[j]!)))));
  const tol = row.fdTol ?? FD_TOL_DEFAULT;
  const scale = fdScale(g0);
  hosts(hvp).forEach((h, j) => {
    assertClose(
      h,
      centralDiff(plus[j]!, minus[j]!, EPS),
      { rtol: tol.rtol, atol: tol.atol * scale },
      `${row.name} jvp(grad) vs finite differences of grad, operand ${idx[j]} (${describeSig(c.sig)})`,
      false,
    );
  });
}

// ---------------------------------------------------------------------------------------------------
// Batched derivatives: vmap of jvp and of vjp (the batching rules of every primitive the jvp and
// transpose rules use, with batched and unbatched operands mixed)

export interface AdBatchCase {
  readonly sig: Sig;
  readonly size: number;
  readonly examples: HostArray[][];
  readonly seed: number;
}

export function adBatchCaseArb(row: OpRow): fc.Arbitrary<AdBatchCase> {
  return fc.tuple(row.sig("ad"), fc.integer({ min: 0, max: 3 }), seedArb).map(([sig, size, seed]) => {
    const rng = new Rng(seed);
    const examples = Array.from({ length: Math.max(size, 1) }, () => makeData(sig, rng.uint32(), "ad"));
    return printable({ sig, size, examples, seed }, () => `size ${size} params ${JSON.stringify(sig.params)}; example 0 ${examples[0]!.map(hostStr).join("; ")}`);
  });
}

/** vmap over examples of (jvp tangents, vjp cotangents) == the loop; non-float operands are shared. */
export function checkVmapOfDerivatives(row: OpRow, c: AdBatchCase): void {
  const idx = diffIndices(row, c.sig);
  if (idx.length === 0) return;
  const f = applyFn(row, c.sig.params);
  const shared = c.examples[0]!.map(toLib);
  const fd = (...xs: Value[]) => {
    const ops: Value[] = [...shared];
    idx.forEach((k, j) => (ops[k] = xs[j]!));
    return f(...ops);
  };
  const rng = new Rng(c.seed);
  const outShapes = hosts(fd(...idx.map((k) => shared[k]!)));
  const per = c.examples.map((ex) => ({
    primals: idx.map((k) => ex[k]!),
    tangents: idx.map((k) => noise(ex[k]!.shape, rng)),
    cts: outShapes.map((o) => noise(o.shape, rng)),
  }));
  const nD = idx.length;
  const nO = outShapes.length;
  const both = (...vs: Value[]): Value[] => {
    const ps = vs.slice(0, nD);
    const ts = vs.slice(nD, 2 * nD);
    const cts = vs.slice(2 * nD);
    const [, touts] = jvp(fd, ps, ts) as [Value[], Value[]];
    const [, vjpFn] = vjp(fd, ...ps);
    return [...touts, ...(vjpFn(cts) as Value[])];
  };
  const loop = per.slice(0, c.size).map((e) => hosts(both(...[...e.primals, ...e.tangents, ...e.cts].map(toLib))));
  const inputs = [0, 1, 2].flatMap((part) =>
    (part === 0 ? per[0]!.primals : part === 1 ? per[0]!.tangents : per[0]!.cts).map((x0, i) =>
      stack(
        per.slice(0, c.size).map((e) => (part === 0 ? e.primals : part === 1 ? e.tangents : e.cts)[i]!),
        0,
        x0.shape,
        "float64",
      ),
    ),
  );
  const got = hosts(vmap(both)(...inputs.map(toLib)) as Value[]);
  const shapes = [...outShapes.map((o) => o.shape), ...idx.map((k) => c.sig.operands[k]!.shape)];
  got.forEach((g, k) => {
    const want = stack(loop.map((l) => l[k]!), 0, shapes[k]!, "float64");
    assertClose(g, want, { rtol: 1e-12, atol: 1e-12 }, `${row.name} vmap of ${k < nO ? `jvp output ${k}` : `vjp cotangent ${k - nO}`} (${describeSig(c.sig)})`);
  });
}

/** Cases with big operands (see OpRow.sig's `large` scale). */
export function largeCaseArb(row: OpRow): fc.Arbitrary<ValueCase> {
  return fc.tuple(row.sig("value", "large"), seedArb).map(([sig, seed]) => {
    const data = makeData(sig, seed, "value");
    return printable({ sig, data }, () => `params ${JSON.stringify(sig.params)}; operands ${data.map((x) => `${x.dtype}[${x.shape.join(",")}]`).join("; ")}`);
  });
}
