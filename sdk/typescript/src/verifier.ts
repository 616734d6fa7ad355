// Offline verification of Errand's access tokens (RFC 9068 profile) for
// resource servers: signature by Errand's JWKS (jose's remote key set,
// refetched on an unknown kid at most once per cooldown), typ at+jwt, iss,
// aud, exp/nbf with a small leeway, the scope a request needs by Errand's
// pattern containment, and revocation by the feed, failing closed when the
// feed has been silent longer than a bound.
import { createRemoteJWKSet, jwtVerify, errors as joseErrors, type JWTPayload, type JWTVerifyGetKey } from 'jose'
import { VerifyError } from './errors.js'
import { RevocationFollower, type FeedOptions } from './feed.js'
import { parseScope, scopesCover, type Scope } from './scope.js'
import { type TokenInput, toTokenSource } from './tokens.js'
import { DPoPReplayCache, verifyDPoPProof, type DPoPRequest } from './dpop.js'

/** The claims of an Errand access token. */
export interface ErrandClaims extends JWTPayload {
  iss: string
  sub: string
  aud: string | string[]
  exp: number
  iat: number
  jti: string
  scope: string
  client_id: string
  task_id: string
  act?: { sub: string; iss: string }
  cnf?: { jkt: string }
}

/** A token the verifier accepted. */
export interface VerifiedToken {
  token: string
  claims: ErrandClaims
  /** The token's scopes, canonical (`action:resource`). */
  scopes: string[]
  /** The user the agent acts for (`sub`). */
  subject: string
  /** The acting agent (`act`). */
  agent?: { sub: string; iss: string }
  clientId: string
  taskId: string
  jti: string
  /** Seconds since the epoch. */
  expiresAt: number
}

export interface VerifierOptions {
  /** Errand's URL: the tokens' `iss`, and where the JWKS and the feed are. */
  issuer: string
  /** This resource server's audience, exactly as configured in Errand. */
  audience: string
  /**
   * Where to reach Errand when not at its issuer URL (say, an internal
   * address): the JWKS, the revocation feed and introspection are fetched
   * there. Default: the issuer.
   */
  baseUrl?: string
  /** Default `${baseUrl}/.well-known/jwks.json`. */
  jwksUri?: string
  /** Accepted signing algorithms. Default EdDSA and ES256, Errand's two. */
  algorithms?: string[]
  /** Leeway for exp and nbf, in seconds. Default 5. */
  clockToleranceSec?: number
  /** Minimum time between two JWKS fetches caused by unknown kids (ms). Default 30000. */
  jwksCooldownMs?: number
  /**
   * Follow the revocation feed (recommended): the resource server's own
   * identity token, and the feed's options. `false` verifies offline only,
   * and a revoked token is then accepted until it expires.
   */
  revocation: false | ({ token: TokenInput } & Omit<FeedOptions, 'baseUrl' | 'token'>)
  /**
   * The fail-closed bound (ms): when the feed has not been heard from for
   * longer than this, every token is refused with `feed_unavailable`
   * (or checked by introspection, see onFeedDown). Default 30000; keep it
   * above Errand's 15 s keep-alive.
   */
  maxFeedSilenceMs?: number
  /**
   * What to do while the feed is down: 'reject' (default) refuses every
   * token; 'introspect' asks Errand's /v1/introspect for each token and
   * refuses it when Errand cannot be reached either.
   */
  onFeedDown?: 'reject' | 'introspect'
  fetch?: typeof fetch
}

const DEFAULT_ALGS = ['EdDSA', 'ES256']

/** Verifies Errand access tokens for one audience. */
export class ErrandVerifier {
  readonly issuer: string
  readonly audience: string
  /** Where Errand is reached (baseUrl, or the issuer). */
  readonly baseUrl: string
  readonly maxFeedSilenceMs: number
  /** The feed follower; undefined when revocation is false. */
  readonly feed?: RevocationFollower
  private readonly jwks: JWTVerifyGetKey
  private readonly o: VerifierOptions
  private readonly fetchFn: typeof fetch
  private readonly rsToken?: () => Promise<string>
  private readonly replay = new DPoPReplayCache()

