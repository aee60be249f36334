// Calls to the Gatehouse API with the session's bearer token. Errors are RFC 9457 problem
// documents; a 401 ends the session (back to the login page with a message).
import { session, endSession } from './session.js'

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || problem?.title || `HTTP ${status}`)
    this.status = status
    this.problem = problem || {}
    this.code = this.problem.code || ''
  }
}

function headers(extra = {}) {
  const h = { ...extra }
  if (session.token) h.Authorization = `Bearer ${session.token}`
  return h
}

async function problemOf(res) {
  try {
    return await res.json()
  } catch {
    return { detail: res.statusText }
  }
}

export async function request(method, path, body, { raw = false, accept, headers: more } = {}) {
  const init = { method, headers: headers(more) }
  if (accept) init.headers.Accept = accept
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json'
    init.body = JSON.stringify(body)
  }
  const res = await fetch(path, init)
  if (res.status === 401 && session.token) {
    endSession('unauthorized')
    throw new ApiError(401, await problemOf(res))
  }
  if (!res.ok) throw new ApiError(res.status, await problemOf(res))
  if (raw) return res
  if (res.status === 204) return null
  const type = (res.headers.get('content-type') || '').split(';')[0].trim()
  return type === 'application/json' || type.endsWith('+json') ? res.json() : res.text()
}

export const get = (path, opts) => request('GET', path, undefined, opts)
export const post = (path, body, opts) => request('POST', path, body, opts)
export const patch = (path, body, opts) => request('PATCH', path, body, opts)
export const put = (path, body, opts) => request('PUT', path, body, opts)
export const del = (path, opts) => request('DELETE', path, undefined, opts)

/** Every page of a `{data, next_after}` list (bounded). */
export async function all(path, max = 1000) {
  const out = []
  let after = null
  while (out.length < max) {
    const sep = path.includes('?') ? '&' : '?'
    const page = await get(`${path}${sep}limit=200${after ? `&after=${encodeURIComponent(after)}` : ''}`)
    out.push(...page.data)
    if (!page.next_after) break
    after = page.next_after
  }
  return out
}

/**
 * POST a multipart form with XMLHttpRequest, so the upload's progress can be shown
 * (fetch has no upload progress events). `onProgress(fraction)`.
 */
export function upload(path, form, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest()
    xhr.open('POST', path)
    if (session.token) xhr.setRequestHeader('Authorization', `Bearer ${session.token}`)
    xhr.upload.onprogress = (e) => {
      if (e.lengthComputable) onProgress(e.loaded / e.total)
    }
    xhr.onload = () => {
      let body = null
      try {
        body = JSON.parse(xhr.responseText)
      } catch {
        body = { detail: xhr.statusText }
      }
      if (xhr.status === 401 && session.token) endSession('unauthorized')
      if (xhr.status >= 200 && xhr.status < 300) {
        onProgress(1)
        resolve(body)
      } else reject(new ApiError(xhr.status, body))
    }
    xhr.onerror = () => reject(new ApiError(0, { detail: 'network error' }))
    xhr.send(form)
  })
}

/** Save `blob` as a file (an object URL clicked through a temporary link). */
export function saveBlob(blob, name) {
  const url = URL.createObjectURL(blob)
  const a = document.createElement('a')
  a.href = url
  a.download = name
  document.body.appendChild(a)
  a.click()
  a.remove()
  setTimeout(() => URL.revokeObjectURL(url), 10_000)
}

/** Load who we are and the server's rules (after login, or a reload with a stored token). */
export async function loadSession() {
  const [me, rules] = await Promise.all([get('/v1/me'), get('/console/rules.json')])
  session.rules = rules.rules
  session.me = me
}

/** Poll a job until it finishes; the first item's result (its error message if it failed). */
export async function waitForJob(id) {
  for (;;) {
    const job = await get(`/v1/jobs/${id}`)
    if (['completed', 'failed', 'cancelled'].includes(job.status)) break
    await new Promise((r) => setTimeout(r, 500))
  }
  const lines = await request('GET', `/v1/jobs/${id}/results?limit=1`, undefined, { accept: 'application/x-ndjson' })
  const first = JSON.parse(String(lines).split('\n').find((l) => l.trim()))
  if (!first.result) throw new Error(first.error?.message || 'failed')
  return first.result
}
