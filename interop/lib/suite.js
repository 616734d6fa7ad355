// The interop suite proper, defined once and run against each target (errand
// dev, errand serve on PostgreSQL). The clients are stock libraries:
// oauth4webapi and openid-client speak OAuth, jose verifies tokens offline.
// Endpoints are discovered from RFC 8414 metadata, never written here.
import { describe, it, before } from 'node:test'
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import * as oauth from 'oauth4webapi'
import * as client from 'openid-client'
import * as jose from 'jose'

import { rest, AUDIENCE_A, AUDIENCE_B, READ, WRITE } from './harness.js'
import {
  clientAssertion, bearer, rejectsWith, oauthError,
  TOKEN_EXCHANGE, CIBA, ID_TOKEN_TYPE, JWT_TYPE, ACCESS_TOKEN_TYPE,
} from './oauth.js'
import { askAndMint } from './example.js'

const insecure = { [oauth.allowInsecureRequests]: true }
const AGENT = 'agent-1'
const USER = 'alice'

// defineSuite declares the tests against the target that get() returns
// once the outer before() hooks have run.
export function defineSuite(get, { stepUp = false } = {}) {
  let t // the target: {issuer, token(kind, sub, groups)}
  let as // the authorization server metadata, as oauth4webapi parsed it
  let jwks
  let agentToken, otherAgentToken, userToken, rsToken
  const agentClient = { client_id: AGENT }
  const rsClient = { client_id: 'api-gateway' }

  before(async () => {
    t = get()
    ;[agentToken, otherAgentToken, userToken, rsToken] = await Promise.all([
      t.token('agent', AGENT),
      t.token('agent', 'agent-2'),
      t.token('user', USER, ['eng']),
      t.token('resource', 'api-gateway'),
    ])
    const issuer = new URL(t.issuer)
    as = await oauth.processDiscoveryResponse(issuer, await oauth.discoveryRequest(issuer, { algorithm: 'oauth2', ...insecure }))
    jwks = jose.createRemoteJWKSet(new URL(as.jwks_uri))
  })

  // approvedTask creates a task through the REST API as the agent and
  // approves it as the user: the fixture of the mint-side tests.
  async function approvedTask({ scopes = [READ, WRITE], audiences = [AUDIENCE_A, AUDIENCE_B], approve = {} } = {}) {
    const task = await rest(t.issuer, 'POST', '/v1/tasks', agentToken, {
      on_behalf_of: USER, goal: `interop ${randomUUID()}`, scopes, audiences, ttl_seconds: 600,
    })
    await rest(t.issuer, 'POST', `/v1/tasks/${task.id}/approve`, userToken, approve)
    return task.id
  }

  async function restMint(taskId, audience = AUDIENCE_A, scopes = [READ]) {
    return rest(t.issuer, 'POST', `/v1/tasks/${taskId}/tokens`, agentToken, { scopes, audience })
  }

  // verify checks an Errand access token offline with jose against the
  // advertised JWKS: signature, issuer, audience, typ at+jwt.
  async function verify(token, audience) {
    const { payload, protectedHeader } = await jose.jwtVerify(token, jwks, {
      issuer: as.issuer, audience, typ: 'at+jwt', algorithms: ['EdDSA', 'ES256'],
    })
    assert.ok(protectedHeader.kid, 'kid in the header')
    assert.equal(protectedHeader.alg, t.signingAlg)
    return payload
  }

  function assertDelegation(claims, { taskId, scope }) {
    assert.equal(claims.sub, USER)
    assert.equal(claims.act?.sub, AGENT, 'RFC 8693 act names the agent')
    assert.ok(claims.client_id, 'client_id')
    assert.ok(claims.jti, 'jti')
    if (taskId) assert.equal(claims.task_id, taskId)
    if (scope) assert.equal(claims.scope, scope)
    assert.ok(claims.exp > claims.iat && claims.exp - claims.iat <= 300, 'exp within the 5-minute cap')
  }

  // findPending finds, in the user's pending list (REST), the task whose goal is goal.
  async function findPending(goal, signal) {
    for (let i = 0; i < 100 && !signal?.aborted; i++) {
      const { tasks } = await rest(t.issuer, 'GET', '/v1/tasks?status=pending', userToken)
      const task = tasks.find((x) => x.goal === goal)
      if (task) return task
      await new Promise((r) => setTimeout(r, 100))
    }
    throw new Error(`no pending task with goal ${goal} in ${USER}'s list`)
  }

  // exchange is an RFC 8693 token exchange by oauth4webapi's generic
  // token endpoint request, authenticated by the agent's client assertion.
  function exchangeRequest(params, { auth = clientAssertion(agentToken), ...options } = {}) {
    // scope READ unless the test says otherwise: in the serve run a write to
    // the prod audience steps up (one test is about that).
    const body = new URLSearchParams({ subject_token: agentToken, subject_token_type: ID_TOKEN_TYPE, scope: READ })
    for (const [k, v] of params instanceof URLSearchParams ? params : Object.entries(params)) {
      if (body.has(k) && !(params instanceof URLSearchParams)) body.set(k, v)
      else body.append(k, v)
    }
    return oauth.genericTokenEndpointRequest(as, agentClient, auth, TOKEN_EXCHANGE, body, { ...insecure, ...options })
  }
  // With DPoP, a server nonce may be required (RFC 9449 §8): oauth4webapi
  // reports it (isDPoPNonceError), its handle keeps the nonce, and the
  // request is made once more, as oauth4webapi documents.
  async function exchange(params, options) {
    try {
      return await oauth.processGenericTokenEndpointResponse(as, agentClient, await exchangeRequest(params, options))
    } catch (err) {
      if (!options?.DPoP || !oauth.isDPoPNonceError(err)) throw err
      nonceRetries++
      return oauth.processGenericTokenEndpointResponse(as, agentClient, await exchangeRequest(params, options))
    }
  }
  let nonceRetries = 0
  const taskDetails = (taskId) => JSON.stringify([{ type: 'errand_task', task_id: taskId }])

  // agentConfig is openid-client's configuration of the agent, found by
  // discovery and authenticated with the agent's client assertion.
  async function agentConfig() {
    return client.discovery(new URL(t.issuer), AGENT, undefined, clientAssertion(agentToken), {
      algorithm: 'oauth2', execute: [client.allowInsecureRequests],
    })
  }

  describe('1. discovery', () => {
    it('oauth4webapi parses the RFC 8414 metadata; every endpoint is absolute under the issuer', () => {
      assert.equal(as.issuer, t.issuer)
      for (const ep of ['token_endpoint', 'backchannel_authentication_endpoint', 'introspection_endpoint', 'revocation_endpoint', 'jwks_uri']) {
        assert.equal(typeof as[ep], 'string', `${ep} is advertised`)
        const u = new URL(as[ep])
        assert.ok(u.href.startsWith(t.issuer + '/'), `${ep} ${u.href} is under ${t.issuer}`)
      }
    })

    it('advertises the token exchange and CIBA grants, poll delivery and errand_task', () => {
      assert.ok(as.grant_types_supported?.includes(TOKEN_EXCHANGE), `grant_types_supported: ${JSON.stringify(as.grant_types_supported)}`)
      assert.ok(as.grant_types_supported?.includes(CIBA), `grant_types_supported: ${JSON.stringify(as.grant_types_supported)}`)
      assert.deepEqual(as.backchannel_token_delivery_modes_supported, ['poll'])
      assert.ok(as.authorization_details_types_supported?.includes('errand_task'))
    })

    it('advertises DPoP with ES256', () => {
      assert.ok(as.dpop_signing_alg_values_supported?.includes('ES256'), `dpop_signing_alg_values_supported: ${JSON.stringify(as.dpop_signing_alg_values_supported)}`)
    })

    it('advertises client assertions on token, backchannel, introspection and revocation', () => {
      for (const ep of ['token_endpoint', 'backchannel_authentication_endpoint', 'introspection_endpoint', 'revocation_endpoint']) {
        const methods = as[`${ep.replace(/_endpoint$/, '')}_endpoint_auth_methods_supported`]
        assert.ok(Array.isArray(methods) && methods.includes('private_key_jwt'),
          `${ep.replace(/_endpoint$/, '')}_endpoint_auth_methods_supported lists private_key_jwt (an RFC 7523 client assertion): ${JSON.stringify(methods)}`)
      }
    })

    it('openid-client discovery yields the same metadata', async () => {
      const config = await agentConfig()
      const md = config.serverMetadata()
      assert.equal(md.issuer, as.issuer)
      assert.equal(md.token_endpoint, as.token_endpoint)
      assert.equal(md.backchannel_authentication_endpoint, as.backchannel_authentication_endpoint)
      assert.equal(md.introspection_endpoint, as.introspection_endpoint)
    })
  })

  describe('2. jose verifies REST-minted tokens offline', () => {
    it('POST /v1/tasks/{id}/tokens gives an at+jwt that jose verifies against jwks_uri', async () => {
      const taskId = await approvedTask()
      const minted = await restMint(taskId)
      assert.equal(minted.token_type, 'Bearer')
      const claims = await verify(minted.access_token, AUDIENCE_A)
      assertDelegation(claims, { taskId, scope: READ })
      assert.equal(claims.jti, minted.jti)
      // and jose refuses it for another audience
      await assert.rejects(jose.jwtVerify(minted.access_token, jwks, { issuer: as.issuer, audience: AUDIENCE_B }), { code: 'ERR_JWT_CLAIM_VALIDATION_FAILED' })
    })

    it("oauth4webapi's RFC 9068 resource-server check (validateJwtAccessToken) accepts it", async () => {
      const taskId = await approvedTask()
      const minted = await restMint(taskId)
      const request = new Request(`${AUDIENCE_A}/repos/acme/api`, { headers: { authorization: `Bearer ${minted.access_token}` } })
      const claims = await oauth.validateJwtAccessToken(as, request, AUDIENCE_A, insecure)
      assert.equal(claims.task_id, taskId)
      assert.equal(claims.client_id, (await verify(minted.access_token, AUDIENCE_A)).client_id)
    })
  })

  describe('3. CIBA with openid-client', { concurrency: true }, () => {
    // ciba initiates a backchannel request with openid-client and polls for
    // it; decide(task) runs once the poll has seen authorization_pending.
    async function ciba(decide, pollOptions = () => ({})) {
      const config = await agentConfig()
      const goal = `interop ciba ${randomUUID()}`
      const seen = []
      let decided
      config[client.customFetch] = async (url, options) => {
        const res = await fetch(url, options)
        if (url === as.token_endpoint) {
          const body = await res.clone().json().catch(() => ({}))
          seen.push(body.error ?? `${res.status}`)
          if (body.error === 'authorization_pending' && !decided) {
            decided = findPending(goal).then(decide)
            await decided
          }
        }
        return res
      }
      const params = new URLSearchParams({
        login_hint: USER,
        binding_message: 'interop',
        scope: READ,
        requested_expiry: '120',
        authorization_details: JSON.stringify([{ type: 'errand_task', goal, tool: 'interop-suite' }]),
      })
      params.append('resource', AUDIENCE_A)
      params.append('resource', AUDIENCE_B)
      const started = await client.initiateBackchannelAuthentication(config, params)
      assert.equal(typeof started.auth_req_id, 'string')
      assert.ok(started.expires_in > 0 && started.expires_in <= 120, `expires_in ${started.expires_in}`)
      const poll = client.pollBackchannelAuthenticationGrant(config, started, undefined, { signal: AbortSignal.timeout(30000), ...pollOptions(config) })
      return { poll, seen, goal, started, config }
    }

    it('initiate → authorization_pending → the user approves → a token jose verifies', async () => {
      let taskId
      const { poll, seen, started } = await ciba(async (task) => {
        taskId = task.id
        assert.deepEqual(task.scopes, [READ])
        await rest(t.issuer, 'POST', `/v1/tasks/${task.id}/approve`, userToken, {})
      })
      const tokens = await poll
      assert.equal(seen[0], 'authorization_pending', `the first poll: ${seen}`)
      assert.equal(tokens.token_type, 'bearer')
      const claims = await verify(tokens.access_token, AUDIENCE_A)
      assertDelegation(claims, { taskId, scope: READ })
      assert.deepEqual(tokens.authorization_details, [{ type: 'errand_task', task_id: taskId }])
      // The auth_req_id is spent: one more poll, an interval later, is invalid_grant.
      await new Promise((r) => setTimeout(r, started.interval * 1000))
      const again = await oauth.backchannelAuthenticationGrantRequest(as, agentClient, clientAssertion(agentToken), started.auth_req_id, insecure)
      const err = await rejectsWith(oauth.processBackchannelAuthenticationGrantResponse(as, agentClient, again))
      assert.equal(err.error, 'invalid_grant', `${err.error}: ${err.description}`)
    })

    it("the poll with openid-client's DPoP handle gives a DPoP-bound token", async () => {
      const keys = await client.randomDPoPKeyPair('ES256')
      const { poll, config } = await ciba(async (task) => {
        await rest(t.issuer, 'POST', `/v1/tasks/${task.id}/approve`, userToken, {})
      }, (config) => ({ DPoP: client.getDPoPHandle(config, keys) }))
      const tokens = await poll
      assert.equal(tokens.token_type, 'dpop')
      const claims = await verify(tokens.access_token, AUDIENCE_A)
      assert.equal(claims.cnf?.jkt, await jose.calculateJwkThumbprint(await jose.exportJWK(keys.publicKey)))
      assert.ok(config)
    })

    it('initiate → authorization_pending → the user denies → access_denied', async () => {
      const { poll, seen } = await ciba(async (task) => {
        await rest(t.issuer, 'POST', `/v1/tasks/${task.id}/deny`, userToken, { reason: 'not today' })
      })
      const err = await rejectsWith(poll)
      assert.equal(err.error, 'access_denied', `${err.error}: ${err.description}`)
      assert.equal(seen[0], 'authorization_pending')
    })

    it('polling again before the interval: slow_down (oauth4webapi)', async () => {
      const started = await oauth.processBackchannelAuthenticationResponse(as, agentClient,
        await oauth.backchannelAuthenticationRequest(as, agentClient, clientAssertion(agentToken), new URLSearchParams({
          login_hint: USER, scope: READ, resource: AUDIENCE_A,
          authorization_details: JSON.stringify([{ type: 'errand_task', goal: `interop slow_down ${randomUUID()}` }]),
        }), insecure))
      assert.ok(started.interval >= 1, `interval ${started.interval}`)
      const codes = []
      for (let i = 0; i < 2; i++) {
        const res = await oauth.backchannelAuthenticationGrantRequest(as, agentClient, clientAssertion(agentToken), started.auth_req_id, insecure)
        codes.push((await rejectsWith(oauth.processBackchannelAuthenticationGrantResponse(as, agentClient, res))).error)
      }
      assert.ok(['authorization_pending', 'slow_down'].includes(codes[0]), `first poll: ${codes[0]}`)
      assert.equal(codes[1], 'slow_down', `two polls at once: ${codes}`)
    })

    it('a request whose window passed: expired_token (oauth4webapi)', async () => {
      const started = await oauth.processBackchannelAuthenticationResponse(as, agentClient,
        await oauth.backchannelAuthenticationRequest(as, agentClient, clientAssertion(agentToken), new URLSearchParams({
          login_hint: USER, scope: READ, resource: AUDIENCE_A, requested_expiry: '1',
          authorization_details: JSON.stringify([{ type: 'errand_task', goal: `interop expired ${randomUUID()}` }]),
        }), insecure))
      assert.ok(started.expires_in <= 1, `expires_in ${started.expires_in}`)
      await new Promise((r) => setTimeout(r, Math.max(started.interval ?? 5, 2) * 1000))
      const res = await oauth.backchannelAuthenticationGrantRequest(as, agentClient, clientAssertion(agentToken), started.auth_req_id, insecure)
      const err = await rejectsWith(oauth.processBackchannelAuthenticationGrantResponse(as, agentClient, res))
      assert.equal(err.error, 'expired_token', `${err.error}: ${err.description}`)
    })

    it("the README's openid-client example runs as written", async () => {
      const goal = `interop readme ${randomUUID()}`
      const stop = new AbortController()
      const approve = findPending(goal, stop.signal).then((task) => rest(t.issuer, 'POST', `/v1/tasks/${task.id}/approve`, userToken, {}).then(() => task))
      let first, second
      try {
        ;({ first, second } = await askAndMint({ errand: t.issuer, agentIdToken: agentToken, user: USER, goal }))
      } catch (err) {
        stop.abort()
        await approve.catch(() => {})
        throw err
      }
      const task = await approve
      assert.equal((await verify(first.access_token, AUDIENCE_A)).task_id, task.id)
      assert.equal((await verify(second.access_token, AUDIENCE_B)).task_id, task.id)
    })
  })

  describe('4. RFC 8693 token exchange with oauth4webapi', () => {
    it('an errand_task exchange with resource = the second audience gives a token for it', async () => {
      const taskId = await approvedTask()
      const raw = await exchangeRequest({ authorization_details: taskDetails(taskId), resource: AUDIENCE_B, scope: READ })
      assert.match(raw.headers.get('cache-control') ?? '', /no-store/, 'RFC 6749 §5.1: Cache-Control: no-store')
      const res = await oauth.processGenericTokenEndpointResponse(as, agentClient, raw)
      assert.equal(res.issued_token_type, ACCESS_TOKEN_TYPE)
      assert.equal(res.token_type, 'bearer')
      assert.ok(res.expires_in > 0 && res.expires_in <= 300)
      assert.equal(res.scope, READ)
      const claims = await verify(res.access_token, AUDIENCE_B)
      assertDelegation(claims, { taskId, scope: READ })
      assert.equal(claims.cnf, undefined, 'a bearer token carries no cnf')
    })

    it('resource matches a configured audience after RFC 3986 normalisation', async () => {
      const taskId = await approvedTask()
      const res = await exchange({ authorization_details: taskDetails(taskId), resource: 'https://API.github.com:443/' })
      assert.equal((await verify(res.access_token, AUDIENCE_A)).aud, AUDIENCE_A)
    })

    it('audience aims like resource', async () => {
      const taskId = await approvedTask()
      const res = await exchange({ authorization_details: taskDetails(taskId), audience: AUDIENCE_B })
      assert.equal((await verify(res.access_token, AUDIENCE_B)).task_id, taskId)
    })

    it('the agent may authenticate with the bearer header instead of a client assertion', async (ctx) => {
      if (!as.token_endpoint_auth_methods_supported?.includes('bearer')) {
        ctx.skip('token_endpoint_auth_methods_supported does not list bearer')
        return
      }
      const taskId = await approvedTask()
      const res = await exchange({ authorization_details: taskDetails(taskId), resource: AUDIENCE_A }, { auth: bearer(agentToken) })
      assert.equal((await verify(res.access_token, AUDIENCE_A)).task_id, taskId)
    })

    it('requested_token_type access_token is accepted; two resources for one token are not', async () => {
      const taskId = await approvedTask()
      const res = await exchange({ authorization_details: taskDetails(taskId), resource: AUDIENCE_A, requested_token_type: ACCESS_TOKEN_TYPE })
      assert.equal(res.issued_token_type, ACCESS_TOKEN_TYPE)
      const body = new URLSearchParams({ authorization_details: taskDetails(taskId), resource: AUDIENCE_A })
      body.append('resource', AUDIENCE_B)
      const err = await rejectsWith(exchange(body))
      assert.equal(err.error, 'invalid_target', `${err.error}: ${err.description}`)
    })

    it('an Idempotency-Key header (set through the library) makes a retry the same credential', async () => {
      const taskId = await approvedTask()
      const key = randomUUID()
      const params = { authorization_details: taskDetails(taskId), resource: AUDIENCE_A }
      const a = await exchange(params, { headers: new Headers({ 'idempotency-key': key }) })
      const b = await exchange(params, { headers: new Headers({ 'idempotency-key': key }) })
      const c = await exchange(params, { headers: new Headers({ 'idempotency-key': randomUUID() }) })
      const [ja, jb, jc] = await Promise.all([a, b, c].map(async (x) => (await verify(x.access_token, AUDIENCE_A)).jti))
      assert.equal(ja, jb)
      assert.notEqual(ja, jc)
    })

    if (stepUp) {
      it('a step-up policy: authorization_pending with approval_id; once the user approves, the same exchange succeeds', async () => {
        const taskId = await approvedTask()
        const params = { authorization_details: taskDetails(taskId), resource: AUDIENCE_A, scope: WRITE }
        const err = await rejectsWith(exchange(params))
        assert.equal(err.error, 'authorization_pending', `${err.error}: ${err.description}`)
        assert.equal(err.body?.code, 'approval_required')
        assert.match(err.body?.approval_id ?? '', /^apr_/)
        await rest(t.issuer, 'POST', `/v1/approvals/${err.body.approval_id}/approve`, userToken, {})
        const res = await exchange(params)
        assert.equal((await verify(res.access_token, AUDIENCE_A)).scope, WRITE)
        // the approval was for one request: the next one asks again
        assert.equal((await rejectsWith(exchange(params))).error, 'authorization_pending')
      })
    }

    it('subject_token_type jwt is accepted too', async () => {
      const taskId = await approvedTask()
      const res = await exchange({ authorization_details: taskDetails(taskId), resource: AUDIENCE_A, subject_token_type: JWT_TYPE })
      assert.equal((await verify(res.access_token, AUDIENCE_A)).task_id, taskId)
    })
  })

  describe('5. DPoP with oauth4webapi', () => {
    it('a DPoP proof on the exchange binds the token: token_type DPoP, cnf.jkt = the key thumbprint', async () => {
      const taskId = await approvedTask()
      const keys = await oauth.generateKeyPair('ES256')
      const DPoP = oauth.DPoP(agentClient, keys)
      const retries = nonceRetries
      const res = await exchange({ authorization_details: taskDetails(taskId), resource: AUDIENCE_A, scope: READ }, { DPoP })
      assert.equal(res.token_type, 'dpop')
      assert.equal(nonceRetries - retries, t.dpopNonces ? 1 : 0, t.dpopNonces ? 'a first proof without a nonce is use_dpop_nonce' : 'no nonce is asked for')
      const jkt = await jose.calculateJwkThumbprint(await jose.exportJWK(keys.publicKey))
      assert.equal(jkt, await DPoP.calculateThumbprint())
      const claims = await verify(res.access_token, AUDIENCE_A)
      assert.equal(claims.cnf?.jkt, jkt)
      const info = await oauth.processIntrospectionResponse(as, rsClient,
        await oauth.introspectionRequest(as, rsClient, bearer(rsToken), res.access_token, insecure))
      assert.equal(info.active, true)
      assert.equal(info.cnf?.jkt, jkt, 'introspection shows cnf.jkt')
      assert.equal(info.token_type, 'DPoP')
    })

    it('a task that requires DPoP: a bearer exchange is refused (invalid_dpop_proof), a bound one is not', async () => {
      const task = await rest(t.issuer, 'POST', '/v1/tasks', agentToken, {
        on_behalf_of: USER, goal: `interop require_dpop ${randomUUID()}`, scopes: [READ], audiences: [AUDIENCE_A], ttl_seconds: 600, require_dpop: true,
      })
      await rest(t.issuer, 'POST', `/v1/tasks/${task.id}/approve`, userToken, {})
      const err = await rejectsWith(exchange({ authorization_details: taskDetails(task.id), resource: AUDIENCE_A }))
      assert.equal(err.error, 'invalid_dpop_proof', `${err.error}: ${err.description}`)
      assert.equal(err.body?.code, 'dpop_required')
      const DPoP = oauth.DPoP(agentClient, await oauth.generateKeyPair('ES256'))
      const res = await exchange({ authorization_details: taskDetails(task.id), resource: AUDIENCE_A }, { DPoP })
      assert.equal(res.token_type, 'dpop')
      assert.equal((await verify(res.access_token, AUDIENCE_A)).cnf?.jkt, await DPoP.calculateThumbprint())
    })

    // oauth4webapi (and openid-client) sign with an Ed25519 key as alg
    // "Ed25519", the fully-specified name of RFC 9864 that deprecates
    // "EdDSA"; Errand advertises EdDSA for DPoP.
    it('an Ed25519 DPoP key, as oauth4webapi signs with it (alg Ed25519, RFC 9864)', async () => {
      const taskId = await approvedTask()
      const DPoP = oauth.DPoP(agentClient, await oauth.generateKeyPair('Ed25519'))
      const res = await exchange({ authorization_details: taskDetails(taskId), resource: AUDIENCE_A }, { DPoP })
      assert.equal(res.token_type, 'dpop')
      assert.equal((await verify(res.access_token, AUDIENCE_A)).cnf?.jkt, await DPoP.calculateThumbprint())
    })

    it('a DPoP proof on the REST mint binds the token too', async () => {
      const taskId = await approvedTask()
      const keys = await oauth.generateKeyPair('ES256')
      const DPoP = oauth.DPoP(agentClient, keys)
      const url = new URL(`${t.issuer}/v1/tasks/${taskId}/tokens`)
      // The handle's own proof, as oauth4webapi adds it to its requests, and
      // its own nonce bookkeeping (a 400 use_dpop_nonce carries DPoP-Nonce).
      const mint = async () => {
        const headers = new Headers({ authorization: `Bearer ${agentToken}`, 'content-type': 'application/json' })
        await DPoP.addProof(url, headers, 'POST')
        const res = await fetch(url, { method: 'POST', headers, body: JSON.stringify({ scopes: [READ], audience: AUDIENCE_A }) })
        DPoP.cacheNonce(res, url)
        return res
      }
      let res = await mint()
      if (t.dpopNonces) {
        assert.equal(res.status, 400)
        assert.equal((await res.json()).error, 'use_dpop_nonce')
        assert.ok(res.headers.get('dpop-nonce'), 'DPoP-Nonce header')
        res = await mint()
      }
      const body = await res.json()
      assert.equal(res.status, 201, JSON.stringify(body))
      assert.equal(body.token_type, 'DPoP')
      const jkt = await jose.calculateJwkThumbprint(await jose.exportJWK(keys.publicKey))
      const claims = await verify(body.access_token, AUDIENCE_A)
      assert.equal(claims.cnf?.jkt, jkt)
      const info = await oauth.processIntrospectionResponse(as, rsClient,
        await oauth.introspectionRequest(as, rsClient, bearer(rsToken), body.access_token, insecure))
      assert.equal(info.cnf?.jkt, jkt, 'introspection shows cnf.jkt')
      // A resource server with oauth4webapi accepts it with a proof of the same key...
      const resource = new URL(`${AUDIENCE_A}/repos/acme/api`)
      const withProof = new Headers({ authorization: `DPoP ${body.access_token}` })
      await DPoP.addProof(resource, withProof, 'GET', body.access_token)
      const rs = await oauth.validateJwtAccessToken(as, new Request(resource, { headers: withProof }), AUDIENCE_A, insecure)
      assert.equal(rs.cnf.jkt, jkt)
      // ...and refuses it as a plain bearer token.
      await assert.rejects(oauth.validateJwtAccessToken(as, new Request(resource, { headers: { authorization: `Bearer ${body.access_token}` } }),
        AUDIENCE_A, { ...insecure, requireDPoP: true }))
    })

    it("openid-client's genericGrantRequest with its DPoP handle", async () => {
      const taskId = await approvedTask()
      const config = await agentConfig()
      const keys = await client.randomDPoPKeyPair('ES256')
      const res = await client.genericGrantRequest(config, TOKEN_EXCHANGE, {
        subject_token: agentToken, subject_token_type: ID_TOKEN_TYPE, authorization_details: taskDetails(taskId), resource: AUDIENCE_B,
      }, { DPoP: client.getDPoPHandle(config, keys) })
      assert.equal(res.token_type, 'dpop')
      assert.equal((await verify(res.access_token, AUDIENCE_B)).cnf?.jkt, await jose.calculateJwkThumbprint(await jose.exportJWK(keys.publicKey)))
    })

    it('a replayed DPoP proof is refused: invalid_dpop_proof', async () => {
      const taskId = await approvedTask()
      const DPoP = oauth.DPoP(agentClient, await oauth.generateKeyPair('ES256'))
      let sent
      const capture = async (url, options) => {
        sent = { url, options }
        return fetch(url, options)
      }
      const params = { authorization_details: taskDetails(taskId), resource: AUDIENCE_A, scope: READ }
      assert.equal((await exchange(params, { DPoP, [oauth.customFetch]: capture })).token_type, 'dpop')
      // The very same request again: the proof's jti was used.
      const replay = await fetch(sent.url, sent.options)
      const err = await rejectsWith(oauth.processGenericTokenEndpointResponse(as, agentClient, replay))
      assert.equal(err.error, 'invalid_dpop_proof', `${err.error}: ${err.description}`)
    })
  })

  describe('6. introspection and revocation with oauth4webapi', () => {
    async function introspect(token, auth) {
      return oauth.processIntrospectionResponse(as, rsClient, await oauth.introspectionRequest(as, rsClient, auth, token, insecure))
    }

    it('introspection with the resource server bearer ID token', async () => {
      const taskId = await approvedTask()
      const { access_token } = await restMint(taskId)
      const info = await introspect(access_token, bearer(rsToken))
      assert.equal(info.active, true)
      assert.equal(info.sub, USER)
      assert.equal(info.task_id, taskId)
      assert.equal(info.scope, READ)
    })

    it('introspection with the resource server client assertion', async () => {
      const taskId = await approvedTask()
      const { access_token } = await restMint(taskId)
      const info = await introspect(access_token, clientAssertion(rsToken))
      assert.equal(info.active, true)
      assert.equal(info.task_id, taskId)
      const unknown = await introspect('not-a-token', clientAssertion(rsToken))
      assert.deepEqual({ ...unknown }, { active: false })
    })

    it("revocation with the agent's client assertion; introspection then says active: false", async () => {
      const taskId = await approvedTask()
      const { access_token } = await restMint(taskId)
      const other = await restMint(taskId)
      assert.equal((await introspect(access_token, clientAssertion(rsToken))).active, true)
      await oauth.processRevocationResponse(
        await oauth.revocationRequest(as, agentClient, clientAssertion(agentToken), access_token, insecure))
      const after = await introspect(access_token, clientAssertion(rsToken))
      assert.deepEqual({ ...after }, { active: false })
      // one token revoked, not the task: another token of the task lives on
      assert.equal((await introspect(other.access_token, clientAssertion(rsToken))).active, true)
    })

    it('revocation with the bearer header, where advertised', async (ctx) => {
      if (!as.revocation_endpoint_auth_methods_supported?.includes('bearer')) {
        ctx.skip('revocation_endpoint_auth_methods_supported does not list bearer')
        return
      }
      const taskId = await approvedTask()
      const { access_token } = await restMint(taskId)
      await oauth.processRevocationResponse(await oauth.revocationRequest(as, agentClient, bearer(agentToken), access_token, insecure))
      assert.equal((await introspect(access_token, bearer(rsToken))).active, false)
    })

    it('revoking a token Errand never issued is answered 200 (RFC 7009 §2.2)', async () => {
      await oauth.processRevocationResponse(
        await oauth.revocationRequest(as, agentClient, clientAssertion(agentToken), 'not-a-token', insecure))
    })

    it("openid-client's tokenIntrospection and tokenRevocation", async () => {
      const taskId = await approvedTask()
      const { access_token } = await restMint(taskId)
      const rs = await client.discovery(new URL(t.issuer), 'api-gateway', undefined, clientAssertion(rsToken), {
        algorithm: 'oauth2', execute: [client.allowInsecureRequests],
      })
      assert.equal((await client.tokenIntrospection(rs, access_token)).task_id, taskId)
      await client.tokenRevocation(await agentConfig(), access_token)
      assert.equal((await client.tokenIntrospection(rs, access_token)).active, false)
    })

    it("another agent's revocation does not revoke the token", async () => {
      const taskId = await approvedTask()
      const { access_token } = await restMint(taskId)
      // RFC 7009 §2.2: an invalid or foreign token is answered 200 and nothing happens.
      try {
        await oauth.processRevocationResponse(
          await oauth.revocationRequest(as, { client_id: 'agent-2' }, clientAssertion(otherAgentToken), access_token, insecure))
      } catch (err) {
        oauthError(err) // a parsed OAuth error is acceptable; anything else fails
      }
      assert.equal((await introspect(access_token, clientAssertion(rsToken))).active, true)
    })
  })

  describe('7. errors parsed by the libraries', () => {
    it('an unsupported grant type: unsupported_grant_type', async () => {
      const res = await oauth.genericTokenEndpointRequest(as, agentClient, clientAssertion(agentToken),
        'urn:ietf:params:oauth:grant-type:device_code', new URLSearchParams({ device_code: 'x' }), insecure)
      const err = await rejectsWith(oauth.processGenericTokenEndpointResponse(as, agentClient, res))
      assert.equal(err.error, 'unsupported_grant_type', `${err.error}: ${err.description}`)
      assert.equal(err.status, 400)
    })

    it('an unknown auth_req_id: invalid_grant', async () => {
      const res = await oauth.backchannelAuthenticationGrantRequest(as, agentClient, clientAssertion(agentToken), 'no-such-request', insecure)
      const err = await rejectsWith(oauth.processBackchannelAuthenticationGrantResponse(as, agentClient, res))
      assert.equal(err.error, 'invalid_grant', `${err.error}: ${err.description}`)
    })

    it('an unknown resource on the exchange: invalid_target', async () => {
      const taskId = await approvedTask()
      const err = await rejectsWith(exchange({ authorization_details: taskDetails(taskId), resource: 'https://unknown.example.com' }))
      assert.equal(err.error, 'invalid_target', `${err.error}: ${err.description}`)
      assert.equal(typeof err.body?.code, 'string', "Errand's code beside error")
    })

    it('a resource that is not an absolute URI, or has a fragment: invalid_target (RFC 8707 §2)', async () => {
      const taskId = await approvedTask()
      for (const resource of ['api.github.com', 'https://api.github.com/#frag']) {
        const err = await rejectsWith(exchange({ authorization_details: taskDetails(taskId), resource }))
        assert.equal(err.error, 'invalid_target', `${resource}: ${err.error}: ${err.description}`)
      }
    })

    it('authorization_details of an unknown type: invalid_authorization_details (RFC 9396 §5)', async () => {
      const err = await rejectsWith(exchange({ authorization_details: JSON.stringify([{ type: 'payment_initiation' }]), resource: AUDIENCE_A }))
      assert.equal(err.error, 'invalid_authorization_details', `${err.error}: ${err.description}`)
    })

    it('an unknown resource on the backchannel request: invalid_target', async () => {
      const res = await oauth.backchannelAuthenticationRequest(as, agentClient, clientAssertion(agentToken), new URLSearchParams({
        login_hint: USER, scope: READ, resource: 'https://unknown.example.com',
        authorization_details: JSON.stringify([{ type: 'errand_task', goal: 'interop unknown resource' }]),
      }), insecure)
      const err = await rejectsWith(oauth.processBackchannelAuthenticationResponse(as, agentClient, res))
      assert.equal(err.error, 'invalid_target', `${err.error}: ${err.description}`)
    })

    it('an unknown action in scope on the backchannel request: invalid_scope', async () => {
      const res = await oauth.backchannelAuthenticationRequest(as, agentClient, clientAssertion(agentToken), new URLSearchParams({
        login_hint: USER, scope: 'github.nothing.here:acme/api', resource: AUDIENCE_A,
      }), insecure)
      const err = await rejectsWith(oauth.processBackchannelAuthenticationResponse(as, agentClient, res))
      assert.equal(err.error, 'invalid_scope', `${err.error}: ${err.description}`)
    })

    it('a scope beyond the approval on the exchange: invalid_scope', async () => {
      const taskId = await approvedTask({ approve: { scopes: [READ] } })
      const err = await rejectsWith(exchange({ authorization_details: taskDetails(taskId), resource: AUDIENCE_A, scope: WRITE }))
      assert.equal(err.error, 'invalid_scope', `${err.error}: ${err.description}`)
    })

    it('a tampered subject token: invalid_request (RFC 8693 §2.2.2)', async () => {
      const taskId = await approvedTask()
      const [h, p, s] = agentToken.split('.')
      const forged = [h, p, s.slice(0, -4) + (s.endsWith('AAAA') ? 'BBBB' : 'AAAA')].join('.')
      const err = await rejectsWith(exchange({ authorization_details: taskDetails(taskId), resource: AUDIENCE_A, subject_token: forged }))
      assert.equal(err.error, 'invalid_request', `${err.error}: ${err.description}`)
    })

    it("Errand's own access token as the subject token: invalid_request, token_not_accepted", async () => {
      const taskId = await approvedTask()
      const { access_token } = await restMint(taskId)
      const err = await rejectsWith(exchange({
        authorization_details: taskDetails(taskId), resource: AUDIENCE_A, subject_token: access_token, subject_token_type: ACCESS_TOKEN_TYPE,
      }))
      assert.equal(err.error, 'invalid_request', `${err.error}: ${err.description}`)
      assert.equal(err.body?.code, 'token_not_accepted')
    })

    it("another agent's task named in authorization_details: refused", async () => {
      const taskId = await approvedTask()
      const err = await rejectsWith(exchange(
        { authorization_details: taskDetails(taskId), resource: AUDIENCE_A, subject_token: otherAgentToken },
        { auth: clientAssertion(otherAgentToken) }))
      assert.ok(['invalid_grant', 'invalid_request', 'access_denied', 'unauthorized_client'].includes(err.error), `${err.error}: ${err.description}`)
    })

    it("Errand's own access token as a client assertion: invalid_client", async () => {
      const taskId = await approvedTask()
      const { access_token } = await restMint(taskId)
      const err = await rejectsWith(exchange({ authorization_details: taskDetails(taskId), resource: AUDIENCE_A }, { auth: clientAssertion(access_token) }))
      assert.equal(err.error, 'invalid_client', `${err.error}: ${err.description}`)
      assert.equal(err.status, 401)
    })

    it("a client_id that is not the assertion's subject: invalid_client", async () => {
      const taskId = await approvedTask()
      const assertion = clientAssertion(agentToken)
      const err = await rejectsWith(exchange({ authorization_details: taskDetails(taskId), resource: AUDIENCE_A }, {
        auth: (as, c, body, headers) => {
          assertion(as, c, body, headers)
          body.set('client_id', 'agent-2')
        },
      }))
      assert.equal(err.error, 'invalid_client', `${err.error}: ${err.description}`)
    })

    it('two client authentication methods at once: refused (RFC 6749 §2.3)', async () => {
      const taskId = await approvedTask()
      const err = await rejectsWith(exchange({ authorization_details: taskDetails(taskId), resource: AUDIENCE_A }, {
        auth: (as, c, body, headers) => {
          clientAssertion(agentToken)(as, c, body, headers)
          bearer(agentToken)(as, c, body, headers)
        },
      }))
      assert.ok(['invalid_request', 'invalid_client'].includes(err.error), `${err.error}: ${err.description}`)
    })

    // Introspection and revocation are OAuth endpoints too (RFC 7662, RFC 7009):
    // their refusals must be RFC 6749 §5.2 JSON that the library can read.
    it('introspection by an agent (not a resource server): an OAuth error oauth4webapi parses', async () => {
      const taskId = await approvedTask()
      const { access_token } = await restMint(taskId)
      const err = await rejectsWith(oauth.introspectionRequest(as, agentClient, clientAssertion(agentToken), access_token, insecure)
        .then((res) => oauth.processIntrospectionResponse(as, agentClient, res)))
      assert.ok(['unauthorized_client', 'invalid_client'].includes(err.error), `${err.error}: ${err.description}`)
    })

    it('revocation with two client authentication methods: invalid_request, parsed by oauth4webapi', async () => {
      const taskId = await approvedTask()
      const { access_token } = await restMint(taskId)
      const err = await rejectsWith(oauth.revocationRequest(as, agentClient, (as, c, body, headers) => {
        clientAssertion(agentToken)(as, c, body, headers)
        bearer(agentToken)(as, c, body, headers)
      }, access_token, insecure).then((res) => oauth.processRevocationResponse(res)))
      assert.ok(['invalid_request', 'invalid_client'].includes(err.error), `${err.error}: ${err.description}`)
    })

    it('introspection and revocation with a broken client assertion: invalid_client', async () => {
      const taskId = await approvedTask()
      const { access_token } = await restMint(taskId)
      const bad = clientAssertion(rsToken.slice(0, -6) + (rsToken.endsWith('AAAAAA') ? 'BBBBBB' : 'AAAAAA'))
      const introspection = await rejectsWith(oauth.introspectionRequest(as, rsClient, bad, access_token, insecure)
        .then((res) => oauth.processIntrospectionResponse(as, rsClient, res)))
      assert.equal(introspection.error, 'invalid_client', `introspection: ${introspection.error}: ${introspection.description}`)
      const revocation = await rejectsWith(oauth.revocationRequest(as, agentClient, bad, access_token, insecure)
        .then((res) => oauth.processRevocationResponse(res)))
      assert.equal(revocation.error, 'invalid_client', `revocation: ${revocation.error}: ${revocation.description}`)
    })

    it('no client authentication on the backchannel request: invalid_client', async () => {
      const res = await oauth.backchannelAuthenticationRequest(as, agentClient, oauth.None(), new URLSearchParams({
        login_hint: USER, scope: READ, resource: AUDIENCE_A,
      }), insecure)
      const err = await rejectsWith(oauth.processBackchannelAuthenticationResponse(as, agentClient, res))
      assert.equal(err.error, 'invalid_client', `${err.error}: ${err.description}`)
    })
  })
}
