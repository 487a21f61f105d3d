'use strict'
// `npx llmpool bench --report report.html`: one self-contained HTML page of a load test. Every
// chart is inline SVG drawn here, so the page needs no network and no script to render: the run's
// settings, latency and time-to-first-token histograms, percentiles over time, throughput and
// errors over time, and the pool's connections over time.

const WIDTH = 720
const HEIGHT = 260
const PAD = { left: 56, right: 16, top: 28, bottom: 40 }
const COLORS = ['#2563eb', '#d97706', '#dc2626', '#059669', '#7c3aed']

const esc = (text) =>
  String(text).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c])

/** The `p` percentile of `sorted` (the value at index ⌊n·p⌋): the CLI's table and the report's
 * charts use this one rule, so the same run shows the same figures in both. */
function percentile(sorted, p) {
  if (sorted.length === 0) return NaN
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))]
}

/** Round tick values covering [0, max]. */
function ticks(max, count = 5) {
  if (!(max > 0)) return [0, 1]
  const raw = max / count
  const magnitude = 10 ** Math.floor(Math.log10(raw))
  const step = [1, 2, 2.5, 5, 10].map((m) => m * magnitude).find((s) => s >= raw)
  const out = []
  for (let v = 0; v <= max + step * 0.001; v += step) out.push(Number(v.toPrecision(12)))
  if (out[out.length - 1] < max) out.push(Number((out[out.length - 1] + step).toPrecision(12)))
  return out
}

const fmt = (v) => (Math.abs(v) >= 100 || Number.isInteger(v) ? String(Math.round(v)) : v.toFixed(v >= 10 ? 1 : 2))

/** The frame of a chart: axes with ticks and labels; returns the SVG text and the scales. */
function frame(xMax, yMax, xLabel, yLabel) {
  const xs = ticks(xMax)
  const ys = ticks(yMax)
  const [x1, y1] = [xs[xs.length - 1], ys[ys.length - 1]]
  const w = WIDTH - PAD.left - PAD.right
  const h = HEIGHT - PAD.top - PAD.bottom
  const sx = (v) => PAD.left + (v / x1) * w
  const sy = (v) => PAD.top + h - (v / y1) * h
  let svg = `<rect class="plot" x="${PAD.left}" y="${PAD.top}" width="${w}" height="${h}" fill="#fafafa" stroke="#d4d4d4"/>`
  for (const v of ys) {
    svg += `<line x1="${PAD.left}" x2="${PAD.left + w}" y1="${sy(v)}" y2="${sy(v)}" stroke="#e5e5e5"/>`
    svg += `<text x="${PAD.left - 6}" y="${sy(v) + 4}" text-anchor="end" class="tick">${fmt(v)}</text>`
  }
  for (const v of xs) svg += `<text x="${sx(v)}" y="${PAD.top + h + 16}" text-anchor="middle" class="tick">${fmt(v)}</text>`
  svg += `<text x="${PAD.left + w / 2}" y="${HEIGHT - 6}" text-anchor="middle" class="axis">${esc(xLabel)}</text>`
  svg += `<text transform="translate(14 ${PAD.top + h / 2}) rotate(-90)" text-anchor="middle" class="axis">${esc(yLabel)}</text>`
  return { svg, sx, sy }
}

/** `legend`: names (coloured in order) or [name, colour] pairs. */
function figure(id, title, svg, legend = [], note = '') {
  const keys = legend
    .map((l, i) => (Array.isArray(l) ? l : [l, COLORS[i % COLORS.length]]))
    .map(([name, color]) => `<span class="key"><i style="background:${color}"></i>${esc(name)}</span>`)
    .join('')
  return `<figure id="${id}"><figcaption>${esc(title)}${keys ? `<span class="legend">${keys}</span>` : ''}</figcaption><svg viewBox="0 0 ${WIDTH} ${HEIGHT}" width="${WIDTH}" height="${HEIGHT}" role="img" aria-label="${esc(title)}">${svg}</svg>${note ? `<p class="note">${esc(note)}</p>` : ''}</figure>`
}

