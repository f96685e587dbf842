/**
 * @file webgrad's CPU backend against its peers on the same machine, each in its own process:
 * onnxruntime-node (2 intra-op threads), tfjs-backend-wasm (SIMD), jax-js (its Wasm backend).
 * Three sections (Markdown tables):
 * - `matmul`: float32 matmul GFLOP/s at n x n squares (webgrad through `np.matmul`, Wasm SIMD kernels
 *   on all threads; and on the main thread alone), with ratios to onnxruntime-node;
 * - `mlp`: one training step of a 3-layer MLP (batch 256, width 512, GELU (tanh form), mean-squared
 *   error, SGD), the whole step (forward, grad, update) under `jit`, in ms per step: webgrad (jit
 *   compiler; jit's interpreter; compiler on one thread) and jax-js (Wasm device, its own jit);
 * - `add`: elementwise add of two 16M-element float32 arrays in GB/s (3 x 64 MiB moved per add).
 *
 * Run: `cd bench && npm ci && npx tsx cpu-peers.ts [sizes...] [--only=matmul,mlp,add]
 * [--peers=webgrad,webgrad1,ort,ort-nospin,tfjs,jax]` (default sizes 256 512 1024 2048, all sections,
 * all peers but `ort-nospin`). The peers are installed in bench/ only (`ONNXRUNTIME_NODE_INSTALL=skip`
 * is fine: the CPU binaries ship inside the npm package). A peer that fails to load is reported as
 * "n/a" with the reason.
 *
 * Isolation: every row runs in its own child process (bench/peer-process.ts, `child_process.fork`ed
 * with tsx's loader; runners in bench/peer-runners.ts, protocol in bench/peer-protocol.ts). Sharing one
 * process mixed the peers' threads: onnxruntime-node's intra-op pool spin-waits for work (after each
 * run it keeps its threads busy for ~70 ms, ~25 ms of CPU, measured on 2 cores), which lands on
 * whatever runs next, and webgrad's worker_threads GEMM on 2 cores has no core to spare (its 1024^2
 * matmul read 44 GFLOP/s in the one-process bench vs 88 standalone). Now this process only schedules:
 * it asks one child at a time, over IPC, to time its runner and waits idle for the answer; the other
 * children sit idle meanwhile, and the parent idles SETTLE_MS (100 ms) before each row's round so that
 * a spinning pool's tail ends before the next clock starts. ORT's headline row keeps its default,
 * spinning allowed (ORT as its users run it; in its own process it harms no one, and turning it off
 * costs ORT itself); `--peers=...,ort-nospin` adds a row with the session config entry
 * "session.intra_op.allow_spinning" = "0" for comparison.
 *
 * Each table is followed by two lines: every row's CPU use while idle, from SETTLE_MS after its round
 * on (share of one core; ~0% means it took nothing from the rows timed meanwhile), and the CPU that
 * other processes on the machine used while each row was timed (from /proc/stat, less the row's own;
 * share of one core). On a shared machine the latter is what moves the medians: a row far above 0%
 * was measured on fewer free cores (and webgrad then drops to one thread on purpose, see
 * `WasmRuntime.threadsFor` in src/ops/backend/cpu/wasm/pool.ts).
 *
 * Peers are timed in interleaved rounds (ROUNDS rounds of ~ROUND_MS per row, after 1 checked run and
 * 2 warm-up runs), so that load from other processes hits all of them alike. Each cell is the median
 * over rounds of the round's best run, and (in parentheses) the best run overall; every run includes
 * getting the result back as a host Float32Array. Every row's first result is checked against
 * webgrad's (matmul and add: every 97th element; mlp: the updated last bias). On a shared machine the
 * median moves with other load, the best much less.
 */
