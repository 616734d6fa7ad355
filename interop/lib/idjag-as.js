// A small authorization server for the ID-JAG tests, and the MCP server
// (built with the MCP TypeScript SDK) that trusts it. No maintained npm
// package implements the resource authorization server's side of
// draft-ietf-oauth-identity-assertion-authz-grant (the MCP SDKs ship the
// client side only: @modelcontextprotocol/client's CrossAppAccessProvider),
// so this one is written here; every check of the grant is jose's:
// typ oauth-id-jag+jwt, the signature by a key of the issuer's JWKS, iss,
// aud = this server, exp and iat, then client_id = the authenticated client,
// resource = ours, and a jti accepted once. It redeems the grant with the
// RFC 7523 JWT bearer grant for its own access token (typ at+jwt, ES256).
// It also receives Errand's Security Event Tokens (RFC 8417) pushed to its
// /events endpoint (RFC 8935), verified by jose (typ secevent+jwt, Errand's
// JWKS, iss, aud = this server): a CAEP session-revoked event whose sub_id
// (format opaque) is a grant's jti revokes that grant and every access
// token this server issued from it.
import { createServer } from 'node:http'
import * as jose from 'jose'
import { z } from 'zod'
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js'
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js'

export const JWT_BEARER_GRANT = 'urn:ietf:params:oauth:grant-type:jwt-bearer'
export const SESSION_REVOKED = 'https://schemas.openid.net/secevent/caep/event-type/session-revoked'

