// README's "For TypeScript agents, resource servers and MCP servers"
// section shows agent.js and server.js verbatim; e2e.test.js runs them.
import { it } from 'node:test'
import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'

it('README shows the example agent and MCP server verbatim', async () => {
  const readme = await readFile(new URL('../../../README.md', import.meta.url), 'utf8')
  const start = readme.search(/^## For TypeScript agents, resource servers and MCP servers\s*$/m)
  assert.ok(start >= 0, 'README has the section')
  const rest = readme.slice(start + 1)
  const next = rest.search(/^## /m)
  const section = next < 0 ? rest : rest.slice(0, next)
  for (const file of ['agent.js', 'server.js']) {
    const code = await readFile(new URL(`../${file}`, import.meta.url), 'utf8')
    assert.ok(section.includes('```js\n' + code + '```\n'), `the section shows examples/mcp-agent/${file} exactly; update README when the file changes`)
  }
})