import { fork, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import type { Job, PeerId, Reply, Request } from "./peer-protocol.js";
import { DEFAULT_PEERS, ORT_THREADS, PEER_IDS, SETTLE_MS } from "./peer-protocol.js";
// Constants only: peer-runners.ts imports its libraries lazily, inside the child that runs them.
import { ADD_N, MLP_BATCH, MLP_WIDTH } from "./peer-runners.js";

const argv = process.argv.slice(2);
const sizes = argv.map(Number).filter((n) => n > 0);
const only = argv.find((a) => a.startsWith("--only="))?.slice("--only=".length).split(",");
const peersArg = argv.find((a) => a.startsWith("--peers="))?.slice("--peers=".length).split(",");
for (const p of peersArg ?? []) {
  if (!PEER_IDS.includes(p as PeerId)) throw new Error(`cpu-peers: --peers= takes ${PEER_IDS.join(", ")}, got "${p}"`);
}
const PEERS = new Set<PeerId>((peersArg as PeerId[] | undefined) ?? DEFAULT_PEERS);
const SECTIONS = new Set(only ?? ["matmul", "mlp", "add"]);
const SIZES = sizes.length > 0 ? sizes : [256, 512, 1024, 2048];
/** Interleaved timing rounds per size, and the time per row per round. */
const ROUNDS = 7;
const ROUND_MS = 250;
const WARMUP = 2;

const PEER_LABEL: Record<PeerId, string> = {
  webgrad: "webgrad",
  webgrad1: "webgrad 1 thread",
  ort: `onnxruntime-node (${ORT_THREADS} thr)`,
  "ort-nospin": `onnxruntime-node (${ORT_THREADS} thr, no spin)`,
  tfjs: "tfjs-backend-wasm",
  jax: "jax-js (wasm)",
};

/** tsx's ESM loader, resolved from this file (bench/node_modules/tsx): children run TypeScript too. */
const TSX_LOADER = import.meta.resolve("tsx");
const CHILD_ENTRY = fileURLToPath(new URL("./peer-process.ts", import.meta.url));
const firstLine = (s: string): string => s.split("\n")[0]!;

/** One row's child process; requests go one at a time and resolve with its reply. */
class PeerChild {
  private waiting: ((r: Reply) => void) | null = null;
  private exited: string | null = null;
  /** The load error, when the peer failed to load (every later request answers with it). */
  loadError: string | null = null;
  info: string | undefined;

  private constructor(readonly peer: PeerId, private readonly proc: ChildProcess) {
    proc.on("message", (r: Reply) => {
      const w = this.waiting;
      this.waiting = null;
      w?.(r);
    });
    proc.on("exit", (code, signal) => {
      this.exited = `child exited (${signal ?? code})`;
      const w = this.waiting;
      this.waiting = null;
      w?.({ kind: "error", message: this.exited });
    });
  }

  /** Forks the child and waits until its peer is loaded (or failed to). */
  static async start(peer: PeerId): Promise<PeerChild> {
    const proc = fork(CHILD_ENTRY, [peer], { execArgv: ["--import", TSX_LOADER], stdio: ["ignore", "inherit", "inherit", "ipc"] });
    const child = new PeerChild(peer, proc);
    const hello = await child.next();
    if (hello.kind === "hello") child.info = hello.info;
    else child.loadError = hello.kind === "error" ? hello.message : `unexpected ${hello.kind}`;
    return child;
  }

  private next(): Promise<Reply> {
    if (this.exited !== null) return Promise.resolve({ kind: "error", message: this.exited });
    return new Promise((resolve) => (this.waiting = resolve));
  }

  request(req: Request): Promise<Reply> {
    if (this.loadError !== null) return Promise.resolve({ kind: "error", message: this.loadError });
    if (this.exited !== null) return Promise.resolve({ kind: "error", message: this.exited });
    const reply = this.next();
    this.proc.send(req);
    return reply;
  }

  async close(): Promise<void> {
    if (this.exited !== null) return;
    const gone = new Promise<void>((resolve) => this.proc.once("exit", () => resolve()));
    this.proc.send({ kind: "close" } satisfies Request);
    await gone;
  }
}

/** A table row: a label and the child (one process per row) that times it. */
interface Row {
  label: string;
  child: PeerChild;
}

const infoPrinted = new Set<string>();
/** Starts one child per row (sequentially), printing load failures and new header info lines. */
async function startRows(specs: readonly { peer: PeerId; label: string }[]): Promise<Row[]> {
  const rows: Row[] = [];
  for (const s of specs) {
    const child = await PeerChild.start(s.peer);
    if (child.loadError !== null) console.log(`${s.label}: n/a (${child.loadError})`);
    if (child.info !== undefined && !infoPrinted.has(child.info)) {
      infoPrinted.add(child.info);
      console.log(child.info);
    }
    rows.push({ label: s.label, child });
  }
  return rows;
}

interface Timing {
  /** Median over rounds of each round's best run, and the best run overall, in ms. */
  median: number;
  best: number;
}

/** CPU use of each row's child while idle between its rounds, summed over a section. */
const idleAcc = new Map<string, { cpuMs: number; wallMs: number }>();
/** CPU time other processes (not this benchmark) used while each row was timed, summed over a section. */
const foreignAcc = new Map<string, { cpuMs: number; wallMs: number }>();

/**
 * The machine's busy and total CPU time in ms, summed over cores, from /proc/stat (Linux; null
 * elsewhere): the share of it that a row's own process did not use during its round is other load.
 */
function machineCpu(): { busyMs: number; totalMs: number } | null {
  try {
    const f = readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).slice(1).map(Number);
    // user nice system idle iowait irq softirq steal (in USER_HZ = 1/100 s)
    const [user, nice, system, idle, iowait, irq, softirq, steal] = f.map((x) => x || 0) as number[];
    const busy = user! + nice! + system! + irq! + softirq! + steal!;
    return { busyMs: busy * 10, totalMs: (busy + idle! + iowait!) * 10 };
  } catch {
    return null;
  }
}

