// S01: the package's scope containment gives Errand's own answers on the
// shared vectors of broker/testdata/scope_vectors.json (the file Errand's Go
// test, TestScopeVectors, reads too): every `covered` case and every
// `invalid` scope.
import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { parseScope, scopeCoveredBy, scopesCover, formatScope, InvalidScopeError } from '../dist/index.js'

const vectors = JSON.parse(readFileSync(new URL('../../../broker/testdata/scope_vectors.json', import.meta.url), 'utf8'))

describe('S01 scope containment: the shared vectors', () => {
  it('has vectors to run, the adversarial ones among them', () => {
    assert.ok(vectors.covered.length >= 20 && vectors.invalid.length >= 10)
    const names = vectors.covered.map((v) => v.name).join('\n')
    for (const n of ['prefix trick: org with shared prefix', 'case variant of the resource', 'wildcard widening: ** vs *']) {
      assert.ok(names.includes(n), `the vectors include "${n}"`)
    }
  })
  for (const v of vectors.covered) {
    it(`${v.name}: ${v.requested} ${v.covered ? '⊆' : '⊄'} ${v.granted}`, () => {
      assert.equal(scopeCoveredBy(v.requested, v.granted), v.covered)
      assert.equal(scopesCover([v.granted], v.requested), v.covered)
    })
  }
  for (const s of vectors.invalid) {
    it(`refuses ${JSON.stringify(s)}`, () => {
      assert.throws(() => parseScope(s), InvalidScopeError)
      // and a malformed granted scope covers nothing, never throws
      assert.equal(scopesCover([s], 'r.read:x'), false)
    })
  }
})

describe('scope parsing', () => {
  it('canonicalises the action to lower case and writes ** out', () => {
    assert.equal(formatScope(parseScope('GitHub.Repo.Read')), 'github.repo.read:**')
    assert.equal(formatScope(parseScope('github.repo.read:Acme/API')), 'github.repo.read:Acme/API')
  })
  it('refuses a scope longer than 512 bytes, counted in UTF-8 bytes like Errand', () => {
    assert.throws(() => parseScope('r.read:' + 'a'.repeat(506)), InvalidScopeError)
    assert.doesNotThrow(() => parseScope('r.read:' + 'a'.repeat(505)))
  })
})
