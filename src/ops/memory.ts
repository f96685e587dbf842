/**
 * @file Scopes for eager loops: `scope(fn)` disposes every array created while `fn` runs, except the
 * ones it returns (anywhere in a returned pytree) and the ones passed to `keep`. Scopes nest. Inside
 * `jit` the compiler owns intermediates, so scopes are only needed around eager code.
 *
 * Ownership: an array created inside a scope belongs to it and is not registered with the garbage-
 * collection safety net of array.ts (registration is the largest cost of a small eager op): the scope
 * disposes it, hands it to the enclosing scope, or, when it escapes the outermost scope, registers it
 * (`Array._track`). So every array is always either owned by an open scope or registered.
 */
import { flatten } from "../autodiff/tree.js";
import { Array, setArrayCreateHook } from "./array.js";

/**
 * The open scopes, innermost last. A scope is the list of arrays it received (created in it, or moved
 * to it from an inner scope); an array belongs to the scope its `_scope` names, so one moved on by
 * `keep` or an inner scope's end is skipped by the list it was first pushed to. (A list and an owner
 * field rather than a Set: adding to a Set hashes the array, a measurable cost on every eager op.)
 */
const stack: Array[][] = [];

function own(list: Array[], a: Array): void {
  list.push(a);
  a._scope = list;
}

function track(a: Array): void {
  own(stack[stack.length - 1]!, a);
}

/** Runs `fn`; disposes the arrays it created that are not part of its result (sync functions only). */
export function scope<R>(fn: () => R): R {
  const created: Array[] = [];
  stack.push(created);
  setArrayCreateHook(track);
  let result: R;
  try {
    result = fn();
  } catch (e) {
    stack.pop();
    if (stack.length === 0) setArrayCreateHook(null);
    for (const a of created) {
      if (a._scope !== created) continue;
      a._scope = null;
      a.dispose();
    }
    throw e;
  }
  stack.pop();
  if (stack.length === 0) setArrayCreateHook(null);
  if (result instanceof Promise) {
    // Nothing is disposed (the promise may still use them); they are no longer owned by this scope.
    for (const a of created) if (a._scope === created) escape(a);
    throw new TypeError("scope: the function returned a Promise; scopes track synchronous code only (await outside the scope)");
  }
  let kept: Set<Array>;
  try {
    kept = new Set(flatten(result)[0].filter((x): x is Array => x instanceof Array));
  } catch (e) {
    for (const a of created) if (a._scope === created) escape(a); // an unreadable result: dispose nothing
    throw e;
  }
  for (const a of created) {
    if (a._scope !== created) continue; // moved to an enclosing scope by keep()
    if (kept.has(a)) escape(a);
    else {
      a._scope = null;
      a.dispose();
    }
  }
  return result;
}

/** Moves an array out of the innermost scope: to the enclosing one, or to the GC safety net. */
function escape(a: Array): void {
  const outer = stack[stack.length - 1];
  if (outer) own(outer, a);
  else {
    a._scope = null;
    a._track();
  }
}

/** Exempts arrays from disposal by the innermost scope (they move to the enclosing one, if any). */
export function keep<T>(tree: T): T {
  const inner = stack[stack.length - 1];
  if (!inner) return tree;
  const outer = stack[stack.length - 2];
  for (const a of flatten(tree)[0]) {
    if (a instanceof Array && a._scope === inner) {
      if (outer) own(outer, a);
      else {
        a._scope = null;
        a._track();
      }
    }
  }
  return tree;
}

/** Disposes every array in a pytree. */
export function dispose(tree: unknown): void {
  for (const a of flatten(tree)[0]) if (a instanceof Array) a.dispose();
}
