/**
 * @file One peer in its own process, for bench/cpu-peers.ts: `fork`ed (through tsx) with the peer id
 * as its argument, it loads only that library, answers `hello`, then serves the parent's requests one
 * at a time (bench/peer-protocol.ts): `setup` a job (first run's sample back, then warm-up runs),
 * `round` (time back-to-back runs for ~ms), `close`. Between requests it does nothing, so whatever CPU
 * it uses then (reported with each round, from SETTLE_MS after its reply on) is its libraries'
 * background threads, e.g. a spinning pool, taken from the row being timed meanwhile.
 */
import type { PeerId, Reply, Request } from "./peer-protocol.js";
import { PEER_IDS, SETTLE_MS } from "./peer-protocol.js";
import type { Built, LoadedPeer } from "./peer-runners.js";
import { loadPeer } from "./peer-runners.js";

const send = (r: Reply): Promise<void> =>
  new Promise((resolve, reject) => process.send!(r, undefined, {}, (e) => (e ? reject(e) : resolve())));

const firstLine = (e: unknown): string => String(e instanceof Error ? e.message : e).split("\n")[0]!;

/** Every `stride`-th element, as plain numbers (the parent checks them against webgrad's). */
function sample(c: ArrayLike<number>, stride: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < c.length; i += stride) out.push(c[i]!);
  return out;
}

const cpuMs = (): number => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};

async function main(): Promise<void> {
  if (process.send === undefined) throw new Error("peer-process.ts: run by bench/cpu-peers.ts (child_process.fork), not directly");
  // The parent gone (crashed, interrupted): nothing left to answer.
  process.on("disconnect", () => process.exit(1));
  const id = process.argv[2] as PeerId;
  let peer: LoadedPeer | null = null;
  try {
    if (!PEER_IDS.includes(id)) throw new Error(`unknown peer "${id}" (have ${PEER_IDS.join(", ")})`);
    peer = await loadPeer(id);
    await send({ kind: "hello", info: peer.info?.() });
  } catch (e) {
    await send({ kind: "error", message: firstLine(e) });
  }
  let built: Built | null = null;
  /**
   * CPU and wall clocks SETTLE_MS after the previous reply (while the parent waits for this child's
   * threads to settle): from there on another row may be timing, and this child's CPU use is theirs lost.
   */
  let idleFrom: { cpu: number; wall: number } | null = null;
  let settle: ReturnType<typeof setTimeout> | undefined;
  const reply = async (r: Reply): Promise<void> => {
    await send(r);
    idleFrom = null;
    settle = setTimeout(() => (idleFrom = { cpu: cpuMs(), wall: performance.now() }), SETTLE_MS);
  };

  // Requests are served strictly one after the other (the parent sends one and waits for the reply).
  let queue = Promise.resolve();
  process.on("message", (msg: Request) => {
    queue = queue.then(() => serve(msg));
  });

  async function serve(msg: Request): Promise<void> {
    clearTimeout(settle);
    if (msg.kind === "close") {
      await peer?.close?.();
      process.exit(0);
    }
    if (peer === null) return reply({ kind: "error", message: "peer not loaded" });
    try {
      if (msg.kind === "setup") {
        built?.dispose?.();
        built = null;
        const b = await peer.setup(msg.job);
        const first = await b.run();
        const stride = msg.job.section === "mlp" ? 1 : 97;
        const s = sample(first, stride);
        for (let i = 0; i < msg.warmup; i++) await b.run();
        built = b;
        return reply({ kind: "ready", sample: s, stride });
      }
      if (built === null) return reply({ kind: "error", message: "round before a successful setup" });
      const idle = idleFrom && { cpuMs: cpuMs() - idleFrom.cpu, wallMs: performance.now() - idleFrom.wall };
      const times: number[] = [];
      const cpu0 = cpuMs();
      const start = performance.now();
      do {
        const t0 = performance.now();
        await built.run();
        times.push(performance.now() - t0);
      } while (performance.now() - start < msg.ms);
      return reply({ kind: "times", times, cpuMs: cpuMs() - cpu0, ...(idle ? { idle } : {}) });
    } catch (e) {
      return reply({ kind: "error", message: firstLine(e) });
    }
  }
}

await main();
