// Both locales hold the same keys, and every key the views use exists.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync, readdirSync } from 'node:fs'
import { messages } from '../src/messages.js'

test('zh and en have the same keys', () => {
  assert.deepEqual(Object.keys(messages.zh).sort(), Object.keys(messages.en).sort())
})

test('every literal key used in the sources exists', () => {
  const dir = new URL('../src/', import.meta.url)
  const files = ['App.vue', 'components.js', ...readdirSync(new URL('views/', dir)).map((f) => `views/${f}`)]
  const missing = []
  for (const f of files) {
    const src = readFileSync(new URL(f, dir), 'utf8')
    for (const [, key] of src.matchAll(/\bt\('([a-z_]+\.[a-z_.]+)'/g)) {
      if (!key.endsWith('.') && !(key in messages.en)) missing.push(`${f}: ${key}`)
    }
  }
  assert.deepEqual(missing, [])
})
