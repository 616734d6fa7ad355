// DPoP-bound tokens (RFC 9449) against a real errand dev that requires
// server nonces: the client's mint binds the token to its key (signing the
// nonce Errand hands out into its retry), and the verifier accepts the
// token only with a fresh proof of that key for the request.
import { it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { randomUUID } from 'node:crypto'
import * as jose from 'jose'
import { ErrandClient, ErrandVerifier, VerifyError, createDPoPProof } from '../dist/index.js'
import { startDev, cleanup, READ } from './helpers.js'
import { work } from '../../../interop/lib/harness.js'

const API = 'https://api.acme.example'
let dev, agent, verifier, keys, bound

before(async () => {
  const cfg = join(await work(), 'dpop.yaml')
  await writeFile(cfg, `issuers:
  - {url: "https://agents.example", audience: errand, kind: agent}
  - {url: "https://users.example", audience: errand, kind: user, groups_claim: groups}
  - {url: "https://servers.example", audience: errand, kind: resource}
grants:
  - group: eng
    scopes: ["github.repo.read:acme/**"]
actions:
  - {name: github.repo.read, class: read, risk: low}
audiences:
  - {url: "${API}", any_introspector: true}
dpop: {nonce_every: 5m}
`)
  dev = await startDev('--config', cfg)
  agent = new ErrandClient({ baseUrl: dev.issuer, token: await dev.token('agent', 'agent-1') })
  const user = new ErrandClient({ baseUrl: dev.issuer, token: await dev.token('user', 'alice', ['eng']) })
  verifier = new ErrandVerifier({ issuer: dev.issuer, audience: API, revocation: { token: () => dev.token('resource', 'api') } })
  await verifier.start()
  const task = await agent.createTask({ on_behalf_of: 'alice', goal: `dpop ${randomUUID()}`, scopes: [READ], audiences: [API], ttl_seconds: 600 })
  await user.approve(task.id)
  keys = await jose.generateKeyPair('ES256')
  bound = await agent.mint(task.id, { scopes: [READ], audience: API }, { dpopKey: keys })
}, { timeout: 180000 })

after(async () => {
  await verifier?.close()
  await dev?.stop()
  await cleanup()
})

const url = `${API}/repos/acme/api`
const proof = (o = {}) => createDPoPProof({ keyPair: keys, method: 'GET', url, accessToken: bound.access_token, ...o })
const refused = (why) => (e) => e instanceof VerifyError && e.code === 'invalid_token' && why.test(e.message)

it('the client mints a DPoP-bound token, signing the nonce Errand asked for', async () => {
  assert.equal(bound.token_type, 'DPoP')
  const { cnf } = jose.decodeJwt(bound.access_token)
  assert.equal(cnf.jkt, await jose.calculateJwkThumbprint(await jose.exportJWK(keys.publicKey)))
  // Errand does require a nonce here: a proof without one is refused.
  const path = `/v1/tasks/${bound.task_id}/tokens`
  const res = await fetch(dev.issuer + path, {
    method: 'POST',
    headers: {
      authorization: `Bearer ${await dev.token('agent', 'agent-1')}`, 'content-type': 'application/json',
      dpop: await createDPoPProof({ keyPair: keys, method: 'POST', url: dev.issuer + path }),
    },
    body: JSON.stringify({ scopes: [READ], audience: API }),
  })
  assert.equal(res.status, 400)
  assert.equal((await res.json()).code, 'use_dpop_nonce')
  assert.ok(res.headers.get('dpop-nonce'))
})

it('the verifier accepts the bound token with a proof of its key for this request, once', async () => {
  const p = await proof()
  const v = await verifier.authorizeDPoP(bound.access_token, { proof: p, method: 'GET', url }, 'github.repo.read:acme/api')
  assert.equal(v.claims.cnf.jkt, jose.decodeJwt(bound.access_token).cnf.jkt)
  await assert.rejects(verifier.verify(bound.access_token, { dpop: { proof: p, method: 'GET', url } }), refused(/replayed/))
})

it('refuses the bound token without a proof, or with a wrong one', async () => {
  await assert.rejects(verifier.verify(bound.access_token), refused(/without a DPoP proof/))
  const other = await jose.generateKeyPair('ES256')
  const cases = [
    [await createDPoPProof({ keyPair: other, method: 'GET', url, accessToken: bound.access_token }), 'GET', url, /another key/],
    [await proof({ method: 'POST' }), 'GET', url, /htm/],
    [await proof(), 'GET', `${API}/repos/acme/other`, /htu/],
    [await proof({ accessToken: 'another token' }), 'GET', url, /ath/],
    [await proof({ accessToken: undefined }), 'GET', url, /ath/],
    ['not a proof', 'GET', url, /malformed/],
  ]
  for (const [p, method, u, why] of cases) {
    await assert.rejects(verifier.verify(bound.access_token, { dpop: { proof: p, method, url: u } }), refused(why), String(why))
  }
  // a proof whose iat is two minutes old
  const { privateKey, publicKey } = keys
  const stale = await new jose.SignJWT({ htm: 'GET', htu: url, ath: jose.base64url.encode(new Uint8Array(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(bound.access_token)))) })
    .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk: await jose.exportJWK(publicKey) })
    .setIssuedAt(Math.floor(Date.now() / 1000) - 120).setJti(randomUUID()).sign(privateKey)
  await assert.rejects(verifier.verify(bound.access_token, { dpop: { proof: stale, method: 'GET', url } }), refused(/iat/))
})

it('refuses a proof that comes with a bearer token', async () => {
  const user = new ErrandClient({ baseUrl: dev.issuer, token: await dev.token('user', 'alice', ['eng']) })
  const task = await agent.createTask({ on_behalf_of: 'alice', goal: `dpop ${randomUUID()}`, scopes: [READ], audiences: [API], ttl_seconds: 600 })
  await user.approve(task.id)
  const bearer = await agent.mint(task.id, { scopes: [READ], audience: API })
  await verifier.verify(bearer.access_token)
  const p = await createDPoPProof({ keyPair: keys, method: 'GET', url, accessToken: bearer.access_token })
  await assert.rejects(verifier.verify(bearer.access_token, { dpop: { proof: p, method: 'GET', url } }), refused(/not DPoP-bound/))
})
