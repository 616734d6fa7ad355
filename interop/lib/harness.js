// The harness of the interop suite: it builds the errand binary once (or
// takes ERRAND_BIN), starts a real `errand dev` on a free loopback port, and
// optionally a real `errand serve` on a fresh PostgreSQL database whose
// issuers are the dev process's identity provider (so that one /dev/token
// call gives ID tokens that both servers accept). Nothing here speaks OAuth:
// the clients under test are the stock libraries.
import { spawn, execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { mkdtemp, writeFile, rm, open } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { randomBytes } from 'node:crypto'

const run = promisify(execFile)

export const repoRoot = resolve(import.meta.dirname, '..', '..')

// The dev config's example catalog (cmd/errand/dev.go), which the serve
// config below repeats.
export const AUDIENCE_A = 'https://api.github.com'
export const AUDIENCE_B = 'http://localhost:9000'
export const READ = 'github.repo.read:acme/api'
export const WRITE = 'github.pr.write:acme/api'

let workdir
export async function work() {
  workdir ||= await mkdtemp(join(tmpdir(), 'errand-interop-'))
  return workdir
}

let built
// errandBin is ERRAND_BIN, or errand built once from this checkout.
export function errandBin() {
  built ||= (async () => {
    if (process.env.ERRAND_BIN) return resolve(process.env.ERRAND_BIN)
    const out = join(await work(), 'errand')
    await run('go', ['build', '-o', out, './cmd/errand'], { cwd: repoRoot, maxBuffer: 16 << 20 })
    return out
  })()
  return built
}

function freePort() {
  return new Promise((ok, fail) => {
    const s = createServer()
    s.unref()
    s.on('error', fail)
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address()
      s.close(() => ok(port))
    })
  })
}

async function waitReady(base, child, log, ms = 30000) {
  const deadline = Date.now() + ms
  for (;;) {
    if (child.exitCode !== null) {
      throw new Error(`errand exited with ${child.exitCode} before it was ready; its log: ${log}`)
    }
    try {
      const res = await fetch(base + '/readyz')
      if (res.status === 200) return
      await res.body?.cancel()
    } catch {}
    if (Date.now() > deadline) throw new Error(`${base}/readyz not 200 within ${ms} ms; log: ${log}`)
    await new Promise((r) => setTimeout(r, 100))
  }
}

// startProcess runs errand with args, its output in a log file; stop ends it.
async function startProcess(name, args, env = {}) {
  const bin = await errandBin()
  const log = join(await work(), `${name}.log`)
  const fh = await open(log, 'w')
  const child = spawn(bin, args, {
    cwd: await work(),
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', fh.fd],
  })
  let stdout = ''
  child.stdout.setEncoding('utf8')
  child.stdout.on('data', (d) => {
    stdout += d
  })
  const exited = new Promise((r) => child.once('exit', r))
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM')
      const t = setTimeout(() => child.kill('SIGKILL'), 10000)
      await exited
      clearTimeout(t)
    }
    await fh.close().catch(() => {})
  }
  // kill ends it at once (SIGKILL), as a crash would: no shutdown runs.
  const kill = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL')
      await exited
    }
    await fh.close().catch(() => {})
  }
  process.once('exit', () => child.exitCode === null && child.kill('SIGKILL'))
  return { child, log, stop, kill, stdout: () => stdout }
}

// startDev starts `errand dev --listen 127.0.0.1:0 --db :memory:` (with
// extra arguments, such as --config) and returns
// {name, issuer, token(kind, sub, groups), stop, log}.
export async function startDev(...extra) {
  const p = await startProcess('dev', ['dev', '--listen', '127.0.0.1:0', '--db', ':memory:', ...extra])
  let base
  const deadline = Date.now() + 30000
  while (!base) {
    const m = /Errand dev is ready at (http:\/\/127\.0\.0\.1:\d+)/.exec(p.stdout())
    if (m) base = m[1]
    else if (p.child.exitCode !== null || Date.now() > deadline) {
      throw new Error(`errand dev did not start; log: ${p.log}`)
    } else await new Promise((r) => setTimeout(r, 50))
  }
  await waitReady(base, p.child, p.log)
  const token = async (kind, sub, groups) => {
    const res = await fetch(base + '/dev/token', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ kind, sub, ...(groups ? { groups } : {}) }),
    })
    if (res.status !== 200) throw new Error(`/dev/token: ${res.status} ${await res.text()}`)
    return (await res.json()).id_token
  }
  return { name: 'errand dev', issuer: base, token, stop: p.stop, log: p.log, idp: (kind) => `${base}/dev/idp/${kind}`, signingAlg: 'EdDSA', dpopNonces: false, stepUp: false }
}

