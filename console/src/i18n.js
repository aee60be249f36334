// Chinese and English. The browser's language decides by default (Chinese first for any
// zh-*); the switch in the header remembers the choice in localStorage.
import { ref } from 'vue'
import { messages } from './messages.js'

export const LOCALES = ['zh', 'en']
const STORE = 'gatehouse.locale'

function initial() {
  const saved = localStorage.getItem(STORE)
  if (LOCALES.includes(saved)) return saved
  const langs = navigator.languages?.length ? navigator.languages : [navigator.language || 'en']
  for (const l of langs) {
    const base = String(l).toLowerCase().split('-')[0]
    if (LOCALES.includes(base)) return base
  }
  return 'en'
}

export const locale = ref(initial())
document.documentElement.lang = locale.value === 'zh' ? 'zh-CN' : 'en'

export function setLocale(l) {
  locale.value = l
  localStorage.setItem(STORE, l)
  document.documentElement.lang = l === 'zh' ? 'zh-CN' : 'en'
}

/** `t('a.b', {n: 1})`: the message in the current locale, `{n}` replaced; the key if missing. */
export function t(key, params = {}) {
  const msg = messages[locale.value]?.[key] ?? messages.en[key] ?? key
  return msg.replace(/\{(\w+)\}/g, (_, k) => (k in params ? String(params[k]) : `{${k}}`))
}

export function fmtDate(iso) {
  if (!iso) return '—'
  return new Date(iso).toLocaleString(locale.value === 'zh' ? 'zh-CN' : 'en-GB')
}

export function fmtNumber(n) {
  return new Intl.NumberFormat(locale.value === 'zh' ? 'zh-CN' : 'en-US').format(n)
}
