/// <reference types="vitest/config" />
import { defineConfig } from 'vite';
import react from '@vitejs/plugin-react';
import { resolve } from 'node:path';

// The homeserver serves dist/ at `/` and the API under `/_confab/` on the same origin,
// so the dev server proxies that prefix (WebSocket included) to a local homeserver.
export default defineConfig({
  plugins: [react()],
  base: './',
  define: {
    // Names the service worker's cache, so every build replaces the previous one's files.
    __CONFAB_BUILD__: JSON.stringify(Date.now().toString(36)),
  },
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2022',
    sourcemap: false,
    // The RNNoise chunk (its WASM inlined, about 5 MB) is loaded only by those who choose it;
    // the initial bundle has its own budget (scripts/size.mjs).
    chunkSizeWarningLimit: 6000,
    rollupOptions: {
      // The service worker is a second entry, emitted as /sw.js so its scope is the whole app.
      input: { index: resolve(import.meta.dirname, 'index.html'), sw: resolve(import.meta.dirname, 'src/sw/sw.ts') },
      output: { entryFileNames: (chunk) => (chunk.name === 'sw' ? 'sw.js' : 'assets/[name]-[hash].js') },
    },
  },
  server: {
    proxy: {
      '/_confab': { target: 'http://127.0.0.1:8008', changeOrigin: false, ws: true },
    },
  },
  test: {
    include: ['src/**/*.test.ts'],
    environment: 'node',
    testTimeout: 20000,
  },
});
