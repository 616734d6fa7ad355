// The agent's client of Errand's REST API (/v1): create a task, wait for
// the user's approval, mint tokens and read secrets within it, close it.
// Idempotent calls are retried on 429 and 503 (honouring Retry-After) and
// on network errors; a mint is made idempotent by an Idempotency-Key that
// the client generates, so that its retries never mint twice.
import { ErrandError } from './errors.js'
import { type TokenInput, type TokenSource, toTokenSource } from './tokens.js'
import { createDPoPProof } from './dpop.js'
import type { CryptoKey } from 'jose'

/** A task, as Errand renders it. */
export interface Task {
  id: string
  status: 'pending' | 'approved' | 'denied' | 'closed' | 'expired' | 'revoked' | string
  version: number
  digest: string
  agent: string
  on_behalf_of: string
  goal: string
  scopes: string[]
  approved_scopes: string[]
  audiences: string[]
  approved_audiences: string[]
  risk: string
  tool?: string
  dataset?: string
  ttl_capped: boolean
  deny_reason?: string
  created_at: string
  approved_at: string | null
  expires_at: string
  closed_at: string | null
  max_credentials?: number
  max_resources?: number
  require_dpop: boolean
  [extra: string]: unknown
}

export interface CreateTaskRequest {
  /** The user's `sub` (or `<issuer>#<sub>` with several user issuers). */
  on_behalf_of: string
  goal: string
  scopes: string[]
  audiences: string[]
  ttl_seconds: number
  tool?: string
  dataset?: string
  max_credentials?: number
  max_resources?: number
  require_dpop?: boolean
}

export interface ApproveRequest {
  scopes?: string[]
  audiences?: string[]
  ttl_seconds?: number
  /** The task's version and digest as the user saw them; a changed task is refused. */
  version?: number
  digest?: string
}

export interface MintRequest {
  scopes: string[]
  audience: string
  ttl_seconds?: number
  tool?: string
  dataset?: string
}

export interface MintOptions {
  /** Defaults to a fresh random key per mint() call, reused by its retries. */
  idempotencyKey?: string
  /**
   * Binds the token to this key (RFC 9449): each attempt carries a fresh
   * DPoP proof, with Errand's nonce when it asks for one.
   */
  dpopKey?: { privateKey: CryptoKey; publicKey: CryptoKey }
  signal?: AbortSignal
}

export interface MintedToken {
  access_token: string
  token_type: string
  issued_token_type: string
  expires_in: number
  scope: string
  jti: string
  task_id: string
  audience: string
  /** True when Errand answered a retry with the credential it had minted already. */
  replayed: boolean
}

export interface Secret {
  lease_id: string
  lease_duration: number
  renewable: boolean
  data: Record<string, unknown>
}

export interface TaskHistory {
  task: Task
  events: Array<{ seq: number; time: string; type: string; actor: unknown; task_id?: string; detail: unknown; hash: string }>
  credentials: Array<{ jti: string; kind: string; task_id: string; scopes: string[]; audience: string; issued_at: string; expires_at: string; revoked_at: string | null; [k: string]: unknown }>
  truncated: boolean
}

export interface RetryPolicy {
  /** Attempts in all, the first included. Default 4. */
  attempts: number
  /** First backoff in ms, doubled each time with jitter. Default 200. */
  baseDelayMs: number
  /** Longest wait between attempts, Retry-After included, in ms. Default 30000. */
  maxDelayMs: number
}

export interface ErrandClientOptions {
  /** Errand's base URL (its public_url), e.g. https://errand.example.com. */
  baseUrl: string | URL
  /** The caller's identity token: a TokenSource or a fixed string. */
  token: TokenInput
  retry?: Partial<RetryPolicy>
  /** Default: globalThis.fetch. */
  fetch?: typeof fetch
  /** Sent as User-Agent. */
  userAgent?: string
}

export interface WaitOptions {
  /** Give up after this long (ms); default 15 minutes. */
  timeoutMs?: number
  /** First polling interval (ms), growing by half each poll up to maxIntervalMs; default 500. */
  intervalMs?: number
  /** Default 5000. */
  maxIntervalMs?: number
  signal?: AbortSignal
}

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason)
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort)
      resolve()
    }, ms)
    const onAbort = () => {
      clearTimeout(t)
      reject(signal!.reason)
    }
    signal?.addEventListener('abort', onAbort, { once: true })
  })

/** retryAfterMs reads a Retry-After header: delay-seconds or an HTTP date. */
export function retryAfterMs(v: string | null, now = Date.now()): number | undefined {
  if (!v) return undefined
  if (/^\d+$/.test(v.trim())) return Number(v.trim()) * 1000
  const t = Date.parse(v)
  return Number.isNaN(t) ? undefined : Math.max(0, t - now)
}

