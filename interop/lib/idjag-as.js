// A small authorization server for the ID-JAG tests, and the MCP server
// (built with the MCP TypeScript SDK) that trusts it. No maintained npm package implements the resource
// authorization server's side of draft-ietf-oauth-identity-assertion-authz-grant
// (the MCP TypeScript SDK 1.32.2 has no cross-app-access code, client or
// server), so this one is written here; every check of the grant is jose's:
// typ oauth-id-jag+jwt, the signature by a key of the issuer's JWKS, iss,
// aud = this server, exp and iat, then client_id = the authenticated client,
// resource = ours, and a jti accepted once. It redeems the grant with the
// RFC 7523 JWT bearer grant for its own access token (typ at+jwt, ES256).
import { createServer } from 'node:http'
import * as jose from 'jose'
import { z } from 'zod'
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js'
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js'

export const JWT_BEARER_GRANT = 'urn:ietf:params:oauth:grant-type:jwt-bearer'

// startTestAS listens on a free loopback port; trust(issuer, jwksURI) must
// be called before a grant is redeemed. It returns {issuer, resource, trust,
// redeemed (the jtis accepted), stop}.
export async function startTestAS({ clientId, requiredScope }) {
  const keys = await jose.generateKeyPair('ES256')
  const used = new Set()
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
    if (url.pathname === '/mcp') return mcp(req, res)
    return send(res, 404, { error: 'not_found' })
  }

  async function token(req, res) {
    let body = ''
    for await (const chunk of req) body += chunk
    const form = new URLSearchParams(body)
    if (form.get('grant_type') !== JWT_BEARER_GRANT) return refuse(res, 'unsupported_grant_type', 'only the JWT bearer grant')
    // The client authenticates (here a public client: its client_id).
    if (form.get('client_id') !== clientId) return refuse(res, 'invalid_client', 'unknown client', 401)
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
    if (used.has(payload.jti)) return refuse(res, 'invalid_grant', 'the ID-JAG was redeemed before')
    used.add(payload.jti)
    const accessToken = await new jose.SignJWT({ scope: payload.scope, client_id: clientId })
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

  // The MCP server (the MCP TypeScript SDK's, stateless Streamable HTTP),
  // which accepts only this server's tokens, for its resource, with the
  // scope its tool needs; the tool answers with the user the token names.
  async function mcp(req, res) {
    const m = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')
    let payload
    try {
      if (!m) throw new Error('no bearer token')
      ;({ payload } = await jose.jwtVerify(m[1], keys.publicKey, { issuer, audience: resource, typ: 'at+jwt' }))
    } catch {
      return send(res, 401, { error: 'invalid_token' }, { 'www-authenticate': 'Bearer error="invalid_token"' })
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
    stop: () => new Promise((ok) => server.close(ok)),
  }
}