  constructor(opts: VerifierOptions) {
    if (!opts.issuer || !opts.audience) throw new TypeError('ErrandVerifier: issuer and audience are required')
    this.o = opts
    this.issuer = opts.issuer.replace(/\/+$/, '')
    this.audience = opts.audience
    this.baseUrl = (opts.baseUrl ?? opts.issuer).replace(/\/+$/, '')
    this.fetchFn = opts.fetch ?? globalThis.fetch
    this.maxFeedSilenceMs = opts.maxFeedSilenceMs ?? 30000
    this.jwks = createRemoteJWKSet(new URL(opts.jwksUri ?? `${this.baseUrl}/.well-known/jwks.json`), {
      cooldownDuration: opts.jwksCooldownMs ?? 30000,
      cacheMaxAge: 10 * 60 * 1000,
      timeoutDuration: 5000,
    })
    if (opts.revocation) {
      const { token, ...feed } = opts.revocation
      this.rsToken = toTokenSource(token)
      this.feed = new RevocationFollower({ ...feed, baseUrl: this.baseUrl, token: this.rsToken, fetch: feed.fetch ?? opts.fetch })
    }
  }

  /** start reads the revocation feed once and follows it; await it before serving. */
  async start(): Promise<void> {
    await this.feed?.start()
  }

  /** close stops following the feed. */
  async close(): Promise<void> {
    await this.feed?.close()
  }

  /**
   * verify checks a token offline and against the revocation feed, and
   * returns it parsed; it throws VerifyError (`invalid_token`, `revoked`,
   * `feed_unavailable`). A DPoP-bound token (cnf.jkt) is accepted only
   * with `dpop`, a proof of its key for this request (RFC 9449); a proof
   * with an unbound token is refused too.
   */
  async verify(token: string, opts: { dpop?: DPoPRequest } = {}): Promise<VerifiedToken> {
    let claims: ErrandClaims
    try {
      const r = await jwtVerify<ErrandClaims>(token, this.jwks, {
        issuer: this.issuer,
        audience: this.audience,
        typ: 'at+jwt',
        algorithms: this.o.algorithms ?? DEFAULT_ALGS,
        clockTolerance: this.o.clockToleranceSec ?? 5,
        requiredClaims: ['exp', 'iat', 'jti', 'sub', 'scope', 'task_id', 'client_id'],
      })
      claims = r.payload
    } catch (err) {
      throw new VerifyError('invalid_token', tokenMessage(err), { cause: err })
    }
    if (typeof claims.scope !== 'string' || typeof claims.jti !== 'string' || typeof claims.task_id !== 'string') {
      throw new VerifyError('invalid_token', 'the token has malformed claims')
    }
    if (claims.cnf !== undefined) {
      if (typeof claims.cnf?.jkt !== 'string') throw new VerifyError('invalid_token', 'the token has a malformed cnf claim')
      if (!opts.dpop) throw new VerifyError('invalid_token', 'the token is DPoP-bound and came without a DPoP proof')
      await verifyDPoPProof(opts.dpop, { accessToken: token, jkt: claims.cnf.jkt, replay: this.replay })
    } else if (opts.dpop) {
      throw new VerifyError('invalid_token', 'a DPoP proof came with a token that is not DPoP-bound')
    }
    const scopes: string[] = []
    for (const s of claims.scope.split(' ')) {
      if (s === '') continue
      try {
        const sc = parseScope(s)
        scopes.push(sc.action + ':' + sc.resource.join('/'))
      } catch {
        throw new VerifyError('invalid_token', 'the token carries a malformed scope')
      }
    }
    if (this.feed) {
      // A revoked jti is remembered for retentionMs after its revocation,
      // and a token is revoked after it was issued: so a token that lives
      // longer than that (leeway included) could outlive the memory of its
      // revocation. Such a token is refused rather than guessed about.
      const life = (claims.exp - claims.iat + (this.o.clockToleranceSec ?? 5)) * 1000
      if (!(life <= this.feed.retentionMs)) {
        throw new VerifyError('invalid_token', 'the token lives longer than this verifier remembers revocations (revocation.retentionMs)')
      }
      await this.checkRevocation(token, claims.jti)
    }
    return {
      token, claims, scopes, subject: claims.sub, agent: claims.act, clientId: claims.client_id,
      taskId: claims.task_id, jti: claims.jti, expiresAt: claims.exp,
    }
  }

