// Every page of the console and what it needs: the server rule (api/src/policy.rs, fetched as
// /console/rules.json) and, for submissions, the scope. The menu and the router guard both
// read this list, so a page is shown exactly to the principals the API would serve.
import { can, hasScope } from './session.js'

export const PAGES = [
  { name: 'moderate', path: '/moderate', group: 'work', rule: 'jobs.submit', scope: 'moderate', view: () => import('./views/Moderate.vue') },
  { name: 'translate', path: '/translate', group: 'work', rule: 'jobs.submit', scope: 'translate', view: () => import('./views/Translate.vue') },
  { name: 'jobs', path: '/jobs', group: 'work', rule: 'jobs.read', view: () => import('./views/Jobs.vue') },
  { name: 'job', path: '/jobs/:id', rule: 'jobs.read', hidden: true, view: () => import('./views/JobDetail.vue') },
  { name: 'examples', path: '/examples', group: 'work', rule: 'examples', view: () => import('./views/Examples.vue') },
  { name: 'users', path: '/admin/users', group: 'admin', rule: 'users.manage', view: () => import('./views/Users.vue') },
  { name: 'keys', path: '/admin/keys', group: 'admin', rule: 'keys.manage', view: () => import('./views/Keys.vue') },
  { name: 'tenant', path: '/admin/tenant', group: 'admin', rule: 'tenant.settings', view: () => import('./views/Tenant.vue') },
  { name: 'policy', path: '/admin/policy', group: 'admin', rule: 'moderation_policy.read', view: () => import('./views/Policy.vue') },
  { name: 'webhooks', path: '/admin/webhooks', group: 'admin', rule: 'webhooks.manage', view: () => import('./views/Webhooks.vue') },
  { name: 'usage', path: '/admin/usage', group: 'admin', rule: 'usage.read', view: () => import('./views/Usage.vue') },
  { name: 'audit', path: '/admin/audit', group: 'admin', rule: 'audit.read', view: () => import('./views/Audit.vue') },
  { name: 'tenants', path: '/operator/tenants', group: 'admin', rule: 'tenants.manage', view: () => import('./views/Tenants.vue') },
]

export function allowed(page) {
  return can(page.rule) && (!page.scope || hasScope(page.scope))
}

export function menu() {
  return PAGES.filter((p) => !p.hidden && allowed(p))
}