/** A histogram of `values` (ms) in about 30 bins, the top 0.5% folded into the last. */
function histogram(id, title, values, xLabel) {
  if (values.length === 0) return figure(id, title, `<text x="${WIDTH / 2}" y="${HEIGHT / 2}" text-anchor="middle">no data</text>`)
  const sorted = [...values].sort((a, b) => a - b)
  const top = percentile(sorted, 0.995) || sorted[sorted.length - 1]
  const binWidth = ticks(top, 30)[1]
  const bins = new Array(Math.max(1, Math.ceil(top / binWidth))).fill(0)
  for (const v of sorted) bins[Math.min(bins.length - 1, Math.floor(v / binWidth))]++
  const { svg, sx, sy } = frame(bins.length * binWidth, Math.max(...bins), xLabel, 'requests')
  let bars = svg
  bins.forEach((count, i) => {
    if (count === 0) return
    const x = sx(i * binWidth)
    bars += `<rect class="bar" x="${x + 0.5}" y="${sy(count)}" width="${Math.max(1, sx((i + 1) * binWidth) - x - 1)}" height="${sy(0) - sy(count)}" fill="${COLORS[0]}"><title>${fmt(i * binWidth)}–${fmt((i + 1) * binWidth)} ms: ${count}</title></rect>`
  })
  for (const [p, color] of [
    [0.5, COLORS[1]],
    [0.99, COLORS[2]],
  ]) {
    const v = percentile(sorted, p)
    if (v <= bins.length * binWidth) bars += `<line class="marker" x1="${sx(v)}" x2="${sx(v)}" y1="${PAD.top}" y2="${sy(0)}" stroke="${color}" stroke-dasharray="4 3"/><text x="${sx(v) + 3}" y="${PAD.top + 12}" class="tick" fill="${color}">p${p * 100} ${fmt(v)} ms</text>`
  }
  return figure(id, title, bars, [], `${values.length} values; p50 ${fmt(percentile(sorted, 0.5))} ms, p99 ${fmt(percentile(sorted, 0.99))} ms, max ${fmt(sorted[sorted.length - 1])} ms`)
}

/** Lines over time: `series` is [{ name, points: [[seconds, value], …] }]. */
function lines(id, title, series, yLabel, note) {
  const all = series.flatMap((s) => s.points)
  if (all.length === 0) return figure(id, title, `<text x="${WIDTH / 2}" y="${HEIGHT / 2}" text-anchor="middle">no data</text>`)
  const { svg, sx, sy } = frame(Math.max(...all.map((p) => p[0])), Math.max(...all.map((p) => p[1])), 'seconds since start', yLabel)
  let out = svg
  series.forEach((s, i) => {
    if (s.points.length === 0) return
    const d = s.points.map(([x, y], k) => `${k === 0 ? 'M' : 'L'}${sx(x).toFixed(1)} ${sy(y).toFixed(1)}`).join(' ')
    out += `<path class="series" data-series="${esc(s.name)}" d="${d}" fill="none" stroke="${COLORS[i % COLORS.length]}" stroke-width="2"/>`
  })
  return figure(id, title, out, series.map((s) => s.name), note)
}

/** Bars over time (throughput) with a second series drawn over them (errors). */
function bars(id, title, windows, seconds, yLabel) {
  const max = Math.max(1, ...windows.map((w) => w.ok + w.failed))
  const end = windows.length * seconds
  const { svg, sx, sy } = frame(end, max / seconds, 'seconds since start', yLabel)
  let out = svg
  windows.forEach((w, i) => {
    const x = sx(i * seconds)
    const width = Math.max(1, sx((i + 1) * seconds) - x - 1)
    const okRate = w.ok / seconds
    const failedRate = w.failed / seconds
    if (w.ok) out += `<rect class="bar ok" x="${x + 0.5}" y="${sy(okRate)}" width="${width}" height="${sy(0) - sy(okRate)}" fill="${COLORS[0]}"><title>${fmt(i * seconds)} s: ${w.ok} ok</title></rect>`
    if (w.failed) out += `<rect class="bar failed" x="${x + 0.5}" y="${sy(okRate + failedRate)}" width="${width}" height="${sy(0) - sy(failedRate)}" fill="${COLORS[2]}"><title>${fmt(i * seconds)} s: ${w.failed} failed</title></rect>`
  })
  return figure(id, title, out, [
    ['completed', COLORS[0]],
    ['failed', COLORS[2]],
  ])
}

