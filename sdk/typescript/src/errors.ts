/**
 * A refusal from Errand: an RFC 9457 problem+json answer (or an RFC 6749
 * §5.2 error from the OAuth endpoints), with Errand's stable `code`.
 */
export class ErrandError extends Error {
  /** The HTTP status. */
  readonly status: number
  /** Errand's stable code, e.g. `scope_exceeds_approval`, `task_not_active`. */
  readonly code: string
  /** The problem's title and detail, as Errand wrote them. */
  readonly title?: string
  readonly detail?: string
  /** Seconds from the Retry-After header, when the answer had one. */
  readonly retryAfter?: number
  /** The whole answer body, parsed. */
  readonly body: unknown
  /** The DPoP-Nonce header, when the answer had one (RFC 9449 §8). */
  readonly dpopNonce?: string

  constructor(init: { status: number; code: string; title?: string; detail?: string; retryAfter?: number; body?: unknown; message?: string; dpopNonce?: string }) {
    super(init.message ?? `errand: ${init.status} ${init.code}${init.detail ? `: ${init.detail}` : ''}`)
    this.name = 'ErrandError'
    this.status = init.status
    this.code = init.code
    this.title = init.title
    this.detail = init.detail
    this.retryAfter = init.retryAfter
    this.body = init.body
    this.dpopNonce = init.dpopNonce
  }
}

/** Why a verifier refused a token. */
export type VerifyErrorCode =
  /** Malformed, unsigned, badly signed, wrong `typ`, `iss` or `aud`, expired or not yet valid. */
  | 'invalid_token'
  /** Valid, but revoked: its credential or its task is on the revocation feed. */
  | 'revoked'
  /** The revocation feed has not been heard from within the verifier's bound: every token is refused. */
  | 'feed_unavailable'
  /** Valid, but its scopes do not cover what the caller asked for. */
  | 'insufficient_scope'

/** Thrown by ErrandVerifier when a token is refused. */
export class VerifyError extends Error {
  readonly code: VerifyErrorCode
  constructor(code: VerifyErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'VerifyError'
    this.code = code
  }
}
