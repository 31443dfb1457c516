import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // real nodes on two shared cores: a test that is slow under load is not a failed one
    testTimeout: 120_000,
    hookTimeout: 60_000,
    // many real libp2p nodes per test: keep files from competing for the two cores
    fileParallelism: false,
    teardownTimeout: 10_000
  }
})
