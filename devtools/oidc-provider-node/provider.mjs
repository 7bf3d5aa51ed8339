// A real, certified OpenID provider (panva's oidc-provider) for the tests, on loopback only.
//
//   node provider.mjs SETTINGS_FILE
//
// SETTINGS_FILE (JSON, written by tests/oidc/provider.py) holds the port, the confidential clients and the
// private signing keys (a JWK Set). The provider issues JWT access tokens for client_credentials: every
// resource indicator below names the algorithm its tokens are signed with, all for one audience. SIGHUP
// re-reads the file and swaps in a provider with the new keys (a key rotation, on the same port); the
// provider prints one JSON line when it listens and one after each reload.

import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';

import Provider from 'oidc-provider';

const settingsFile = process.argv[2];
if (!settingsFile) {
  console.error('usage: node provider.mjs SETTINGS_FILE');
  process.exit(2);
}

function build() {
  const settings = JSON.parse(readFileSync(settingsFile, 'utf8'));
  const issuer = `http://127.0.0.1:${settings.port}`;
  const resources = settings.resources; // { "urn:...": { alg, scope } }
  const provider = new Provider(issuer, {
    clients: settings.clients.map((client) => ({
      client_id: client.client_id,
      client_secret: client.client_secret,
      grant_types: ['client_credentials'],
      redirect_uris: [],
      response_types: [],
      token_endpoint_auth_method: 'client_secret_basic',
      scope: client.scope,
    })),
    jwks: settings.jwks,
    scopes: settings.scopes,
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: { enabled: false },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => Object.keys(resources)[0],
        useGrantedResource: () => true,
        getResourceServerInfo: (ctx, resourceIndicator) => {
          const resource = resources[resourceIndicator];
          if (!resource) {
            throw new Provider.errors.InvalidTarget();
          }
          return {
            scope: resource.scope,
            audience: settings.audience,
            accessTokenTTL: settings.access_token_ttl,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: resource.alg } },
          };
        },
      },
    },
    // An organisation id claim for the clients that have one (the bearer_id_claim mapping reads it).
    extraTokenClaims: (ctx, token) => {
      const client = settings.clients.find((each) => each.client_id === token.clientId);
      return client && client.org_id ? { org_id: client.org_id } : undefined;
    },
  });
  provider.on('server_error', (ctx, error) => console.error(JSON.stringify({ server_error: String(error) })));
  return { provider, port: settings.port, issuer };
}

let current = build();
const server = createServer((request, response) => current.provider.callback()(request, response));
server.listen(current.port, '127.0.0.1', () => {
  console.log(JSON.stringify({ event: 'listening', issuer: current.issuer }));
});

process.on('SIGHUP', () => {
  try {
    current = build();
    console.log(JSON.stringify({ event: 'reloaded', issuer: current.issuer }));
  } catch (error) {
    console.log(JSON.stringify({ event: 'reload_failed', error: String(error) }));
  }
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