/** Reads an error answer into an ErrandError. */
export async function errorFrom(res: Response): Promise<ErrandError> {
  const text = await res.text()
  let body: any
  try {
    body = JSON.parse(text)
  } catch {
    body = text
  }
  const ra = retryAfterMs(res.headers.get('retry-after'))
  return new ErrandError({
    status: res.status,
    code: (body && typeof body === 'object' && (body.code ?? body.error)) || `http_${res.status}`,
    title: body?.title,
    detail: body?.detail ?? body?.error_description,
    retryAfter: ra === undefined ? undefined : ra / 1000,
    body,
    dpopNonce: res.headers.get('dpop-nonce') ?? undefined,
  })
}

/** The agent's (or any principal's) client of Errand's REST API. */
export class ErrandClient {
  readonly baseUrl: string
  private readonly token: TokenSource
  private readonly retry: RetryPolicy
  private readonly fetchFn: typeof fetch
  private readonly userAgent: string
  private dpopNonce?: string

  constructor(opts: ErrandClientOptions) {
    this.baseUrl = String(opts.baseUrl).replace(/\/+$/, '')
    this.token = toTokenSource(opts.token)
    this.retry = { attempts: 4, baseDelayMs: 200, maxDelayMs: 30000, ...opts.retry }
    this.fetchFn = opts.fetch ?? globalThis.fetch
    this.userAgent = opts.userAgent ?? '@errand/sdk'
  }

  /**
   * request calls Errand and returns the parsed JSON body. `idempotent`
   * calls are retried on network errors, on 503, and on 429 that carries
   * Retry-After (a 429 without it, such as budget_exhausted, does not
   * come back with time); others are tried once.
   */
  async request<T>(method: string, path: string, init: { body?: unknown; form?: URLSearchParams; headers?: Record<string, string> | (() => Promise<Record<string, string>>); idempotent?: boolean; signal?: AbortSignal } = {}): Promise<{ body: T; res: Response }> {
    const idempotent = init.idempotent ?? (method === 'GET' || method === 'HEAD')
    const attempts = idempotent ? Math.max(1, this.retry.attempts) : 1
    for (let attempt = 1; ; attempt++) {
      let wait: number | undefined
      try {
        const headers: Record<string, string> = {
          authorization: `Bearer ${await this.token()}`,
          accept: 'application/json, application/problem+json',
          'user-agent': this.userAgent,
          ...(typeof init.headers === 'function' ? await init.headers() : init.headers),
        }
        let body: string | URLSearchParams | undefined
        if (init.form) {
          headers['content-type'] = 'application/x-www-form-urlencoded'
          body = init.form
        } else if (init.body !== undefined) {
          headers['content-type'] = 'application/json'
          body = JSON.stringify(init.body)
        }
        const res = await this.fetchFn(this.baseUrl + path, { method, headers, body, signal: init.signal })
        if (res.ok) {
          const text = await res.text()
          return { body: (text ? JSON.parse(text) : undefined) as T, res }
        }
        const err = await errorFrom(res)
        const retriable = res.status === 503 || (res.status === 429 && err.retryAfter !== undefined)
        if (!retriable || attempt >= attempts) throw err
        wait = err.retryAfter !== undefined ? err.retryAfter * 1000 : undefined
      } catch (err) {
        if (err instanceof ErrandError) throw err
        if (init.signal?.aborted) throw err
        // A network error: the request may or may not have reached Errand.
        if (attempt >= attempts) throw err
      }
      const backoff = this.retry.baseDelayMs * 2 ** (attempt - 1) * (0.5 + Math.random() / 2)
      await sleep(Math.min(this.retry.maxDelayMs, wait ?? backoff), init.signal)
    }
  }

  /** POST /v1/tasks: the agent asks for a task; it starts `pending`. */
  async createTask(req: CreateTaskRequest, opts: { signal?: AbortSignal } = {}): Promise<Task> {
    return (await this.request<Task>('POST', '/v1/tasks', { body: req, signal: opts.signal })).body
  }

  /** GET /v1/tasks/{id}. */
  async getTask(id: string, opts: { signal?: AbortSignal } = {}): Promise<Task> {
    return (await this.request<Task>('GET', `/v1/tasks/${encodeURIComponent(id)}`, { signal: opts.signal })).body
  }

  /** GET /v1/tasks?status=pending: a user's tasks waiting for a decision. */
  async listPending(opts: { signal?: AbortSignal } = {}): Promise<Task[]> {
    return (await this.request<{ tasks: Task[] }>('GET', '/v1/tasks?status=pending', { signal: opts.signal })).body.tasks
  }

