/**
 * @file `scan`: a loop with a carry, scanned inputs and stacked outputs, as a primitive carrying the
 * loop body as a jaxpr (JAX's `scan_p`). Every rule is JAX's:
 * - impl: an eager loop (slices of xs, a per-step scope, ys stacked at the end);
 * - jvp: a scan of the body's JVP, with a fixed point on which carry tangents are non-zero;
 * - vmap: a scan of the batched body, with a fixed point on which carries are batched;
 * - partial eval (reverse mode): a fixed point on which carries are unknown; the known scan runs now
 *   and emits the residuals the linear part needs, stacked as extra ys (loop-invariant ones are hoisted
 *   out of the loop), and the unknown scan is recorded, consuming them as xs;
 * - transpose: a scan in the opposite direction over the transposed body, with the cotangent carry,
 *   cotangents of loop-invariant operands accumulated in the carry and cotangents of xs emitted as ys.
 *
 * Operands are laid out [consts..., init carry..., xs...]; the body jaxpr takes [consts, carry, x] and
 * returns [carry, y]; the primitive returns [final carry..., stacked ys...].
 */
import { ShapedArray } from "../../autodiff/aval.js";
import {
  bind,
  definePrimitiveRules,
  hooks,
  instantiate,
  MaybeZero,
  Primitive,
  Tracer,
  UndefinedPrimal,
  Value,
} from "../../autodiff/core.js";
import { ArgumentError, ShapeError, TreeMismatchError } from "../../autodiff/errors.js";
import { Atom, dce, evalJaxpr, Jaxpr, JaxprEqn, outputsDependOn, traceToJaxpr, Var } from "../../autodiff/jaxpr.js";
import {
  partialEvalJaxpr,
  partialEvalJaxprRules,
  PartialEvalTrace,
  PartialEvalTracer,
} from "../../autodiff/partial-eval.js";
import { backwardPass } from "../../autodiff/transpose.js";
import { flatten, TreeDef, treedefEqual, treedefStr, unflatten } from "../../autodiff/tree.js";
import { moveBatchAxis } from "../../autodiff/vmap.js";
import { scope } from "../memory.js";
import { full } from "../lax/elementwise.js";
import { concatenate, reshape, sliceInDim } from "../lax/structural.js";
import {
  asValues,
  batchJaxpr,
  fitCarry,
  floatTangents,
  freeDead,
  hoist,
  jvpJaxprInst,
  leafPaths,
  literalValues,
  orMasks,
  permute,
  printNested,
  promoteTo,
  span,
  within,
} from "./common.js";

export interface ScanParams {
  /** Const-free body: [consts, carry, x] -> [carry, y]. */
  readonly jaxpr: Jaxpr;
  readonly numConsts: number;
  readonly numCarry: number;
  /** Number of iterations (the leading size of every xs operand and ys output). */
  readonly length: number;
  /** Iterate from the last index down (ys are still stored at their index). */
  readonly reverse: boolean;
  /** A compiler hint (how many iterations to unroll); no effect on values. */
  readonly unroll: number;
}

function stacked(a: ShapedArray, length: number): ShapedArray {
  return new ShapedArray([length, ...a.shape], a.dtype, a.weakType);
}

function unstacked(a: ShapedArray): ShapedArray {
  return new ShapedArray(a.shape.slice(1), a.dtype, a.weakType);
}

/** Binds scan on a closed body (its consts become leading const operands). */
function bindScan(
  cj: { jaxpr: Jaxpr; consts: readonly Value[] },
  consts: readonly Value[],
  carry: readonly Value[],
  xs: readonly Value[],
  p: Omit<ScanParams, "jaxpr" | "numConsts" | "numCarry">,
): Value[] {
  return bind(scanP, [...cj.consts, ...consts, ...carry, ...xs], {
    ...p,
    jaxpr: cj.jaxpr,
    numConsts: cj.consts.length + consts.length,
    numCarry: carry.length,
  } satisfies ScanParams);
}

