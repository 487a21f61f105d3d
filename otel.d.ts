import type { InstrumentationBase, InstrumentationConfig } from '@opentelemetry/instrumentation'

export interface LlmpoolInstrumentationConfig extends InstrumentationConfig {
  /** Record prompts (`gen_ai.input.messages`) and completions (`gen_ai.output.messages`). Default `false`. */
  captureContent?: boolean
  /** `gen_ai.provider.name`. Default `'openai'`. */
  providerName?: string
}

/**
 * One span per llmpool call after the OpenTelemetry GenAI conventions, a child of the span active
 * where the call was made, and the four GenAI client histograms. Built on the
 * `llmpool:call` tracing channel.
 */
export declare class LlmpoolInstrumentation extends InstrumentationBase<LlmpoolInstrumentationConfig> {
  constructor(config?: LlmpoolInstrumentationConfig)
  protected init(): []
  enable(): void
  disable(): void
}
