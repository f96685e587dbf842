/**
 * @file The main job (the README's first command, `npm start`): RLHF end to end on the embedded toy
 * task with the default config — a tiny PaLM is fine-tuned on demonstrations (SFT), a reward model
 * learns preferences labelled by a hidden rule the policy never sees, and PPO raises the hidden rule's
 * score on held-out prompts while a KL penalty keeps it close to the SFT model. A few minutes on two
 * CPU cores; prints a summary table and writes rlhf-out/report.html.
 *
 * It is `webgrad rlhf` with its defaults, so every option of the CLI works here too:
 *   npm start -- --device webgpu        # the same on the GPU path
 *   npm start -- --quick                # a seconds-long smoke run
 *   npm start -- --set ppo.klCoef=0.1   # any config key (see src/rl/config.ts, docs/rlhf.md)
 * Finished stages are resumed from their checkpoints in rlhf-out/ (`--fresh` reruns everything).
 */
import { main } from "../src/cli/index.js";

const code = await main(["rlhf", ...process.argv.slice(2)]);
process.exit(code);