function scanImpl(args: readonly Value[], p: ScanParams): Value[] {
  const { numConsts: nC, numCarry: nK, length, reverse, jaxpr } = p;
  const consts = args.slice(0, nC);
  const xs = args.slice(nC + nK);
  let carry = args.slice(nC, nC + nK);
  const protectedVals = literalValues(jaxpr, new Set<unknown>(args));
  const ysAt: Value[][] = new globalThis.Array(length);
  const ysHeld = new Set<unknown>();
  for (let t = 0; t < length; t++) {
    const i = reverse ? length - 1 - t : t;
    const outs = scope(() => {
      const x = xs.map((v) => reshape(sliceInDim(v, i, i + 1, 0), v.aval.shape.slice(1)));
      return evalJaxpr(jaxpr, [], [...consts, ...carry, ...x]);
    });
    const next = outs.slice(0, nK);
    ysAt[i] = outs.slice(nK);
    for (const y of ysAt[i]!) ysHeld.add(y);
    freeDead(carry, new Set<unknown>([...next, ...ysHeld]), protectedVals);
    carry = next;
  }
  const yAvals = jaxpr.outAvals.slice(nK);
  const ys = scope(() =>
    yAvals.map((a, k) => {
      if (length === 0) return full([0, ...a.shape], 0, a.dtype);
      return concatenate(
        ysAt.map((y) => reshape(y[k]!, [1, ...a.shape])), // [1, ...y]
        0,
      ); // [length, ...y]
    }),
  );
  freeDead([...ysHeld] as Value[], new Set<unknown>([...carry, ...ys]), protectedVals);
  return [...carry, ...ys];
}

// ---------------------------------------------------------------------------------------------------
// jvp

function scanJvp(primals: readonly Value[], tangentsIn: readonly MaybeZero[], p: ScanParams): [Value[], MaybeZero[]] {
  const { numConsts: nC, numCarry: nK, jaxpr } = p;
  const nX = primals.length - nC - nK;
  const nY = jaxpr.outs.length - nK;
  const tangents = floatTangents(primals, tangentsIn);
  const nz = tangents.map((t) => t !== null);
  const constNz = nz.slice(0, nC);
  const xsNz = nz.slice(nC + nK);
  let carryNz = nz.slice(nC, nC + nK);
  // Fixed point: a carry tangent is non-zero if it starts non-zero or the body makes it so.
  let res: ReturnType<typeof jvpJaxprInst>;
  for (;;) {
    res = jvpJaxprInst(jaxpr, [...constNz, ...carryNz, ...xsNz], [...carryNz, ...new globalThis.Array<boolean>(nY).fill(false)]);
    const carryOut = res.outNonzero.slice(0, nK);
    if (within(carryOut, carryNz)) break;
    carryNz = orMasks(carryNz, carryOut);
  }
  // Stable: the body's carry tangents are exactly `carryNz` (the instantiated ones included).
  const ysNz = res.outNonzero.slice(nK);
  const count = (m: readonly boolean[]) => m.filter(Boolean).length;
  const nzC = count(constNz);
  const nzK = count(carryNz);
  const nzX = count(xsNz);
  const nzY = count(ysNz);
  const nIn = nC + nK + nX;
  // The JVP jaxpr takes [consts, carry, xs, constT, carryT, xsT]; scan wants
  // [consts, constT, carry, carryT, xs, xsT]. Outputs [carry, ys, carryT, ysT] -> [carry, carryT, ys, ysT].
  const { jaxpr: jv, consts: jvConsts } = hoist(res.cj);
  const h = jvConsts.length;
  const inOrder = [
    ...span(0, h),
    ...span(h, nC),
    ...span(h + nIn, nzC),
    ...span(h + nC, nK),
    ...span(h + nIn + nzC, nzK),
    ...span(h + nC + nK, nX),
    ...span(h + nIn + nzC + nzK, nzX),
  ];
  const nOut = nK + nY;
  const outOrder = [...span(0, nK), ...span(nOut, nzK), ...span(nK, nY), ...span(nOut + nzK, nzY)];
  const body = permute(jv, inOrder, outOrder);
  const pick = (vals: readonly MaybeZero[], mask: readonly boolean[]) => vals.filter((_, i) => mask[i]) as Value[];
  const carryT = tangents
    .slice(nC, nC + nK)
    .map((t, i) => (carryNz[i] ? instantiate(t, primals[nC + i]!.aval) : null))
    .filter((t): t is Value => t !== null);
  const outs = bindScan(
    { jaxpr: body, consts: jvConsts },
    [...primals.slice(0, nC), ...pick(tangents.slice(0, nC), constNz)],
    [...primals.slice(nC, nC + nK), ...carryT],
    [...primals.slice(nC + nK), ...pick(tangents.slice(nC + nK), xsNz)],
    { length: p.length, reverse: p.reverse, unroll: p.unroll },
  );
  const carryOut = outs.slice(0, nK);
  let k = nK;
  const carryTOut = carryNz.map((b) => (b ? outs[k++]! : null));
  const ysOut = outs.slice(k, k + nY);
  k += nY;
  const ysTOut = ysNz.map((b) => (b ? outs[k++]! : null));
  return [
    [...carryOut, ...ysOut],
    [...carryTOut, ...ysTOut],
  ];
}

