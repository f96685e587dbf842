/**
 * @file The CPU target of the jit compiler (see ./target.ts): `installCpuJitTarget()` registers it, so
 * that `jit` on CPU arrays runs fused kernels once the compiler is installed (`installJitCompiler()`,
 * src/ops/compile/index.ts); without it CPU arrays run through jit's interpreter.
 */
import { registerJitTarget } from "../../../compile/target.js";
import { cpuJitTarget } from "./target.js";

export { cpuJitTarget, CpuSegment, type CpuRunOptions } from "./target.js";

/** Registers the CPU jit target (idempotent). */
export function installCpuJitTarget(): void {
  registerJitTarget(cpuJitTarget);
}
