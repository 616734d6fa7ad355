// Small glue for the stock libraries: the client-authentication hooks that
// oauth4webapi and openid-client take (ClientAuth functions), and reading the
// error a library parsed. No request is built by hand here.
import * as oauth from 'oauth4webapi'

export const JWT_BEARER = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer'
export const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange'
export const CIBA = 'urn:openid:params:grant-type:ciba'
export const ID_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:id_token'
export const JWT_TYPE = 'urn:ietf:params:oauth:token-type:jwt'
export const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token'

// clientAssertion authenticates the caller with its workload ID token as an
// RFC 7523 client assertion (the "workload identity federation" pattern).
export function clientAssertion(idToken) {
  return (_as, _client, body, _headers) => {
    body.set('client_assertion_type', JWT_BEARER)
    body.set('client_assertion', idToken)
  }
}

// bearer authenticates the caller with its ID token in the Authorization
// header, as Errand's REST API does.
export function bearer(idToken) {
  return (_as, _client, _body, headers) => {
    headers.set('authorization', `Bearer ${idToken}`)
  }
}

// oauthError is the RFC 6749 §5.2 error the library parsed out of a failed
// call: a ResponseBodyError's `error` (with the body as `body`), or the
// `error` parameter of a WWW-Authenticate challenge. Anything else (the
// library could not parse the answer) is rethrown as is, so that the test
// fails with the library's own message.
export function oauthError(err) {
  if (err instanceof oauth.ResponseBodyError) {
    return { error: err.error, description: err.error_description, status: err.status, body: err.cause }
  }
  if (err instanceof oauth.WWWAuthenticateChallengeError) {
    const c = err.cause?.find((c) => c.parameters?.error) ?? err.cause?.[0]
    return { error: c?.parameters?.error, description: c?.parameters?.error_description, status: err.status, body: undefined, challenge: c }
  }
  throw err
}

// rejectsWith runs p, which must fail with an OAuth error the library parsed,
// and returns that error.
export async function rejectsWith(p) {
  try {
    await p
  } catch (err) {
    return oauthError(err)
  }
  throw new Error('the call succeeded; an OAuth error was expected')
}
