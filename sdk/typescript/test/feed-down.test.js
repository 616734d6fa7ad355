// S02, the feed down: with Errand stopped, the verifier keeps accepting a
// valid token only while the feed has been silent for less than its
// documented bound (maxFeedSilenceMs), then refuses every token with
// feed_unavailable; with onFeedDown 'introspect' it asks Errand instead,
// and refuses when Errand cannot answer either.
import { it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { ErrandClient, ErrandVerifier, VerifyError, functionToken } from '../dist/index.js'
import { startDev, cleanup, until, AUDIENCE, READ } from './helpers.js'

let dev
before(async () => {
  dev = await startDev()
}, { timeout: 180000 })
after(async () => {
  await dev?.stop()
  await cleanup()
})

it('fails closed once the feed has been silent longer than maxFeedSilenceMs', async (t) => {
  const agent = new ErrandClient({ baseUrl: dev.issuer, token: await dev.token('agent', 'agent-1') })
  const user = new ErrandClient({ baseUrl: dev.issuer, token: await dev.token('user', 'alice', ['eng']) })
  const rs = await dev.token('resource', 'mcp-server')
  const bound = 1500
  const opts = { issuer: dev.issuer, audience: AUDIENCE, maxFeedSilenceMs: bound, revocation: { token: rs, pollIntervalMs: 200 } }
  const strict = new ErrandVerifier(opts)
  const introspecting = new ErrandVerifier({ ...opts, onFeedDown: 'introspect' })
  await Promise.all([strict.start(), introspecting.start()])
  try {
    const task = await agent.createTask({ on_behalf_of: 'alice', goal: `down ${randomUUID()}`, scopes: [READ], audiences: [AUDIENCE], ttl_seconds: 600 })
    await user.approve(task.id)
    const { access_token } = await agent.mint(task.id, { scopes: [READ], audience: AUDIENCE })
    await strict.verify(access_token)
    await introspecting.verify(access_token)

    await dev.stop()
    const stopped = Date.now()
    // Within the bound the token is still accepted (the keys are cached,
    // and nothing can have been revoked more than the bound ago unseen).
    await strict.verify(access_token)
    const refused = await until(() => strict.verify(access_token).then(() => null, (e) => e), bound + 1500, 20)
    const took = Date.now() - stopped
    assert.ok(refused instanceof VerifyError && refused.code === 'feed_unavailable', `refused: ${refused}`)
    // The bound runs from the last word heard from Errand (a keep-alive,
    // an event, a poll), which came at or before the stop.
    assert.ok(strict.feed.sinceHeardMs() > bound, `refused after ${Math.round(strict.feed.sinceHeardMs())} ms of silence, before the bound of ${bound} ms`)
    assert.ok(took <= bound + 1000, `refused only after ${took} ms; the bound is ${bound} ms`)
    assert.notEqual(strict.feed.mode, 'streaming')
    t.diagnostic(`feed_unavailable ${took} ms after errand stopped (bound ${bound} ms)`)
    // onFeedDown 'introspect': Errand is down too, so refused as well once
    // this verifier's own feed has been silent past the bound (its last
    // word may have come a little later than the strict one's).
    const refusedToo = await until(() => introspecting.verify(access_token).then(() => null, (e) => e), bound + 1500, 20)
    assert.ok(refusedToo instanceof VerifyError && refusedToo.code === 'feed_unavailable', `introspecting: ${refusedToo}`)
    assert.ok(introspecting.feed.sinceHeardMs() > bound, `introspecting refused after ${Math.round(introspecting.feed.sinceHeardMs())} ms of silence`)
  } finally {
    await Promise.all([strict.close(), introspecting.close()])
  }
})
