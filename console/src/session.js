// The signed-in session: the bearer token (sessionStorage: gone with the tab), who it is
// (GET /v1/me) and the server's authorization rules (GET /console/rules.json, generated from
// api/src/policy.rs). `can(rule)` only decides what the UI shows; the API still decides.
import { reactive } from 'vue'

const KEY = 'gatehouse.session'

export const session = reactive({
  token: null,
  expiresAt: 0, // ms since epoch, from the JWT's `exp`
  me: null, // GET /v1/me
  rules: {}, // rule name -> roles
  notice: '', // shown on the login page (expired, signed out by the server, ...)
})

let expiryTimer = null

function jwtExpiry(token) {
  try {
    const payload = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/')
    const claims = JSON.parse(atob(payload))
    return (claims.exp || 0) * 1000
  } catch {
    return 0
  }
}

export function signedIn() {
  return !!session.token && !!session.me
}

export function setToken(token) {
  session.token = token
  session.expiresAt = jwtExpiry(token)
  sessionStorage.setItem(KEY, token)
  armExpiry()
}

function armExpiry() {
  clearTimeout(expiryTimer)
  if (!session.expiresAt) return
  const left = session.expiresAt - Date.now()
  // setTimeout holds at most 2^31-1 ms (~24.8 days); a longer wait is re-armed later.
  const MAX = 2 ** 31 - 1
  expiryTimer = left > MAX ? setTimeout(armExpiry, MAX) : setTimeout(() => endSession('expired'), Math.max(0, left))
}

/** Forget the token; `reason` is a message key for the login page ('' = none). */
export function endSession(reason = '') {
  clearTimeout(expiryTimer)
  session.token = null
  session.me = null
  session.expiresAt = 0
  session.notice = reason
  sessionStorage.removeItem(KEY)
  sessionStorage.removeItem(OWN)
  if (onEnd) onEnd(reason)
}

let onEnd = null
export function onSessionEnd(fn) {
  onEnd = fn
}

export function restoreToken() {
  const token = sessionStorage.getItem(KEY)
  if (!token) return null
  const exp = jwtExpiry(token)
  if (exp && exp <= Date.now()) {
    sessionStorage.removeItem(KEY)
    session.notice = 'expired'
    return null
  }
  session.token = token
  session.expiresAt = exp
  armExpiry()
  return token
}

export function role() {
  return session.me?.role || null
}

/** The server's rule `name` admits the signed-in principal's role. */
export function can(name) {
  const roles = session.rules[name]
  return !!roles && roles.includes(role())
}

export function hasScope(scope) {
  return (session.me?.scopes || []).includes(scope)
}

/**
 * May manage (cancel, retry, share) `job`: admins any of the tenant's, others their own. The
 * job object does not name its owner, but a non-admin sees only its own jobs and shared ones,
 * so an unshared job it sees is its own — remembered for the session, so it stays manageable
 * once shared. A shared job never seen unshared might not be its own: left read-only.
 */
const OWN = 'gatehouse.own_jobs'
export function mayManage(job) {
  if (!can('jobs.submit')) return false
  if (role() === 'admin') return true
  const own = new Set(JSON.parse(sessionStorage.getItem(OWN) || '[]'))
  if (!job.shared && !own.has(job.id)) {
    own.add(job.id)
    sessionStorage.setItem(OWN, JSON.stringify([...own].slice(-500)))
  }
  return !job.shared || own.has(job.id)
}
