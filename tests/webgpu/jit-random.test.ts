/**
 * @file Random programs through the jit compiler on WebGPU against eager CPU. fast-check generates small
 * float32 programs (tests/property/random-programs.ts, shared with tests/cpu-jit.test.ts; here with the
 * pool concatenation and the pad-with-cropping step): a list of steps over a pool of values of
 * elementwise ops, broadcasts, reductions (with and without keepdims, then used against the full array:
 * softmax-like patterns), matmuls, reshapes, transposes, gathers, concatenations and pads, each step's
 * choices resolved against the values' shapes at run time so the same program runs traced and eagerly.
 * `jit(program)` on webgpu:0 must equal the program run eagerly on the CPU backend within float32
 * tolerances, and so must `jit(grad(loss))` of a scalar loss of the program (backward passes: transposed
 * matmuls, broadcast/reduce transposes, fused residuals). Shrinking gives a minimal failing program.
 */
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { dispose, grad, jit, np, setDefaultDevice, Array as WArray, type Value } from "../../src/index.js";
import { installJitCompiler, lastJitStats, resetJitStats, uninstallJitCompiler } from "../../src/ops/compile/index.js";
import { noGpu } from "./helpers.js";
import { progArb as randomProgArb, programData, programLoss, runProgram, type Prog } from "../property/random-programs.js";

const GPU = "webgpu:0";
const RUNS = Number(process.env.WEBGPU_FC_RUNS ?? "15") || 15;

const progArb = randomProgArb({ concat: "pool", pad: true, dtypes: ["float32"] });

async function check(prog: Prog, seed: number, mode: "value" | "grad" = "value"): Promise<void> {
  const host = programData(prog, seed);
  const cpuIns = host.map((d, i) => np.array(d, { shape: prog.shapes[i], dtype: prog.dtype, device: "cpu" }));
  const gpuIns = host.map((d, i) => np.array(d, { shape: prog.shapes[i], dtype: prog.dtype, device: GPU }));
  const g = (...xs: Value[]) => grad(programLoss(prog), { argnums: [0, 1, 2, 3] })(...xs) as Value[];
  const want = mode === "value" ? runProgram(prog, cpuIns) : g(...cpuIns);
  resetJitStats();
  setDefaultDevice(GPU);
  let got: Value[];
  try {
    got = (mode === "value" ? jit((...xs: Value[]) => runProgram(prog, xs)) : jit(g))(...gpuIns) as Value[];
  } finally {
    setDefaultDevice("cpu");
  }
  try {
    expect(lastJitStats()).not.toBeNull();
    for (let k = 0; k < want.length; k++) {
      const w = want[k] as WArray;
      const g = got[k] as WArray;
      expect(g.shape).toEqual(w.shape);
      const [wd, gd] = [await w.data(), await g.data()];
      for (let i = 0; i < wd.length; i++) {
        const a = Number(wd[i]);
        const b = Number(gd[i]);
        if (Object.is(a, b) || (Number.isNaN(a) && Number.isNaN(b))) continue;
        const tol = mode === "value" ? 2e-4 : 1e-3;
        if (!(Math.abs(a - b) <= tol + tol * Math.abs(a))) {
          throw new Error(`output ${k} element ${i} of [${w.shape}]: ${b} (jit webgpu) vs ${a} (eager cpu)`);
        }
      }
    }
  } finally {
    dispose([cpuIns, gpuIns, want, got]);
  }
}

describe.skipIf(noGpu)("random programs: jit on webgpu == eager on cpu", () => {
  beforeAll(() => installJitCompiler());
  afterAll(() => {
    uninstallJitCompiler();
    setDefaultDevice("cpu");
  });
  it("elementwise, broadcasts, reductions, matmuls, reshapes, transposes, gathers", async () => {
    await fc.assert(
      fc.asyncProperty(progArb, fc.nat(1 << 30), (p, s) => check(p, s)),
      { numRuns: RUNS, ...(process.env.FC_SEED ? { seed: Number(process.env.FC_SEED) } : {}) },
    );
  }, 120_000);

  it("gradients of the same programs: jit(grad(loss)) on webgpu == grad(loss) eagerly on cpu", async () => {
    await fc.assert(
      fc.asyncProperty(progArb, fc.nat(1 << 30), (p, s) => check(p, s, "grad")),
      { numRuns: Math.ceil(RUNS / 2), ...(process.env.FC_SEED ? { seed: Number(process.env.FC_SEED) } : {}) },
    );
  }, 120_000);
});
