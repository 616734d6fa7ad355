// The resource server's verifier against a real errand dev: offline
// checks (S01: signature by the JWKS, typ, iss, aud, exp leeway, alg
// confusion, the JWKS refetch bound on unknown kids, scope containment)
// and the revocation feed (S02: a closed task's token refused within one
// second, the stream resumed with Last-Event-ID, the feed read at start).
import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import * as jose from 'jose'
import { ErrandClient, ErrandVerifier, VerifyError, functionToken } from '../dist/index.js'
import { startDev, cleanup, startProxy, until, AUDIENCE, READ, WRITE } from './helpers.js'

let dev, agent, user, verifier
const rsToken = () => functionToken(() => dev.token('resource', 'mcp-server'))

before(async () => {
  dev = await startDev()
  agent = new ErrandClient({ baseUrl: dev.issuer, token: await dev.token('agent', 'agent-1') })
  user = new ErrandClient({ baseUrl: dev.issuer, token: await dev.token('user', 'alice', ['eng']) })
  verifier = new ErrandVerifier({ issuer: dev.issuer, audience: AUDIENCE, revocation: { token: rsToken() } })
  await verifier.start()
}, { timeout: 180000 })

after(async () => {
  await verifier?.close()
  await dev?.stop()
  await cleanup()
})

// approved creates a task for scopes, approved as asked, and mints tokens.
async function approved(scopes = ['github.repo.read:acme/**', WRITE]) {
  const task = await agent.createTask({ on_behalf_of: 'alice', goal: `sdk ${randomUUID()}`, scopes, audiences: [AUDIENCE], ttl_seconds: 600 })
  await user.approve(task.id)
  return task
}
const refusedWith = (code) => (e) => e instanceof VerifyError && e.code === code

