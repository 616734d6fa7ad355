// The interop suite: stock OAuth clients against a real errand binary, once
// on `errand dev` (SQLite; EdDSA, no policies) and once on `errand serve`
// (PostgreSQL; ES256, DPoP server nonces, a step-up policy).
import { describe, it, before, after } from 'node:test'
import { startDev, startServe, postgresURL, cleanup, errandBin } from '../lib/harness.js'
import { defineSuite } from '../lib/suite.js'

let dev, serve

before(async () => {
  await errandBin()
  dev = await startDev()
  if (postgresURL()) serve = await startServe(dev)
}, { timeout: 180000 })

after(async () => {
  await serve?.stop()
  await dev?.stop()
  await cleanup()
})

describe('interop', { concurrency: true }, () => {
  describe('errand dev (SQLite)', { concurrency: 1, timeout: 120000 }, () => defineSuite(() => dev))

  if (postgresURL()) {
    describe('errand serve (PostgreSQL)', { concurrency: 1, timeout: 120000 }, () => defineSuite(() => serve, { stepUp: true }))
  } else if (process.env.CI === 'true') {
    it('errand serve (PostgreSQL)', () => {
      throw new Error('ERRAND_TEST_DATABASE_URL is not set: under CI=true the serve run must not be skipped')
    })
  } else {
    it('errand serve (PostgreSQL)', { skip: 'ERRAND_TEST_DATABASE_URL is not set (CI=true makes this a failure)' }, () => {})
  }
})