// ---------------------------------------------------------------------------------------------------
// vmap

function scanVmap(args: readonly Value[], dims: readonly (number | null)[], p: ScanParams, size: number): [Value[], (number | null)[]] {
  const { numConsts: nC, numCarry: nK, jaxpr } = p;
  const nY = jaxpr.outs.length - nK;
  const b = dims.map((d) => d !== null);
  const constB = b.slice(0, nC);
  const xsB = b.slice(nC + nK);
  let carryB = b.slice(nC, nC + nK);
  let res: ReturnType<typeof batchJaxpr>;
  for (;;) {
    res = batchJaxpr(jaxpr, [...constB, ...carryB, ...xsB], size, [...carryB, ...new globalThis.Array<boolean>(nY).fill(false)]);
    const carryOut = res.outBatched.slice(0, nK);
    if (within(carryOut, carryB)) break;
    carryB = orMasks(carryB, carryOut);
  }
  const ysB = res.outBatched.slice(nK);
  const at = (i: number, to: number) => moveBatchAxis(args[i]!, dims[i]!, to, size);
  const consts = args.slice(0, nC).map((a, i) => (constB[i] ? at(i, 0) : a));
  const carry = args.slice(nC, nC + nK).map((a, i) => (carryB[i] ? at(nC + i, 0) : a));
  // xs: the scanned axis stays first, the batch axis goes second ([length, batch, ...]).
  const xs = args.slice(nC + nK).map((a, i) => (xsB[i] ? at(nC + nK + i, 1) : a));
  const outs = bindScan(hoist(res.cj), consts, carry, xs, { length: p.length, reverse: p.reverse, unroll: p.unroll });
  return [outs, [...carryB.map((x) => (x ? 0 : null)), ...ysB.map((x) => (x ? 1 : null))]];
}

// ---------------------------------------------------------------------------------------------------
// Partial evaluation

type ResKind =
  | { readonly kind: "const"; readonly operand: number } // a known const operand, forwarded as a const
  | { readonly kind: "xs"; readonly operand: number } // a known xs operand, forwarded as xs
  | { readonly kind: "invariant" } // computed from known consts only: hoisted out of the loop
  | { readonly kind: "stacked" }; // varies per iteration: emitted by the known scan as extra ys

interface ScanSplit {
  readonly carryU: boolean[];
  readonly unknownsOut: boolean[];
  /** Known body: [constsK, carryK, xsK] -> [carryK, ysK, residuals]. */
  readonly known: Jaxpr;
  /** Unknown body: [residuals, constsU, carryU, xsU] -> [carryU, ysU]. */
  readonly unknown: Jaxpr;
  readonly numRes: number;
  readonly resKinds: ResKind[];
}

/** The fixed point on unknown carries, and how each residual reaches the unknown scan. */
function splitScan(p: ScanParams, unknownsIn: readonly boolean[], hoistInvariant: boolean): ScanSplit {
  const { numConsts: nC, numCarry: nK, jaxpr } = p;
  const nY = jaxpr.outs.length - nK;
  const constU = unknownsIn.slice(0, nC);
  const xsU = unknownsIn.slice(nC + nK);
  let carryU = unknownsIn.slice(nC, nC + nK);
  let pe: ReturnType<typeof partialEvalJaxpr>;
  for (;;) {
    pe = partialEvalJaxpr(jaxpr, [...constU, ...carryU, ...xsU], [...carryU, ...new globalThis.Array<boolean>(nY).fill(false)]);
    const carryOut = pe.unknownsOut.slice(0, nK);
    if (within(carryOut, carryU)) break;
    carryU = orMasks(carryU, carryOut);
  }
  const unknownsIn2 = [...constU, ...carryU, ...xsU];
  const knownOperands = unknownsIn2.map((u, i) => (u ? -1 : i)).filter((i) => i >= 0);
  const nCK = constU.filter((u) => !u).length;
  const nKK = carryU.filter((u) => !u).length;
  const { known, numRes } = pe;
  const resAtoms = known.outs.slice(known.outs.length - numRes);
  const variantIn = known.invars.map((_, j) => j >= nCK);
  const resDependsOnLoop = outputsDependOn(known, variantIn).slice(known.outs.length - numRes);
  const resKinds = resAtoms.map((a, r): ResKind => {
    const j = a instanceof Var ? known.invars.indexOf(a) : -1;
    if (j >= 0 && j < nCK) return { kind: "const", operand: knownOperands[j]! };
    if (j >= nCK + nKK) return { kind: "xs", operand: knownOperands[j]! };
    if (j < 0 && hoistInvariant && !resDependsOnLoop[r]) return { kind: "invariant" };
    return { kind: "stacked" };
  });
  return { carryU, unknownsOut: pe.unknownsOut, known, unknown: pe.unknown, numRes, resKinds };
}