describe('S01 offline verification', () => {
  it('accepts a minted token and reads its claims', async () => {
    const task = await approved()
    const m = await agent.mint(task.id, { scopes: ['github.repo.read:acme/**'], audience: AUDIENCE })
    const v = await verifier.verify(m.access_token)
    assert.equal(v.taskId, task.id)
    assert.equal(v.jti, m.jti)
    assert.equal(v.subject, 'alice')
    assert.equal(v.agent.sub, 'agent-1')
    assert.deepEqual(v.scopes, ['github.repo.read:acme/**'])
  })

  it('authorize checks containment: acme/** covers acme/api, not acme-evil/api, Acme/api, another action', async () => {
    const task = await approved()
    const { access_token } = await agent.mint(task.id, { scopes: ['github.repo.read:acme/**'], audience: AUDIENCE })
    await verifier.authorize(access_token, 'github.repo.read:acme/api')
    await verifier.authorize(access_token, 'github.repo.read:acme/api/issues/1')
    for (const need of ['github.repo.read:acme-evil/api', 'github.repo.read:Acme/api', 'github.repo.read:acme', WRITE, 'github.repo.read']) {
      await assert.rejects(verifier.authorize(access_token, need), refusedWith('insufficient_scope'), need)
    }
  })

  it('refuses another audience\'s token, an ID token, garbage', async () => {
    const task = await approved()
    const { access_token } = await agent.mint(task.id, { scopes: [READ], audience: AUDIENCE })
    const other = new ErrandVerifier({ issuer: dev.issuer, audience: 'https://api.github.com', revocation: false })
    await assert.rejects(other.verify(access_token), refusedWith('invalid_token'))
    // an identity token of the dev provider: another typ, another issuer
    await assert.rejects(verifier.verify(await dev.token('agent', 'agent-1')), refusedWith('invalid_token'))
    await assert.rejects(verifier.verify('not.a.jwt'), refusedWith('invalid_token'))
  })

  it('refuses alg none and HS256 keyed with Errand\'s public key (alg confusion)', async () => {
    const task = await approved()
    const { access_token } = await agent.mint(task.id, { scopes: [READ], audience: AUDIENCE })
    const claims = jose.decodeJwt(access_token)
    const none = new jose.UnsecuredJWT(claims).setIssuer(claims.iss).encode()
    const noneAt = none.replace(/^[^.]+/, jose.base64url.encode(JSON.stringify({ alg: 'none', typ: 'at+jwt' })))
    await assert.rejects(verifier.verify(noneAt), refusedWith('invalid_token'))
    const jwks = await (await fetch(`${dev.issuer}/.well-known/jwks.json`)).json()
    const pub = new TextEncoder().encode(JSON.stringify(jwks.keys[0]))
    const { kid } = jose.decodeProtectedHeader(access_token)
    const hs = await new jose.SignJWT(claims).setProtectedHeader({ alg: 'HS256', typ: 'at+jwt', kid }).sign(pub)
    await assert.rejects(verifier.verify(hs), refusedWith('invalid_token'))
  })

  it('refuses a token signed by another key under an unknown kid, and fetches the JWKS at most once per cooldown', async () => {
    const proxy = await startProxy(dev.issuer)
    try {
      const v = new ErrandVerifier({ issuer: dev.issuer, audience: AUDIENCE, jwksUri: `${proxy.url}/.well-known/jwks.json`, revocation: false })
      const task = await approved()
      const { access_token } = await agent.mint(task.id, { scopes: [READ], audience: AUDIENCE })
      await v.verify(access_token)
      const claims = jose.decodeJwt(access_token)
      const { privateKey } = await jose.generateKeyPair('EdDSA')
      for (let i = 0; i < 50; i++) {
        const forged = await new jose.SignJWT(claims).setProtectedHeader({ alg: 'EdDSA', typ: 'at+jwt', kid: `k-${i}` }).sign(privateKey)
        await assert.rejects(v.verify(forged), refusedWith('invalid_token'))
      }
      const fetches = proxy.seen.filter((s) => s.url === '/.well-known/jwks.json').length
      assert.ok(fetches <= 2, `50 unknown kids made ${fetches} JWKS fetches`)
      // and with Errand's own kid but another key: the signature fails
      const { kid } = jose.decodeProtectedHeader(access_token)
      const forged = await new jose.SignJWT(claims).setProtectedHeader({ alg: 'EdDSA', typ: 'at+jwt', kid }).sign(privateKey)
      await assert.rejects(v.verify(forged), refusedWith('invalid_token'))
    } finally {
      await proxy.stop()
    }
  })

  it('accepts an expired token within the leeway, refuses it past the leeway', async () => {
    const task = await approved()
    const { access_token, expires_in } = await agent.mint(task.id, { scopes: [READ], audience: AUDIENCE, ttl_seconds: 1 })
    assert.equal(expires_in, 1)
    const exp = jose.decodeJwt(access_token).exp
    await until(() => Date.now() / 1000 > exp + 1, 5000, 100)
    const lenient = new ErrandVerifier({ issuer: dev.issuer, audience: AUDIENCE, revocation: false, clockToleranceSec: 5 })
    const strict = new ErrandVerifier({ issuer: dev.issuer, audience: AUDIENCE, revocation: false, clockToleranceSec: 0 })
    await lenient.verify(access_token)
    await assert.rejects(strict.verify(access_token), (e) => refusedWith('invalid_token')(e) && /expired/.test(e.message))
  })
})

