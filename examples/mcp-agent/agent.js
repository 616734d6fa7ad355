// The agent: it asks Errand for a task on the user's behalf, waits for the
// user's approval, and calls the MCP server's tools with a token of that
// task, which the MCP SDK's client gets from Errand for the server's
// resource URI (ErrandTaskAuthProvider). When done, it closes the task:
// from then on its token is refused.
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import { ErrandClient } from '@errand/sdk'
import { ErrandTaskAuthProvider } from '@errand/sdk/mcp'

export async function runAgent({ errandUrl, agentToken, user, mcpUrl, log = console.log }) {
  const errand = new ErrandClient({ baseUrl: errandUrl, token: agentToken })
  const task = await errand.createTask({
    on_behalf_of: user,
    goal: 'Read acme/api and open a pull request fixing its README',
    scopes: ['github.repo.read:acme/api', 'github.pr.write:acme/api'],
    audiences: [mcpUrl],
    ttl_seconds: 900,
  })
  log(`task ${task.id} waits for ${user}'s approval`)
  const approved = await errand.waitForApproval(task.id, { timeoutMs: 10 * 60_000 })
  log(`approved: ${approved.approved_scopes.join(' ')}`)

  const authProvider = new ErrandTaskAuthProvider({ errandUrl, agentToken, taskId: task.id, scopes: approved.approved_scopes })
  const mcp = new Client({ name: 'example-agent', version: '1.0.0' })
  await mcp.connect(new StreamableHTTPClientTransport(new URL(mcpUrl), { authProvider }))

  const read = await mcp.callTool({ name: 'repo.read', arguments: { repo: 'acme/api' } })
  log(`repo.read: ${read.content[0].text}`)
  const write = await mcp.callTool({ name: 'pr.write', arguments: { repo: 'acme/api', title: 'Fix the README' } })
  log(`pr.write: ${write.content[0].text}`)

  const token = authProvider.tokens().access_token
  const closed = await errand.close(task.id)
  log(`closed: ${closed.revoked} credential(s) revoked`)

  // The same token again: the MCP server refuses it as soon as Errand's
  // revocation feed brings it the close, well within a second.
  const closedAt = Date.now()
  let after
  for (;;) {
    after = await fetch(mcpUrl, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' }),
    })
    if (after.status !== 200 || Date.now() - closedAt > 5000) break
    await new Promise((r) => setTimeout(r, 20))
  }
  const refusedAfterMs = Date.now() - closedAt
  log(`after close: ${after.status} in ${refusedAfterMs} ms: ${after.headers.get('www-authenticate')}`)
  await mcp.close()
  return { task, approved, read, write, closed, after: { status: after.status, challenge: after.headers.get('www-authenticate'), refusedAfterMs } }
}
