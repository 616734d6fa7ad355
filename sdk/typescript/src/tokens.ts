// Token sources: where an agent (or a resource server) gets the workload
// identity token it shows Errand. Each is a function returning the current
// token, called before every request.
import { readFile, stat } from 'node:fs/promises'

/** Returns the identity token to present now. */
export type TokenSource = () => Promise<string>

/** A token that never changes (a test, or a token handed over by a parent). */
export function staticToken(token: string): TokenSource {
  if (!token) throw new TypeError('staticToken: empty token')
  return async () => token
}

/**
 * A token kept in a file that something else renews, such as a Kubernetes
 * projected service-account token or a SPIFFE helper's JWT-SVID: the file
 * is read again whenever its modification time or size changes (checked
 * with one stat per call), and its content is trimmed.
 */
export function fileToken(path: string): TokenSource {
  let cached: { mtimeMs: number; size: number; ino: number; token: string } | undefined
  return async () => {
    const st = await stat(path)
    if (cached && cached.mtimeMs === st.mtimeMs && cached.size === st.size && cached.ino === st.ino) return cached.token
    const token = (await readFile(path, 'utf8')).trim()
    if (!token) throw new Error(`fileToken: ${path} is empty`)
    cached = { mtimeMs: st.mtimeMs, size: st.size, ino: st.ino, token }
    return token
  }
}

/**
 * A token from your own function (a cloud metadata endpoint, a secret
 * manager, a CI provider's OIDC endpoint). The function is called before
 * every request; cache in it if it is costly.
 */
export function functionToken(fn: () => string | Promise<string>): TokenSource {
  return async () => {
    const token = await fn()
    if (!token) throw new Error('functionToken: the function returned no token')
    return token
  }
}

/** A TokenSource, or a string taken as staticToken. */
export type TokenInput = TokenSource | string

export function toTokenSource(t: TokenInput): TokenSource {
  return typeof t === 'string' ? staticToken(t) : t
}
