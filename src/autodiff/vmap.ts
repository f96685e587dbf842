/**
 * @file Vectorising map: the batch trace carries (value, batch axis) pairs through every primitive's
 * `vmap` rule, so `vmap(f)` runs `f` once on whole batches instead of once per example.
 */
import { ShapedArray } from "./aval.js";
import { bind, fullLower, hooks, MainTrace, Primitive, Trace, Tracer, Value, withNewMain } from "./core.js";
import { ArgumentError, ShapeError, TreeMismatchError } from "./errors.js";
import { broadcastPrefix, flatten, TreeDef, unflatten } from "./tree.js";

export type BDim = number | null;

export class BatchTracer extends Tracer {
  private _aval: ShapedArray | undefined;
  constructor(
    trace: Trace,
    readonly val: Value,
    readonly bdim: BDim,
  ) {
    super(trace);
  }
  get aval(): ShapedArray {
    if (this._aval === undefined) {
      const a = this.val.aval;
      this._aval =
        this.bdim === null ? a : new ShapedArray(a.shape.filter((_, i) => i !== this.bdim), a.dtype, a.weakType);
    }
    return this._aval;
  }
  override fullLower(): Value {
    return this.bdim === null ? fullLower(this.val) : this;
  }
}

export class BatchTrace extends Trace {
  get axisSize(): number {
    return this.main.globalData as number;
  }
  pure(x: Value): Tracer {
    return new BatchTracer(this, x, null);
  }
  lift(x: Tracer): Tracer {
    return new BatchTracer(this, x, null);
  }
  processPrimitive(prim: Primitive, tracers: readonly Tracer[], params: any): Tracer[] {
    const ts = tracers as readonly BatchTracer[];
    const vals = ts.map((t) => t.val);
    const dims = ts.map((t) => t.bdim);
    if (dims.every((d) => d === null)) {
      return bind(prim, vals, params).map((v) => new BatchTracer(this, v, null));
    }
    const [outs, outDims] = prim.vmap(vals, dims, params, this.axisSize);
    return outs.map((o, i) => new BatchTracer(this, o, outDims[i] ?? null));
  }
}

/** Moves a batched value's batch axis to `to`, broadcasting an unbatched one (bdim null). */
export function moveBatchAxis(x: Value, bdim: BDim, to: number, axisSize: number): Value {
  if (bdim === null) return hooks().broadcastAxis(x, axisSize, to);
  return bdim === to ? x : hooks().moveaxis(x, bdim, to);
}

/**
 * Flat vmap: runs `fn` with inputs batched along `inDims`, returns the outputs and their batch axes
 * (null where an output does not depend on the batch).
 */
export function vmapFlat(
  fn: (...xs: Value[]) => readonly unknown[],
  inDims: readonly BDim[],
  axisSize: number,
  args: readonly Value[],
): [Value[], BDim[]] {
  return withNewMain(BatchTrace, axisSize, "vmap", (main: MainTrace) => {
    const trace = new BatchTrace(main);
    const tracersIn = args.map((x, i) => (inDims[i] === null ? x : new BatchTracer(trace, x, inDims[i]!)));
    const outs = fn(...tracersIn);
    const tracersOut = outs.map((o, i) => trace.fullRaise(hooks().asValue(o, `vmap output ${i}`)) as BatchTracer);
    return [tracersOut.map((t) => t.val), tracersOut.map((t) => t.bdim)];
  });
}

/** vmapFlat with every output's batch axis moved to 0 (unbatched outputs broadcast). */
export function vmapFlatAxis0(fn: (...xs: Value[]) => readonly unknown[], inDims: readonly BDim[], axisSize: number, args: readonly Value[]): Value[] {
  const [outs, dims] = vmapFlat(fn, inDims, axisSize, args);
  return outs.map((o, i) => moveBatchAxis(o, dims[i]!, 0, axisSize));
}

export type AxisSpec = number | null | readonly AxisSpec[] | { readonly [k: string]: AxisSpec };

