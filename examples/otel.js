'use strict'
// llmpool calls traced and measured with OpenTelemetry, exported over OTLP/HTTP: one GenAI span
// per call (a child of the request span that made it) and the GenAI histograms. Sends to
// OTEL_EXPORTER_OTLP_ENDPOINT (default http://127.0.0.1:4318: an OpenTelemetry Collector, Jaeger,
// Grafana Alloy…). Talks to an embedded mock server unless OPENAI_BASE_URL is set (then that
// endpoint, OPENAI_API_KEY and OPENAI_MODEL, default gpt-4o-mini).
//
//   node examples/otel.js

const { context, trace } = require('@opentelemetry/api')
const { AsyncLocalStorageContextManager } = require('@opentelemetry/context-async-hooks')
const { registerInstrumentations } = require('@opentelemetry/instrumentation')
const { BasicTracerProvider, BatchSpanProcessor } = require('@opentelemetry/sdk-trace-base')
const { MeterProvider, PeriodicExportingMetricReader } = require('@opentelemetry/sdk-metrics')
const { OTLPTraceExporter } = require('@opentelemetry/exporter-trace-otlp-http')
const { OTLPMetricExporter } = require('@opentelemetry/exporter-metrics-otlp-http')
const { Client } = require('..')
const { LlmpoolInstrumentation } = require('../otel.js')
const { startMockServer } = require('../mock/server.js')

async function main() {
  const endpoint = (process.env.OTEL_EXPORTER_OTLP_ENDPOINT ?? 'http://127.0.0.1:4318').replace(/\/$/, '')
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable())
  const tracerProvider = new BasicTracerProvider({
    spanProcessors: [new BatchSpanProcessor(new OTLPTraceExporter({ url: `${endpoint}/v1/traces` }))],
  })
  trace.setGlobalTracerProvider(tracerProvider)
  const meterProvider = new MeterProvider({
    readers: [new PeriodicExportingMetricReader({ exporter: new OTLPMetricExporter({ url: `${endpoint}/v1/metrics` }), exportIntervalMillis: 60_000 })],
  })
  registerInstrumentations({ instrumentations: [new LlmpoolInstrumentation()], tracerProvider, meterProvider })

  const mock = process.env.OPENAI_BASE_URL ? null : await startMockServer({ chunkDelay: 5 })
  const client = new Client({ baseUrl: process.env.OPENAI_BASE_URL ?? mock.url, apiKey: process.env.OPENAI_API_KEY ?? 'sk-mock' })
  const model = process.env.OPENAI_MODEL ?? 'gpt-4o-mini'
  const tracer = trace.getTracer('example')
  try {
    // What a service does per incoming request: its own span, llmpool's calls inside it.
    await tracer.startActiveSpan('handle request', async (span) => {
      const answer = await client.chat({ model, messages: [{ role: 'user', content: 'Say hello in five words.' }], max_tokens: 20 })
      console.log('chat:', answer.choices[0].message.content)
      let text = ''
      const stream = client.chatStream({ model, messages: [{ role: 'user', content: 'Count to five.' }], stream_options: { include_usage: true } })
      for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? ''
      console.log('stream:', text)
      span.end()
    })
  } finally {
    await client.close()
    await mock?.close()
    // Flush: every span and the histograms leave before the process does.
    await tracerProvider.shutdown()
    await meterProvider.shutdown()
  }
  console.log(`exported to ${endpoint}`)
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
