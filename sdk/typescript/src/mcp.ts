// Errand for the MCP TypeScript SDK (@modelcontextprotocol/sdk 1.x):
// - on the MCP server, a verifier for the SDK's requireBearerAuth, RFC 9728
//   Protected Resource Metadata naming Errand through the SDK's
//   mcpAuthMetadataRouter, and a per-tool scope check;
// - on the agent, an OAuthClientProvider with which the SDK's client gets a
//   task token from Errand's token endpoint (RFC 8693 token exchange, the
//   task named by an RFC 9396 errand_task detail) for the MCP server's
//   resource URI, found by the SDK's own discovery.
import type { OAuthTokenVerifier } from '@modelcontextprotocol/sdk/server/auth/provider.js'
import type { AuthInfo } from '@modelcontextprotocol/sdk/server/auth/types.js'
import type { OAuthClientProvider } from '@modelcontextprotocol/sdk/client/auth.js'
import type {
  OAuthClientInformationMixed, OAuthClientMetadata, OAuthMetadata, OAuthTokens,
} from '@modelcontextprotocol/sdk/shared/auth.js'
import type { OAuthDiscoveryState } from '@modelcontextprotocol/sdk/client/auth.js'
import { InvalidTokenError, InsufficientScopeError, ServerError } from '@modelcontextprotocol/sdk/server/auth/errors.js'
import { mcpAuthMetadataRouter } from '@modelcontextprotocol/sdk/server/auth/router.js'
import { VerifyError } from './errors.js'
import { scopesCover } from './scope.js'
import { type ErrandVerifier } from './verifier.js'
import { type TokenInput, toTokenSource } from './tokens.js'

/**
 * mcpTokenVerifier adapts an ErrandVerifier to the SDK's OAuthTokenVerifier,
 * for requireBearerAuth({ verifier }). A refused token becomes the SDK's
 * InvalidTokenError (401 with WWW-Authenticate), a feed outage too (the
 * token cannot be trusted now). The AuthInfo carries the token's canonical
 * scopes, `resource` (its audience), and in `extra` the task, jti, user
 * and agent.
 */
export function mcpTokenVerifier(verifier: ErrandVerifier): OAuthTokenVerifier {
  return {
    async verifyAccessToken(token: string): Promise<AuthInfo> {
      try {
        const v = await verifier.verify(token)
        return {
          token, clientId: v.clientId, scopes: v.scopes, expiresAt: v.expiresAt,
          resource: new URL(verifier.audience),
          extra: { taskId: v.taskId, jti: v.jti, subject: v.subject, agent: v.agent },
        }
      } catch (err) {
        if (err instanceof VerifyError) {
          if (err.code === 'insufficient_scope') throw new InsufficientScopeError(err.message)
          throw new InvalidTokenError(err.message)
        }
        throw new ServerError('token verification failed')
      }
    },
  }
}

/**
 * hasScope reports whether the request's AuthInfo (a tool handler's
 * `extra.authInfo`) covers `scope` by Errand's pattern containment, e.g.
 * hasScope(extra.authInfo, 'github.pr.write:acme/api'). The SDK's own
 * requiredScopes compares strings exactly, which is not containment.
 */
export function hasScope(authInfo: AuthInfo | undefined, scope: string): boolean {
  if (!authInfo) return false
  try {
    return scopesCover(authInfo.scopes, scope)
  } catch {
    return false // a malformed scope (say, a tool argument "acme/../x") is covered by nothing
  }
}

/** fetchErrandMetadata reads Errand's RFC 8414 metadata. */
export async function fetchErrandMetadata(errandUrl: string, fetchFn: typeof fetch = globalThis.fetch): Promise<OAuthMetadata> {
  const base = errandUrl.replace(/\/+$/, '')
  const res = await fetchFn(`${base}/.well-known/oauth-authorization-server`, { headers: { accept: 'application/json' } })
  if (!res.ok) throw new Error(`Errand's metadata: ${res.status}`)
  const md = (await res.json()) as OAuthMetadata
  if (md.issuer !== base) throw new Error(`Errand's metadata names issuer ${md.issuer}, not ${base}`)
  return md
}

export interface ProtectedResourceOptions {
  /** Errand's URL (its public_url). */
  errandUrl: string
  /** The MCP server's resource URI, e.g. https://mcp.example.com/mcp: the tokens' audience. */
  resourceServerUrl: URL
  /** Errand scopes to advertise in scopes_supported. */
  scopesSupported?: string[]
  resourceName?: string
  fetch?: typeof fetch
}

/**
 * errandMetadataRouter is the SDK's mcpAuthMetadataRouter fed with Errand's
 * metadata: it serves RFC 9728 Protected Resource Metadata at
 * /.well-known/oauth-protected-resource<path> naming Errand as the
 * authorization server. Mount it at the app's root.
 */
