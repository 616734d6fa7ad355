import { createServer } from 'node:http'
import { Webhook } from 'standardwebhooks'

// receiver answers 204 to a notification whose Standard Webhooks signature
// verifies under secret (the whsec_… of Errand's secret_file) and 400 to
// anything else; it hands each verified notification to onNotice once per
// webhook-id, since Errand delivers at least once.
export function receiver(secret, onNotice) {
  const wh = new Webhook(secret)
  const seen = new Set()
  return createServer((req, res) => {
    const chunks = []
    req.on('data', (c) => chunks.push(c))
    req.on('end', () => {
      let notice
      try {
        // Checks the signature and that webhook-timestamp is within 5 minutes.
        notice = wh.verify(Buffer.concat(chunks).toString('utf8'), req.headers)
      } catch {
        res.writeHead(400).end()
        return
      }
      const id = req.headers['webhook-id']
      if (!seen.has(id)) {
        seen.add(id)
        onNotice(notice, id) // {type, timestamp, data: {summary, url, task_id, agent_goal, …}}
      }
      res.writeHead(204).end()
    })
  })
}
