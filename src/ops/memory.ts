/**
 * @file Scopes for eager loops: `scope(fn)` disposes every array created while `fn` runs, except the
 * ones it returns (anywhere in a returned pytree) and the ones passed to `keep`. Scopes nest. Inside
 * `jit` the compiler owns intermediates, so scopes are only needed around eager code.
 */
import { flatten } from "../autodiff/tree.js";
import { Array, setArrayCreateHook } from "./array.js";

const stack: Set<Array>[] = [];

function track(a: Array): void {
  stack[stack.length - 1]?.add(a);
}

/** Runs `fn`; disposes the arrays it created that are not part of its result (sync functions only). */
export function scope<R>(fn: () => R): R {
  const created = new Set<Array>();
  stack.push(created);
  setArrayCreateHook(track);
  let result: R;
  try {
    result = fn();
  } catch (e) {
    stack.pop();
    if (stack.length === 0) setArrayCreateHook(null);
    for (const a of created) a.dispose();
    throw e;
  }
  stack.pop();
  if (stack.length === 0) setArrayCreateHook(null);
  if (result instanceof Promise) {
    throw new TypeError("scope: the function returned a Promise; scopes track synchronous code only (await outside the scope)");
  }
  const kept = new Set(flatten(result)[0].filter((x): x is Array => x instanceof Array));
  const outer = stack[stack.length - 1];
  for (const a of created) {
    if (kept.has(a)) outer?.add(a);
    else a.dispose();
  }
  return result;
}

/** Exempts arrays from disposal by the innermost scope (they move to the enclosing one, if any). */
export function keep<T>(tree: T): T {
  const inner = stack[stack.length - 1];
  if (!inner) return tree;
  const outer = stack[stack.length - 2];
  for (const a of flatten(tree)[0]) {
    if (a instanceof Array && inner.delete(a)) outer?.add(a);
  }
  return tree;
}

/** Disposes every array in a pytree. */
export function dispose(tree: unknown): void {
  for (const a of flatten(tree)[0]) if (a instanceof Array) a.dispose();
}