  private async checkRevocation(token: string, jti: string): Promise<void> {
    const feed = this.feed!
    if (feed.isRevoked(jti)) throw new VerifyError('revoked', 'the token has been revoked')
    const silence = feed.sinceHeardMs()
    if (silence <= this.maxFeedSilenceMs) return
    if (this.o.onFeedDown === 'introspect') {
      let active: boolean
      try {
        active = await this.introspect(token)
      } catch (err) {
        throw new VerifyError('feed_unavailable', 'the revocation feed is down and introspection failed', { cause: err })
      }
      if (!active) throw new VerifyError('revoked', 'Errand says the token is not active')
      return
    }
    throw new VerifyError('feed_unavailable',
      silence === Infinity ? 'the revocation feed has not been read yet' : `the revocation feed has been silent for ${Math.round(silence)} ms`)
  }

  private async introspect(token: string): Promise<boolean> {
    const res = await this.fetchFn(`${this.baseUrl}/v1/introspect`, {
      method: 'POST',
      headers: { authorization: `Bearer ${await this.rsToken!()}`, 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
      body: new URLSearchParams({ token }),
      signal: AbortSignal.timeout(5000),
    })
    if (!res.ok) throw new Error(`introspection answered ${res.status}`)
    return (await res.json()).active === true
  }

  /**
   * authorize verifies the token and checks that its scopes cover every
   * scope of `need` (e.g. `github.pr.write:acme/api`) by Errand's pattern
   * containment; it throws VerifyError `insufficient_scope` otherwise.
   */
  async authorize(token: string, ...need: (string | Scope)[]): Promise<VerifiedToken> {
    const v = await this.verify(token)
    requireScopes(v, ...need)
    return v
  }

  /** authorizeDPoP is authorize for a DPoP-bound token and its proof. */
  async authorizeDPoP(token: string, dpop: DPoPRequest, ...need: (string | Scope)[]): Promise<VerifiedToken> {
    const v = await this.verify(token, { dpop })
    requireScopes(v, ...need)
    return v
  }
}

/**
 * requireScopes throws VerifyError `insufficient_scope` unless the
 * verified token's scopes cover each scope of `need`.
 */
export function requireScopes(v: { scopes: readonly string[] }, ...need: (string | Scope)[]): void {
  for (const n of need) {
    if (!scopesCover(v.scopes, n)) {
      throw new VerifyError('insufficient_scope', `the token's scopes do not cover ${typeof n === 'string' ? n : n.action + ':' + n.resource.join('/')}`)
    }
  }
}

function tokenMessage(err: unknown): string {
  if (err instanceof joseErrors.JWTExpired) return 'the token has expired'
  if (err instanceof joseErrors.JWTClaimValidationFailed) return `the token's ${err.claim} claim is not accepted`
  if (err instanceof joseErrors.JWSSignatureVerificationFailed) return 'the token signature does not verify'
  if (err instanceof joseErrors.JWKSNoMatchingKey) return 'no Errand key matches the token'
  if (err instanceof joseErrors.JOSEAlgNotAllowed) return "the token's algorithm is not accepted"
  return 'the token is not a valid Errand access token'
}
