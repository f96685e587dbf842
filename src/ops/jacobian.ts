/**
 * @file Full Jacobians and Hessians, as JAX's `jacfwd`, `jacrev` and `hessian`.
 *
 * - `jacfwd(f)`: forward mode, one JVP per input element, all at once: the inputs are flattened into
 *   one vector of N elements and `vmap` pushes the N one-hot tangents (the rows of eye(N)) through
 *   `jvp`. Cheap when inputs are small.
 * - `jacrev(f)`: reverse mode, one VJP per output element: `vmap` pulls the M one-hot cotangents of
 *   the flattened outputs back through the VJP function of one linearization. Cheap when outputs
 *   are small (a scalar loss: M = 1).
 * - `hessian(f) = jacfwd(jacrev(f))` (forward-over-reverse, as JAX).
 *
 * Result layout (JAX's): for an output leaf of shape O and an input leaf of shape I the block has
 * shape [...O, ...I]; blocks nest as output-tree-of-input-tree, where the input tree is argument
 * `argnums` itself when it is a number and the list of those arguments when it is a list.
 */
import { isFloat, ShapedArray } from "../autodiff/aval.js";
import { hooks, instantiate, Value } from "../autodiff/core.js";
import { ArgumentError, DTypeError } from "../autodiff/errors.js";
import { jvpFlat } from "../autodiff/jvp.js";
import { normalizeArgnums as normalizeArgnumsBase, vjpWithAux } from "../autodiff/transpose.js";
import { flatten, numLeaves, TreeDef, unflatten } from "../autodiff/tree.js";
import { moveBatchAxis, vmapFlat } from "../autodiff/vmap.js";
import * as np from "./np.js";

export interface JacobianOptions {
  /** Which positional arguments to differentiate: a number (default 0) or a list (result: a list). */
  argnums?: number | readonly number[];
  /** f returns `[output, aux]`; aux is returned untouched next to the Jacobian: `[jac, aux]`. */
  hasAux?: boolean;
}

type Fn = (...args: any[]) => any;

/** transpose.ts's argnums normalisation, and no argument twice (each gets one Jacobian block). */
function normalizeArgnums(what: string, argnums: number | readonly number[], nargs: number): number[] {
  const out = normalizeArgnumsBase(what, argnums, nargs);
  if (new Set(out).size !== out.length) {
    throw new ArgumentError(`${what}: argnums must not repeat an argument, got ${JSON.stringify(argnums)}`);
  }
  return out;
}

/** The differentiated arguments as flat values, with the closure that puts them back into the call. */
function prepare(what: string, f: Fn, opts: JacobianOptions, args: unknown[]) {
  const argnums = opts.argnums ?? 0;
  const nums = normalizeArgnums(what, argnums, args.length);
  const dyn = nums.map((k) => args[k]);
  const [leaves, inDef] = flatten(dyn);
  const xs = leaves.map((x, i) => hooks().asValue(x, `${what} argument leaf ${i}`));
  xs.forEach((x, i) => {
    if (!isFloat(x.aval.dtype)) {
      const k = nums[argIndexOfLeaf(inDef, i)]!;
      throw new DTypeError(
        `${what}: can only differentiate with respect to float arguments, got ${x.aval.dtype} in argument ${k}` +
          `\nTip: cast it with np.astype(x, "float32"), or leave it out of argnums`,
      );
    }
  });
  // The Jacobian's inner tree: the argument itself for a number argnums, the list of them otherwise.
  const innerDef: TreeDef =
    typeof argnums === "number" && inDef.kind === "array" ? inDef.children[0]! : inDef;
  const call = (dynVals: readonly unknown[]) => {
    const full = [...args];
    nums.forEach((k, i) => (full[k] = dynVals[i]));
    return f(...full);
  };
  return { xs, inDef, innerDef, call, hasAux: !!opts.hasAux };
}