/** The unknown body with invars reordered to [constRes, constsU, carryU, xsRes, xsU]. */
function unknownBody(s: ScanSplit, nCU: number, nKU: number, nXU: number): { body: Jaxpr; constRes: number[]; xsRes: number[] } {
  const constRes: number[] = [];
  const xsRes: number[] = [];
  s.resKinds.forEach((k, r) => (k.kind === "const" || k.kind === "invariant" ? constRes : xsRes).push(r));
  const R = s.numRes;
  const order = [...constRes, ...span(R, nCU), ...span(R + nCU, nKU), ...xsRes, ...span(R + nCU + nKU, nXU)];
  return { body: permute(s.unknown, order, span(0, s.unknown.outs.length)), constRes, xsRes };
}

function scanPartialEval(trace: PartialEvalTrace, tracers: readonly PartialEvalTracer[], p: ScanParams): Tracer[] {
  const { numConsts: nC, numCarry: nK, jaxpr } = p;
  const nOut = jaxpr.outs.length;
  const s = splitScan(
    p,
    tracers.map((t) => !t.pval.isKnown),
    true,
  );
  const unkIn = [...tracers.slice(0, nC).map((t) => !t.pval.isKnown), ...s.carryU, ...tracers.slice(nC + nK).map((t) => !t.pval.isKnown)];
  const knownVal = (i: number) => tracers[i]!.pval.known!;
  const known = s.known;
  const nKnownOuts = known.outs.length - s.numRes;
  const nCK = unkIn.slice(0, nC).filter((u) => !u).length;
  const nKK = s.carryU.filter((u) => !u).length;
  const knownIdx = unkIn.map((u, i) => (u ? -1 : i)).filter((i) => i >= 0);

  // Loop-invariant residuals: evaluate once, from the known consts alone.
  const invIdx = s.unknownsOut.some(Boolean) ? s.resKinds.map((k, r) => (k.kind === "invariant" ? r : -1)).filter((r) => r >= 0) : [];
  const resVals: (Value | null)[] = new globalThis.Array(s.numRes).fill(null);
  if (invIdx.length) {
    const [jd] = dce(known, known.outs.map((_, i) => i >= nKnownOuts && invIdx.includes(i - nKnownOuts)));
    const constOnly = new Jaxpr([], known.invars.slice(0, nCK), jd.eqns, jd.outs);
    const vals = evalJaxpr(constOnly, [], knownIdx.slice(0, nCK).map(knownVal));
    invIdx.forEach((r, k) => (resVals[r] = vals[k]!));
  }
  s.resKinds.forEach((k, r) => {
    if (k.kind === "const" || k.kind === "xs") resVals[r] = knownVal(k.operand);
  });

  // The known scan: known outputs and the stacked residuals.
  // Residuals matter only if something is unknown.
  const anyUnknown = s.unknownsOut.some(Boolean);
  const stackIdx = s.resKinds.map((k, r) => (anyUnknown && k.kind === "stacked" ? r : -1)).filter((r) => r >= 0);
  const keep = known.outs.map((_, i) => i < nKnownOuts || stackIdx.includes(i - nKnownOuts));
  const knownOutVals: Value[] = [];
  if (keep.some(Boolean)) {
    const [jk] = dce(known, keep);
    const outs = bind(scanP, knownIdx.map(knownVal), {
      ...p,
      jaxpr: jk,
      numConsts: nCK,
      numCarry: nKK,
    } satisfies ScanParams);
    knownOutVals.push(...outs.slice(0, nKnownOuts));
    stackIdx.forEach((r, k) => (resVals[r] = outs[nKnownOuts + k]!));
  }

  // The unknown scan, recorded: residuals enter as consts (invariant) or xs (per iteration).
  const result: Tracer[] = new globalThis.Array(nOut);
  let kk = 0;
  s.unknownsOut.forEach((u, i) => {
    if (!u) result[i] = trace.pure(knownOutVals[kk++]!);
  });
  const unkOutIdx = s.unknownsOut.map((u, i) => (u ? i : -1)).filter((i) => i >= 0);
  if (unkOutIdx.length) {
    const nCU = nC - nCK;
    const nKU = nK - nKK;
    const nXU = unkIn.length - nC - nK - unkIn.slice(nC + nK).filter((u) => !u).length;
    const { body, constRes, xsRes } = unknownBody(s, nCU, nKU, nXU);
    const pick = (from: number, n: number) => tracers.slice(from, from + n).filter((_, i) => unkIn[from + i]);
    const ins = [
      ...constRes.map((r) => trace.pure(resVals[r]!) as PartialEvalTracer),
      ...pick(0, nC),
      ...pick(nC, nK),
      ...xsRes.map((r) => trace.pure(resVals[r]!) as PartialEvalTracer),
      ...pick(nC + nK, tracers.length - nC - nK),
    ];
    const params: ScanParams = { ...p, jaxpr: body, numConsts: constRes.length + nCU, numCarry: nKU };
    const avals = body.outs.map((a, i) => (i < nKU ? a.aval : stacked(a.aval, p.length)));
    const outs = trace.recordEqn(scanP, ins, params, avals);
    unkOutIdx.forEach((i, k) => (result[i] = outs[k]!));
  }
  return result;
}

