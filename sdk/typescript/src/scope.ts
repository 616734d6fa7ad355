// Errand's scope language, `action[:resource]`, and pattern containment:
// the same rules as Errand's own broker/scope.go, held to the same shared
// vectors (broker/testdata/scope_vectors.json) by this package's tests.

/** The longest scope string accepted, in bytes, as Errand's parser. */
export const MAX_SCOPE_LEN = 512

/**
 * A parsed, canonical scope. `resource` is the `/`-separated path as
 * segments: literals, `*` (exactly one segment) or a final `**` (one or
 * more further segments). A scope written without a resource has the
 * resource `["**"]`: every path.
 */
export interface Scope {
  readonly action: string
  readonly resource: readonly string[]
}

/** Thrown by parseScope for a scope Errand itself would refuse. */
export class InvalidScopeError extends Error {
  readonly code = 'invalid_scope'
  constructor(message: string) {
    super(message)
    this.name = 'InvalidScopeError'
  }
}

const utf8 = new TextEncoder()

function validAction(a: string): boolean {
  if (a === '' || a.length > 128) return false
  for (const part of a.split('.')) {
    if (part === '') return false
    for (let i = 0; i < part.length; i++) {
      const c = part.charCodeAt(i)
      const lower = c >= 0x61 && c <= 0x7a
      const digit = c >= 0x30 && c <= 0x39
      const inner = i > 0 && (c === 0x5f || c === 0x2d) // _ -
      if (!(lower || digit || inner)) return false
    }
  }
  return true
}

// The allow-list of characters in a literal resource segment; `*` is
// refused inside a segment: wildcards are whole segments only.
const RESOURCE_CHAR = /^[A-Za-z0-9\-_.~@+=,:]+$/

/**
 * parseScope parses and canonicalises s, as Errand does: the action in
 * lower case; the resource exactly as written, which must already be
 * clean (empty, `.` and `..` segments, percent-encoding, white space,
 * backslashes, control and non-ASCII characters are refused, never
 * normalised). Throws InvalidScopeError.
 */
export function parseScope(s: string): Scope {
  if (typeof s !== 'string' || s === '') throw new InvalidScopeError('empty scope')
  if (s.length > MAX_SCOPE_LEN / 3 && utf8.encode(s).length > MAX_SCOPE_LEN) throw new InvalidScopeError(`scope longer than ${MAX_SCOPE_LEN} bytes`)
  const colon = s.indexOf(':')
  // Go's strings.ToLower folds non-ASCII letters too; any non-ASCII
  // action is refused below either way.
  const action = (colon < 0 ? s : s.slice(0, colon)).toLowerCase()
  if (!validAction(action)) throw new InvalidScopeError(`scope ${JSON.stringify(s)}: malformed action name`)
  if (colon < 0) return { action, resource: ['**'] }
  const resource = s.slice(colon + 1)
  if (resource === '') throw new InvalidScopeError(`scope ${JSON.stringify(s)}: empty resource`)
  const segs = resource.split('/')
  segs.forEach((seg, i) => {
    if (seg === '') throw new InvalidScopeError(`scope ${JSON.stringify(s)}: empty path segment`)
    if (seg === '.' || seg === '..') throw new InvalidScopeError(`scope ${JSON.stringify(s)}: relative path segment`)
    if (seg === '**') {
      if (i !== segs.length - 1) throw new InvalidScopeError(`scope ${JSON.stringify(s)}: ** is only allowed as the last segment`)
      return
    }
    if (seg === '*') return
    if (!RESOURCE_CHAR.test(seg)) throw new InvalidScopeError(`scope ${JSON.stringify(s)}: a character not allowed in a resource`)
  })
  return { action, resource: segs }
}

/** The canonical text of a scope; a resource of `**` is written out. */
export function formatScope(sc: Scope): string {
  return sc.action + ':' + sc.resource.join('/')
}

// patternCovered reports whether pattern a ⊆ pattern b, segment by
// segment, never by string prefix.
function patternCovered(a: readonly string[], b: readonly string[]): boolean {
  for (let i = 0; i < b.length; i++) {
    const bs = b[i]
    if (bs === '**') return a.length > i // ** is one or more segments
    if (i >= a.length) return false
    const as = a[i]
    if (as === '**') return false // a reaches arbitrarily deep, b does not
    if (bs === '*') continue // any single segment of a is covered
    if (as === '*') return false // a is any segment, b one literal
    if (as !== bs) return false
  }
  return a.length === b.length
}

/**
 * scopeCoveredBy reports whether every concrete request matched by
 * `requested` is also matched by `granted`: the same action, and resource
 * pattern containment. Strings are parsed first (and throw
 * InvalidScopeError when malformed).
 */
export function scopeCoveredBy(requested: Scope | string, granted: Scope | string): boolean {
  const r = typeof requested === 'string' ? parseScope(requested) : requested
  const g = typeof granted === 'string' ? parseScope(granted) : granted
  return r.action === g.action && patternCovered(r.resource, g.resource)
}

/**
 * scopesCover reports whether at least one scope of `granted` covers
 * `requested`. A malformed scope in `granted` covers nothing.
 */
export function scopesCover(granted: readonly (Scope | string)[], requested: Scope | string): boolean {
  const r = typeof requested === 'string' ? parseScope(requested) : requested
  for (const g of granted) {
    let gs: Scope
    try {
      gs = typeof g === 'string' ? parseScope(g) : g
    } catch {
      continue
    }
    if (scopeCoveredBy(r, gs)) return true
  }
  return false
}
