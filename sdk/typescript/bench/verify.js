// What one offline verify costs: an Errand token from a real errand dev,
// verified again and again by ErrandVerifier (signature, claims, scope
// parse, revocation lookup; the JWKS and the feed already read), then
// authorize() with a containment check. Prints µs per call.
//   node bench/verify.js [iterations]      (ERRAND_BIN=... to skip the go build)
import { randomUUID } from 'node:crypto'
import { ErrandClient, ErrandVerifier } from '../dist/index.js'
import { startDev, cleanup, AUDIENCE } from '../test/helpers.js'

const n = Number(process.argv[2] ?? 20000)
const dev = await startDev()
try {
  const agent = new ErrandClient({ baseUrl: dev.issuer, token: await dev.token('agent', 'bench') })
  const user = new ErrandClient({ baseUrl: dev.issuer, token: await dev.token('user', 'alice', ['eng']) })
  const task = await agent.createTask({ on_behalf_of: 'alice', goal: `bench ${randomUUID()}`, scopes: ['github.repo.read:acme/**'], audiences: [AUDIENCE], ttl_seconds: 600 })
  await user.approve(task.id)
  const { access_token } = await agent.mint(task.id, { scopes: ['github.repo.read:acme/**'], audience: AUDIENCE })
  const rs = await dev.token('resource', 'bench')
  const verifier = new ErrandVerifier({ issuer: dev.issuer, audience: AUDIENCE, revocation: { token: rs } })
  await verifier.start()
  const run = async (name, fn) => {
    for (let i = 0; i < Math.min(2000, n); i++) await fn() // warm up (and the JWKS fetch)
    const t0 = process.hrtime.bigint()
    for (let i = 0; i < n; i++) await fn()
    const us = Number(process.hrtime.bigint() - t0) / 1000 / n
    console.log(`${name}: ${us.toFixed(1)} µs per call (${n} calls, node ${process.version})`)
  }
  await run('verify (EdDSA, offline, feed followed)', () => verifier.verify(access_token))
  await run('authorize (verify + containment)', () => verifier.authorize(access_token, 'github.repo.read:acme/api'))
  await verifier.close()
} finally {
  await dev.stop()
  await cleanup()
}