/** Syntactic partial evaluation of a scan equation inside a jaxpr (nested control flow). */
function scanPartialEvalJaxpr(unknownsIn: readonly boolean[], eqn: JaxprEqn) {
  const p = eqn.params as ScanParams;
  const { numConsts: nC, numCarry: nK } = p;
  const s = splitScan(p, unknownsIn, false);
  const unkIn = [...unknownsIn.slice(0, nC), ...s.carryU, ...unknownsIn.slice(nC + nK)];
  const known = s.known;
  const nKnownOuts = known.outs.length - s.numRes;
  const nCK = unkIn.slice(0, nC).filter((u) => !u).length;
  const nKK = s.carryU.filter((u) => !u).length;
  const residuals: Var[] = [];
  const resAtoms: Atom[] = new globalThis.Array(s.numRes);
  s.resKinds.forEach((k, r) => {
    if (k.kind === "const" || k.kind === "xs") resAtoms[r] = eqn.inputs[k.operand]!;
  });
  // Residuals matter only if something is unknown.
  const anyUnknown = s.unknownsOut.some(Boolean);
  const stackIdx = s.resKinds.map((k, r) => (anyUnknown && k.kind === "stacked" ? r : -1)).filter((r) => r >= 0);
  const keep = known.outs.map((_, i) => i < nKnownOuts || stackIdx.includes(i - nKnownOuts));
  let knownEqn: JaxprEqn | null = null;
  if (keep.some(Boolean)) {
    const [jk] = dce(known, keep);
    const knownBinders = eqn.outBinders.filter((_, i) => !s.unknownsOut[i]);
    const resBinders = stackIdx.map((r) => new Var(stacked(known.outs[nKnownOuts + r]!.aval, p.length)));
    stackIdx.forEach((r, k) => (resAtoms[r] = resBinders[k]!));
    knownEqn = {
      prim: scanP,
      inputs: eqn.inputs.filter((_, i) => !unkIn[i]),
      params: { ...p, jaxpr: jk, numConsts: nCK, numCarry: nKK } satisfies ScanParams,
      outBinders: [...knownBinders, ...resBinders],
    };
  }
  let unknownEqn: JaxprEqn | null = null;
  if (s.unknownsOut.some(Boolean)) {
    const nCU = nC - nCK;
    const nKU = nK - nKK;
    const nX = unknownsIn.length - nC - nK;
    const nXU = unkIn.slice(nC + nK).filter(Boolean).length;
    const { body, constRes, xsRes } = unknownBody(s, nCU, nKU, nXU);
    const pick = (from: number, n: number) => eqn.inputs.slice(from, from + n).filter((_, i) => unkIn[from + i]);
    const inputs = [
      ...constRes.map((r) => resAtoms[r]!),
      ...pick(0, nC),
      ...pick(nC, nK),
      ...xsRes.map((r) => resAtoms[r]!),
      ...pick(nC + nK, nX),
    ];
    // Known values the unknown scan reads: residuals, and known inits of carries made unknown.
    for (const r of resAtoms) if (r instanceof Var) residuals.push(r);
    eqn.inputs.forEach((a, i) => {
      if (!unknownsIn[i] && unkIn[i] && a instanceof Var) residuals.push(a);
    });
    unknownEqn = {
      prim: scanP,
      inputs,
      params: { ...p, jaxpr: body, numConsts: constRes.length + nCU, numCarry: nKU } satisfies ScanParams,
      outBinders: eqn.outBinders.filter((_, i) => s.unknownsOut[i]),
    };
  }
  return { known: knownEqn, unknown: unknownEqn, unknownsOut: s.unknownsOut, residuals };
}

