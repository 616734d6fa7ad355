// The example end to end against a real errand dev: the MCP server and the
// agent of this directory, Errand's approval given through its REST API by
// the user (with a dev identity token), as a person would in Errand's
// approval page or CLI.
import { it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { writeFile } from 'node:fs/promises'
import { createServer } from 'node:net'
import { join } from 'node:path'
import { ErrandClient } from '@errand/sdk'
import { startDev, cleanup, work } from '../../../interop/lib/harness.js'
import { startMcpServer } from '../server.js'
import { runAgent } from '../agent.js'

let dev, mcp, mcpUrl

const freePort = () => new Promise((ok, fail) => {
  const s = createServer()
  s.on('error', fail)
  s.listen(0, '127.0.0.1', () => {
    const { port } = s.address()
    s.close(() => ok(port))
  })
})

before(async () => {
  mcpUrl = `http://127.0.0.1:${await freePort()}/mcp`
  // errand dev with this catalog: the MCP server is an audience, and the
  // only resource server that may read its revocations is the MCP server.
  const cfg = join(await work(), 'mcp-agent.yaml')
  await writeFile(cfg, `issuers:
  - {url: "https://agents.example", audience: errand, kind: agent}
  - {url: "https://users.example", audience: errand, kind: user, groups_claim: groups}
  - {url: "https://servers.example", audience: errand, kind: resource}
grants:
  - group: eng
    scopes: ["github.repo.read:acme/**", "github.pr.write:acme/**"]
actions:
  - {name: github.repo.read, class: read, risk: low}
  - {name: github.pr.write, class: write, risk: medium}
audiences:
  - {url: "${mcpUrl}", environment: local, introspectors: ["https://servers.example#acme-mcp"]}
`)
  dev = await startDev('--config', cfg)
  mcp = await startMcpServer({ errandUrl: dev.issuer, resource: mcpUrl, resourceToken: () => dev.token('resource', 'acme-mcp') })
}, { timeout: 180000 })

after(async () => {
  await mcp?.stop()
  await dev?.stop()
  await cleanup()
})

it('the agent reads, is refused the write, closes its task and sees its token refused at once', async (t) => {
  const lines = []
  const agentToken = await dev.token('agent', 'repo-bot')
  const alice = new ErrandClient({ baseUrl: dev.issuer, token: await dev.token('user', 'alice', ['eng']) })
  // alice approves the read only: the task's request is narrowed.
  const approving = (async () => {
    for (;;) {
      const [task] = await alice.listPending()
      if (task) return alice.approve(task.id, { scopes: ['github.repo.read:acme/api'], version: task.version, digest: task.digest })
      await new Promise((r) => setTimeout(r, 100))
    }
  })()
  const out = await runAgent({ errandUrl: dev.issuer, agentToken, user: 'alice', mcpUrl, log: (l) => lines.push(l) })
  await approving
  for (const l of lines) t.diagnostic(l)

  assert.deepEqual(out.approved.approved_scopes, ['github.repo.read:acme/api'])
  assert.ok(!out.read.isError, JSON.stringify(out.read))
  assert.match(out.read.content[0].text, new RegExp(`read for task ${out.task.id}`))
  assert.equal(out.write.isError, true)
  assert.match(out.write.content[0].text, /refused: the token does not cover github\.pr\.write:acme\/api/)
  assert.equal(out.closed.revoked, 1)
  assert.equal(out.after.status, 401, lines.join('\n'))
  assert.ok(out.after.refusedAfterMs < 1000, `the closed task's token was refused only after ${out.after.refusedAfterMs} ms`)
  assert.match(out.after.challenge, /error="invalid_token"/)
  assert.match(out.after.challenge, /revoked/)
  assert.match(out.after.challenge, /resource_metadata="http:\/\/127\.0\.0\.1:\d+\/\.well-known\/oauth-protected-resource\/mcp"/)
})

it('the MCP server publishes RFC 9728 metadata naming Errand', async () => {
  const url = new URL('/.well-known/oauth-protected-resource/mcp', mcpUrl)
  const prm = await (await fetch(url)).json()
  assert.equal(prm.resource, mcpUrl)
  assert.deepEqual(prm.authorization_servers, [dev.issuer])
})

it('a request without a token, or with an ID token, is 401 with the metadata URL', async () => {
  for (const auth of [undefined, `Bearer ${await dev.token('agent', 'repo-bot')}`]) {
    const res = await fetch(mcpUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...(auth ? { authorization: auth } : {}) },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' }),
    })
    assert.equal(res.status, 401)
    assert.match(res.headers.get('www-authenticate'), /resource_metadata=/)
  }
})
