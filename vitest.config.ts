import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // many real libp2p nodes per test: keep files from competing for the two cores
    fileParallelism: false,
    teardownTimeout: 10_000
  }
})