// postgresURL is the administrative database URL, as the Go tests take it.
// Without one the serve run is skipped, except under CI=true, where it fails.
export function postgresURL() {
  return process.env.ERRAND_TEST_DATABASE_URL
}

// startServe creates a fresh PostgreSQL database and runs `errand serve` on
// it (serve migrates at start), trusting dev's identity provider. extra is
// YAML appended to the config (top-level keys). The result's kill() ends
// the process with SIGKILL, and restart() starts it again on the same
// database, port and secrets.
export async function startServe(dev, { extra = '' } = {}) {
  const admin = postgresURL()
  const db = 'errand_interop_' + randomBytes(6).toString('hex')
  await run('psql', [admin, '-v', 'ON_ERROR_STOP=1', '-qAtc', `CREATE DATABASE ${db}`])
  const u = new URL(admin)
  u.pathname = '/' + db
  const port = await freePort()
  const base = `http://127.0.0.1:${port}`
  const cfg = `listen: 127.0.0.1:${port}
public_url: ${base}
database_url: "${u.href}"
issuers:
  - {url: "${dev.idp('agent')}", audience: errand, kind: agent, algorithms: [EdDSA]}
  - {url: "${dev.idp('user')}", audience: errand, kind: user, algorithms: [EdDSA], groups_claim: groups, auditor_group: auditors, admin_group: admins}
  - {url: "${dev.idp('resource')}", audience: errand, kind: resource, algorithms: [EdDSA]}
grants:
  - group: eng
    scopes: ["github.repo.read:acme/**", "github.pr.write:acme/**"]
actions:
  - {name: github.repo.read, class: read, risk: low}
  - {name: github.pr.write, class: write, risk: medium}
  - {name: github.keys.create, class: credential, risk: high}
audiences:
  - {url: "${AUDIENCE_A}", environment: prod, any_introspector: true}
  - {url: "${AUDIENCE_B}", environment: local, any_introspector: true}
limits: {token_ttl_max: 5m, task_ttl_max: 8h}
# The other run covers the defaults (EdDSA, no DPoP nonces); this one the options.
signing_alg: ES256
dpop: {nonce_every: 5m}
policies: ["step-up.cedar"]
system_secret: \${ERRAND_SYSTEM_SECRET}
${extra}`
  const path = join(await work(), `serve-${db}.yaml`)
  await writeFile(path, cfg, { mode: 0o600 })
  // A write to the prod audience needs the user's approval each time.
  await writeFile(join(await work(), 'step-up.cedar'), `@id("allow-the-rest")
permit (principal, action, resource);

@id("prod-writes-step-up")
@step_up("a write to production needs your approval each time")
forbid (principal, action, resource)
when { context.environment == "prod" && context.class == "write" };
`)
  const secret = randomBytes(24).toString('hex')
  let p
  let starts = 0
  const launch = async () => {
    p = await startProcess(starts++ ? `serve-${starts}` : 'serve', ['serve', '--config', path], { ERRAND_SYSTEM_SECRET: secret })
    try {
      await waitReady(base, p.child, p.log)
    } catch (err) {
      await p.stop()
      throw err
    }
  }
  await launch()
  const stop = async () => {
    await p.stop()
    await run('psql', [admin, '-qAtc', `DROP DATABASE IF EXISTS ${db} WITH (FORCE)`]).catch(() => {})
  }
  return {
    name: 'errand serve (PostgreSQL)', issuer: base, token: dev.token, stop, log: p.log, idp: dev.idp, signingAlg: 'ES256', dpopNonces: true, stepUp: true,
    kill: () => p.kill(), restart: launch, logs: () => p.log,
  }
}

// cleanup removes the work directory (the built binary and the logs) unless
// ERRAND_INTEROP_KEEP is set, for reading the logs after a failure.
export async function cleanup() {
  if (workdir && !process.env.ERRAND_INTEROP_KEEP) await rm(workdir, { recursive: true, force: true })
}

// rest calls Errand's own REST API (/v1/...), as the user (approving,
// denying) or the agent (creating a task) would; it is not under test here.
export async function rest(base, method, path, token, body) {
  const res = await fetch(base + path, {
    method,
    headers: {
      authorization: `Bearer ${token}`,
      ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
    },
    body: body !== undefined ? JSON.stringify(body) : undefined,
  })
  const text = await res.text()
  let json
  try {
    json = JSON.parse(text)
  } catch {}
  if (res.status >= 300) {
    const err = new Error(`${method} ${path}: ${res.status} ${text}`)
    err.status = res.status
    err.body = json
    throw err
  }
  return json
}
