// MCP Enterprise-Managed Authorization against a real errand binary: the
// agent gets an ID-JAG from Errand for an approved task (oauth4webapi's
// token exchange) and redeems it with the RFC 7523 JWT bearer grant at a
// test authorization server whose every check of the grant is jose's
// (lib/idjag-as.js): once with oauth4webapi and the MCP TypeScript SDK's
// client (1.32.2), once entirely through the SDK's own cross-app-access
// client (@modelcontextprotocol/client 2.4.0, CrossAppAccessProvider), which
// discovers the MCP server's authorization server (RFC 9728, RFC 8414) and
// asks the agent for the grant. The MCP server is built with the SDK and
// trusts that authorization server. Errand is `errand dev --config` with an
// id_jag_targets entry naming the test server and its events endpoint, to
// which Errand pushes the revocation of each grant (a SET, RFC 8417/8935).
import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { randomUUID } from 'node:crypto'
import * as oauth from 'oauth4webapi'
import * as jose from 'jose'

import { startDev, cleanup, errandBin, rest, work, READ, WRITE, AUDIENCE_A } from '../lib/harness.js'
import { clientAssertion, rejectsWith, TOKEN_EXCHANGE, ID_TOKEN_TYPE } from '../lib/oauth.js'
import { startTestAS, JWT_BEARER_GRANT, SESSION_REVOKED } from '../lib/idjag-as.js'
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import * as mcpClient from '@modelcontextprotocol/client'

const ID_JAG = 'urn:ietf:params:oauth:token-type:id-jag'
const CLIENT_ID = 'errand-agents'
const CLIENT_SECRET = randomUUID()
const insecure = { [oauth.allowInsecureRequests]: true }
// oauth4webapi knows Bearer and DPoP; an ID-JAG's token_type is N_A.
const idjagTypes = { recognizedTokenTypes: { n_a: () => {} } }

let dev, target, errandAS, agentToken, otherAgentToken, userToken

before(async () => {
  await errandBin()
  target = await startTestAS({ clientId: CLIENT_ID, clientSecret: CLIENT_SECRET, requiredScope: 'repo:read' })
  const cfg = join(await work(), 'idjag.yaml')
  await writeFile(cfg, `issuers:
  - {url: "https://agents.example", audience: errand, kind: agent}
  - {url: "https://users.example", audience: errand, kind: user, groups_claim: groups}
grants:
  - group: eng
    scopes: ["github.repo.read:acme/**", "github.pr.write:acme/**"]
actions:
  - {name: github.repo.read, class: read, risk: low}
  - {name: github.pr.write, class: write, risk: medium}
audiences:
  - {url: "${AUDIENCE_A}", environment: prod}
  - ${target.resource}
id_jag_targets:
  - issuer: "${target.issuer}"
    audience_resources: ["${target.resource}"]
    client_id: ${CLIENT_ID}
    scopes_map: {github.repo.read: "repo:read"}
    max_lifetime: 2m
    events_endpoint: "${target.issuer}/events"
`)
  dev = await startDev('--config', cfg)
  ;[agentToken, otherAgentToken, userToken] = await Promise.all([
    dev.token('agent', 'agent-1'), dev.token('agent', 'agent-2'), dev.token('user', 'alice', ['eng']),
  ])
  const issuer = new URL(dev.issuer)
  errandAS = await oauth.processDiscoveryResponse(issuer, await oauth.discoveryRequest(issuer, { algorithm: 'oauth2', ...insecure }))
  target.trust(errandAS.issuer, errandAS.jwks_uri)
}, { timeout: 180000 })

after(async () => {
  await dev?.stop()
  await target?.stop()
  await cleanup()
})

// approvedTask is a task naming the MCP server among its audiences, approved.
async function approvedTask(scopes = [READ, WRITE], approval = {}) {
  const task = await rest(dev.issuer, 'POST', '/v1/tasks', agentToken, {
    on_behalf_of: 'alice', goal: `id-jag ${randomUUID()}`, scopes, audiences: [AUDIENCE_A, target.resource], ttl_seconds: 600,
  })
  await rest(dev.issuer, 'POST', `/v1/tasks/${task.id}/approve`, userToken, approval)
  return task.id
}

// getIDJAG is the token exchange for an ID-JAG, through oauth4webapi.
async function getIDJAG(taskId, { agent = agentToken, ...params } = {}) {
  const res = await oauth.genericTokenEndpointRequest(errandAS, { client_id: 'agent' }, clientAssertion(agent), TOKEN_EXCHANGE, {
    requested_token_type: ID_JAG,
    audience: target.issuer,
    resource: target.resource,
    scope: READ,
    subject_token: agent,
    subject_token_type: ID_TOKEN_TYPE,
    authorization_details: JSON.stringify([{ type: 'errand_task', task_id: taskId }]),
    ...params,
  }, insecure)
  return oauth.processGenericTokenEndpointResponse(errandAS, { client_id: 'agent' }, res, idjagTypes)
}

