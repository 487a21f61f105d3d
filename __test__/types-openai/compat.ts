// llmpool's types and openai-node 6's interoperate both ways, checked by tsc --strict
// (types.spec.ts): openai's request params go into llmpool without a cast, llmpool's results go
// where openai's types are expected. Drift in either package fails this file.
import type OpenAI from 'openai'
import { Client } from '../../index.js'
import type { ChatCompletion, ChatCompletionChunk, CreateEmbeddingResponse } from '../../index.js'

declare const client: Client
declare const nonStreaming: OpenAI.Chat.ChatCompletionCreateParamsNonStreaming
declare const streaming: OpenAI.Chat.ChatCompletionCreateParamsStreaming
declare const either: OpenAI.Chat.ChatCompletionCreateParams
declare const embeddingParams: OpenAI.EmbeddingCreateParams

// openai → llmpool: every ChatCompletionCreateParams is accepted as it is.
export async function openaiIntoLlmpool(): Promise<void> {
  const completion: OpenAI.Chat.ChatCompletion = await client.chat(nonStreaming)
  for await (const chunk of client.chatStream(streaming)) {
    const theirs: OpenAI.Chat.ChatCompletionChunk = chunk
    void theirs
  }
  const merged: OpenAI.Chat.ChatCompletion = await client.chatStream(either).finalCompletion()
  const embedded: OpenAI.CreateEmbeddingResponse = await client.embeddings(embeddingParams)
  void completion, merged, embedded
}

// llmpool → openai: our result types are assignable to theirs.
export function llmpoolIntoOpenai(completion: ChatCompletion, chunk: ChatCompletionChunk, embedded: CreateEmbeddingResponse) {
  const a: OpenAI.Chat.ChatCompletion = completion
  const b: OpenAI.Chat.ChatCompletionChunk = chunk
  const c: OpenAI.CreateEmbeddingResponse = embedded
  return [a, b, c]
}

// The SDK runs on llmpool's transport.
export const sdk = new (require('openai').default as typeof OpenAI)({ baseURL: 'http://127.0.0.1:1/v1', apiKey: 'k', fetch: client.fetch, maxRetries: 0 })
