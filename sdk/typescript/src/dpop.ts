// DPoP (RFC 9449): proofs for agents (createDPoPProof), and the resource
// server's check of a proof accompanying a DPoP-bound Errand token
// (verifyDPoPProof, used by ErrandVerifier.verify with { dpop }).
import { SignJWT, jwtVerify, EmbeddedJWK, calculateJwkThumbprint, decodeProtectedHeader, exportJWK, base64url, type CryptoKey, type JWK } from 'jose'
import { VerifyError } from './errors.js'

/** The request a proof must name: its method and URL (query and fragment are ignored). */
export interface DPoPRequest {
  /** The DPoP header's value. */
  proof: string
  method: string
  url: string | URL
}

const ALGS = ['ES256', 'EdDSA', 'Ed25519', 'RS256', 'PS256']

async function sha256(s: string): Promise<string> {
  return base64url.encode(new Uint8Array(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(s))))
}

// htu compares scheme, host, port and path, as WHATWG URL normalises them.
function target(u: string | URL): string {
  const url = new URL(String(u))
  return url.origin + url.pathname
}

/**
 * createDPoPProof signs a DPoP proof with keyPair for method and url; with
 * accessToken it carries `ath`, the token's hash (a request to a resource
 * server), with nonce the server's nonce.
 */
export async function createDPoPProof(o: { keyPair: { privateKey: CryptoKey; publicKey: CryptoKey }; alg?: string; method: string; url: string | URL; accessToken?: string; nonce?: string }): Promise<string> {
  const jwk = await exportJWK(o.keyPair.publicKey)
  const alg = o.alg ?? (jwk.kty === 'OKP' ? 'EdDSA' : 'ES256')
  const claims: Record<string, unknown> = { htm: o.method.toUpperCase(), htu: target(o.url) }
  if (o.accessToken) claims.ath = await sha256(o.accessToken)
  if (o.nonce) claims.nonce = o.nonce
  return new SignJWT(claims).setProtectedHeader({ alg, typ: 'dpop+jwt', jwk }).setIssuedAt().setJti(crypto.randomUUID()).sign(o.keyPair.privateKey)
}

/** Remembers proof jtis for twice the window, so that a proof is accepted once. */
export class DPoPReplayCache {
  private readonly seen = new Map<string, number>()
  constructor(private readonly max = 100_000) {}
  /** remember returns false when key was seen and has not expired. */
  remember(key: string, until: number): boolean {
    const now = Date.now()
    const prev = this.seen.get(key)
    if (prev !== undefined && prev > now) return false
    if (this.seen.size >= this.max) {
      for (const [k, t] of this.seen) if (t <= now) this.seen.delete(k)
      if (this.seen.size >= this.max) return false // full of live proofs: refuse rather than forget
    }
    this.seen.set(key, until)
    return true
  }
}

/**
 * verifyDPoPProof checks a proof for a bound token (RFC 9449 §4.3, §7.1):
 * typ dpop+jwt, an asymmetric alg, a public jwk whose RFC 7638 thumbprint
 * is the token's cnf.jkt and which signed it, htm and htu naming the
 * request, iat within windowSec of now, ath the token's hash, and a jti
 * not seen before. Throws VerifyError `invalid_token`.
 */
export async function verifyDPoPProof(req: DPoPRequest, o: { accessToken: string; jkt: string; windowSec?: number; replay: DPoPReplayCache }): Promise<void> {
  const bad = (why: string, cause?: unknown) => new VerifyError('invalid_token', `DPoP proof: ${why}`, { cause })
  if (typeof req.proof !== 'string' || req.proof.length > 8192) throw bad('missing or too large')
  let header
  try {
    header = decodeProtectedHeader(req.proof)
  } catch (err) {
    throw bad('malformed', err)
  }
  const jwk = header.jwk as JWK | undefined
  if (!jwk || 'd' in jwk || 'k' in jwk || 'p' in jwk) throw bad('no public jwk in its header')
  let payload
  try {
    ({ payload } = await jwtVerify(req.proof, EmbeddedJWK, { typ: 'dpop+jwt', algorithms: ALGS, requiredClaims: ['jti', 'htm', 'htu', 'iat'] }))
  } catch (err) {
    throw bad('not a valid proof', err)
  }
  const window = o.windowSec ?? 60
  if (Math.abs(Date.now() / 1000 - (payload.iat as number)) > window) throw bad('iat out of window')
  if (payload.htm !== req.method.toUpperCase()) throw bad('htm is not the request method')
  let htu: string
  try {
    htu = target(payload.htu as string)
  } catch (err) {
    throw bad('htu is not a URL', err)
  }
  if (htu !== target(req.url)) throw bad('htu is not the request URL')
  if (payload.ath !== (await sha256(o.accessToken))) throw bad('ath is not the hash of the token')
  if ((await calculateJwkThumbprint(jwk)) !== o.jkt) throw bad('signed by another key than the token is bound to')
  if (!o.replay.remember(`${o.jkt} ${payload.jti}`, Date.now() + 2 * window * 1000)) throw bad('replayed')
}
