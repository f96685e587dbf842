/**
 * @file The `lax` namespace: the primitives' direct functions (no broadcasting or promotion), plus
 * control flow. Prefer `np` unless you need exact control over the program.
 */
export * from "./elementwise.js";
export * from "./structural.js";
export * from "./reduce.js";
export * from "./dot.js";
export * from "./indexing.js";
export * from "./sort.js";
export * from "./random-bits.js";
export { scan, cond, switchCase as switch, whileLoop, fori } from "../control-flow.js";
export type { ScanOptions } from "../control-flow.js";
