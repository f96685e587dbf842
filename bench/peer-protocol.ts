/**
 * @file The IPC protocol between bench/cpu-peers.ts (the parent, which only schedules and tabulates)
 * and bench/peer-process.ts (one child process per peer row, which loads one library and times it).
 * Types and constants only: importing this file loads no peer.
 */

/** A library whose runs a child times; a child loads exactly one. */
export type PeerId = "webgrad" | "webgrad1" | "ort" | "ort-nospin" | "tfjs" | "jax";

/** All peer ids, in table order; `--peers=` selects a subset. */
export const PEER_IDS: readonly PeerId[] = ["webgrad", "webgrad1", "ort", "ort-nospin", "tfjs", "jax"];
/** The peers run without `--peers=` (`ort-nospin` is opt-in: it is ORT handicapped, for comparison). */
export const DEFAULT_PEERS: readonly PeerId[] = ["webgrad", "webgrad1", "ort", "tfjs", "jax"];

/**
 * The parent waits this long (idle) after every reply before it asks the next row to time: threads
 * that keep spinning after a run (onnxruntime-node's intra-op pool, spinning allowed: ~25 ms of CPU
 * over ~70 ms measured on 2 cores) die down before another row's clock starts. Children count their
 * idle CPU from this long after their reply, i.e. only what overlaps other rows' timing.
 */
export const SETTLE_MS = 100;

/** onnxruntime-node's intra-op threads (the machine's cores in the reference runs). */
export const ORT_THREADS = 2;

/**
 * One benchmark a child sets up:
 * - `matmul`: n x n float32 product of `rand(n*n, 1)` and `rand(n*n, 2)`, read back to the host;
 * - `mlp`: one jitted training step (`variant` "compiled" or "interpreted" for webgrad's jit);
 * - `add`: 16M-element float32 add, read back (`variant` "eager" or "jit" for webgrad).
 */
export type Job =
  | { section: "matmul"; n: number }
  | { section: "mlp"; variant?: "compiled" | "interpreted" }
  | { section: "add"; variant?: "eager" | "jit" };

/** Parent -> child. */
export type Request =
  /** Build the runner for `job` (dropping the previous one), run it once, then `warmup` more times. */
  | { kind: "setup"; job: Job; warmup: number }
  /** Run the current runner back to back for ~`ms` (at least once) and report every run's time. */
  | { kind: "round"; ms: number }
  /** Release the peer and exit. */
  | { kind: "close" };

/** Child -> parent. */
export type Reply =
  /** The child has loaded its peer; `info`: a line for the report header. */
  | { kind: "hello"; info?: string }
  /**
   * The runner is built and warm. `sample`: every `stride`-th element of the first run's result (for
   * the cross-check against webgrad's).
   */
  | { kind: "ready"; sample: number[]; stride: number }
  /**
   * One round: `times` in ms per run; `cpuMs`: the child's CPU time during the round. `idle`: the CPU time (all threads of the child, user + system)
   * the child used from SETTLE_MS after its previous reply until this request, and that wall time, in
   * ms: what an idle child took from the other rows while they were timed.
   */
  | { kind: "times"; times: number[]; cpuMs: number; idle?: { cpuMs: number; wallMs: number } }
  /** Loading the peer, building the runner or a run failed (the row is reported n/a). */
  | { kind: "error"; message: string };