/** Which element of the (list) tree `def` holds flat leaf `leaf`. */
function argIndexOfLeaf(def: TreeDef, leaf: number): number {
  if (def.kind !== "array") return 0;
  let n = 0;
  for (let i = 0; i < def.children.length; i++) {
    n += numLeaves(def.children[i]!);
    if (leaf < n) return i;
  }
  return def.children.length - 1;
}

/** Splits f's result into output and aux (with hasAux f must return a pair). */
function splitAux(what: string, res: unknown, hasAux: boolean): [unknown, unknown] {
  if (!hasAux) return [res, undefined];
  if (!Array.isArray(res) || res.length !== 2) {
    throw new ArgumentError(`${what}: with hasAux the function must return a pair [output, aux]`);
  }
  return [res[0], res[1]];
}

function checkFloatOutputs(what: string, ys: readonly Value[]): void {
  ys.forEach((y, j) => {
    if (!isFloat(y.aval.dtype)) {
      throw new DTypeError(
        `${what}: the function's outputs must be float arrays, got ${y.aval.str()} in output leaf ${j}` +
          `\nTip: cast it with np.astype, or return it as aux (hasAux) if it is not differentiated`,
      );
    }
  });
}

/**
 * One-hot basis for a flat vector of `n` elements split into leaves: for the leaf at offset `off` of
 * shape `shape`, the [n, ...shape] slab whose row r is one-hot at flat position r - off (zero rows
 * outside the leaf). Concatenated over leaves along the flat axis these are the rows of eye(n).
 */
function basisSlab(n: number, off: number, aval: ShapedArray): Value {
  const size = aval.size;
  const e = np.eye(n, size, { k: -off, dtype: aval.dtype }); // [n, size]
  return np.reshape(e, [n, ...aval.shape]); // [n, ...shape]
}

function offsets(avals: readonly ShapedArray[]): number[] {
  const offs: number[] = [];
  let o = 0;
  for (const a of avals) {
    offs.push(o);
    o += a.size;
  }
  return offs;
}

/** Takes the unbatched value of an output that vmap reports with batch axis `d` (null for all real uses). */
function unbatched(what: string, v: Value, d: number | null): Value {
  if (d !== null) throw new ArgumentError(`${what}: the primal output or aux depends on the basis (webgrad bug)`);
  return v;
}

/**
 * `jacfwd(f, {argnums, hasAux})(...args)`: the Jacobian of `f` by forward mode (vmap of jvp over the
 * standard basis of the inputs). See the file header for the result's layout.
 */
export function jacfwd(f: Fn, opts: JacobianOptions = {}): (...args: any[]) => any {
  return (...args: any[]) => {
    const { xs, inDef, innerDef, call, hasAux } = prepare("jacfwd", f, opts, args);
    const avals = xs.map((x) => x.aval);
    const offs = offsets(avals);
    const n = avals.reduce((s, a) => s + a.size, 0);

    let outDef: TreeDef | undefined;
    let auxDef: TreeDef | undefined;
    let numOut = 0;
    const flatFn = (...vs: Value[]): Value[] => {
      const [out, aux] = splitAux("jacfwd", call(unflatten<unknown[]>(inDef, vs)), hasAux);
      const [ol, od] = flatten(out);
      const [al, ad] = flatten(aux);
      outDef = od;
      auxDef = ad;
      numOut = ol.length;
      const vals = [...ol, ...al].map((x, i) => hooks().asValue(x, `jacfwd output leaf ${i}`));
      checkFloatOutputs("jacfwd", vals.slice(0, numOut));
      return vals;
    };

    let outs: Value[]; // per output leaf: [...O, n]
    let aux: Value[];
    if (n === 0) {
      const vals = flatFn(...xs);
      outs = vals.slice(0, numOut).map((y) => np.zeros([...y.aval.shape, 0], { dtype: y.aval.dtype }));
      aux = vals.slice(numOut);
    } else {
      const basis = avals.map((a, i) => basisSlab(n, offs[i]!, a));
      let numAll = 0;
      const pushfwd = (...ts: Value[]): Value[] => {
        const [po, to] = jvpFlat(flatFn, xs, ts);
        numAll = po.length;
        return [...po.slice(numOut), ...to.slice(0, numOut).map((t, j) => instantiate(t, po[j]!.aval))];
      };
      const [res, dims] = vmapFlat(pushfwd, basis.map(() => 0), n, basis);
      const numAux = numAll - numOut;
      aux = res.slice(0, numAux).map((v, i) => unbatched("jacfwd", v, dims[i]!));
      outs = res.slice(numAux).map((t, j) => {
        const d = dims[numAux + j]!;
        // [...O, n]: the basis axis goes last (JAX's out_axes=-1).
        return moveBatchAxis(t, d, t.aval.ndim - (d === null ? 0 : 1), n);
      });
    }

    const blocks = outs.map((t) => {
      const o = t.aval.shape.slice(0, -1);
      const pieces =
        avals.length === 1 ? [t] : np.split(t, offs.slice(1), t.aval.ndim - 1); // each [...O, size_i]
      return unflatten(
        innerDef,
        pieces.map((p, i) => np.reshape(p, [...o, ...avals[i]!.shape])), // [...O, ...I_i]
      );
    });
    const jac = unflatten(outDef!, blocks);
    return hasAux ? [jac, unflatten(auxDef!, aux)] : jac;
  };
}