// redeem is the RFC 7523 JWT bearer grant at the target, through oauth4webapi.
async function redeem(idjag) {
  const as = target.as
  const res = await oauth.genericTokenEndpointRequest(as, { client_id: CLIENT_ID }, oauth.None(), JWT_BEARER_GRANT, { assertion: idjag }, insecure)
  return oauth.processGenericTokenEndpointResponse(as, { client_id: CLIENT_ID }, res)
}

// callTool calls the MCP server's tool with token through the SDK's client;
// it rejects when the server refuses the token.
async function callTool(token) {
  const mcp = new Client({ name: 'agent-1', version: '1.0.0' })
  await mcp.connect(new StreamableHTTPClientTransport(new URL(target.resource), {
    requestInit: { headers: { authorization: `Bearer ${token}` } },
  }))
  try {
    return await mcp.callTool({ name: 'list_issues', arguments: { repo: 'acme/api' } })
  } finally {
    await mcp.close()
  }
}

// untilRevoked waits for Errand's outbox to push the revocation of jti.
async function untilRevoked(jti) {
  for (let i = 0; i < 100 && !target.revokedGrants.has(jti); i++) await new Promise((ok) => setTimeout(ok, 100))
  assert.ok(target.revokedGrants.has(jti), `no revocation of ${jti} reached the target`)
}

const jtiOf = (jwt) => jose.decodeJwt(jwt).jti

