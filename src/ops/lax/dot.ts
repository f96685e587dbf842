/**
 * @file dot_general: batched tensor contraction with XLA's dimension numbers, the one primitive behind
 * matmul, einsum, dot and outer. The transpose rules follow JAX's (they are dot_generals again).
 */
import { ShapedArray } from "../../autodiff/aval.js";
import { addTangents, bind1, UndefinedPrimal, Value } from "../../autodiff/core.js";
import { DTypeError, ShapeError } from "../../autodiff/errors.js";
import { DotDims } from "../backend/kernel.js";
import { definePrimitive, OpsPrimitive } from "../primitive.js";
import { transpose } from "./structural.js";
import { bdimTo0, checkAxes, range } from "./util.js";

interface DotParams {
  readonly dims: DotDims;
}

const remaining = (n: number, ...removed: (readonly number[])[]) => range(n).filter((i) => !removed.some((r) => r.includes(i)));

function argsort(xs: readonly number[]): number[] {
  return range(xs.length).sort((a, b) => xs[a]! - xs[b]!);
}

export const dotGeneralP: OpsPrimitive<DotParams> = definePrimitive<DotParams>({
  name: "dot_general",
  abstractEval: ([x, y], { dims }) => {
    const [lc, rc] = dims.contracting;
    const [lb, rb] = dims.batch;
    if (lc.length !== rc.length || lb.length !== rb.length) {
      throw new ShapeError(`dot_general: contracting/batch dimension lists must pair up, got ${JSON.stringify(dims)}`);
    }
    checkAxes("dot_general (lhs)", [...lc, ...lb], x!.ndim);
    checkAxes("dot_general (rhs)", [...rc, ...rb], y!.ndim);
    lc.forEach((a, i) => {
      if (x!.shape[a] !== y!.shape[rc[i]!]) {
        throw new ShapeError(
          `dot_general: contracting dimensions must match, got lhs ${x!.str()} axis ${a} (${x!.shape[a]}) and rhs ${y!.str()} axis ${rc[i]} (${y!.shape[rc[i]!]})`,
        );
      }
    });
    lb.forEach((a, i) => {
      if (x!.shape[a] !== y!.shape[rb[i]!]) {
        throw new ShapeError(`dot_general: batch dimensions must match, got ${x!.str()} and ${y!.str()}`);
      }
    });
    if (x!.dtype !== y!.dtype) throw new DTypeError(`dot_general: operands must share a dtype, got ${x!.dtype} and ${y!.dtype}`);
    const lf = remaining(x!.ndim, lc, lb);
    const rf = remaining(y!.ndim, rc, rb);
    const shape = [...lb.map((a) => x!.shape[a]!), ...lf.map((a) => x!.shape[a]!), ...rf.map((a) => y!.shape[a]!)];
    // bool stays bool (logical or of ands), as jnp.dot and numpy do.
    return [new ShapedArray(shape, x!.dtype, x!.weakType && y!.weakType)];
  },
  jvp: ([x, y], [tx, ty], p) => {
    const out = bind1(dotGeneralP, [x!, y!], p);
    const a = tx ? bind1(dotGeneralP, [tx, y!], p) : null;
    const b = ty ? bind1(dotGeneralP, [x!, ty], p) : null;
    return [[out], [addTangents(a, b)]];
  },
  transpose: ([ct], [x, y], { dims }) => {
    if (ct === null) return [null, null];
    if (x instanceof UndefinedPrimal && y instanceof UndefinedPrimal) {
      throw new DTypeError("dot_general: not linear in both operands at once (webgrad bug)");
    }
    if (x instanceof UndefinedPrimal) return [transposeLhs(ct!, x.aval, y as Value, dims, false), null];
    const swapped: DotDims = {
      contracting: [dims.contracting[1], dims.contracting[0]],
      batch: [dims.batch[1], dims.batch[0]],
    };
    return [null, transposeLhs(ct!, (y as UndefinedPrimal).aval, x as Value, swapped, true)];
  },
  vmap: ([x, y], [dx, dy], { dims }) => {
    const [lc, rc] = dims.contracting;
    const [lb, rb] = dims.batch;
    const inc = (a: readonly number[]) => a.map((i) => i + 1);
    if (dx !== null && dy !== null) {
      const nd: DotDims = { contracting: [inc(lc), inc(rc)], batch: [[0, ...inc(lb)], [0, ...inc(rb)]] };
      return [[bind1(dotGeneralP, [bdimTo0(x!, dx!), bdimTo0(y!, dy!)], { dims: nd })], [0]];
    }
    if (dx !== null) {
      const nd: DotDims = { contracting: [inc(lc), rc], batch: [inc(lb), rb] };
      // The new axis 0 is the first free lhs dim: it lands right after the batch dims.
      return [[bind1(dotGeneralP, [bdimTo0(x!, dx!), y!], { dims: nd })], [lb.length]];
    }
    const nd: DotDims = { contracting: [lc, inc(rc)], batch: [lb, inc(rb)] };
    const lFree = x!.aval.ndim - lc.length - lb.length;
    return [[bind1(dotGeneralP, [x!, bdimTo0(y!, dy!)], { dims: nd })], [lb.length + lFree]];
  },
  // bool contracts as int32 (counts of true pairs), then `!= 0`.
  lower: (b, [x, y], p, [ax], [out]) =>
    ax!.dtype === "bool"
      ? [b.cast(b.dotGeneral(b.cast(x!, "int32"), b.cast(y!, "int32"), p.dims, { shape: out!.shape, dtype: "int32" }), "bool")]
      : [b.dotGeneral(x!, y!, p.dims, out!)],
  printParams: ({ dims }) => {
    const t = (a: readonly number[]) => `(${a.join(", ")}${a.length === 1 ? "," : ""})`;
    return `dimension_numbers=((${t(dims.contracting[0])}, ${t(dims.contracting[1])}), (${t(dims.batch[0])}, ${t(dims.batch[1])}))`;
  },
});

/** Cotangent of the lhs of a dot_general (JAX's _dot_general_transpose_lhs). */
function transposeLhs(g: Value, xAval: ShapedArray, y: Value, dims: DotDims, swapAns: boolean): Value {
  const [xc, yc] = dims.contracting;
  const [xb, yb] = dims.batch;
  const xKept = remaining(xAval.ndim, xc, xb);
  const yKept = remaining(y.aval.ndim, yc, yb);
  const nb = xb.length;
  const ansBatch = range(nb);
  const ansY = swapAns ? range(yKept.length, nb) : range(yKept.length, nb + xKept.length);
  const nd: DotDims = { contracting: [ansY, yKept], batch: [ansBatch, yb] };
  const xcSortedByY = argsort(yc).map((i) => xc[i]!);
  const outAxes = argsort([...xb, ...xKept, ...xcSortedByY]);
  return transpose(bind1(dotGeneralP, [g, y], { dims: nd }), outAxes);
}

export function dotGeneral(x: Value, y: Value, dims: DotDims): Value {
  return bind1(dotGeneralP, [x, y], { dims });
}