export interface VmapOptions {
  /** Batch axis per argument: a number or null for all, or a tree prefix of the argument list. */
  inAxes?: AxisSpec;
  /** Batch axis per output leaf: a number or null for all, or a tree prefix of the output. */
  outAxes?: AxisSpec;
  /** Batch size, needed only when no input is mapped. */
  axisSize?: number;
}

function normAxis(what: string, axis: unknown, ndim: number, i: number): number {
  if (typeof axis !== "number" || !Number.isInteger(axis)) {
    throw new ArgumentError(`${what}: axes must be integers or null, got ${JSON.stringify(axis)} for leaf ${i}`);
  }
  const a = axis < 0 ? axis + ndim : axis;
  if (a < 0 || a >= ndim) {
    throw new ShapeError(`${what}: axis ${axis} is out of bounds for leaf ${i} of rank ${ndim}`);
  }
  return a;
}

/**
 * `vmap(f, {inAxes, outAxes})`: maps `f` over an axis of its inputs, as JAX's vmap. `inAxes` may be a
 * number (all arguments), null (unbatched), or a list/object tree prefix of the arguments.
 */
export function vmap<F extends (...args: any[]) => any>(f: F, opts: VmapOptions = {}): (...args: Parameters<F>) => ReturnType<F> {
  const inAxes = opts.inAxes === undefined ? 0 : opts.inAxes;
  const outAxes = opts.outAxes === undefined ? 0 : opts.outAxes;
  return ((...args: unknown[]) => {
    if (Array.isArray(inAxes) && inAxes.length !== args.length) {
      throw new TreeMismatchError(
        `vmap: inAxes has ${inAxes.length} entries but the function was called with ${args.length} arguments` +
          `\nTip: give one axis (or null) per positional argument, or a single number for all`,
      );
    }
    const [leaves, inDef] = flatten(args);
    const axesPerLeaf = broadcastPrefix("vmap inAxes", Array.isArray(inAxes) ? inAxes : args.map(() => inAxes), args);
    const xs = leaves.map((x, i) => hooks().asValue(x, `vmap argument leaf ${i}`));
    const dims: BDim[] = xs.map((x, i) => {
      const a = axesPerLeaf[i];
      return a === null || a === undefined ? null : normAxis("vmap inAxes", a, x.aval.ndim, i);
    });
    let size: number | undefined = opts.axisSize;
    const seen: string[] = [];
    dims.forEach((d, i) => {
      if (d === null) return;
      const n = xs[i]!.aval.shape[d]!;
      seen.push(`leaf ${i} ${xs[i]!.aval.str()} axis ${d} has size ${n}`);
      if (size === undefined) size = n;
      else if (size !== n) {
        throw new ShapeError(`vmap: mapped axes must have one size, got:\n  ${seen.join("\n  ")}`);
      }
    });
    if (size === undefined) {
      throw new ArgumentError("vmap: no argument is mapped (all inAxes are null)\nTip: pass axisSize in the options");
    }
    let outDef: TreeDef | undefined;
    const flatFn = (...ys: Value[]) => {
      const [ol, od] = flatten(f(...unflatten<unknown[]>(inDef, ys)));
      outDef = od;
      return ol;
    };
    const [outs, outDims] = vmapFlat(flatFn, dims, size, xs);
    const outTree = unflatten(outDef!, outs);
    const outAxesPerLeaf = broadcastPrefix("vmap outAxes", outAxes, outTree);
    const final = outs.map((o, i) => {
      const want = outAxesPerLeaf[i];
      const d = outDims[i]!;
      if (want === null || want === undefined) {
        if (d !== null) {
          throw new ArgumentError(
            `vmap: outAxes is null for output leaf ${i}, but it depends on the mapped axis\nTip: give it an axis`,
          );
        }
        return o;
      }
      const ndimOut = o.aval.ndim + (d === null ? 1 : 0);
      return moveBatchAxis(o, d, normAxis("vmap outAxes", want, ndimOut, i), size!);
    });
    return unflatten(outDef!, final);
  }) as any;
}