// ---------------------------------------------------------------------------------------------------
// Transpose

/**
 * Operands given as UndefinedPrimal are the linear ones (tangent consts / xs); the others are residuals.
 * Every carry is treated as linear, as in JAX: a linear scan comes from partial evaluation, whose unknown
 * carries are tangents (a known init there is an instantiated zero, and its cotangent is dropped).
 */
function scanTranspose(cts: readonly MaybeZero[], args: readonly (Value | UndefinedPrimal)[], p: ScanParams): MaybeZero[] {
  const { numConsts: nC, numCarry: nK, jaxpr } = p;
  const isLin = args.map((a) => a instanceof UndefinedPrimal);
  const constLin = isLin.slice(0, nC);
  const xsLin = isLin.slice(nC + nK);
  const resConsts = args.slice(0, nC).filter((_, i) => !constLin[i]) as Value[];
  const resXs = args.slice(nC + nK).filter((_, i) => !xsLin[i]) as Value[];
  const inAvals = jaxpr.inAvals;
  const outAvals = jaxpr.outAvals;
  const linConstAvals = inAvals.slice(0, nC).filter((_, i) => constLin[i]).map((a) => a.withWeak(false));
  const carryAvals = inAvals.slice(nC, nC + nK).map((a) => a.withWeak(false));
  const ctCarry = cts.slice(0, nK).map((c, i) => instantiate(c, carryAvals[i]!));
  const ysCtNz = cts.slice(nK).map((c) => c !== null);
  const ctYs = cts.slice(nK).filter((c): c is Value => c !== null);
  const nRC = resConsts.length;
  const nLC = linConstAvals.length;
  const nRX = resXs.length;

  // Transposed body: [resConsts, ctConstAcc, ctCarry, resX, ctY (non-zero ones)]
  //               -> [ctConstAcc', ctCarryIn, ctX (linear xs)]
  const bodyT = traceToJaxpr(
    (...v: Value[]) => {
      let k = 0;
      const rc = v.slice(k, (k += nRC));
      const acc = v.slice(k, (k += nLC));
      const ctc = v.slice(k, (k += nK));
      const rx = v.slice(k, (k += nRX));
      const cty = v.slice(k);
      let a = 0;
      let b = 0;
      const bodyArgs: (Value | UndefinedPrimal)[] = [
        ...inAvals.slice(0, nC).map((av, i) => (constLin[i] ? new UndefinedPrimal(av) : rc[a++]!)),
        ...inAvals.slice(nC, nC + nK).map((av) => new UndefinedPrimal(av)),
        ...inAvals.slice(nC + nK).map((av, i) => (xsLin[i] ? new UndefinedPrimal(av) : rx[b++]!)),
      ];
      let c = 0;
      const ctsBody: MaybeZero[] = [...ctc, ...ysCtNz.map((nz) => (nz ? cty[c++]! : null))];
      const ctsIn = backwardPass(jaxpr, [], bodyArgs, ctsBody);
      let j = 0;
      const accOut = ctsIn.slice(0, nC).flatMap((ct, i) => {
        if (!constLin[i]) return [];
        const prev = acc[j++]!;
        return [ct === null ? prev : hooks().add(prev, ct)];
      });
      const ctCarryIn = ctsIn.slice(nC, nC + nK).map((ct, i) => instantiate(ct, carryAvals[i]!));
      const ctX = ctsIn
        .slice(nC + nK)
        .flatMap((ct, i) => (xsLin[i] ? [instantiate(ct, inAvals[nC + nK + i]!.withWeak(false))] : []));
      return [...accOut, ...ctCarryIn, ...ctX];
    },
    [
      ...inAvals.slice(0, nC).filter((_, i) => !constLin[i]),
      ...linConstAvals,
      ...carryAvals,
      ...inAvals.slice(nC + nK).filter((_, i) => !xsLin[i]),
      ...outAvals.slice(nK).filter((_, i) => ysCtNz[i]).map((a) => a.withWeak(false)),
    ],
    "transpose",
  );
  const outs = bindScan(
    hoist(bodyT),
    resConsts,
    [...linConstAvals.map((a) => hooks().zeros(a)), ...ctCarry],
    [...resXs, ...ctYs],
    { length: p.length, reverse: !p.reverse, unroll: p.unroll },
  );
  const ctConsts = outs.slice(0, nLC);
  const ctInit = outs.slice(nLC, nLC + nK);
  const ctXs = outs.slice(nLC + nK);
  let a = 0;
  let b = 0;
  return [
    ...constLin.map((l) => (l ? ctConsts[a++]! : null)),
    ...ctInit,
    ...xsLin.map((l) => (l ? ctXs[b++]! : null)),
  ];
}

