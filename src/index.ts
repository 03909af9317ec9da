// The dsv3 library: what `import … from 'dsv3'` gives. Each name comes from its layer; this
// file only gathers them.

export { DsError, ERROR_CODES, type ErrorCode } from './errors.ts';
export { loadConfig, parseConfig, type DeepseekConfig } from './io/config.ts';
export { Checkpoint, writeCheckpoint, writeSafetensors } from './io/safetensors.ts';
export { convertToGguf } from './io/convert-gguf.ts';
export { loadKernels, refKernels, type Kernels } from './kernels/index.ts';
export { DeepseekV3, type ForwardOptions, type SeqInput } from './model/deepseek-v3.ts';
export { SequenceCache } from './model/cache.ts';
export { tinyConfig, writeRandomCheckpoint } from './model/init.ts';
export { Sampler, type SamplingParams } from './engine/sampler.ts';
export { Scheduler, type SchedulerOptions, type SeqRequest, type SeqResult } from './engine/scheduler.ts';
export { Tokenizer } from './text/tokenizer.ts';
export { renderChat, type ChatMessage } from './text/chat-template.ts';
export { StreamingDetokenizer } from './text/detokenizer.ts';
export { startCompletion, type CompletionOptions, type CompletionResult } from './pipeline/completion.ts';
export { ConstrainedSampler, type TokenConstraint } from './engine/constrained.ts';
export { GrammarEngine, GrammarMatcher, type GrammarSpec } from './grammar/engine.ts';
export { schemaProblems } from './grammar/json-schema.ts';
export {
  load,
  Model,
  DEFAULT_MODEL,
  DEFAULT_SAMPLING,
  type LoadOptions,
  type GenerateOptions,
  type GenerationResult,
  type TextStream,
} from './pipeline/model.ts';
export { train, type TrainOptions } from './train/loop.ts';
export { trainStep } from './train/step.ts';
export { createApp } from './server/app.ts';
