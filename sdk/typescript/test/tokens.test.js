// Token sources: a file re-read when it changes (a projected service-account
// token renewed by the kubelet), a function, a static token.
import { it } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, writeFile, rename, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileToken, functionToken, staticToken } from '../dist/index.js'

it('fileToken reads the file again once it changes, and only then', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'errand-sdk-'))
  try {
    const path = join(dir, 'token')
    await writeFile(path, 'first-token\n')
    const src = fileToken(path)
    assert.equal(await src(), 'first-token')
    assert.equal(await src(), 'first-token')
    // The kubelet swaps the file atomically (a new inode), as here.
    await writeFile(join(dir, 'token.new'), 'second-token\n')
    await rename(join(dir, 'token.new'), path)
    assert.equal(await src(), 'second-token')
    // An empty file is an error, not an empty bearer.
    await writeFile(path, '   \n')
    await assert.rejects(src(), /empty/)
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
})

it('functionToken calls the function each time; staticToken refuses an empty token', async () => {
  let n = 0
  const src = functionToken(() => `token-${++n}`)
  assert.equal(await src(), 'token-1')
  assert.equal(await src(), 'token-2')
  await assert.rejects(functionToken(() => '')(), /no token/)
  assert.throws(() => staticToken(''), TypeError)
  assert.equal(await staticToken('t')(), 't')
})
