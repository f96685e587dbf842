/**
 * @file The public surface of webgrad's RLHF layer (src/rl). Pure building blocks first — per-token
 * log-probs and masked reductions (common.ts), KL estimators (kl.ts), GAE (advantages.ts), the reward
 * model (reward.ts, also as the namespace `rewardModel`), DPO (dpo.ts), rollouts and the policy model
 * (rollout.ts), PPO (ppo.ts), GRPO (grpo.ts) — then the impure pipeline of `webgrad rlhf`: the toy task
 * (task.ts), its config (config.ts), the stages (pipeline.ts) and the report (report.ts).
 *
 * Modules whose names clash (several have `init`, `apply`, `trainableMask`, `referenceLogProbs`) are
 * also exported as namespaces: `rewardModel`, `dpo`, `rollout`, `ppo`, `grpo`, `task`.
 * Note: pipeline.ts / config.ts use node:fs and cli-progress (Node only).
 */
export * from "./common.js";
export * from "./kl.js";
export * from "./advantages.js";

export * as rewardModel from "./reward.js";
export { bradleyTerryLoss, ratingMseLoss, binnedRatingLoss, pairwiseAccuracy, rewardStats, preferenceBatch, splitPairs, rewardModelLoss } from "./reward.js";
export type { RewardModelConfig, RewardModelParams, PreferenceBatch, RatingBatch, RewardStepAux } from "./reward.js";

export * as dpo from "./dpo.js";
export { dpoLoss, responseLogProb, dpoStepLoss } from "./dpo.js";
export type { DpoLossOptions, DpoLossResult, DpoConfig, DpoParams, DpoBatch } from "./dpo.js";

export * as rollout from "./rollout.js";
export { collectRollouts, policyOutputs, splitPolicy, joinPolicy } from "./rollout.js";
export type { PolicyModel, PolicyWeights, PolicySpec, ValueHead, Rollout, ScoreFn, CollectRolloutOptions } from "./rollout.js";

export * as ppo from "./ppo.js";
export { ppoLoss, ppoUpdate, initPpo, initPolicy, resolvePpoConfig, defaultPpoConfig, rolloutAdvantages } from "./ppo.js";
export type { PpoConfig, PpoState, PpoBatch, PpoLossStats, InitPolicyOptions } from "./ppo.js";

export * as grpo from "./grpo.js";
export { grpoLoss, grpoUpdate, initGrpo, groupRelativeAdvantages, collectGroupRollouts, resolveGrpoConfig, defaultGrpoConfig } from "./grpo.js";
export type { GrpoConfig, GrpoState, GrpoBatch, GrpoLossStats } from "./grpo.js";

// The pipeline of `webgrad rlhf`.
export * as task from "./task.js";
export { ToyTask } from "./task.js";
export type { TaskConfig } from "./task.js";
export {
  defaultConfig as defaultRlhfConfig,
  quickConfig as quickRlhfConfig,
  resolveConfig as resolveRlhfConfig,
  loadConfigFile as loadRlhfConfigFile,
  RlhfConfigError,
} from "./config.js";
export type { RlhfConfig, PartialConfig as PartialRlhfConfig } from "./config.js";
export { runRlhf, STAGES as RLHF_STAGES, configOf as rlhfConfigOf } from "./pipeline.js";
export type { RlhfOptions, RlhfResult, Stage as RlhfStage } from "./pipeline.js";
export { renderReport, terminalTable, terminalSamples } from "./report.js";
export type { RlhfReportData, RlhfSummary, SampleRow } from "./report.js";