describe('MCP Enterprise-Managed Authorization (ID-JAG)', { concurrency: 1, timeout: 120000 }, () => {
  it('an approved task gets an ID-JAG, redeemed at the target for a token with which an MCP client calls a tool', async () => {
    const taskId = await approvedTask()
    const grant = await getIDJAG(taskId)
    // Errand's metadata says it issues ID-JAGs (the draft's IdP metadata).
    assert.deepEqual(errandAS.identity_chaining_requested_token_types_supported, [ID_JAG])
    assert.equal(grant.issued_token_type, ID_JAG)
    assert.equal(grant.token_type, 'n_a')
    assert.equal(grant.scope, 'repo:read')
    assert.ok(grant.expires_in > 0 && grant.expires_in <= 120, `expires_in ${grant.expires_in}`)
    const { payload, protectedHeader } = await jose.jwtVerify(grant.access_token, jose.createRemoteJWKSet(new URL(errandAS.jwks_uri)), {
      typ: 'oauth-id-jag+jwt', issuer: errandAS.issuer, audience: target.issuer,
    })
    assert.equal(protectedHeader.typ, 'oauth-id-jag+jwt')
    assert.equal(payload.client_id, CLIENT_ID)
    assert.equal(payload.resource, target.resource)
    assert.equal(payload.task_id, taskId)
    assert.equal(payload.sub, 'alice')
    assert.equal(payload.act?.sub, 'agent-1')

    const token = await redeem(grant.access_token)
    assert.equal(token.token_type, 'bearer')
    // An MCP client (the SDK's) calls the MCP server's tool with it.
    const mcp = new Client({ name: 'agent-1', version: '1.0.0' })
    await mcp.connect(new StreamableHTTPClientTransport(new URL(target.resource), {
      requestInit: { headers: { authorization: `Bearer ${token.access_token}` } },
    }))
    try {
      const result = await mcp.callTool({ name: 'list_issues', arguments: { repo: 'acme/api' } })
      assert.deepEqual(result.content, [{ type: 'text', text: '2 open issues in acme/api, for alice' }])
    } finally {
      await mcp.close()
    }
    // Without the token, the MCP server refuses.
    const bare = await fetch(target.resource, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' })
    assert.equal(bare.status, 401)
    await bare.body?.cancel()

    // The same grant again: the target refuses the replayed jti.
    const replay = await rejectsWith(redeem(grant.access_token))
    assert.equal(replay.error, 'invalid_grant', replay.description)
    assert.match(replay.description, /redeemed before/)
  })

  it("the MCP SDK's own cross-app-access client (CrossAppAccessProvider) discovers the target, redeems Errand's ID-JAG and calls the tool", async () => {
    const taskId = await approvedTask([READ])
    const asked = []
    const provider = new mcpClient.CrossAppAccessProvider({
      clientId: CLIENT_ID,
      clientSecret: CLIENT_SECRET,
      expectedIssuer: target.issuer,
      // The SDK discovered the MCP server's authorization server and
      // resource (RFC 9728, RFC 8414) and asks for a grant for them; the
      // agent gets it from Errand for its task.
      assertion: async (ctx) => {
        asked.push(ctx)
        const grant = await getIDJAG(taskId, {
          audience: ctx.authorizationServerUrl.replace(/\/$/, ''), resource: ctx.resourceUrl, scope: READ,
        })
        return grant.access_token
      },
    })
    const mcp = new mcpClient.Client({ name: 'agent-1', version: '1.0.0' })
    await mcp.connect(new mcpClient.StreamableHTTPClientTransport(new URL(target.resource), { authProvider: provider }))
    try {
      const result = await mcp.callTool({ name: 'list_issues', arguments: { repo: 'acme/api' } })
      assert.deepEqual(result.content, [{ type: 'text', text: '2 open issues in acme/api, for alice' }])
    } finally {
      await mcp.close()
    }
    assert.equal(asked.length, 1)
    assert.equal(asked[0].resourceUrl.replace(/\/$/, ''), target.resource)
    assert.equal(provider.tokens()?.token_type?.toLowerCase(), 'bearer')
  })

  it('a grant of another typ is refused by the target', async () => {
    // An Errand access token of the same task: signed by the same keys, typ at+jwt.
    const taskId = await approvedTask()
    const at = await rest(dev.issuer, 'POST', `/v1/tasks/${taskId}/tokens`, agentToken, { scopes: [READ], audience: AUDIENCE_A })
    const err = await rejectsWith(redeem(at.access_token))
    assert.equal(err.error, 'invalid_grant')
    assert.match(err.description, /ERR_JWT_CLAIM_VALIDATION_FAILED/)
  })

  it('refusals at Errand: unknown target, the MCP server not approved, scope beyond the approval, another agent, a closed task', async () => {
    const notThere = await approvedTask([READ], { audiences: [AUDIENCE_A] })
    let refused = await rejectsWith(getIDJAG(notThere))
    assert.equal(refused.error, 'invalid_target', refused.description)
    const taskId = await approvedTask([READ])
    let err = await rejectsWith(getIDJAG(taskId, { audience: 'https://unknown.example.com' }))
    assert.equal(err.error, 'invalid_target', err.description)
    err = await rejectsWith(getIDJAG(taskId, { scope: WRITE }))
    assert.equal(err.error, 'invalid_scope', err.description)
    err = await rejectsWith(getIDJAG(taskId, { agent: otherAgentToken }))
    assert.equal(err.error, 'invalid_grant', err.description)
    await rest(dev.issuer, 'POST', `/v1/tasks/${taskId}/close`, agentToken)
    err = await rejectsWith(getIDJAG(taskId))
    assert.equal(err.error, 'invalid_grant', err.description)
    assert.equal(err.body?.code, 'task_not_active')
  })

  it('closing the task tells the target (a SET it verifies with jose): the grant and the token from it stop working', async () => {
    const taskId = await approvedTask([READ])
    const used = await getIDJAG(taskId)
    const unused = await getIDJAG(taskId)
    const token = await redeem(used.access_token)
    assert.deepEqual((await callTool(token.access_token)).content, [{ type: 'text', text: '2 open issues in acme/api, for alice' }])
    await rest(dev.issuer, 'POST', `/v1/tasks/${taskId}/close`, agentToken)
    await untilRevoked(jtiOf(used.access_token))
    await untilRevoked(jtiOf(unused.access_token))
    const set = target.events.find((e) => e.sub_id.id === jtiOf(used.access_token))
    assert.equal(set.txn, taskId)
    assert.ok(set.events[SESSION_REVOKED].event_timestamp > 0)
    await assert.rejects(callTool(token.access_token), 'the MCP server accepted a token whose grant was revoked')
    const err = await rejectsWith(redeem(unused.access_token))
    assert.equal(err.error, 'invalid_grant')
    assert.match(err.description, /revoked by its issuer/)
  })

  it('the holder revokes one ID-JAG (RFC 7009, oauth4webapi): only what came from it stops working', async () => {
    const taskId = await approvedTask([READ])
    const [g1, g2] = [await getIDJAG(taskId), await getIDJAG(taskId)]
    const [t1, t2] = [await redeem(g1.access_token), await redeem(g2.access_token)]
    const res = await oauth.revocationRequest(errandAS, { client_id: 'agent' }, clientAssertion(agentToken), g1.access_token, insecure)
    await oauth.processRevocationResponse(res)
    await untilRevoked(jtiOf(g1.access_token))
    await assert.rejects(callTool(t1.access_token), 'the token of a revoked grant still works')
    assert.equal((await callTool(t2.access_token)).content.length, 1)
    assert.equal(target.revokedGrants.has(jtiOf(g2.access_token)), false)
    const task = await rest(dev.issuer, 'GET', `/v1/tasks/${taskId}`, agentToken)
    assert.equal(task.status, 'approved')
  })
})
