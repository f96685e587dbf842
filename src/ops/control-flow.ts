/**
 * @file Control flow as higher-order primitives, as JAX's `lax`: `scan`, `whileLoop`, `cond`,
 * `switch`, `fori`. Each carries its body/branches as jaxprs and has every rule (impl, jvp, vmap,
 * partial evaluation, transpose), so they compose with grad / vmap / jit. The code lives in
 * control-flow/: start with scan.ts, then cond.ts and while.ts; common.ts holds the shared helpers.
 */
export { scan, scanP } from "./control-flow/scan.js";
export type { ScanOptions, ScanParams } from "./control-flow/scan.js";
export { cond, switchCase, condP } from "./control-flow/cond.js";
export type { CondParams } from "./control-flow/cond.js";
export { switchCase as switch } from "./control-flow/cond.js";
export { whileLoop, whileP } from "./control-flow/while.js";
export type { WhileParams } from "./control-flow/while.js";
export { fori } from "./control-flow/fori.js";
