/// <reference types="vitest/config" />
import { defineConfig } from 'vite';
import react from '@vitejs/plugin-react';

// The homeserver serves dist/ at `/` and the API under `/_confab/` on the same origin,
// so the dev server proxies that prefix (WebSocket included) to a local homeserver.
export default defineConfig({
  plugins: [react()],
  base: './',
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2022',
    sourcemap: false,
    // The RNNoise chunk (its WASM inlined, about 5 MB) is loaded only by those who choose it;
    // the initial bundle has its own budget (scripts/size.mjs).
    chunkSizeWarningLimit: 6000,
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