export async function errandMetadataRouter(o: ProtectedResourceOptions): Promise<ReturnType<typeof mcpAuthMetadataRouter>> {
  const oauthMetadata = await fetchErrandMetadata(o.errandUrl, o.fetch)
  return mcpAuthMetadataRouter({
    oauthMetadata, resourceServerUrl: o.resourceServerUrl, scopesSupported: o.scopesSupported, resourceName: o.resourceName,
  })
}

const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange'
const ID_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:id_token'
const JWT_BEARER = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer'

export interface TaskTokenProviderOptions {
  /**
   * Errand's URL. The provider sends the agent's identity token to this
   * authorization server only, whatever the MCP server's metadata names.
   */
  errandUrl: string
  /** The agent's workload identity token (a TokenSource, or a string). */
  agentToken: TokenInput
  /** The approved task whose token the MCP server is to receive. */
  taskId: string
  /** The Errand scopes to ask for (within the task's approval). */
  scopes: string[]
  /** The agent's client_id as Errand knows it (its `sub`); informative. */
  clientId?: string
  fetch?: typeof fetch
}

/**
 * ErrandTaskAuthProvider is an OAuthClientProvider for the SDK's
 * StreamableHTTPClientTransport ({ authProvider }). It runs no browser
 * flow: when the MCP server answers 401, the SDK discovers Errand through
 * the server's RFC 9728 metadata and calls prepareTokenRequest, which asks
 * Errand's token endpoint for a token of the task (RFC 8693 token exchange
 * with the agent's identity token, authenticated by it as an RFC 7523
 * client assertion); the SDK adds `resource`, the MCP server's URI, which
 * Errand makes the token's audience. A closed task makes the exchange fail
 * and the SDK's call reject.
 */
export class ErrandTaskAuthProvider implements OAuthClientProvider {
  private saved?: OAuthTokens
  private metadata?: Promise<OAuthMetadata>
  private discovery: Partial<OAuthDiscoveryState> = {}
  private readonly agentToken: () => Promise<string>
  private readonly o: TaskTokenProviderOptions

  constructor(o: TaskTokenProviderOptions) {
    this.o = o
    this.agentToken = toTokenSource(o.agentToken)
  }

  /**
   * discoveryState pins the authorization server to Errand, with Errand's
   * metadata read by this provider: the SDK then skips its own discovery
   * of the authorization server (whose 1.32 schema also insists on an
   * authorization_endpoint, which Errand, having no browser flow for
   * agents, does not advertise). The MCP server's RFC 9728 metadata is
   * still read by the SDK, for the resource indicator.
   */
  async discoveryState(): Promise<OAuthDiscoveryState> {
    this.metadata ??= fetchErrandMetadata(this.o.errandUrl, this.o.fetch)
    const authorizationServerMetadata = await this.metadata
    return { ...this.discovery, authorizationServerUrl: authorizationServerMetadata.issuer, authorizationServerMetadata }
  }

  saveDiscoveryState(state: OAuthDiscoveryState): void {
    // Keep what the SDK learnt of the MCP server; never another authorization server.
    this.discovery = { resourceMetadataUrl: state.resourceMetadataUrl, resourceMetadata: state.resourceMetadata }
  }

  get redirectUrl(): undefined {
    return undefined
  }

  get clientMetadata(): OAuthClientMetadata {
    return {
      redirect_uris: [], grant_types: [TOKEN_EXCHANGE], token_endpoint_auth_method: 'private_key_jwt',
      client_name: this.o.clientId ?? 'errand-agent', scope: this.o.scopes.join(' '),
    }
  }

  clientInformation(): OAuthClientInformationMixed {
    return { client_id: this.o.clientId ?? 'errand-agent' }
  }

  tokens(): OAuthTokens | undefined {
    return this.saved
  }

  saveTokens(tokens: OAuthTokens): void {
    this.saved = tokens
  }

  invalidateCredentials(scope: 'all' | 'client' | 'tokens' | 'verifier' | 'discovery'): void {
    if (scope === 'all' || scope === 'tokens') this.saved = undefined
  }

  async prepareTokenRequest(): Promise<URLSearchParams> {
    return new URLSearchParams({
      grant_type: TOKEN_EXCHANGE,
      subject_token: await this.agentToken(),
      subject_token_type: ID_TOKEN_TYPE,
      scope: this.o.scopes.join(' '),
      authorization_details: JSON.stringify([{ type: 'errand_task', task_id: this.o.taskId }]),
    })
  }

  // A property, not a method: the SDK calls it detached from the provider.
  addClientAuthentication = async (_headers: Headers, params: URLSearchParams): Promise<void> => {
    params.set('client_assertion_type', JWT_BEARER)
    params.set('client_assertion', await this.agentToken())
  }

  redirectToAuthorization(): never {
    throw new Error('ErrandTaskAuthProvider runs no browser flow: the task must be approved in Errand first')
  }

  saveCodeVerifier(): void {}

  codeVerifier(): never {
    throw new Error('ErrandTaskAuthProvider runs no authorization code flow')
  }
}
