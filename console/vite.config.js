import { defineConfig } from 'vite'
import vue from '@vitejs/plugin-vue'

// Served by gatehouse-api at /console (api/src/routes/console.rs) under a strict CSP:
// no inline scripts or styles, no eval. Vue's runtime-only build (templates compiled here)
// needs neither.
export default defineConfig({
  base: '/console/',
  plugins: [vue()],
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    // The modulepreload polyfill is bundled, not inlined; keep assets as files (no data: URLs
    // for scripts).
    assetsInlineLimit: 0,
    sourcemap: false,
  },
  server: {
    // `npm run dev`: proxy the API to a local gatehouse-api.
    proxy: { '/v1': 'http://127.0.0.1:8080', '/console/rules.json': 'http://127.0.0.1:8080' },
  },
})
