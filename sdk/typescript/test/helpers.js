// Test helpers: a real `errand dev` through the interop suite's harness
// (which builds errand once, or takes ERRAND_BIN), and a small HTTP proxy
// in front of it that can inject faults (a 503 with Retry-After, a cut
// stream) and records what it forwarded. The proxy is no imitation of
// Errand: every answer it does not inject is Errand's.
import { createServer, request } from 'node:http'
import { startDev, cleanup } from '../../../interop/lib/harness.js'

export { startDev, cleanup }
export const AUDIENCE = 'http://localhost:9000'
export const READ = 'github.repo.read:acme/api'
export const WRITE = 'github.pr.write:acme/api'

// startProxy forwards to target; inject(req) may answer first (return true).
export async function startProxy(target, inject = () => false) {
  const seen = []
  const sockets = new Set()
  const server = createServer((req, res) => {
    seen.push({ method: req.method, url: req.url, headers: req.headers })
    if (inject(req, res)) return
    const up = request(target + req.url, { method: req.method, headers: { ...req.headers, host: new URL(target).host } }, (ur) => {
      res.writeHead(ur.statusCode, ur.headers)
      ur.pipe(res)
    })
    up.on('error', () => res.destroy())
    req.pipe(up)
  })
  server.on('connection', (s) => {
    sockets.add(s)
    s.on('close', () => sockets.delete(s))
  })
  await new Promise((r) => server.listen(0, '127.0.0.1', r))
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    seen,
    // cut drops every open connection (a stream ends abruptly).
    cut: () => { for (const s of sockets) s.destroy() },
    stop: () => new Promise((r) => { for (const s of sockets) s.destroy(); server.close(r) }),
  }
}

export const until = async (cond, ms, step = 20) => {
  const deadline = Date.now() + ms
  for (;;) {
    const v = await cond()
    if (v) return v
    if (Date.now() > deadline) return v
    await new Promise((r) => setTimeout(r, step))
  }
}
