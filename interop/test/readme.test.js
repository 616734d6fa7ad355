// README's "Standard OAuth clients" section shows lib/example.js verbatim;
// the interop suite runs that file against errand dev and errand serve
// ("the README's openid-client example runs as written").
import { it } from 'node:test'
import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { repoRoot } from '../lib/harness.js'

it("README's openid-client example is lib/example.js, verbatim, in the Standard OAuth clients section", async () => {
  const readme = await readFile(join(repoRoot, 'README.md'), 'utf8')
  const example = await readFile(new URL('../lib/example.js', import.meta.url), 'utf8')
  const start = readme.search(/^## Standard OAuth clients\s*$/m)
  assert.ok(start >= 0, 'README has a "## Standard OAuth clients" section')
  const rest = readme.slice(start + 1)
  const next = rest.search(/^## /m)
  const section = next < 0 ? rest : rest.slice(0, next)
  assert.ok(section.includes('```js\n' + example + '```\n'),
    'the section shows interop/lib/example.js exactly, in a ```js block; update README when the file changes:\n' + example)
})

it("README's Notifications section shows lib/webhook-receiver.js, verbatim", async () => {
  const readme = await readFile(join(repoRoot, 'README.md'), 'utf8')
  const example = await readFile(new URL('../lib/webhook-receiver.js', import.meta.url), 'utf8')
  const start = readme.search(/^## Notifications\s*$/m)
  assert.ok(start >= 0, 'README has a "## Notifications" section')
  const rest = readme.slice(start + 1)
  const next = rest.search(/^## /m)
  const section = next < 0 ? rest : rest.slice(0, next)
  assert.ok(section.includes('```js\n' + example + '```\n'),
    'the section shows interop/lib/webhook-receiver.js exactly, in a ```js block; update README when the file changes')
})
