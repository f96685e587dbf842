/**
 * @file webgrad's public API. Start here: `np` (arrays), `nn`, `random`, `tree`, and the transforms
 * (`grad`, `vjp`, `jvp`, `vmap`, `jit`, ...). See README.md for a tour.
 */
import "./ops/hooks.js";
import "./ops/devices.js";

export * as np from "./ops/np.js";
export * as nn from "./nn/activations.js";
export * as lax from "./ops/lax/index.js";
export * as random from "./ops/random.js";
export * as tree from "./autodiff/tree.js";
export * as palm from "./nn/palm.js";
export * as lora from "./nn/lora.js";
export * as losses from "./nn/losses.js";
export * as optim from "./nn/optim.js";
export * as generate from "./nn/generate.js";

export { Array } from "./ops/array.js";
export type { Device, NestedArray } from "./ops/array.js";
export type { ArrayLike } from "./ops/np.js";
export { ShapedArray } from "./autodiff/aval.js";
export type { DType, Shape } from "./autodiff/aval.js";
export { Tracer } from "./autodiff/core.js";
export type { Value } from "./autodiff/core.js";

export { jvp } from "./autodiff/jvp.js";
export { vjp, grad, valueAndGrad, linearize } from "./autodiff/transpose.js";
export type { GradOptions } from "./autodiff/transpose.js";
export { vmap } from "./autodiff/vmap.js";
export type { VmapOptions } from "./autodiff/vmap.js";
export { jit, makeJaxpr, evalShape } from "./autodiff/jit.js";
export type { JitOptions } from "./autodiff/jit.js";
export { installJitCompiler, uninstallJitCompiler, lastJitStats, profileJit } from "./ops/compile/index.js";
export type { JitProgramStats, JitProfile } from "./ops/compile/index.js";
export { customJvp, customVjp, checkpoint } from "./autodiff/custom.js";
export { ClosedJaxpr, Jaxpr } from "./autodiff/jaxpr.js";
export { stopGradient } from "./ops/lax/elementwise.js";
export { jacfwd, jacrev, hessian } from "./ops/jacobian.js";
export type { JacobianOptions } from "./ops/jacobian.js";
export { checkGrads, checkGradsAsync, numericalJvp, GradCheckError } from "./ops/check-grads.js";
export type { CheckGradsOptions, GradCheckSummary, GradCheckRecord, GradCheckFailure, GradCheckElement } from "./ops/check-grads.js";
export { scope, keep, dispose } from "./ops/memory.js";
export { devices, defaultDevice, devicePut, memoryStats, setDefaultDevice } from "./ops/devices.js";
export { initWebGpu, adapterInfo, webGpuUnavailableReason } from "./ops/backend/webgpu/index.js";
export { setCpuThreads, shutdownCpuWasmPool, cpuWasmInfo, configureCpuWasm } from "./ops/backend/cpu/wasm/index.js";
export * from "./autodiff/errors.js";
