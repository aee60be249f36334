// The console in a real browser: Debian's Chromium, headless, driven by playwright-core,
// against a real gatehouse-api + worker + Postgres + RabbitMQ. Started by the Rust
// integration test api/tests/console.rs (part of `make test`), which creates the tenant,
// the users and an isolated stack and passes them in:
//   CONSOLE_URL       http://127.0.0.1:<port>/console/
//   CONSOLE_TENANT    the tenant's slug
//   CONSOLE_PASSWORD  every user's password (users: admin, reviewer, guest; operator: root)
//   CHROMIUM          the browser (default /usr/bin/chromium)
//   CONSOLE_SCREENSHOTS_DIR  where to write a screenshot of each page (optional)
// Without CONSOLE_URL the suite is skipped (run it through `cargo test` or `make test`).
import { test, describe, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdirSync, writeFileSync, mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

const URL_ = process.env.CONSOLE_URL
const TENANT = process.env.CONSOLE_TENANT
const PASSWORD = process.env.CONSOLE_PASSWORD
const SHOTS = process.env.CONSOLE_SCREENSHOTS_DIR
const TIMEOUT = 30_000

describe('console in Chromium', { skip: !URL_ && 'CONSOLE_URL not set (run through cargo test)' }, () => {
  let browser
  const cspErrors = []

  before(async () => {
    const { chromium } = await import('playwright-core')
    browser = await chromium.launch({
      executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
      args: ['--no-sandbox', '--disable-dev-shm-usage'],
    })
    if (SHOTS) mkdirSync(SHOTS, { recursive: true })
  })
  after(async () => {
    await browser?.close()
  })

  /** A fresh context (own sessionStorage) signed in as `user` (`null` tenant: operator). */
  async function signIn(user, { locale = 'en-US', viewport = { width: 1280, height: 860 }, tenant = TENANT } = {}) {
    const context = await browser.newContext({ locale, viewport, acceptDownloads: true })
    const page = await context.newPage()
    page.setDefaultTimeout(TIMEOUT)
    page.on('console', (m) => {
      if (m.type() === 'error' && /Content.Security.Policy|Refused to/i.test(m.text())) cspErrors.push(m.text())
    })
    await page.goto(URL_)
    await page.getByTestId('login-username').waitFor()
    if (tenant) await page.getByTestId('login-tenant').fill(tenant)
    else await page.getByTestId('login-operator').check()
    await page.getByTestId('login-username').fill(user)
    await page.getByTestId('login-password').fill(PASSWORD)
    await page.getByTestId('login-submit').click()
    await page.getByTestId('nav').waitFor({ state: 'attached' })
    return { context, page }
  }

  async function menu(page) {
    const ids = await page.locator('[data-testid^="nav-"]').evaluateAll((els) => els.map((e) => e.dataset.testid.slice(4)))
    return ids.sort()
  }

  async function shot(page, name) {
    if (!SHOTS) return
    await page.evaluate(() => window.scrollTo(0, 0))
    await page.waitForTimeout(150) // let transitions settle
    await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: false })
  }

  test('the page is served under a strict CSP', async () => {
    const res = await fetch(URL_)
    const csp = res.headers.get('content-security-policy')
    assert.match(csp, /default-src 'self'/)
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/)
    assert.equal(res.headers.get('x-content-type-options'), 'nosniff')
  })

  test('login page follows the browser language (Chinese), a bad password is refused', async () => {
    const context = await browser.newContext({ locale: 'zh-CN' })
    const page = await context.newPage()
    await page.goto(URL_)
    await page.getByTestId('login-submit').waitFor()
    assert.equal(await page.getByTestId('login-submit').textContent(), '登录')
    assert.equal(await page.locator('html').getAttribute('lang'), 'zh-CN')
    await shot(page, 'login-zh')
    await page.getByTestId('login-tenant').fill(TENANT)
    await page.getByTestId('login-username').fill('admin')
    await page.getByTestId('login-password').fill('not the password at all')
    await page.getByTestId('login-submit').click()
    await page.getByTestId('login-error').waitFor()
    assert.match(await page.getByTestId('login-error').textContent(), /错误/)
    await context.close()
  })

  test('signing in works with the keyboard alone', async () => {
    const context = await browser.newContext({ locale: 'en-US' })
    const page = await context.newPage()
    await page.goto(URL_)
    await page.getByTestId('login-username').waitFor()
    await page.keyboard.press('Tab') // the skip link
    await page.keyboard.press('Tab') // the language switch
    await page.keyboard.press('Tab') // "operator"
    await page.keyboard.press('Tab')
    await page.keyboard.type(TENANT)
    await page.keyboard.press('Tab')
    await page.keyboard.type('reviewer')
    await page.keyboard.press('Tab')
    await page.keyboard.type(PASSWORD)
    await page.keyboard.press('Enter')
    await page.getByTestId('nav').waitFor()
    await context.close()
  })

  test('each role sees its own menu', async () => {
    const expected = {
      admin: ['audit', 'examples', 'jobs', 'keys', 'moderate', 'policy', 'tenant', 'translate', 'usage', 'users', 'webhooks'],
      reviewer: ['examples', 'jobs', 'moderate', 'policy', 'translate'],
      guest: ['examples', 'jobs'],
    }
    for (const [user, items] of Object.entries(expected)) {
      const { context, page } = await signIn(user)
      assert.deepEqual(await menu(page), items, `${user}'s menu`)
      await context.close()
    }
    const { context, page } = await signIn('root', { tenant: null })
    assert.deepEqual(await menu(page), ['audit', 'tenants', 'usage'], "the operator's menu")
    await page.getByTestId('nav-tenants').click()
    await page.getByTestId('tenants-table').locator('td.mono', { hasText: TENANT }).first().waitFor()
    await shot(page, 'operator-tenants')
    await context.close()
  })

  test('a guest is denied the admin pages and sees examples', async () => {
    const { context, page } = await signIn('guest')
    for (const path of ['admin/keys', 'admin/users', 'admin/policy', 'moderate']) {
      await page.goto(URL_ + path)
      await page.getByTestId('denied').waitFor()
      assert.equal(await page.getByTestId('key-form').count(), 0)
    }
    await page.getByTestId('nav-examples').click()
    await page.getByTestId('examples').waitFor()
    await shot(page, 'guest-examples')
    // What the UI hides, the API refuses too.
    const token = await page.evaluate(() => sessionStorage.getItem('gatehouse.session'))
    const res = await fetch(new URL('/v1/keys', URL_), { headers: { Authorization: `Bearer ${token}` } })
    assert.equal(res.status, 403)
    await context.close()
  })

  test('moderate a text: its level, scores and the PII span highlighted', async () => {
    const { context, page } = await signIn('reviewer')
    await page.getByTestId('nav-moderate').click()
    await page.getByTestId('moderate-text').fill('You are so dumb and stupid! Write to bob@example.com')
    await page.getByTestId('moderate-submit').click()
    const level = page.getByTestId('moderate-level')
    await level.waitFor()
    assert.equal(await level.getAttribute('data-level'), 'unsafe')
    const marked = await page.getByTestId('moderate-highlight').locator('mark.sig-pii').first().evaluate((m) => m.firstChild.textContent)
    assert.equal(marked, 'bob@example.com')
    await shot(page, 'moderate')
    await context.close()
  })

  test('translate zh → en with auto-detect, swap the languages', async () => {
    const { context, page } = await signIn('reviewer', { locale: 'zh-CN' })
    await page.getByTestId('nav-translate').click()
    await page.getByTestId('translate-text').fill('我不知道。')
    await page.getByTestId('translate-submit').click()
    await page.getByTestId('translate-output').getByText(/\w/).waitFor()
    const out = await page.getByTestId('translate-output').textContent()
    assert.match(out, /know/i)
    await shot(page, 'translate')
    await page.getByTestId('translate-swap').click()
    assert.equal(await page.getByTestId('translate-source').inputValue(), 'en')
    assert.equal(await page.getByTestId('translate-target').inputValue(), 'zh')
    assert.equal(await page.getByTestId('translate-text').inputValue(), out)
    await context.close()
  })

  test('upload a TXT file as a bulk job and watch it finish', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'gh-console-'))
    const file = join(dir, 'comments.txt')
    writeFileSync(file, ['Have a nice day :)', 'You are so dumb and stupid!', '今天天气很好。', 'See you tomorrow'].join('\n') + '\n')
    const { context, page } = await signIn('reviewer')
    await page.getByTestId('nav-jobs').click()
    await page.getByTestId('upload-file').setInputFiles(file)
    await page.getByTestId('upload-submit').click()
    const link = page.getByTestId('upload-created').locator('a')
    await link.waitFor()
    const id = await link.textContent()
    const row = page.getByTestId(`job-${id}`)
    await row.waitFor()
    await page.waitForFunction((sel) => document.querySelector(sel)?.dataset.status === 'completed', `[data-testid="job-${id}"]`, { timeout: 60_000 })
    assert.equal(await row.getByTestId('job-counts').textContent(), '4/4')
    await shot(page, 'jobs')
    await link.click()
    await page.getByTestId('job-detail').waitFor()
    await page.getByTestId('job-results').locator('tbody tr').nth(3).waitFor()
    const [download] = await Promise.all([page.waitForEvent('download'), page.getByTestId('download-jsonl').click()])
    assert.equal(download.suggestedFilename(), `${id}.jsonl`)
    await page.getByTestId('job-share').click()
    await page.getByTestId('job-share').getByText(/Stop sharing/).waitFor()
    await shot(page, 'job-detail')
    await context.close()
    // A guest sees the shared job under "Shared results", read-only.
    const guest = await signIn('guest')
    await guest.page.getByTestId('nav-jobs').click()
    const shared = guest.page.getByTestId(`job-${id}`)
    await shared.waitFor()
    assert.equal(await guest.page.getByTestId('upload-form').count(), 0)
    assert.equal(await shared.locator('button').count(), 0)
    await shot(guest.page, 'guest-shared')
    await guest.context.close()
  })

  test('admin creates a key (secret shown once), then revokes it', async () => {
    const { context, page } = await signIn('admin')
    await page.getByTestId('nav-keys').click()
    await page.getByTestId('key-name').fill('browser-test')
    await page.getByTestId('key-create').click()
    const secret = await page.getByTestId('key-secret-value').textContent()
    assert.match(secret, /^ghk_/)
    const row = page.getByTestId('key-browser-test')
    await row.waitFor()
    await shot(page, 'keys')
    // The key works until it is revoked.
    const works = await fetch(new URL('/v1/me', URL_), { headers: { Authorization: `Bearer ${secret}` } })
    assert.equal(works.status, 200)
    // Rotation: a new secret, shown once; the old one keeps working for the grace period.
    await row.getByTestId('key-rotate').click()
    await page.getByTestId('confirm-yes').click()
    await page.waitForFunction((old) => {
      const el = document.querySelector('[data-testid="key-secret-value"]')
      return el && el.textContent !== old
    }, secret)
    const rotated = await page.getByTestId('key-secret-value').textContent()
    assert.match(rotated, /^ghk_/)
    for (const s of [secret, rotated]) {
      const r = await fetch(new URL('/v1/me', URL_), { headers: { Authorization: `Bearer ${s}` } })
      assert.equal(r.status, 200)
    }
    await row.getByTestId('key-revoke').click()
    await page.getByTestId('confirm-yes').click()
    await page.waitForFunction(() => !document.querySelector('[data-testid="key-browser-test"]'))
    for (const s of [secret, rotated]) {
      const revoked = await fetch(new URL('/v1/me', URL_), { headers: { Authorization: `Bearer ${s}` } })
      assert.equal(revoked.status, 401)
    }
    await context.close()
  })

  test('admin changes a threshold: a new policy version', async () => {
    const { context, page } = await signIn('admin')
    await page.getByTestId('nav-policy').click()
    const version = page.getByTestId('policy-version')
    await version.waitFor()
    const before = Number(await version.getAttribute('data-version'))
    const slider = page.getByTestId('threshold-violent-unsafe')
    const was = Number(await slider.inputValue())
    const want = Math.round((was - 0.05) * 100) / 100
    await slider.focus()
    for (let i = 0; i < 5; i++) await page.keyboard.press('ArrowLeft') // keyboard works
    assert.equal(Number(await slider.inputValue()), want)
    await page.getByTestId('blocklist-import').fill('禁词,politically_sensitive,controversial')
    await page.getByTestId('blocklist-add').click()
    await page.getByTestId('blocklist').getByText('禁词').waitFor()
    await page.getByTestId('policy-save').click()
    await page.getByTestId('policy-saved').waitFor()
    assert.equal(Number(await version.getAttribute('data-version')), before + 1)
    await shot(page, 'policy')
    const token = await page.evaluate(() => sessionStorage.getItem('gatehouse.session'))
    const res = await fetch(new URL('/v1/moderation/policy', URL_), { headers: { Authorization: `Bearer ${token}` } })
    assert.equal((await res.json()).thresholds.violent.unsafe, want)
    // The new version judges the next text: the blocklist term is highlighted.
    await page.getByTestId('nav-moderate').click()
    await page.getByTestId('moderate-text').fill('这里有一个禁词。')
    await page.getByTestId('moderate-submit').click()
    const mark = page.getByTestId('moderate-highlight').locator('mark.sig-blocklist')
    await mark.waitFor()
    assert.equal(await mark.evaluate((m) => m.firstChild.textContent), '禁词')
    await shot(page, 'moderate-blocklist')
    await context.close()
  })

  test('admin adds a user, changes its role, deletes it after confirming', async () => {
    const { context, page } = await signIn('admin')
    await page.getByTestId('nav-users').click()
    const form = page.getByTestId('user-form')
    await form.getByLabel('Username').fill('carol')
    await form.getByLabel('Password').fill('a long enough passphrase')
    await form.getByRole('button', { name: 'Create' }).click()
    const row = page.getByTestId('user-carol')
    await row.waitFor()
    await row.getByLabel('Role').selectOption('guest')
    await page.waitForFunction(() => document.querySelector('[data-testid="user-carol"] select')?.value === 'guest')
    await row.getByRole('button', { name: 'Delete' }).click()
    await page.getByTestId('confirm-no').click() // cancelling keeps it
    assert.equal(await row.count(), 1)
    await row.getByRole('button', { name: 'Delete' }).click()
    await page.getByTestId('confirm-yes').click()
    await row.waitFor({ state: 'detached' })
    await context.close()
  })

  test('the other admin pages render', async () => {
    const { context, page } = await signIn('admin')
    for (const [name, ready] of [['users', 'user-admin'], ['tenant', 'tenant-form'], ['usage', 'usage-chart'], ['audit', 'audit-table'], ['webhooks', null]]) {
      await page.getByTestId(`nav-${name}`).click()
      if (ready) await page.getByTestId(ready).waitFor()
      else await page.waitForLoadState('networkidle')
      await shot(page, name)
    }
    await context.close()
  })

  test('a phone-width screen: the menu folds behind a button', async () => {
    const { context, page } = await signIn('admin', { viewport: { width: 390, height: 844 }, locale: 'zh-CN' })
    assert.equal(await page.getByTestId('nav').isVisible(), false)
    await page.getByRole('button', { name: /菜单/ }).click()
    assert.equal(await page.getByTestId('nav').isVisible(), true)
    await shot(page, 'phone-menu')
    await page.getByTestId('nav-translate').click()
    await page.getByTestId('translate-text').waitFor()
    await page.getByTestId('nav').waitFor({ state: 'hidden' })
    await context.close()
  })

  test('an invalid token sends the user back to the login page with a message; logout', async () => {
    const { context, page } = await signIn('reviewer')
    await page.evaluate(() => sessionStorage.setItem('gatehouse.session', 'eyJhbGciOiJFZERTQSJ9.eyJleHAiOjQxMDI0NDQ4MDB9.bad'))
    await page.reload()
    await page.getByTestId('login-notice').waitFor()
    assert.match(await page.getByTestId('login-notice').textContent(), /no longer valid/)
    // A token past its `exp` is not even tried.
    await page.evaluate(() => sessionStorage.setItem('gatehouse.session', 'eyJhbGciOiJFZERTQSJ9.eyJleHAiOjE2MDAwMDAwMDB9.old'))
    await page.goto(URL_ + 'jobs')
    await page.getByTestId('login-notice').getByText(/expired/).waitFor()
    await context.close()
    const second = await signIn('reviewer')
    await second.page.getByTestId('logout').click()
    await second.page.getByTestId('login-notice').waitFor()
    assert.equal(await second.page.evaluate(() => sessionStorage.getItem('gatehouse.session')), null)
    await second.context.close()
  })

  test('no Content-Security-Policy violations on any page', () => {
    assert.deepEqual(cspErrors, [])
  })
})
