/**
 * @file Named error classes. Every user-facing failure in webgrad is one of these, with a message of the
 * form "<op>: <expectation>, got <actual>" and, where the fix is known, a "Tip:" line.
 */

/** Base class so callers can catch every webgrad error at once. */
export class WebgradError extends Error {
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

/** Shapes that do not fit the operation (broadcasting, contraction sizes, reshape sizes, axes). */
export class ShapeError extends WebgradError {}

/** A dtype the operation does not accept, or a dtype the device cannot hold (float64 on WebGPU). */
export class DTypeError extends WebgradError {}

/** A traced value was used where a concrete JS value is needed (`if (x > 0)`, `Number(x)`, shapes). */
export class ConcretizationError extends WebgradError {}

/** A tracer was used after the transform that created it had returned (it escaped, e.g. via a closure). */
export class UnexpectedTracerError extends WebgradError {}

/** A non-linear operation was applied to a tangent while transposing (reverse mode). */
export class NonlinearError extends WebgradError {}

/** Two pytrees that must share a structure do not (tangents vs primals, vmap axes vs arguments, ...). */
export class TreeMismatchError extends WebgradError {}

/** Arguments to a transform or an API function that are wrong in kind (argnums out of range, etc.). */
export class ArgumentError extends WebgradError {}

/** Something the backend could not do: allocation over the device limits, lost device, a failed read. */
export class BackendError extends WebgradError {}
