'use strict'
/** @type {import('jest').Config} */
module.exports = {
  rootDir: '..',
  testEnvironment: 'node',
  testMatch: ['<rootDir>/test-real/**/*.spec.ts'],
  transform: { '^.+\\.ts$': ['@swc/jest'] },
  testTimeout: 120_000,
  maxWorkers: 1,
  reporters: ['default', '<rootDir>/__test__/summary-reporter.js'],
}