/**
 * Sets up `job(row)` in every row's child (one after the other, nothing else running), checks each
 * first result against the reference row's (the first that has one: webgrad's when selected) with
 * `check` (a message on disagreement), then times the rows in ROUNDS interleaved rounds. Rows that
 * failed (setup, check) come back undefined.
 */
async function timeRows(
  rows: readonly Row[], job: (r: Row) => Job, rounds: number,
  check: (ref: number[], got: number[]) => string | null, dropOnMismatch: boolean,
): Promise<(Timing | undefined)[]> {
  const live: boolean[] = [];
  let ref: number[] | null = null;
  for (const row of rows) {
    const r = await row.child.request({ kind: "setup", job: job(row), warmup: WARMUP });
    if (r.kind !== "ready") {
      if (row.child.loadError === null) console.log(`${row.label} ${describe(job(row))}: ${r.kind === "error" ? r.message : r.kind}`);
      live.push(false);
      continue;
    }
    if (ref === null) ref = r.sample;
    else {
      const bad = check(ref, r.sample);
      if (bad !== null) {
        console.log(`${row.label} disagrees with ${rows.find((x, i) => live[i])?.label ?? "the first row"} at ${describe(job(row))}: ${bad}`);
        if (dropOnMismatch) {
          live.push(false);
          continue;
        }
      }
    }
    live.push(true);
  }
  const perRound: number[][] = rows.map(() => []);
  for (let k = 0; k < rounds; k++) {
    for (let i = 0; i < rows.length; i++) {
      if (!live[i]) continue;
      const row = rows[i]!;
      // Idle, so that the previous row's leftover threads (a spinning pool) stop before this row's clock starts.
      await sleep(SETTLE_MS);
      const m0 = machineCpu();
      const r = await row.child.request({ kind: "round", ms: ROUND_MS });
      const m1 = machineCpu();
      if (r.kind !== "times") {
        console.log(`${row.label} ${describe(job(row))}: ${r.kind === "error" ? r.message : r.kind}`);
        live[i] = false;
        continue;
      }
      perRound[i]!.push(Math.min(...r.times));
      if (m0 !== null && m1 !== null) {
        const a = foreignAcc.get(row.label) ?? { cpuMs: 0, wallMs: 0 };
        const foreign = Math.max(0, m1.busyMs - m0.busyMs - r.cpuMs);
        const wall = (m1.totalMs - m0.totalMs) / availableParallelism();
        foreignAcc.set(row.label, { cpuMs: a.cpuMs + foreign, wallMs: a.wallMs + wall });
      }
      if (r.idle !== undefined) {
        const a = idleAcc.get(row.label) ?? { cpuMs: 0, wallMs: 0 };
        idleAcc.set(row.label, { cpuMs: a.cpuMs + r.idle.cpuMs, wallMs: a.wallMs + r.idle.wallMs });
      }
    }
  }
  return perRound.map((ts, i) => {
    if (!live[i] || ts.length === 0) return undefined;
    const sorted = [...ts].sort((x, y) => x - y);
    return { median: sorted[Math.floor(sorted.length / 2)]!, best: sorted[0]! };
  });
}

