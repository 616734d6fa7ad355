// An MCP server (MCP TypeScript SDK) with two tools, each an Errand action
// on a repository: repo.read needs github.repo.read, pr.write needs
// github.pr.write. Errand's tokens are checked by @errand/sdk's verifier,
// which follows Errand's revocation feed: a closed task's token is refused
// at once. Clients find Errand through RFC 9728 metadata.
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js'
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js'
import { createMcpExpressApp } from '@modelcontextprotocol/sdk/server/express.js'
import { requireBearerAuth } from '@modelcontextprotocol/sdk/server/auth/middleware/bearerAuth.js'
import { getOAuthProtectedResourceMetadataUrl } from '@modelcontextprotocol/sdk/server/auth/router.js'
import { z } from 'zod'
import { ErrandVerifier } from '@errand/sdk'
import { mcpTokenVerifier, errandMetadataRouter, hasScope } from '@errand/sdk/mcp'

// startMcpServer serves the MCP endpoint at resource (e.g.
// http://127.0.0.1:8808/mcp), the audience Errand mints its tokens for.
// resourceToken is this server's own identity token (an Errand issuer of
// kind resource), with which it reads the revocation feed.
export async function startMcpServer({ errandUrl, resource, resourceToken }) {
  const resourceUrl = new URL(resource)
  const verifier = new ErrandVerifier({
    issuer: errandUrl,
    audience: resource,
    revocation: { token: resourceToken },
    maxFeedSilenceMs: 30_000, // refuse every token once the feed has been silent this long
  })
  await verifier.start()

  const app = createMcpExpressApp({ host: resourceUrl.hostname })
  app.use(await errandMetadataRouter({
    errandUrl, resourceServerUrl: resourceUrl, resourceName: 'acme repositories',
    scopesSupported: ['github.repo.read:acme/**', 'github.pr.write:acme/**'],
  }))
  const auth = requireBearerAuth({
    verifier: mcpTokenVerifier(verifier),
    resourceMetadataUrl: getOAuthProtectedResourceMetadataUrl(resourceUrl),
  })

  app.post(resourceUrl.pathname, auth, async (req, res) => {
    const server = tools()
    const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined })
    res.on('close', () => {
      transport.close()
      server.close()
    })
    await server.connect(transport)
    await transport.handleRequest(req, res, req.body)
  })

  const http = await new Promise((ok) => {
    const s = app.listen(Number(resourceUrl.port), resourceUrl.hostname, () => ok(s))
  })
  return {
    verifier,
    stop: async () => {
      await verifier.close()
      http.closeAllConnections()
      await new Promise((ok) => http.close(ok))
    },
  }
}

// tools is the MCP server; each tool checks the scope it needs by Errand's
// pattern containment (github.pr.write:acme/** covers acme/api, never
// acme-evil/api).
function tools() {
  const server = new McpServer({ name: 'acme-repos', version: '1.0.0' })
  const refuse = (scope) => ({ isError: true, content: [{ type: 'text', text: `refused: the token does not cover ${scope}` }] })

  server.registerTool('repo.read', {
    description: 'Read a repository',
    inputSchema: { repo: z.string() },
  }, async ({ repo }, { authInfo }) => {
    const need = `github.repo.read:${repo}`
    if (!hasScope(authInfo, need)) return refuse(need)
    return { content: [{ type: 'text', text: `${repo}: README.md, go.mod, main.go (read for task ${authInfo.extra.taskId})` }] }
  })

  server.registerTool('pr.write', {
    description: 'Open a pull request',
    inputSchema: { repo: z.string(), title: z.string() },
  }, async ({ repo, title }, { authInfo }) => {
    const need = `github.pr.write:${repo}`
    if (!hasScope(authInfo, need)) return refuse(need)
    return { content: [{ type: 'text', text: `opened "${title}" on ${repo}` }] }
  })
  return server
}
