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

/** The device all arguments live on (an error naming both when they differ). */
export function commonDevice(name: string, args: readonly Concrete[]): Device {
  let dev: Device | null = null;
  for (const a of args) {
    const d = (a as Array).device;
    if (dev === null) dev = d;
    else if (d !== dev) {
      throw new BackendError(
        `${name}: arguments live on different devices (${dev.id} and ${d.id})\nTip: move them with devicePut(x, device)`,
      );
    }
  }
  return dev ?? getDefaultDevice();
}

export function definePrimitive<P>(rules: Omit<PrimitiveRules<P>, "impl"> & { lower: LowerRule<P> }): OpsPrimitive<P> {
  const impl = (args: readonly Concrete[], params: P): Concrete[] => {
    const arrays = args as readonly Array[];
    const device = commonDevice(rules.name, arrays);
    const avalsIn = arrays.map((a) => a.aval);
    const avalsOut = rules.abstractEval(avalsIn, params);
    const inputs = arrays.map((a) => a.buffer);
    const outs = rules.lower(
      device.backend as KernelBuilder<unknown>,
      inputs,
      params,
      avalsIn,
      avalsOut,
    );
    // Each Array owns its handle: a lowering that hands back an input handle gets a fresh view of it.
    return outs.map((b, i) =>
      wrapBuffer(inputs.includes(b) ? device.backend.reshape(b, avalsOut[i]!.shape) : b, avalsOut[i]!, device),
    );
  };
  return definePrimitiveRules<P>({ ...rules, impl }) as OpsPrimitive<P>;
}