// ---------------------------------------------------------------------------------------------------
// The primitive

function scanAbstractEval(avals: readonly ShapedArray[], p: ScanParams): ShapedArray[] {
  const { numConsts: nC, numCarry: nK, jaxpr, length } = p;
  const want = jaxpr.inAvals;
  if (avals.length !== want.length) {
    throw new ArgumentError(`scan: the body takes ${want.length} operands, got ${avals.length}`);
  }
  avals.forEach((a, i) => {
    const w = i < nC + nK ? want[i]! : stacked(want[i]!, length);
    if (!a.sameType(w)) {
      const role = i < nC ? "const" : i < nC + nK ? "carry" : "xs";
      throw new ShapeError(`scan: ${role} operand ${i} must be ${w.str()}, got ${a.str()}`);
    }
  });
  const outs = jaxpr.outAvals;
  return outs.map((a, i) => (i < nK ? a : stacked(a, length)));
}

export const scanP: Primitive<ScanParams> = definePrimitiveRules<ScanParams>({
  name: "scan",
  abstractEval: scanAbstractEval,
  impl: (args, p) => scanImpl(args, p) as any,
  jvp: scanJvp,
  transpose: scanTranspose,
  vmap: scanVmap,
  partialEval: scanPartialEval,
  printParams: (p) =>
    `jaxpr=${printNested(p.jaxpr)} length=${p.length} num_carry=${p.numCarry} num_consts=${p.numConsts} ` +
    `reverse=${p.reverse ? "True" : "False"} unroll=${p.unroll}`,
});

partialEvalJaxprRules.set(scanP, scanPartialEvalJaxpr);

// ---------------------------------------------------------------------------------------------------
// The API

export interface ScanOptions {
  /** Number of iterations; required when `xs` is null/undefined, checked against xs otherwise. */
  length?: number;
  /** Scan from the end of xs to the start (ys are still stored at their index). */
  reverse?: boolean;
  /** Compiler hint: iterations to unroll per loop step (a positive integer, or true for all). */
  unroll?: number | boolean;
}

/**
 * `scan(f, init, xs)`: JAX's `lax.scan`. `f(carry, x)` returns `[carry, y]`; runs
 * ```
 * for i in range(length): carry, ys[i] = f(carry, xs[i])
 * ```
 * and returns `[carry, ys]`, ys stacked on a new leading axis. `carry`, `x`, `y` are pytrees; every leaf
 * of `xs` is scanned along axis 0. The carry keeps its structure, shapes and dtypes (JS numbers returned
 * in the carry take the init leaf's dtype). Differentiable in both modes, batchable, and staged once
 * under `jit`.
 */
