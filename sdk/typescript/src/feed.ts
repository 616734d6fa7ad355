// Following Errand's revocation feed: GET /v1/revocations/stream
// (Server-Sent Events, resumed with Last-Event-ID) and, while the stream
// is down, GET /v1/revocations polled. The follower remembers each revoked
// credential's jti, and when it last heard from Errand, which is what the
// verifier's fail-closed bound is measured against.
import { createParser } from 'eventsource-parser'
import { errorFrom } from './client.js'
import { type TokenSource } from './tokens.js'

/** One revoked credential, as the feed shows it. */
export interface Revocation {
  seq: number
  jti: string
  task_id: string
  revoked_at: string
  reason: string
}

export interface FeedOptions {
  /** Errand's base URL. */
  baseUrl: string
  /** The resource server's identity token (an issuer of kind `resource`). */
  token: TokenSource
  /** How long to remember a revoked jti after its revocation (ms); longer than Errand's token_ttl_max. Default 1 h. */
  retentionMs?: number
  /** Polling interval while the stream is down (ms). Default 1000. */
  pollIntervalMs?: number
  /** A stream silent this long (ms) is dropped and reopened; Errand sends a keep-alive every 15 s. Default 25000. */
  streamIdleMs?: number
  /** Longest wait before reopening a failed stream (ms); the feed is polled meanwhile. Default 30000. */
  maxStreamBackoffMs?: number
  fetch?: typeof fetch
  /** Called with every error of the stream or the polls (for logs and metrics). */
  onError?: (err: unknown) => void
}

const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    if (signal.aborted) return resolve()
    const t = setTimeout(done, ms)
    function done() {
      clearTimeout(t)
      signal.removeEventListener('abort', done)
      resolve()
    }
    signal.addEventListener('abort', done, { once: true })
  })

/** Follows the revocation feed; see ErrandVerifier for how it is used. */
export class RevocationFollower {
  private readonly o: Required<Omit<FeedOptions, 'onError' | 'fetch'>> & Pick<FeedOptions, 'onError'> & { fetch: typeof fetch }
  private readonly revoked = new Map<string, number>() // jti → forget after (ms since epoch)
  private cursor = 0
  private heard = -Infinity // performance.now() of the last word from Errand
  private readonly stop = new AbortController()
  private running?: Promise<void>
  private lastPrune = 0
  /** The stream's state, for health checks: 'streaming', 'polling' or 'stopped'. */
  mode: 'starting' | 'streaming' | 'polling' | 'stopped' = 'starting'
  /** The last error met, if any. */
  lastError?: unknown

  constructor(opts: FeedOptions) {
    this.o = {
      retentionMs: 60 * 60 * 1000, pollIntervalMs: 1000, streamIdleMs: 25000, maxStreamBackoffMs: 30000,
      ...opts, baseUrl: opts.baseUrl.replace(/\/+$/, ''), fetch: opts.fetch ?? globalThis.fetch,
    }
  }

  /**
   * start reads the whole feed once (so that what was revoked before this
   * process started is known), then follows it in the background. It
   * rejects when that first read fails.
   */
  async start(): Promise<void> {
    if (this.running) return
    while (await this.poll()) {}
    this.running = this.run()
  }

  /** close stops following; afterwards the feed counts as down. */
  async close(): Promise<void> {
    this.stop.abort()
    this.mode = 'stopped'
    await this.running
  }

  /** isRevoked reports whether the feed has shown this jti revoked. */
  isRevoked(jti: string): boolean {
    return this.revoked.has(jti)
  }

  /** sinceHeardMs is how long ago (ms) Errand last answered the feed; Infinity before the first answer. */
  sinceHeardMs(): number {
    return this.mode === 'stopped' ? Infinity : performance.now() - this.heard
  }

  /** How long a revoked jti is remembered (ms). */
  get retentionMs(): number {
    return this.o.retentionMs
  }

  /** The feed position read up to. */
  position(): number {
    return this.cursor
  }

