/**
 * @file Shared setup of the WebGPU suites: opens the device once per test file (`initWebGpu`), and
 * decides what happens without an adapter — with WEBGRAD_REQUIRE_WEBGPU=1 importing this module throws
 * (the suite fails with the reason); otherwise one line explains the skip and `noGpu` is true, for
 * `describe.skipIf(noGpu)`.
 *
 * Also the kernel-level comparison kit: operands built identically on the CPU backend (the oracle) and
 * the WebGPU backend, through random layouts (plain, transposed, reversed, strided slice, broadcast), so
 * every kernel is exercised on views; and a comparison with per-op float32 tolerances.
 */
import fc from "fast-check";
import type { DType, Shape } from "../../src/autodiff/aval.js";
import { cpuBackend, type CpuBuffer } from "../../src/ops/backend/cpu/index.js";
import type { AnyTypedArray } from "../../src/ops/backend/kernel.js";
import {
  initWebGpu,
  webGpuUnavailableReason,
  type GpuHandle,
  type WebGpuBackend,
} from "../../src/ops/backend/webgpu/index.js";
import type { Device } from "../../src/ops/array.js";
import { Rng } from "../property/harness.js";

// Every pipeline-cache hit regenerates the shader and compares (catches keys missing a dtype, etc.).
process.env.WEBGRAD_CHECK_KERNEL_KEYS ??= "1";
export const device: Device | null = await initWebGpu();
export const noGpu = device === null;
if (noGpu) {
  const why = webGpuUnavailableReason() ?? "unknown reason";
  if (process.env.WEBGRAD_REQUIRE_WEBGPU === "1") {
    throw new Error(`WEBGRAD_REQUIRE_WEBGPU=1 but no WebGPU adapter is available: ${why}`);
  }
  console.log(`[webgpu] WebGPU tests skipped: ${why.split("\n")[0]} — run \`npm run setup:webgpu\` to install lavapipe`);
}

/** The backend under test (only touch it inside `describe.skipIf(noGpu)` blocks). */
export const gpu = device?.backend as unknown as WebGpuBackend;
export const cpu = cpuBackend;

/** Array contents come from the property harness's seeded PRNG; fast-check draws the seed. */
export { Rng };

export const seedArb = fc.integer({ min: 0, max: 2 ** 31 - 1 });

/** Shapes of rank 0..maxRank with dims 1..maxDim. */
export const shapeArb = (maxRank = 4, maxDim = 5, minRank = 0): fc.Arbitrary<number[]> =>
  fc.array(fc.integer({ min: 1, max: maxDim }), { minLength: minRank, maxLength: maxRank });

/** Also odd sizes that cross workgroup boundaries (257, 1000, ...). */
export const bigShapeArb: fc.Arbitrary<number[]> = fc.oneof(
  shapeArb(),
  fc.tuple(fc.integer({ min: 200, max: 1100 })).map((s) => [...s]),
  fc.tuple(fc.integer({ min: 1, max: 3 }), fc.integer({ min: 60, max: 300 })).map((s) => [...s]),
);

export type Layout = "plain" | "transpose" | "reverse" | "slice" | "broadcast";
export const layoutArb: fc.Arbitrary<Layout> = fc.constantFrom("plain", "transpose", "reverse", "slice", "broadcast");

/** Value ranges of generated data. */
export interface Range {
  lo: number;
  hi: number;
  /** Round floats to integers. */
  integer?: boolean;
}

export function hostData(dtype: DType, size: number, rng: Rng, range?: Range): AnyTypedArray {
  switch (dtype) {
    case "float32": {
      const r = range ?? { lo: -3, hi: 3 };
      return Float32Array.from({ length: size }, () => {
        const v = rng.uniform(r.lo, r.hi);
        return r.integer ? Math.round(v) : v;
      });
    }
    case "int32": {
      const r = range ?? { lo: -50, hi: 50 };
      return Int32Array.from({ length: size }, () => rng.int(r.lo, r.hi));
    }
    case "uint32": {
      const r = range ?? { lo: 0, hi: 100 };
      return Uint32Array.from({ length: size }, () => rng.int(r.lo, r.hi));
    }
    case "bool":
      return Uint8Array.from({ length: size }, () => (rng.next() < 0.5 ? 1 : 0));
    default:
      throw new Error(`hostData: ${dtype}`);
  }
}

/** GPU handles made during one property run, released at its end. */
export class Arena {
  private readonly hs: GpuHandle[] = [];
  g(h: GpuHandle): GpuHandle {
    this.hs.push(h);
    return h;
  }
  gs(hs: GpuHandle[]): GpuHandle[] {
    hs.forEach((h) => this.hs.push(h));
    return hs;
  }
  release(): void {
    for (const h of this.hs) gpu.release(h);
    this.hs.length = 0;
  }
}

