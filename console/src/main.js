import { createApp } from 'vue'
import { createRouter, createWebHistory } from 'vue-router'
import App from './App.vue'
import Login from './views/Login.vue'
import Denied from './views/Denied.vue'
import { PAGES, allowed, menu } from './pages.js'
import { session, signedIn, restoreToken, onSessionEnd, endSession } from './session.js'
import { loadSession } from './api.js'
import './style.css'

const router = createRouter({
  history: createWebHistory('/console/'),
  routes: [
    { path: '/login', name: 'login', component: Login, meta: { public: true } },
    { path: '/denied', name: 'denied', component: Denied },
    ...PAGES.map((p) => ({ path: p.path, name: p.name, component: p.view, meta: { page: p } })),
    { path: '/:rest(.*)*', name: 'home', component: Denied },
  ],
})

router.beforeEach(async (to) => {
  if (!signedIn() && restoreToken()) {
    try {
      await loadSession()
    } catch {
      endSession(session.notice || 'unauthorized')
    }
  }
  if (to.meta.public) return signedIn() ? firstPage() : true
  if (!signedIn()) return { name: 'login', query: to.fullPath !== '/' ? { next: to.fullPath } : {} }
  if (to.name === 'home') return firstPage()
  const page = to.meta.page
  if (page && !allowed(page)) return { name: 'denied', query: { page: page.name } }
  return true
})

function firstPage() {
  const first = menu()[0]
  return first ? { name: first.name } : { name: 'denied' }
}

onSessionEnd(() => {
  if (router.currentRoute.value.name !== 'login') router.replace({ name: 'login' })
})

createApp(App).use(router).mount('#app')