function describe(job: Job): string {
  return job.section === "matmul" ? `n=${job.n}` : `${job.section}${job.variant ? ` (${job.variant})` : ""}`;
}

/** Max |a - b| over the common samples (NaN where lengths differ or a value is not finite). */
function maxDiff(a: number[], b: number[]): number {
  if (a.length !== b.length) return NaN;
  let err = 0;
  for (let i = 0; i < a.length; i++) err = Math.max(err, Math.abs(a[i]! - b[i]!));
  return err;
}

/**
 * Prints and clears, for `rows`: each row's CPU use while idle (share of one core), and the CPU other
 * processes on the machine used while it was timed (share of one core: the load that makes its median
 * move; 0% = the row had the machine to itself).
 */
function printIdle(rows: readonly Row[]): void {
  const line = (acc: Map<string, { cpuMs: number; wallMs: number }>, what: string): void => {
    const parts = rows.flatMap((r) => {
      const a = acc.get(r.label);
      acc.delete(r.label);
      // Under ~100 ms in all (e.g. idle time of a section's only live row) the share means nothing.
      return a && a.wallMs > 100 ? [`${r.label} ${((100 * a.cpuMs) / a.wallMs).toFixed(1)}%`] : [];
    });
    if (parts.length > 0) console.log(`${what}: ${parts.join(", ")}`);
  };
  console.log("");
  line(idleAcc, "idle CPU while other rows were timed (share of one core; all threads of the row's process)");
  line(foreignAcc, "other processes' CPU while the row was timed (share of one core, from /proc/stat)");
}

const fmt = (v: { median: number; best: number } | undefined, digits = 1): string =>
  v === undefined ? "n/a" : `${v.median.toFixed(digits)} (${v.best.toFixed(digits)})`;

async function matmulSection(): Promise<void> {
  const rows = await startRows(PEER_IDS.filter((p) => PEERS.has(p)).map((peer) => ({ peer, label: PEER_LABEL[peer] })));
  const results = new Map<string, Map<number, { median: number; best: number }>>();
  for (const n of SIZES) {
    const flops = 2 * n * n * n;
    // Loose check: float32 sums of n products in any order.
    const check = (ref: number[], got: number[]): string | null => {
      const err = maxDiff(ref, got);
      return err < 1e-3 * Math.sqrt(n) ? null : `max |diff| ${err}`;
    };
    const t = await timeRows(rows, () => ({ section: "matmul", n }), ROUNDS, check, true);
    rows.forEach((row, i) => {
      const m = results.get(row.label) ?? new Map<number, { median: number; best: number }>();
      results.set(row.label, m);
      const v = t[i];
      // The fastest time is the highest rate: median and best carry over.
      if (v !== undefined) m.set(n, { median: flops / v.median / 1e6, best: flops / v.best / 1e6 });
    });
  }
  for (const r of rows) await r.child.close();

  const labels = rows.map((r) => r.label);
  const w0 = PEER_LABEL.webgrad;
  const ortName = labels.find((l) => l === PEER_LABEL.ort) ?? labels.find((l) => l.startsWith("onnxruntime"));
  console.log("\nfloat32 matmul, GFLOP/s: median over rounds of each round's best run (best run overall)");
  console.log(`| n | ${labels.join(" | ")} | webgrad / ${ortName ?? "onnxruntime"} |`);
  console.log(`|---|${labels.map(() => "---").join("|")}|---|`);
  for (const n of SIZES) {
    const w = results.get(w0)?.get(n);
    const o = ortName ? results.get(ortName)?.get(n) : undefined;
    const ratio = w && o ? `${(w.median / o.median).toFixed(2)}x (best ${(w.best / o.best).toFixed(2)}x)` : "n/a";
    console.log(`| ${n} | ${labels.map((l) => fmt(results.get(l)?.get(n))).join(" | ")} | ${ratio} |`);
  }
  if (PEERS.has("webgrad")) {
    console.log("\nratios webgrad / peer (medians):");
    for (const n of SIZES) {
      const w = results.get(w0)?.get(n);
      const parts = labels
        .filter((l) => l !== w0)
        .map((l) => {
          const v = results.get(l)?.get(n);
          return `${l} ${w && v ? (w.median / v.median).toFixed(2) + "x" : "n/a"}`;
        });
      console.log(`  n=${n}: ${parts.join(", ")}`);
    }
  }
  printIdle(rows);
}

