// MCP Enterprise-Managed Authorization against a real errand binary: the
// agent gets an ID-JAG from Errand for an approved task with oauth4webapi's
// token exchange, redeems it with the RFC 7523 JWT bearer grant (again
// oauth4webapi) at a test authorization server whose every check of the
// grant is jose's (lib/idjag-as.js), and calls a tool, with the MCP
// TypeScript SDK's client, on an MCP server built with the same SDK that
// trusts that authorization server. The SDK (1.32.2) has no cross-app-access
// support of its own, so the grant and its redemption are oauth4webapi's. Errand is `errand dev --config` with an
// id_jag_targets entry naming the test server.
import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { randomUUID } from 'node:crypto'
import * as oauth from 'oauth4webapi'
import * as jose from 'jose'

import { startDev, cleanup, errandBin, rest, work, READ, WRITE, AUDIENCE_A } from '../lib/harness.js'
import { clientAssertion, rejectsWith, TOKEN_EXCHANGE, ID_TOKEN_TYPE } from '../lib/oauth.js'
import { startTestAS, JWT_BEARER_GRANT } from '../lib/idjag-as.js'
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'

const ID_JAG = 'urn:ietf:params:oauth:token-type:id-jag'
const CLIENT_ID = 'errand-agents'
const insecure = { [oauth.allowInsecureRequests]: true }
// oauth4webapi knows Bearer and DPoP; an ID-JAG's token_type is N_A.
const idjagTypes = { recognizedTokenTypes: { n_a: () => {} } }

let dev, target, errandAS, agentToken, otherAgentToken, userToken

before(async () => {
  await errandBin()
  target = await startTestAS({ clientId: CLIENT_ID, requiredScope: 'repo:read' })
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

describe('MCP Enterprise-Managed Authorization (ID-JAG)', { concurrency: 1, timeout: 120000 }, () => {
  it('an approved task gets an ID-JAG, redeemed at the target for a token with which an MCP client calls a tool', async () => {
    const taskId = await approvedTask()
    const grant = await getIDJAG(taskId)
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
})