  private add(r: Revocation) {
    const at = Date.parse(r.revoked_at)
    this.revoked.set(r.jti, (Number.isNaN(at) ? Date.now() : at) + this.o.retentionMs)
    const now = Date.now()
    if (now - this.lastPrune > 60000) {
      this.lastPrune = now
      for (const [jti, until] of this.revoked) if (until < now) this.revoked.delete(jti)
    }
  }

  // poll reads one page after the cursor; it returns whether more remain.
  private async poll(): Promise<boolean> {
    const sent = performance.now()
    const limit = 1000
    const res = await this.o.fetch(`${this.o.baseUrl}/v1/revocations?since=${this.cursor}&limit=${limit}`, {
      headers: { authorization: `Bearer ${await this.o.token()}`, accept: 'application/json' },
      signal: AbortSignal.any([this.stop.signal, AbortSignal.timeout(10000)]),
    })
    if (!res.ok) throw await errorFrom(res)
    const page = (await res.json()) as { revocations: Revocation[]; next_cursor: string }
    for (const r of page.revocations) this.add(r)
    const next = Number(page.next_cursor)
    if (Number.isSafeInteger(next) && next > this.cursor) this.cursor = next
    this.heard = Math.max(this.heard, sent)
    return page.revocations.length >= limit
  }

  private async run(): Promise<void> {
    let backoff = 500
    while (!this.stop.signal.aborted) {
      let opened = false
      try {
        opened = await this.stream()
      } catch (err) {
        if (this.stop.signal.aborted) break
        this.lastError = err
        this.o.onError?.(err)
      }
      if (this.stop.signal.aborted) break
      if (opened) backoff = 500
      // The stream is down: poll until it is time to open it again.
      this.mode = 'polling'
      const until = performance.now() + backoff
      for (;;) {
        try {
          while (await this.poll()) {}
        } catch (err) {
          if (this.stop.signal.aborted) break
          this.lastError = err
          this.o.onError?.(err)
        }
        const left = until - performance.now()
        if (left <= 0 || this.stop.signal.aborted) break
        await sleep(Math.min(this.o.pollIntervalMs, left), this.stop.signal)
      }
      backoff = Math.min(this.o.maxStreamBackoffMs, backoff * 2)
    }
  }

  // stream follows the SSE stream until it ends; it returns whether it
  // opened (and throws when it could not).
  private async stream(): Promise<boolean> {
    const ctl = new AbortController()
    const signal = AbortSignal.any([this.stop.signal, ctl.signal])
    let idle: ReturnType<typeof setTimeout> | undefined
    const alive = () => {
      clearTimeout(idle)
      idle = setTimeout(() => ctl.abort(new Error(`the revocation stream was silent for ${this.o.streamIdleMs} ms`)), this.o.streamIdleMs)
    }
    alive()
    try {
      const res = await this.o.fetch(`${this.o.baseUrl}/v1/revocations/stream`, {
        headers: {
          authorization: `Bearer ${await this.o.token()}`,
          accept: 'text/event-stream',
          'last-event-id': String(this.cursor),
        },
        signal,
      })
      if (!res.ok || !res.body) throw await errorFrom(res)
      this.mode = 'streaming'
      this.heard = performance.now()
      const parser = createParser({
        onEvent: (ev) => {
          if (ev.event !== 'revocation') return
          const r = JSON.parse(ev.data) as Revocation
          this.add(r)
          const seq = Number(ev.id ?? r.seq)
          if (Number.isSafeInteger(seq) && seq > this.cursor) this.cursor = seq
        },
      })
      const decoder = new TextDecoder()
      try {
        for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
          // Anything, a keep-alive comment too, is a word from Errand.
          this.heard = performance.now()
          alive()
          parser.feed(decoder.decode(chunk, { stream: true }))
        }
      } catch (err) {
        if (!this.stop.signal.aborted) {
          this.lastError = err
          this.o.onError?.(ctl.signal.aborted ? ctl.signal.reason : err)
        }
      }
      return true
    } finally {
      clearTimeout(idle)
    }
  }
}
