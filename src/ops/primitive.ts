/**
 * @file `definePrimitive` for the ops layer: a primitive's eager implementation is its `lower` rule run
 * on the device's backend (every backend implements the closed kernel-op set of backend/kernel.ts), so
 * a primitive is one stanza and backends never need to know about it.
 */
import { ShapedArray } from "../autodiff/aval.js";
import { Concrete, definePrimitiveRules, Primitive, PrimitiveRules } from "../autodiff/core.js";
import { BackendError } from "../autodiff/errors.js";
import { Array, Device, getDefaultDevice, wrapBuffer } from "./array.js";
import type { KernelBuilder } from "./backend/kernel.js";

export type LowerRule<P> = <H>(
  b: KernelBuilder<H>,
  inputs: readonly H[],
  params: P,
  avalsIn: readonly ShapedArray[],
  avalsOut: readonly ShapedArray[],
) => H[];

export interface OpsPrimitive<P = any> extends Primitive<P> {
  /** Lowering to kernel ops; used for eager execution and by compilers. */
  readonly lower: LowerRule<P>;
}

/**
 * Places the arguments of an op on one device, following JAX's rule: arrays created without an explicit
 * device (JS numbers, np.array without `device`) are *uncommitted* and follow the committed ones, so
 * `np.add(gpuArray, 1)` works with the CPU as the default device. Two committed devices are an error.
 */
export function placeArgs(name: string, args: readonly Array[]): [Device, readonly Array[]] {
  let target: Device | null = null;
  for (const a of args) {
    if (!a.committed) continue;
    if (target === null) target = a.device;
    else if (a.device !== target) {
      throw new BackendError(
        `${name}: arguments live on different devices (${target.id} and ${a.device.id})\nTip: move them with devicePut(x, device)`,
      );
    }
  }
  const dev = target ?? args[0]?.device ?? getDefaultDevice();
  if (args.every((a) => a.device === dev)) return [dev, args];
  return [dev, args.map((a) => (a.device === dev ? a : a.copyTo(dev, name)))];
}

/**
 * A builder that records every handle the backend returns, so a lowering's intermediates (handles that
 * are neither inputs nor outputs) can be released right after it (one per backend, reused).
 */
interface Recorder {
  readonly builder: KernelBuilder<unknown>;
  readonly created: unknown[];
}
const recorders = new WeakMap<object, Recorder>();
function recorderFor(backend: KernelBuilder<unknown>): Recorder {
  let r = recorders.get(backend);
  if (!r) {
    const created: unknown[] = [];
    const wrapped = new Map<PropertyKey, unknown>();
    const builder = new Proxy(backend, {
      get(target, prop) {
        const v = Reflect.get(target, prop, target);
        if (typeof v !== "function" || prop === "typeOf") return v;
        let w = wrapped.get(prop);
        if (!w) {
          w = (...a: unknown[]) => {
            const out = (v as (...x: unknown[]) => unknown).apply(target, a);
            if (globalThis.Array.isArray(out)) created.push(...out);
            else created.push(out);
            return out;
          };
          wrapped.set(prop, w);
        }
        return w;
      },
    });
    r = { builder, created };
    recorders.set(backend, r);
  }
  return r;
}

export function definePrimitive<P>(rules: Omit<PrimitiveRules<P>, "impl"> & { lower: LowerRule<P> }): OpsPrimitive<P> {
  const impl = (args: readonly Concrete[], params: P): Concrete[] => {
    const [device, arrays] = placeArgs(rules.name, args as readonly Array[]);
    const avalsIn = arrays.map((a) => a.aval);
    const avalsOut = rules.abstractEval(avalsIn, params);
    const inputs = arrays.map((a) => a.buffer);
    const backend = device.backend as KernelBuilder<unknown>;
    const rec = recorderFor(backend);
    const mark = rec.created.length;
    let outs: unknown[];
    try {
      outs = rules.lower(rec.builder, inputs, params, avalsIn, avalsOut);
    } finally {
      // Intermediates of the lowering (e.g. a cast before a reduction) are released at once.
      const made = rec.created.splice(mark);
      for (const h of made) if (!inputs.includes(h) && !outs!?.includes(h)) device.backend.release(h);
    }
    const committed = arrays.some((a) => a.committed);
    // Each Array owns its handle: a lowering that hands back an input handle gets a fresh view of it.
    return outs.map((b, i) => {
      const out = wrapBuffer(inputs.includes(b) ? device.backend.reshape(b, avalsOut[i]!.shape) : b, avalsOut[i]!, device);
      out.committed = committed;
      return out;
    });
  };
  return definePrimitiveRules<P>({ ...rules, impl }) as OpsPrimitive<P>;
}
