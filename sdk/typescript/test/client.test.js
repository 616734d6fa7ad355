// The agent client against a real errand dev: create, wait for the user's
// approval, mint (with its automatic Idempotency-Key), close, revoke,
// history; and its retries, which honour Retry-After and never mint twice.
import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { mkdtemp, writeFile, rename, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ErrandClient, ErrandError, functionToken, fileToken } from '../dist/index.js'
import { startDev, cleanup, startProxy, AUDIENCE, READ, WRITE } from './helpers.js'

let dev, agent, user, auditor

before(async () => {
  dev = await startDev()
  agent = new ErrandClient({ baseUrl: dev.issuer, token: functionToken(() => dev.token('agent', 'agent-1')) })
  user = new ErrandClient({ baseUrl: dev.issuer, token: await dev.token('user', 'alice', ['eng']) })
  auditor = new ErrandClient({ baseUrl: dev.issuer, token: await dev.token('user', 'audrey', ['auditors']) })
}, { timeout: 180000 })

after(async () => {
  await dev?.stop()
  await cleanup()
})

const newTask = (scopes = [READ, WRITE]) => agent.createTask({
  on_behalf_of: 'alice', goal: `sdk ${randomUUID()}`, scopes, audiences: [AUDIENCE], ttl_seconds: 600,
})

describe('ErrandClient against errand dev', () => {
  it('create → waitForApproval (the user approves meanwhile, narrowing) → mint → close → history', async () => {
    const task = await newTask()
    assert.equal(task.status, 'pending')
    const waiting = agent.waitForApproval(task.id, { intervalMs: 100, timeoutMs: 20000 })
    const pending = await user.listPending()
    assert.ok(pending.some((t) => t.id === task.id))
    await user.approve(task.id, { scopes: [READ], version: task.version, digest: task.digest })
    const approved = await waiting
    assert.equal(approved.status, 'approved')
    assert.deepEqual(approved.approved_scopes, [READ])

    const minted = await agent.mint(task.id, { scopes: [READ], audience: AUDIENCE })
    assert.equal(minted.task_id, task.id)
    assert.equal(minted.scope, READ)
    assert.equal(minted.replayed, false)
    // Beyond the approval: Errand's refusal, with its code.
    await assert.rejects(agent.mint(task.id, { scopes: [WRITE], audience: AUDIENCE }),
      (e) => e instanceof ErrandError && e.status === 403 && e.code === 'scope_exceeds_approval')

    const closed = await agent.close(task.id)
    assert.equal(closed.status, 'closed')
    assert.equal(closed.revoked, 1)
    await assert.rejects(agent.mint(task.id, { scopes: [READ], audience: AUDIENCE }), { code: 'task_not_active' })

    const h = await auditor.history(task.id)
    const types = h.events.map((e) => e.type)
    for (const t of ['task.created', 'task.approved', 'credential.issued', 'task.closed']) assert.ok(types.includes(t), `${t} in ${types}`)
    assert.equal(h.credentials[0].jti, minted.jti)
    // history is the auditors' alone
    await assert.rejects(agent.history(task.id), { code: 'wrong_principal_kind' })
  })

  it('waitForApproval rejects with task_denied when the user denies', async () => {
    const task = await newTask()
    const waiting = agent.waitForApproval(task.id, { intervalMs: 100, timeoutMs: 20000 })
    await user.deny(task.id, 'not now')
    await assert.rejects(waiting, (e) => e instanceof ErrandError && e.code === 'task_denied' && e.detail === 'not now')
  })

  it('waitForApproval gives up with wait_timeout', async () => {
    const task = await newTask()
    await assert.rejects(agent.waitForApproval(task.id, { intervalMs: 50, timeoutMs: 300 }), { code: 'wait_timeout' })
  })

  it('a mint with the same Idempotency-Key returns the same credential, replayed', async () => {
    const task = await newTask([READ])
    await user.approve(task.id)
    const key = randomUUID()
    const a = await agent.mint(task.id, { scopes: [READ], audience: AUDIENCE }, { idempotencyKey: key })
    const b = await agent.mint(task.id, { scopes: [READ], audience: AUDIENCE }, { idempotencyKey: key })
    assert.equal(b.jti, a.jti)
    assert.equal(b.replayed, true)
    // without a key, each call is its own credential
    const c = await agent.mint(task.id, { scopes: [READ], audience: AUDIENCE })
    assert.notEqual(c.jti, a.jti)
  })

  it('revoke (RFC 7009) revokes one of the agent\'s tokens', async () => {
    const task = await newTask([READ])
    await user.approve(task.id)
    const m = await agent.mint(task.id, { scopes: [READ], audience: AUDIENCE })
    await agent.revoke(m.access_token)
    const h = await auditor.history(task.id)
    assert.ok(h.credentials.find((c) => c.jti === m.jti).revoked_at, 'the credential is revoked')
  })
})

