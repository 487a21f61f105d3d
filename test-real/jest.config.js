'use strict'
// The main jest setup, pointed at the real-server suite.
/** @type {import('jest').Config} */
module.exports = {
  ...require('../jest.config.js'),
  rootDir: '..',
  testMatch: ['<rootDir>/test-real/**/*.spec.ts'],
  testTimeout: 120_000,
}