/**
 * `jacrev(f, {argnums, hasAux})(...args)`: the Jacobian of `f` by reverse mode (vmap of the VJP
 * function over the standard basis of the outputs). Same layout as `jacfwd`.
 */
export function jacrev(f: Fn, opts: JacobianOptions = {}): (...args: any[]) => any {
  return (...args: any[]) => {
    const { xs, inDef, innerDef, call, hasAux } = prepare("jacrev", f, opts, args);
    const primals = unflatten<unknown[]>(inDef, xs);
    const [out, vjpFn, aux] = vjpWithAux((...ps: unknown[]) => call(ps), hasAux, primals);
    const [ol, outDef] = flatten(out);
    const ys = ol.map((y, j) => hooks().asValue(y, `jacrev output leaf ${j}`));
    checkFloatOutputs("jacrev", ys);
    const outAvals = ys.map((y) => y.aval.withWeak(false));
    const inAvals = xs.map((x) => x.aval);
    const offs = offsets(outAvals);
    const m = outAvals.reduce((s, a) => s + a.size, 0);

    let cts: Value[]; // per input leaf: [m, ...I]
    if (m === 0) {
      cts = inAvals.map((a) => np.zeros([0, ...a.shape], { dtype: a.dtype }));
    } else {
      const basis = outAvals.map((a, j) => basisSlab(m, offs[j]!, a));
      const pullback = (...cs: Value[]): Value[] =>
        flatten<unknown>(vjpFn(unflatten(outDef, cs)))[0].map((c, i) => hooks().asValue(c, `jacrev cotangent ${i}`));
      const [res, dims] = vmapFlat(pullback, basis.map(() => 0), m, basis);
      cts = res.map((c, i) => moveBatchAxis(c, dims[i]!, 0, m));
    }

    // For each input leaf, split the basis axis by output leaf: [size_j, ...I] -> [...O_j, ...I].
    const perInput = cts.map((c, i) => {
      const pieces = outAvals.length === 1 ? [c] : np.split(c, offs.slice(1), 0);
      return pieces.map((p, j) => np.reshape(p, [...outAvals[j]!.shape, ...inAvals[i]!.shape]));
    });
    // Tree transpose: output tree of input trees.
    const blocks = outAvals.map((_, j) => unflatten(innerDef, perInput.map((pieces) => pieces[j]!)));
    const jac = unflatten(outDef, blocks);
    return hasAux ? [jac, aux] : jac;
  };
}

/**
 * `hessian(f, {argnums, hasAux})(...args)`: second derivatives of scalar `f`, forward-over-reverse
 * (`jacfwd(jacrev(f))`). For an argument of shape I the block has shape [...I, ...I].
 */
export function hessian(f: Fn, opts: JacobianOptions = {}): (...args: any[]) => any {
  return jacfwd(jacrev(f, opts), opts);
}
