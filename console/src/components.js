// Small shared pieces: level badges, copy to clipboard, highlighting spans in a text.
import { t } from './i18n.js'

export const LEVELS = ['safe', 'controversial', 'unsafe']

export async function copy(text) {
  try {
    await navigator.clipboard.writeText(text)
    return true
  } catch {
    // Clipboard refused (insecure context, permissions): select-and-copy fallback.
    const area = document.createElement('textarea')
    area.value = text
    area.setAttribute('readonly', '')
    area.className = 'offscreen'
    document.body.appendChild(area)
    area.select()
    const ok = document.execCommand('copy')
    area.remove()
    return ok
  }
}

/**
 * Cut `text` into pieces at the signals' spans (character offsets, i.e. code points, as the
 * API counts them): `[{text, signal|null}]`. Overlapping spans: the earlier one wins.
 */
export function highlight(text, signals) {
  const chars = Array.from(text)
  const spans = (signals || [])
    .filter((s) => s.detector !== 'model' && Number.isInteger(s.start) && s.end > s.start)
    .sort((a, b) => a.start - b.start)
  const out = []
  let at = 0
  for (const s of spans) {
    if (s.start < at) continue
    if (s.start > at) out.push({ text: chars.slice(at, s.start).join(''), signal: null })
    out.push({ text: chars.slice(s.start, s.end).join(''), signal: s })
    at = s.end
  }
  if (at < chars.length) out.push({ text: chars.slice(at).join(''), signal: null })
  return out
}

export function signalLabel(s) {
  if (s.detector === 'pii') return `${t('signal.pii')}: ${s.rule}`
  if (s.detector === 'blocklist') return `${t('signal.blocklist')}: ${s.term}`
  return s.detector
}

export function category(c) {
  const key = 'category.' + c
  const m = t(key)
  return m === key ? c : m
}
