/**
 * @file When parallel jobs should pause: the CPU runtime's answer to an oversubscribed machine.
 *
 * When other processes keep the cores busy, the OS deschedules a worker while it holds a task, and the
 * main thread, out of tasks to claim, waits for it. `StraggleGuard` watches how long the main thread
 * waits after its last task and, when the waits are long, pauses parallel jobs (the runtime runs them
 * on one thread) for a while.
 *
 * - What counts: the wait beyond what a running worker needs, about one task (the one it holds when
 *   the main thread runs out) counted as twice the main thread's average task time, plus a wake-up
 *   (`wakeUpMs`). Its share of the job's time goes into a moving average (weight 1/2 per job).
 * - When the average passes `limit`, parallel jobs pause for `backoff` milliseconds. The pause doubles
 *   with every pause that starts within `resetMs` of the previous one's end (up to `maxBackoffMs`), and
 *   starts again from `minBackoffMs` after a quiet stretch. After a pause the average restarts at
 *   `limit / 2`, so one more bad job pauses again at once.
 *
 * A pause is measured in time, not jobs, because the question is whether the machine is busy now,
 * and the backoff starts short because a quiet machine sees sporadic long waits too (a worker preempted
 * for a few milliseconds by the engine's own helper threads, on the 2-core bench machine). A fixed pause
 * of 200 products, as before, made one such wait cost a second on one thread at 512² and halved that
 * size's median in bench/cpu-peers.ts.
 *
 * Measured on that machine (256 x 512 x 512 products in a loop, GFLOP/s, 3-6 s runs; noisy):
 * - quiet: two threads without the guard 94, guarded 85-91 (the fixed pause: 70);
 * - one busy process beside it: one thread 50, two threads 30-32, guarded 42-47 (fixed pause: 44);
 * - two busy processes: one thread 37, two threads 27-38, guarded 28-33 (fixed pause: 37). Two threads
 *   get half of each core here and one thread two thirds of one, so neither wins clearly. A rule that
 *   compares the job's time with the main thread's own time per task (an estimate of the job on one
 *   thread) was tried instead and did no better there (26-33), and worse when quiet (78): the main
 *   thread's task times miss the slices it loses between jobs.
 */

export interface StraggleOptions {
  /** Moving-average share of job time spent waiting above which parallel jobs pause. */
  readonly limit: number;
  /** Milliseconds a sleeping worker may take to wake up (not counted as waiting). */
  readonly wakeUpMs: number;
  /** First pause, and the longest. */
  readonly minBackoffMs: number;
  readonly maxBackoffMs: number;
  /** A pause starting more than this long after the previous one ended starts from `minBackoffMs` again. */
  readonly resetMs: number;
}

export const STRAGGLE_DEFAULTS: StraggleOptions = {
  limit: 0.2,
  wakeUpMs: 0.2,
  minBackoffMs: 100,
  maxBackoffMs: 2000,
  resetMs: 5000,
};

export class StraggleGuard {
  readonly #now: () => number;
  readonly #o: StraggleOptions;
  #average = 0;
  #until = -Infinity;
  #backoff: number;
  #pauseEnd = -Infinity;
  /** Pauses so far (a statistic). */
  pauses = 0;

  constructor(now: () => number = () => performance.now(), options: StraggleOptions = STRAGGLE_DEFAULTS) {
    this.#now = now;
    this.#o = options;
    this.#backoff = options.minBackoffMs;
  }

  /** Whether parallel jobs are paused now. */
  get paused(): boolean {
    return this.#now() < this.#until;
  }

  /** The moving average of the waiting share (a statistic). */
  get average(): number {
    return this.#average;
  }

  /**
   * Records one parallel job: the main thread ran `ran` of its tasks in `workMs`, then waited `waitMs`
   * for the workers. Returns the pause it started in milliseconds, or 0.
   */
  record(ran: number, workMs: number, waitMs: number): number {
    if (ran < 1) return 0;
    const expected = 2 * (workMs / ran) + this.#o.wakeUpMs;
    const total = workMs + waitMs;
    const share = total > 0 ? Math.max(0, waitMs - expected) / total : 0;
    this.#average = 0.5 * this.#average + 0.5 * share;
    if (this.#average <= this.#o.limit) return 0;
    const t = this.#now();
    if (t - this.#pauseEnd > this.#o.resetMs) this.#backoff = this.#o.minBackoffMs;
    const pause = this.#backoff;
    this.#until = t + pause;
    this.#pauseEnd = t + pause;
    this.#backoff = Math.min(this.#o.maxBackoffMs, 2 * this.#backoff);
    this.#average = this.#o.limit / 2;
    this.pauses++;
    return pause;
  }
}
