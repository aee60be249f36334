// Turn an uploaded JSONL, CSV or TXT file into the NDJSON lines POST /v1/files takes (files
// are NDJSON: one `{"custom_id"?, "text"}` item, or an OpenAI batch request, per line).
//   .jsonl/.ndjson: sent as they are (the API checks every line)
//   .csv: a `text` column (else the first), an optional `custom_id` (or `id`) column
//   .txt: one item per non-empty line

/** RFC 4180 CSV: quoted fields, doubled quotes, CRLF or LF. */
export function parseCsv(src) {
  const rows = []
  let row = []
  let field = ''
  let quoted = false
  for (let i = 0; i < src.length; i++) {
    const c = src[i]
    if (quoted) {
      if (c === '"' && src[i + 1] === '"') {
        field += '"'
        i++
      } else if (c === '"') quoted = false
      else field += c
    } else if (c === '"') quoted = true
    else if (c === ',') {
      row.push(field)
      field = ''
    } else if (c === '\n' || c === '\r') {
      if (c === '\r' && src[i + 1] === '\n') i++
      row.push(field)
      rows.push(row)
      row = []
      field = ''
    } else field += c
  }
  if (field !== '' || row.length) {
    row.push(field)
    rows.push(row)
  }
  return rows.filter((r) => r.some((f) => f.trim() !== ''))
}

export function csvToItems(src) {
  const rows = parseCsv(src.replace(/^\uFEFF/, ''))
  if (!rows.length) return []
  const head = rows[0].map((h) => h.trim().toLowerCase())
  let textCol = head.indexOf('text')
  let idCol = head.indexOf('custom_id')
  if (idCol < 0) idCol = head.indexOf('id')
  let body = rows.slice(1)
  if (textCol < 0) {
    // No header naming the text: every row is an item, its first field the text.
    textCol = 0
    idCol = -1
    body = rows
  }
  return body.map((r) => (idCol >= 0 && r[idCol] ? { custom_id: r[idCol], text: r[textCol] ?? '' } : { text: r[textCol] ?? '' }))
}

export function txtToItems(src) {
  return src
    .replace(/^\uFEFF/, '')
    .split(/\r?\n/)
    .filter((l) => l.trim() !== '')
    .map((text) => ({ text }))
}

/** A File ready for POST /v1/files: JSONL as is, CSV and TXT converted. */
export async function toNdjson(file) {
  const name = file.name.toLowerCase()
  if (name.endsWith('.jsonl') || name.endsWith('.ndjson') || name.endsWith('.json')) return file
  const src = await file.text()
  const items = name.endsWith('.csv') ? csvToItems(src) : txtToItems(src)
  const body = items.map((i) => JSON.stringify(i)).join('\n') + '\n'
  return new File([body], file.name.replace(/\.[^.]*$/, '') + '.jsonl', { type: 'application/x-ndjson' })
}
