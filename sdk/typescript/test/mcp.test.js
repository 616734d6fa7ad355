// The MCP helpers with the MCP TypeScript SDK (1.32.2) against a real
// errand dev: the SDK's client gets a task token through
// ErrandTaskAuthProvider from Errand only, even when the MCP server's
// RFC 9728 metadata names another authorization server; the SDK's
// requireBearerAuth with mcpTokenVerifier answers 401 for every refusal.
import { it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { createServer } from 'node:http'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { randomUUID } from 'node:crypto'
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js'
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js'
import { createMcpExpressApp } from '@modelcontextprotocol/sdk/server/express.js'
import { requireBearerAuth } from '@modelcontextprotocol/sdk/server/auth/middleware/bearerAuth.js'
import { mcpAuthMetadataRouter, getOAuthProtectedResourceMetadataUrl } from '@modelcontextprotocol/sdk/server/auth/router.js'
import { InvalidTokenError } from '@modelcontextprotocol/sdk/server/auth/errors.js'
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import { ErrandClient, ErrandVerifier } from '../dist/index.js'
import { mcpTokenVerifier, hasScope, ErrandTaskAuthProvider } from '../dist/mcp.js'
import { startDev, cleanup, READ } from './helpers.js'
import { work } from '../../../interop/lib/harness.js'

let dev, rogue, http, verifier, mcpUrl
const rogueHits = []

before(async () => {
  // An authorization server that is not Errand, named by the MCP server's metadata.
  rogue = createServer((req, res) => {
    rogueHits.push(req.url)
    res.writeHead(404).end()
  })
  await new Promise((r) => rogue.listen(0, '127.0.0.1', r))
  const rogueUrl = `http://127.0.0.1:${rogue.address().port}`

  const app = createMcpExpressApp({ host: '127.0.0.1' })
  http = await new Promise((ok) => { const s = app.listen(0, '127.0.0.1', () => ok(s)) })
  mcpUrl = `http://127.0.0.1:${http.address().port}/mcp`
  const cfg = join(await work(), 'mcp-test.yaml')
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
  - {url: "${mcpUrl}", any_introspector: true}
`)
  dev = await startDev('--config', cfg)
  verifier = new ErrandVerifier({ issuer: dev.issuer, audience: mcpUrl, revocation: { token: () => dev.token('resource', 'mcp') } })
  await verifier.start()
  app.use(mcpAuthMetadataRouter({
    oauthMetadata: { issuer: rogueUrl, authorization_endpoint: `${rogueUrl}/authorize`, token_endpoint: `${rogueUrl}/token`, response_types_supported: ['code'] },
    resourceServerUrl: new URL(mcpUrl),
  }))
  app.post('/mcp', requireBearerAuth({ verifier: mcpTokenVerifier(verifier), resourceMetadataUrl: getOAuthProtectedResourceMetadataUrl(new URL(mcpUrl)) }), async (req, res) => {
    const server = new McpServer({ name: 't', version: '1.0.0' })
    server.registerTool('whoami', { description: 'who calls' }, async (extra) => ({
      content: [{ type: 'text', text: `${extra.authInfo.extra.taskId} ${extra.authInfo.scopes.join(' ')} ${extra.authInfo.resource}` }],
    }))
    const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined })
    res.on('close', () => { transport.close(); server.close() })
    await server.connect(transport)
    await transport.handleRequest(req, res, req.body)
  })
}, { timeout: 180000 })

after(async () => {
  await verifier?.close()
  http?.closeAllConnections()
  await new Promise((r) => (http ? http.close(r) : r()))
  await new Promise((r) => (rogue ? rogue.close(r) : r()))
  await dev?.stop()
  await cleanup()
})

it('ErrandTaskAuthProvider gets the task token from Errand, never from the server the metadata names', async () => {
  const agentToken = await dev.token('agent', 'agent-1')
  const agent = new ErrandClient({ baseUrl: dev.issuer, token: agentToken })
  const user = new ErrandClient({ baseUrl: dev.issuer, token: await dev.token('user', 'alice', ['eng']) })
  const task = await agent.createTask({ on_behalf_of: 'alice', goal: `mcp ${randomUUID()}`, scopes: [READ], audiences: [mcpUrl], ttl_seconds: 600 })
  await user.approve(task.id)
  const authProvider = new ErrandTaskAuthProvider({ errandUrl: dev.issuer, agentToken, taskId: task.id, scopes: [READ] })
  const client = new Client({ name: 't', version: '1.0.0' })
  await client.connect(new StreamableHTTPClientTransport(new URL(mcpUrl), { authProvider }))
  const out = await client.callTool({ name: 'whoami', arguments: {} })
  assert.equal(out.content[0].text, `${task.id} ${READ} ${mcpUrl}`)
  assert.deepEqual(rogueHits, [], 'the agent never called the authorization server the MCP server named')
  await client.close()
})

it('mcpTokenVerifier turns every refusal into the SDK\'s InvalidTokenError, a feed not yet read too', async () => {
  const unstarted = new ErrandVerifier({ issuer: dev.issuer, audience: mcpUrl, revocation: { token: () => dev.token('resource', 'mcp') } })
  const v = mcpTokenVerifier(unstarted)
  await assert.rejects(v.verifyAccessToken('garbage'), InvalidTokenError)
  const agent = new ErrandClient({ baseUrl: dev.issuer, token: await dev.token('agent', 'agent-1') })
  const user = new ErrandClient({ baseUrl: dev.issuer, token: await dev.token('user', 'alice', ['eng']) })
  const task = await agent.createTask({ on_behalf_of: 'alice', goal: `mcp ${randomUUID()}`, scopes: [READ], audiences: [mcpUrl], ttl_seconds: 600 })
  await user.approve(task.id)
  const { access_token } = await agent.mint(task.id, { scopes: [READ], audience: mcpUrl })
  await assert.rejects(v.verifyAccessToken(access_token), (e) => e instanceof InvalidTokenError && /feed/.test(e.message))
  const info = await mcpTokenVerifier(verifier).verifyAccessToken(access_token)
  assert.equal(info.extra.taskId, task.id)
  assert.equal(String(info.resource), mcpUrl)
})

it('hasScope is containment, and a malformed scope is covered by nothing', () => {
  const info = { token: 't', clientId: 'c', scopes: ['github.repo.read:acme/**'] }
  assert.equal(hasScope(info, 'github.repo.read:acme/api'), true)
  assert.equal(hasScope(info, 'github.repo.read:acme-evil/api'), false)
  assert.equal(hasScope(info, 'github.repo.read:acme/../x'), false)
  assert.equal(hasScope(undefined, 'github.repo.read:acme/api'), false)
})