async function mlpSection(): Promise<void> {
  const specs: { peer: PeerId; label: string; variant?: "compiled" | "interpreted" }[] = [
    { peer: "webgrad", label: "webgrad jit (compiled)", variant: "compiled" },
    { peer: "webgrad", label: "webgrad jit (interpreted)", variant: "interpreted" },
    { peer: "webgrad1", label: "webgrad compiled, 1 thread", variant: "compiled" },
    { peer: "jax", label: "jax-js (wasm)" },
  ];
  const chosen = specs.filter((s) => PEERS.has(s.peer));
  if (chosen.length === 0) return;
  const rows = await startRows(chosen);
  // Same data, same model: the first steps' updated b3 agree (else a warning; the row is still timed).
  const check = (ref: number[], got: number[]): string | null => {
    const err = maxDiff(ref, got);
    return err < 1e-4 ? null : `mlp step: max |diff| of b3 ${err}`;
  };
  const t = await timeRows(rows, (r) => ({ section: "mlp", variant: chosen[rows.indexOf(r)]!.variant }), 5, check, false);
  for (const r of rows) await r.child.close();
  console.log(
    `\nMLP training step (batch ${MLP_BATCH}, width ${MLP_WIDTH}, 3 layers, GELU, MSE, SGD; under jit), ms per step: ` +
      "median over rounds of each round's best (best overall)",
  );
  const names = rows.map((r) => r.label);
  console.log(`| ${names.join(" | ")} | compiled / jax-js |`);
  console.log(`|${names.map(() => "---").join("|")}|---|`);
  const compiled = t[names.indexOf("webgrad jit (compiled)")];
  const jaxT = t[names.indexOf("jax-js (wasm)")];
  const ratio = compiled && jaxT ? `${(compiled.median / jaxT.median).toFixed(2)}x` : "n/a";
  console.log(`| ${t.map((v) => fmt(v)).join(" | ")} | ${ratio} |`);
  printIdle(rows);
}

async function addSection(): Promise<void> {
  const specs: { peer: PeerId; label: string; variant?: "eager" | "jit" }[] = [
    { peer: "webgrad", label: "webgrad np.add", variant: "eager" },
    { peer: "webgrad", label: "webgrad jit(add)", variant: "jit" },
    { peer: "jax", label: "jax-js (wasm)" },
    { peer: "tfjs", label: "tfjs-backend-wasm" },
  ];
  const chosen = specs.filter((s) => PEERS.has(s.peer));
  if (chosen.length === 0) return;
  const rows = await startRows(chosen);
  // float32 a + b is correctly rounded everywhere: the samples agree exactly.
  const check = (ref: number[], got: number[]): string | null => {
    const err = maxDiff(ref, got);
    return err === 0 ? null : `add: max |diff| ${err}`;
  };
  const t = await timeRows(rows, (r) => ({ section: "add", variant: chosen[rows.indexOf(r)]!.variant }), 5, check, false);
  for (const r of rows) await r.child.close();
  const gbs = (ms: number): number => (3 * 4 * ADD_N) / ms / 1e6;
  console.log(`\nelementwise add of ${ADD_N / 2 ** 20}M float32 (result read back), GB/s (3 x 64 MiB per add): median (best)`);
  console.log(`| ${rows.map((r) => r.label).join(" | ")} |`);
  console.log(`|${rows.map(() => "---").join("|")}|`);
  console.log(`| ${t.map((v) => (v === undefined ? "n/a" : `${gbs(v.median).toFixed(1)} (${gbs(v.best).toFixed(1)})`)).join(" | ")} |`);
  printIdle(rows);
}

async function main(): Promise<void> {
  console.log(
    `node ${process.version}, ${availableParallelism()} cores; one process per row, timed one at a time ` +
      `(${ROUNDS} rounds x ${ROUND_MS} ms per row; mlp and add: 5 rounds)`,
  );
  if (SECTIONS.has("matmul")) await matmulSection();
  if (SECTIONS.has("mlp")) await mlpSection();
  if (SECTIONS.has("add")) await addSection();
}

await main();