/**
 * The report of one run. `run`: { settings: [[name, value]…], startedAt (Date), wallSeconds,
 * samples: [{ at, latency, ttft?, ok, code? }] (at and latencies in ms from the start),
 * pool: [{ at, connected, running, queued }], summary: [[name, value]…] }.
 */
function renderReport(run) {
  const { samples, pool } = run
  const span = Math.max(run.wallSeconds, 0.001)
  // About 40 windows over the run, at least 100 ms each.
  const seconds = Math.max(0.1, Number(ticks(span, 40)[1]))
  const count = Math.max(1, Math.ceil(span / seconds))
  const windows = Array.from({ length: count }, () => ({ ok: 0, failed: 0, latencies: [] }))
  for (const s of samples) {
    const end = (s.at + s.latency) / 1000
    const w = windows[Math.min(count - 1, Math.floor(end / seconds))]
    if (s.ok) {
      w.ok++
      w.latencies.push(s.ttft ?? s.latency)
    } else w.failed++
  }
  const ok = samples.filter((s) => s.ok)
  const pct = (p) =>
    windows
      .map((w, i) => [(i + 0.5) * seconds, w.latencies.sort((a, b) => a - b)])
      .filter(([, l]) => l.length > 0)
      .map(([t, l]) => [t, percentile(l, p)])
  const streamed = ok.some((s) => s.ttft !== undefined)
  const latencyName = streamed ? 'time to first token' : 'latency'
  const errors = new Map()
  for (const s of samples) if (!s.ok) errors.set(s.code, (errors.get(s.code) ?? 0) + 1)
  const table = (rows) => `<table>${rows.map(([k, v]) => `<tr><th>${esc(k)}</th><td>${esc(v)}</td></tr>`).join('')}</table>`
  const charts = [
    histogram('chart-latency', streamed ? 'Latency histogram (whole stream)' : 'Latency histogram', ok.map((s) => s.latency), 'ms'),
    streamed
      ? histogram('chart-ttft', 'Time-to-first-token histogram', ok.map((s) => s.ttft), 'ms')
      : figure('chart-ttft', 'Time-to-first-token histogram', `<text x="${WIDTH / 2}" y="${HEIGHT / 2}" text-anchor="middle">non-streaming run: the whole answer is the first token (see latency); run with --stream</text>`),
    lines('chart-percentiles', `Percentiles of ${latencyName} over time`, [
      { name: 'p50', points: pct(0.5) },
      { name: 'p90', points: pct(0.9) },
      { name: 'p99', points: pct(0.99) },
    ], 'ms', `windows of ${fmt(seconds)} s, by completion time`),
    bars('chart-throughput', 'Throughput and errors over time', windows, seconds, 'requests / s'),
    lines('chart-pool', "The pool's connections over time", [
      { name: 'connected', points: pool.map((p) => [p.at / 1000, p.connected]) },
      { name: 'running', points: pool.map((p) => [p.at / 1000, p.running]) },
      { name: 'queued', points: pool.map((p) => [p.at / 1000, p.queued]) },
    ], 'count', 'sampled from client.stats() every 100 ms'),
  ]
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>llmpool bench report</title>
<style>
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:760px;color:#171717;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:16px;margin:28px 0 8px}
table{border-collapse:collapse;margin:8px 0}th,td{text-align:left;padding:3px 14px 3px 0;border-bottom:1px solid #eee;vertical-align:top}th{font-weight:600;color:#404040}
figure{margin:18px 0}figcaption{font-weight:600;margin-bottom:4px}.legend{font-weight:400;margin-left:12px}.key{margin-right:10px;white-space:nowrap}.key i{display:inline-block;width:10px;height:10px;margin-right:4px;border-radius:2px}
svg text{font:11px system-ui,sans-serif;fill:#404040}svg text.axis{font-size:12px}.note{color:#525252;font-size:12px;margin:2px 0 0}
</style></head><body>
<h1>llmpool bench report</h1>
<p class="note">${esc(run.startedAt.toISOString())}: ${samples.length} requests in ${run.wallSeconds.toFixed(2)} s</p>
<h2>Settings</h2>${table(run.settings)}
<h2>Results</h2>${table([...run.summary, ['errors', errors.size ? [...errors].map(([c, n]) => `${c}: ${n}`).join(', ') : 'none']])}
<h2>Charts</h2>
${charts.join('\n')}
</body></html>
`
}

module.exports = { renderReport, percentile }
