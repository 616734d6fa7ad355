import * as client from 'openid-client'

// The agent authenticates with its workload ID token (RFC 7523 client assertion).
const workloadIdentity = (idToken) => (_as, _client, body) => {
  body.set('client_assertion_type', 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer')
  body.set('client_assertion', idToken)
}

export async function askAndMint({ errand, agentIdToken, user, goal }) {
  const config = await client.discovery(new URL(errand), 'agent-1', undefined, workloadIdentity(agentIdToken), {
    algorithm: 'oauth2', // RFC 8414 metadata
    execute: errand.startsWith('http://') ? [client.allowInsecureRequests] : [], // errand dev only
  })

  // Ask the user (CIBA + RAR); the poll waits until they approve in Errand.
  const ask = new URLSearchParams({
    login_hint: user,
    binding_message: 'fix the flaky test',
    scope: 'github.repo.read:acme/api',
    authorization_details: JSON.stringify([{ type: 'errand_task', goal }]),
  })
  ask.append('resource', 'https://api.github.com')
  ask.append('resource', 'http://localhost:9000')
  const request = await client.initiateBackchannelAuthentication(config, ask)
  const first = await client.pollBackchannelAuthenticationGrant(config, request)

  // Another token of the same task, for the second audience (RFC 8693).
  const [task] = first.authorization_details
  const second = await client.genericGrantRequest(config, 'urn:ietf:params:oauth:grant-type:token-exchange', {
    subject_token: agentIdToken,
    subject_token_type: 'urn:ietf:params:oauth:token-type:id_token',
    authorization_details: JSON.stringify([{ type: 'errand_task', task_id: task.task_id }]),
    resource: 'http://localhost:9000',
  })
  return { first, second }
}