// startTestAS listens on a free loopback port; trust(issuer, jwksURI) must
// be called before a grant is redeemed. It returns {issuer, resource, trust,
// redeemed (the jtis accepted), revokedGrants, events, stop}. The client
// authenticates with clientSecret (client_secret_basic, as the MCP SDK's
// CrossAppAccessProvider does) or, as a public client, by its client_id.
// The MCP server publishes its RFC 9728 metadata, and the authorization
// server its RFC 8414 metadata, so that an MCP client discovers both.
export async function startTestAS({ clientId, clientSecret, requiredScope }) {
  const keys = await jose.generateKeyPair('ES256')
  const used = new Set()
  const revokedGrants = new Set()
  const events = []
  let errand, errandKeys
  const server = createServer((req, res) => {
    handle(req, res).catch((err) => send(res, 500, { error: 'server_error', error_description: String(err) }))
  })
  await new Promise((ok) => server.listen(0, '127.0.0.1', ok))
  const issuer = `http://127.0.0.1:${server.address().port}`
  const resource = issuer + '/mcp'

  function send(res, status, body, headers = {}) {
    res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store', ...headers })
    res.end(JSON.stringify(body))
  }
  const refuse = (res, error, description, status = 400) => send(res, status, { error, error_description: description })

  async function handle(req, res) {
    const url = new URL(req.url, issuer)
    if (req.method === 'POST' && url.pathname === '/token') return token(req, res)
    if (req.method === 'POST' && url.pathname === '/events') return receive(req, res)
    if (req.method === 'GET' && url.pathname.startsWith('/.well-known/oauth-protected-resource')) {
      return send(res, 200, { resource, authorization_servers: [issuer], scopes_supported: [requiredScope], bearer_methods_supported: ['header'] })
    }
    if (url.pathname === '/authorize') return refuse(res, 'unsupported_response_type', 'this server grants only the JWT bearer grant')
    if (req.method === 'GET' && url.pathname === '/.well-known/oauth-authorization-server') {
      return send(res, 200, {
        // RFC 8414 requires these two (and the SDK's schema checks them);
        // this server has no interactive flow: /authorize refuses.
        issuer, authorization_endpoint: issuer + '/authorize', response_types_supported: [],
        token_endpoint: issuer + '/token', grant_types_supported: [JWT_BEARER_GRANT],
        token_endpoint_auth_methods_supported: ['client_secret_basic', 'none'],
      })
    }
    if (url.pathname === '/mcp') return mcp(req, res)
    return send(res, 404, { error: 'not_found' })
  }

  async function token(req, res) {
    let body = ''
    for await (const chunk of req) body += chunk
    const form = new URLSearchParams(body)
    if (form.get('grant_type') !== JWT_BEARER_GRANT) return refuse(res, 'unsupported_grant_type', 'only the JWT bearer grant')
    // The client authenticates: client_secret_basic, or as a public client by its client_id.
    const basic = /^Basic (.+)$/.exec(req.headers.authorization ?? '')
    if (basic) {
      const [id, secret] = Buffer.from(basic[1], 'base64').toString().split(':').map(decodeURIComponent)
      if (id !== clientId || secret !== clientSecret) return refuse(res, 'invalid_client', 'bad client credentials', 401)
    } else if (form.get('client_id') !== clientId) {
      return refuse(res, 'invalid_client', 'unknown client', 401)
    }
    let payload
    try {
      ;({ payload } = await jose.jwtVerify(form.get('assertion') ?? '', errandKeys, {
        typ: 'oauth-id-jag+jwt',
        issuer: errand,
        audience: issuer,
        algorithms: ['EdDSA', 'ES256'],
        requiredClaims: ['iss', 'sub', 'aud', 'client_id', 'jti', 'iat', 'exp'],
      }))
    } catch (err) {
      return refuse(res, 'invalid_grant', `the ID-JAG does not verify: ${err.code ?? err.message}`)
    }
    if (payload.client_id !== clientId) return refuse(res, 'invalid_grant', 'the ID-JAG names another client')
    if (payload.resource !== resource) return refuse(res, 'invalid_grant', 'the ID-JAG names another resource')
    if (revokedGrants.has(payload.jti)) return refuse(res, 'invalid_grant', 'the ID-JAG was revoked by its issuer')
    if (used.has(payload.jti)) return refuse(res, 'invalid_grant', 'the ID-JAG was redeemed before')
    used.add(payload.jti)
    // grant: the ID-JAG the token comes from, so that revoking it reaches the token.
    const accessToken = await new jose.SignJWT({ scope: payload.scope, client_id: clientId, grant: payload.jti })
      .setProtectedHeader({ alg: 'ES256', typ: 'at+jwt' })
      .setIssuer(issuer)
      .setSubject(payload.sub)
      .setAudience(resource)
      .setIssuedAt()
      .setExpirationTime('60s')
      .setJti(crypto.randomUUID())
      .sign(keys.privateKey)
    send(res, 200, { access_token: accessToken, token_type: 'Bearer', expires_in: 60, scope: payload.scope })
  }

  // The push endpoint (RFC 8935 §2): 202 for a SET it accepts, 400 with
  // {err, description} otherwise.
  async function receive(req, res) {
    let body = ''
    for await (const chunk of req) body += chunk
    const bad = (err, description) => send(res, 400, { err, description })
    if (req.headers['content-type'] !== 'application/secevent+jwt') return bad('invalid_request', 'not a SET')
    let payload
    try {
      ;({ payload } = await jose.jwtVerify(body, errandKeys, {
        typ: 'secevent+jwt', issuer: errand, audience: issuer, algorithms: ['EdDSA', 'ES256'],
        requiredClaims: ['iss', 'aud', 'jti', 'iat', 'events'],
      }))
    } catch (err) {
      return bad('authentication_failed', err.code ?? err.message)
    }
    const event = payload.events?.[SESSION_REVOKED]
    if (!event || payload.sub_id?.format !== 'opaque' || typeof payload.sub_id.id !== 'string') {
      return bad('invalid_request', 'not a session-revoked event for a grant')
    }
    revokedGrants.add(payload.sub_id.id)
    events.push(payload)
    res.writeHead(202)
    res.end()
  }

  // The MCP server (the MCP TypeScript SDK's, stateless Streamable HTTP),
  // which accepts only this server's tokens, for its resource, with the
  // scope its tool needs; the tool answers with the user the token names.
  async function mcp(req, res) {
    const m = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')
    let payload
    try {
      if (!m) throw new Error('no bearer token')
      ;({ payload } = await jose.jwtVerify(m[1], keys.publicKey, { issuer, audience: resource, typ: 'at+jwt' }))
      if (revokedGrants.has(payload.grant)) throw new Error('its grant was revoked')
    } catch {
      return send(res, 401, { error: 'invalid_token' }, {
        'www-authenticate': `Bearer error="invalid_token", resource_metadata="${issuer}/.well-known/oauth-protected-resource/mcp"`,
      })
    }
    const scopes = String(payload.scope ?? '').split(' ')
    if (!scopes.includes(requiredScope)) {
      return send(res, 403, { error: 'insufficient_scope' }, { 'www-authenticate': `Bearer error="insufficient_scope", scope="${requiredScope}"` })
    }
    req.auth = { token: m[1], clientId: payload.client_id, scopes, extra: { sub: payload.sub } }
    const server = new McpServer({ name: 'issues', version: '1.0.0' })
    server.registerTool('list_issues', { description: 'Lists the open issues of a repository', inputSchema: { repo: z.string() } },
      async ({ repo }, extra) => ({ content: [{ type: 'text', text: `2 open issues in ${repo}, for ${extra.authInfo?.extra?.sub}` }] }))
    const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined })
    res.on('close', () => {
      transport.close()
      server.close()
    })
    await server.connect(transport)
    await transport.handleRequest(req, res)
  }

  return {
    issuer,
    resource,
    as: { issuer, token_endpoint: issuer + '/token' },
    trust(errandIssuer, jwksURI) {
      errand = errandIssuer
      errandKeys = jose.createRemoteJWKSet(new URL(jwksURI))
    },
    redeemed: used,
    revokedGrants,
    events,
    stop: () => new Promise((ok) => server.close(ok)),
  }
}