describe('token sources against errand dev', () => {
  it('fileToken: a renewed token file is what the next call shows', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'errand-sdk-'))
    try {
      const path = join(dir, 'token')
      await writeFile(path, await dev.token('agent', 'pod-a'))
      const c = new ErrandClient({ baseUrl: dev.issuer, token: fileToken(path) })
      const a = await c.createTask({ on_behalf_of: 'alice', goal: `file ${randomUUID()}`, scopes: [READ], audiences: [AUDIENCE], ttl_seconds: 60 })
      await writeFile(join(dir, 'next'), await dev.token('agent', 'pod-b'))
      await rename(join(dir, 'next'), path)
      const b = await c.createTask({ on_behalf_of: 'alice', goal: `file ${randomUUID()}`, scopes: [READ], audiences: [AUDIENCE], ttl_seconds: 60 })
      assert.match(a.agent, /pod-a$/)
      assert.match(b.agent, /pod-b$/)
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })
})

describe('retries', () => {
  it('a mint answered 503 with Retry-After is retried after that delay with the same Idempotency-Key, and mints once', async () => {
    const task = await newTask([READ])
    await user.approve(task.id)
    let injected = 0
    const proxy = await startProxy(dev.issuer, (req, res) => {
      if (req.method === 'POST' && req.url.endsWith('/tokens') && injected++ === 0) {
        // Errand's answer when its database is unreachable.
        res.writeHead(503, { 'content-type': 'application/problem+json', 'retry-after': '1' })
        res.end(JSON.stringify({ type: 'about:blank', title: 'Service Unavailable', status: 503, code: 'unavailable' }))
        return true
      }
      return false
    })
    try {
      const viaProxy = new ErrandClient({ baseUrl: proxy.url, token: await dev.token('agent', 'agent-1') })
      const t0 = Date.now()
      const m = await viaProxy.mint(task.id, { scopes: [READ], audience: AUDIENCE })
      assert.ok(Date.now() - t0 >= 950, `waited ${Date.now() - t0} ms, Retry-After said 1 s`)
      const mints = proxy.seen.filter((s) => s.url.endsWith('/tokens'))
      assert.equal(mints.length, 2)
      assert.ok(mints[0].headers['idempotency-key'])
      assert.equal(mints[1].headers['idempotency-key'], mints[0].headers['idempotency-key'])
      const h = await auditor.history(task.id)
      assert.deepEqual(h.credentials.map((c) => c.jti), [m.jti])
    } finally {
      await proxy.stop()
    }
  })

  it('a 429 without Retry-After (a spent budget) and a create answered 503 are not retried', async () => {
    let calls = 0
    const proxy = await startProxy(dev.issuer, (req, res) => {
      calls++
      const status = req.url === '/v1/tasks' ? 503 : 429
      res.writeHead(status, { 'content-type': 'application/problem+json', ...(status === 503 ? { 'retry-after': '0' } : {}) })
      res.end(JSON.stringify({ status, code: status === 503 ? 'unavailable' : 'budget_exhausted' }))
      return true
    })
    try {
      const c = new ErrandClient({ baseUrl: proxy.url, token: 'x', retry: { baseDelayMs: 1 } })
      await assert.rejects(c.mint('t', { scopes: [READ], audience: AUDIENCE }), { code: 'budget_exhausted', status: 429 })
      assert.equal(calls, 1)
      await assert.rejects(c.createTask({ on_behalf_of: 'alice', goal: 'g', scopes: [READ], audiences: [AUDIENCE], ttl_seconds: 60 }), { code: 'unavailable' })
      assert.equal(calls, 2)
      // a GET is retried: 4 attempts in all by default
      calls = 0
      await assert.rejects(c.getTask('t'), { code: 'budget_exhausted' })
      assert.equal(calls, 1, 'a 429 without Retry-After is final, even for a GET')
    } finally {
      await proxy.stop()
    }
  })
})