  /** POST /v1/tasks/{id}/approve, as the task's user (may only narrow). */
  async approve(id: string, req: ApproveRequest = {}): Promise<Task> {
    return (await this.request<Task>('POST', `/v1/tasks/${encodeURIComponent(id)}/approve`, { body: req })).body
  }

  /** POST /v1/tasks/{id}/deny, as the task's user. */
  async deny(id: string, reason: string, check: { version?: number; digest?: string } = {}): Promise<Task> {
    return (await this.request<Task>('POST', `/v1/tasks/${encodeURIComponent(id)}/deny`, { body: { reason, ...check } })).body
  }

  /**
   * waitForApproval polls the task until the user has decided: it
   * resolves with the task once `approved`, and rejects with an
   * ErrandError of code `task_denied` (or `task_<status>`) otherwise, or
   * `wait_timeout` after timeoutMs. Polls back off from intervalMs to
   * maxIntervalMs; 429 and 503 answers are waited out (Retry-After).
   */
  async waitForApproval(id: string, opts: WaitOptions = {}): Promise<Task> {
    const deadline = Date.now() + (opts.timeoutMs ?? 15 * 60 * 1000)
    let interval = opts.intervalMs ?? 500
    const maxInterval = opts.maxIntervalMs ?? 5000
    for (;;) {
      const task = await this.getTask(id, { signal: opts.signal })
      if (task.status === 'approved') return task
      if (task.status !== 'pending') {
        throw new ErrandError({ status: 409, code: `task_${task.status}`, detail: task.deny_reason ?? `the task is ${task.status}`, body: task })
      }
      const left = deadline - Date.now()
      if (left <= 0) throw new ErrandError({ status: 408, code: 'wait_timeout', detail: `task ${id} is still pending`, body: task })
      await sleep(Math.min(interval, left), opts.signal)
      interval = Math.min(maxInterval, Math.round(interval * 1.5))
    }
  }

  /**
   * mint asks for an access token within the task's approval. It carries
   * an Idempotency-Key (yours, or a random one), so that its retries
   * return the same credential instead of minting another.
   */
  async mint(id: string, req: MintRequest, opts: MintOptions = {}): Promise<MintedToken> {
    const key = opts.idempotencyKey ?? crypto.randomUUID()
    const path = `/v1/tasks/${encodeURIComponent(id)}/tokens`
    const headers = async (): Promise<Record<string, string>> => {
      if (!opts.dpopKey) return { 'idempotency-key': key }
      const proof = await createDPoPProof({ keyPair: opts.dpopKey, method: 'POST', url: this.baseUrl + path, nonce: this.dpopNonce })
      return { 'idempotency-key': key, dpop: proof }
    }
    for (let tries = 0; ; tries++) {
      try {
        const { body, res } = await this.request<Omit<MintedToken, 'replayed'>>('POST', path, { body: req, headers, idempotent: true, signal: opts.signal })
        this.dpopNonce = res.headers.get('dpop-nonce') ?? this.dpopNonce
        return { ...body, replayed: res.headers.get('idempotent-replayed') === 'true' }
      } catch (err) {
        // RFC 9449 §8: sign the nonce Errand gave into the retry, once.
        if (opts.dpopKey && tries === 0 && err instanceof ErrandError && err.code === 'use_dpop_nonce' && err.dpopNonce) {
          this.dpopNonce = err.dpopNonce
          continue
        }
        throw err
      }
    }
  }

  /** POST /v1/tasks/{id}/secrets: a Vault dynamic secret for a configured role. */
  async secret(id: string, role: string, opts: { signal?: AbortSignal } = {}): Promise<Secret> {
    return (await this.request<Secret>('POST', `/v1/tasks/${encodeURIComponent(id)}/secrets`, { body: { role }, signal: opts.signal })).body
  }

  /** POST /v1/tasks/{id}/close: the task ends and every credential is revoked. */
  async close(id: string): Promise<Task & { revoked: number }> {
    return (await this.request<Task & { revoked: number }>('POST', `/v1/tasks/${encodeURIComponent(id)}/close`, { body: {} })).body
  }

  /** POST /v1/revoke (RFC 7009): revokes one of the caller's own access tokens. */
  async revoke(token: string): Promise<void> {
    await this.request<void>('POST', '/v1/revoke', { form: new URLSearchParams({ token }), idempotent: true })
  }

  /** GET /v1/tasks/{id}/history: the task's whole timeline (auditors only). */
  async history(id: string, opts: { signal?: AbortSignal } = {}): Promise<TaskHistory> {
    return (await this.request<TaskHistory>('GET', `/v1/tasks/${encodeURIComponent(id)}/history`, { signal: opts.signal })).body
  }
}