export function scan<C = any, X = any, Y = any>(
  f: (carry: C, x: X) => readonly [C, Y] | [C, Y],
  init: C,
  xs?: X | null,
  opts: ScanOptions = {},
): [C, Y] {
  if (typeof f !== "function") throw new ArgumentError(`scan: f must be a function, got ${typeof f}`);
  const [initLeaves, initDef] = flatten(init);
  const initPaths = leafPaths(init, "carry");
  let initVals = asValues(initLeaves, initPaths, "scan init");
  const [xsLeaves, xsDef] = flatten(xs ?? null);
  const xsPaths = leafPaths(xs, "xs");
  const xsVals = asValues(xsLeaves, xsPaths, "scan xs");
  const length = scanLength(opts.length, xsVals, xsPaths);
  const unroll = opts.unroll === undefined || opts.unroll === false ? 1 : opts.unroll === true ? Math.max(1, length) : opts.unroll;
  if (!Number.isInteger(unroll) || unroll < 1) {
    throw new ArgumentError(`scan: unroll must be a positive integer or a boolean, got ${String(opts.unroll)}`);
  }
  const xAvals = xsVals.map((v) => unstacked(v.aval));
  const nK = initVals.length;
  for (let attempt = 0; ; attempt++) {
    const promote: (ShapedArray | null)[] = new globalThis.Array(nK).fill(null);
    let yDef: TreeDef | undefined;
    const cj = traceToJaxpr(
      (...vs: Value[]) => {
        const out = f(unflatten<C>(initDef, vs.slice(0, nK)), unflatten<X>(xsDef, vs.slice(nK)));
        if (!globalThis.Array.isArray(out) || out.length !== 2) {
          throw new ArgumentError(
            `scan: f must return a pair [carry, y], got ${globalThis.Array.isArray(out) ? `a list of ${out.length}` : typeof out}` +
              `\nTip: return [newCarry, null] when there is no per-step output`,
          );
        }
        const [cl, cd] = flatten(out[0]);
        if (!treedefEqual(cd, initDef)) {
          throw new TreeMismatchError(
            `scan: the carry returned by f must have init's structure ${treedefStr(initDef)}, got ${treedefStr(cd)}`,
          );
        }
        const carry = asValues(cl, initPaths, "scan carry output").map((v, i) =>
          fitCarry("scan", v, initVals[i]!.aval, initPaths[i]!, i, promote),
        );
        const [yl, yd] = flatten(out[1]);
        yDef = yd;
        return [...carry, ...asValues(yl, leafPaths(out[1], "y"), "scan y")];
      },
      [...initVals.map((v) => v.aval), ...xAvals],
      "scan",
    );
    if (promote.some((a) => a !== null) && attempt < nK) {
      initVals = initVals.map((v, i) => (promote[i] ? promoteTo(v, promote[i]!) : v));
      continue;
    }
    const { jaxpr, consts } = hoist(cj);
    const outs = bind(scanP, [...consts, ...initVals, ...xsVals], {
      jaxpr,
      numConsts: consts.length,
      numCarry: nK,
      length,
      reverse: !!opts.reverse,
      unroll,
    } satisfies ScanParams);
    return [unflatten<C>(initDef, outs.slice(0, nK)), unflatten<Y>(yDef!, outs.slice(nK))];
  }
}

function scanLength(given: number | undefined, xs: readonly Value[], paths: readonly string[]): number {
  if (given !== undefined && (!Number.isInteger(given) || given < 0)) {
    throw new ArgumentError(`scan: length must be a non-negative integer, got ${given}`);
  }
  let n = given;
  let from = "length";
  xs.forEach((v, i) => {
    if (v.aval.ndim === 0) {
      throw new ShapeError(
        `scan: every xs leaf is scanned along axis 0, so it needs at least one axis, got ${paths[i]} ${v.aval.str()}` +
          `\nTip: close over loop-invariant values instead of passing them in xs`,
      );
    }
    const d = v.aval.shape[0]!;
    if (n === undefined) {
      n = d;
      from = `${paths[i]} ${v.aval.str()}`;
    } else if (d !== n) {
      throw new ShapeError(`scan: every xs leaf must have leading size ${n} (from ${from}), got ${paths[i]} ${v.aval.str()}`);
    }
  });
  if (n === undefined) {
    throw new ArgumentError("scan: xs is empty, so the number of iterations is unknown\nTip: pass {length: n}");
  }
  return n;
}
