'use strict'
/** @type {import('jest').Config} */
module.exports = {
  testEnvironment: 'node',
  // jest looks for __tests__ by default; our suites are __test__/*.spec.ts, named by behaviour.
  testMatch: ['<rootDir>/__test__/**/*.spec.ts'],
  transform: { '^.+\\.ts$': ['@swc/jest'] },
  testTimeout: 60_000,
  // The pool tests count sockets on one mock server each; running files in parallel on two cores
  // only adds noise.
  maxWorkers: 1,
  reporters: ['default', '<rootDir>/__test__/summary-reporter.js'],
}