/** The same array on both backends. */
export interface Pair {
  readonly c: CpuBuffer;
  readonly g: GpuHandle;
}

/** Uploads host data to both backends. */
export function upload(data: AnyTypedArray, shape: Shape, dtype: DType, arena: Arena): Pair {
  const out = { shape, dtype };
  return { c: cpu.fromHost(data, out), g: arena.g(gpu.fromHost(data, out)) };
}

/**
 * An operand of `shape` with the given layout: a view made by the backends' own view ops from a base
 * array, identically on both backends.
 */
export function operand(shape: Shape, dtype: DType, layout: Layout, rng: Rng, arena: Arena, range?: Range): Pair {
  const n = shape.length;
  const base = (s: Shape): Pair => upload(hostData(dtype, s.reduce((a, b) => a * b, 1), rng, range), s, dtype, arena);
  switch (layout) {
    case "plain":
      return base(shape);
    case "transpose": {
      const perm = [...Array(n).keys()].sort(() => rng.next() - 0.5);
      const inv: number[] = [];
      perm.forEach((p, i) => (inv[p] = i));
      const b = base(inv.map((i) => shape[i]!));
      return { c: cpu.transpose(b.c, perm), g: arena.g(gpu.transpose(b.g, perm)) };
    }
    case "reverse": {
      const axes = [...Array(n).keys()].filter(() => rng.next() < 0.6);
      const b = base(shape);
      return { c: cpu.reverse(b.c, axes), g: arena.g(gpu.reverse(b.g, axes)) };
    }
    case "slice": {
      const starts = shape.map(() => rng.int(0, 1));
      const baseShape = shape.map((d, i) => (d === 0 ? 0 : starts[i]! + 2 * d));
      const limits = shape.map((d, i) => (d === 0 ? 0 : starts[i]! + 2 * d - 1));
      const st = shape.map((d, i) => (d === 0 ? 0 : starts[i]!));
      const steps = shape.map(() => 2);
      const b = base(baseShape);
      return { c: cpu.slice(b.c, st, limits, steps), g: arena.g(gpu.slice(b.g, st, limits, steps)) };
    }
    case "broadcast": {
      const drop = n === 0 ? 0 : rng.int(0, Math.min(1, n));
      const kept = shape.slice(drop).map((d) => (rng.next() < 0.4 ? 1 : d));
      const dims = kept.map((_, i) => i + drop);
      const b = base(kept);
      return { c: cpu.broadcastInDim(b.c, shape, dims), g: arena.g(gpu.broadcastInDim(b.g, shape, dims)) };
    }
    default:
      throw new Error(`operand: ${String(layout satisfies never)}`);
  }
}

/** Float tolerance: |gpu - cpu| <= atol + rtol·|cpu|; NaN must match NaN, infinities exactly. */
export interface Tol {
  rtol: number;
  atol: number;
}
export const EXACT: Tol = { rtol: 0, atol: 0 };

/** Compares a GPU result with the CPU's, element by element; throws naming the first mismatch. */
export async function expectMatch(c: CpuBuffer, g: GpuHandle, tol: Tol, what: string): Promise<void> {
  const gd = await gpu.read(g);
  const cd = cpu.readSync(c);
  const shapeOk = c.shape.length === g.shape.length && c.shape.every((d, i) => d === g.shape[i]);
  if (!shapeOk || g.dtype !== c.dtype) {
    throw new Error(`${what}: shape/dtype ${g.dtype}[${g.shape}] vs cpu ${c.dtype}[${c.shape}]`);
  }
  if (gd.length !== cd.length) throw new Error(`${what}: ${gd.length} elements vs cpu ${cd.length}`);
  for (let i = 0; i < cd.length; i++) {
    const a = cd[i]!;
    const b = gd[i]!;
    if (Object.is(a, b) || a === b) continue;
    if (Number.isNaN(a) && Number.isNaN(b)) continue;
    const ok = Number.isFinite(a) && Number.isFinite(b) && Math.abs(a - b) <= tol.atol + tol.rtol * Math.abs(a);
    if (!ok) {
      throw new Error(`${what}: element ${i} of [${c.shape}] is ${b} on webgpu, ${a} on cpu (tol ${JSON.stringify(tol)})`);
    }
  }
}

/** Runs a property with a modest run count (lavapipe is a CPU pretending to be a GPU). */
export async function check<T>(arb: fc.Arbitrary<T>, body: (v: T) => Promise<void>, numRuns = 12): Promise<void> {
  await fc.assert(fc.asyncProperty(arb, body), { numRuns });
}