describe('S02 the revocation feed', () => {
  it('closing the task: its token is refused within one second, offline', async (t) => {
    const task = await approved()
    const { access_token } = await agent.mint(task.id, { scopes: [READ], audience: AUDIENCE })
    await verifier.verify(access_token)
    assert.equal(verifier.feed.mode, 'streaming')
    await agent.close(task.id)
    const closedAt = Date.now()
    const refused = await until(() => verifier.verify(access_token).then(() => false, (e) => refusedWith('revoked')(e)), 1000, 10)
    const took = Date.now() - closedAt
    assert.ok(refused, `the closed task's token was still accepted ${took} ms after the close`)
    assert.ok(took < 1000, `refused after ${took} ms`)
    t.diagnostic(`refused ${took} ms after the close answered`)
  })

  it('revoking one token refuses that one only', async () => {
    const task = await approved()
    const a = await agent.mint(task.id, { scopes: [READ], audience: AUDIENCE })
    const b = await agent.mint(task.id, { scopes: [READ], audience: AUDIENCE })
    await agent.revoke(a.access_token)
    assert.ok(await until(() => verifier.feed.isRevoked(a.jti), 1000, 10), 'revocation seen within a second')
    await assert.rejects(verifier.verify(a.access_token), refusedWith('revoked'))
    await verifier.verify(b.access_token)
  })

  it('a verifier started after the revocation knows it (the feed is read from the start)', async () => {
    const task = await approved()
    const { access_token } = await agent.mint(task.id, { scopes: [READ], audience: AUDIENCE })
    await agent.close(task.id)
    const late = new ErrandVerifier({ issuer: dev.issuer, audience: AUDIENCE, revocation: { token: rsToken() } })
    try {
      await assert.rejects(late.verify(access_token), refusedWith('feed_unavailable'), 'before start, the feed is unread: refused')
      await late.start()
      await assert.rejects(late.verify(access_token), refusedWith('revoked'))
    } finally {
      await late.close()
    }
  })

  it("onFeedDown 'introspect': while the feed is refused, each token is asked of /v1/introspect", async () => {
    let feedDown = false
    const proxy = await startProxy(dev.issuer, (req, res) => {
      if (!feedDown || !req.url.startsWith('/v1/revocations')) return false
      res.writeHead(503, { 'content-type': 'application/problem+json', 'retry-after': '1' })
      res.end(JSON.stringify({ status: 503, code: 'unavailable' }))
      return true
    })
    const v = new ErrandVerifier({
      issuer: dev.issuer, baseUrl: proxy.url, audience: AUDIENCE, maxFeedSilenceMs: 300, onFeedDown: 'introspect',
      revocation: { token: rsToken(), pollIntervalMs: 50, streamIdleMs: 200 },
    })
    try {
      await v.start()
      const task = await approved()
      const { access_token } = await agent.mint(task.id, { scopes: [READ], audience: AUDIENCE })
      feedDown = true
      proxy.cut()
      assert.ok(await until(() => v.feed.sinceHeardMs() > 300, 3000), 'the feed went silent')
      const introspections = () => proxy.seen.filter((s) => s.url === '/v1/introspect').length
      await v.verify(access_token)
      assert.equal(introspections(), 1, 'the token was introspected')
      await agent.close(task.id)
      await assert.rejects(v.verify(access_token), refusedWith('revoked'))
      assert.equal(introspections(), 2)
    } finally {
      await v.close()
      await proxy.stop()
    }
  })

  it('a token living longer than the verifier remembers revocations is refused', async () => {
    const task = await approved()
    const { access_token } = await agent.mint(task.id, { scopes: [READ], audience: AUDIENCE, ttl_seconds: 60 })
    const forgetful = new ErrandVerifier({ issuer: dev.issuer, audience: AUDIENCE, revocation: { token: rsToken(), retentionMs: 30_000 } })
    try {
      await forgetful.start()
      await assert.rejects(forgetful.verify(access_token), (e) => refusedWith('invalid_token')(e) && /retentionMs/.test(e.message))
      await verifier.verify(access_token) // the default, 1 h, covers it
    } finally {
      await forgetful.close()
    }
  })

  it('a cut stream is resumed with Last-Event-ID, and what was revoked meanwhile is seen', async () => {
    const proxy = await startProxy(dev.issuer)
    const v = new ErrandVerifier({ issuer: dev.issuer, baseUrl: proxy.url, audience: AUDIENCE, revocation: { token: rsToken() } })
    try {
      await v.start()
      const streams = () => proxy.seen.filter((s) => s.url.startsWith('/v1/revocations/stream'))
      await until(() => v.feed.mode === 'streaming', 2000)
      const task = await approved()
      const a = await agent.mint(task.id, { scopes: [READ], audience: AUDIENCE })
      const b = await agent.mint(task.id, { scopes: [READ], audience: AUDIENCE })
      await agent.revoke(a.access_token)
      assert.ok(await until(() => v.feed.isRevoked(a.jti), 1000, 10))
      const pos = v.feed.position()
      const before = streams().length
      proxy.cut()
      await agent.revoke(b.access_token)
      assert.ok(await until(() => streams().length > before, 5000), 'the stream was opened again')
      // The stream resumes where the follower is: the last event's id, or
      // past it when a poll made while the stream was down read further.
      const resumed = Number(streams()[before].headers['last-event-id'])
      assert.ok(pos > 0 && resumed >= pos, `resumed at ${resumed}, the last event seen was ${pos}`)
      assert.ok(await until(() => v.feed.isRevoked(b.jti), 2000, 10), 'the revocation made while the stream was cut is seen')
      await assert.rejects(v.verify(b.access_token), refusedWith('revoked'))
    } finally {
      await v.close()
      await proxy.stop()
    }
  })
})
