// make bench's peer: panva's oidc-provider (a certified OpenID provider) issuing ES256 JWT access tokens
// by client_credentials with a resource indicator, on loopback. Usage:
//   node server.mjs <port|0> <ready-file> <client-id> <client-secret>
// Writes the chosen port to <ready-file> once listening; stops on SIGTERM.
import { generateKeyPairSync } from 'node:crypto';
import { writeFileSync } from 'node:fs';

import Provider from 'oidc-provider';

const [port, readyFile, clientId, clientSecret] = process.argv.slice(2);
if (!readyFile || !clientId || !clientSecret) {
  console.error('usage: node server.mjs <port> <ready-file> <client-id> <client-secret>');
  process.exit(2);
}

const RESOURCE = 'urn:delegation-bench:api'; // bench/common.py PEER_RESOURCE
const SCOPES = 'warehouse.items.r warehouse.items.rw';
const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: 'bench-es256', alg: 'ES256', use: 'sig' };

const configuration = {
  clients: [
    {
      client_id: clientId,
      client_secret: clientSecret,
      grant_types: ['client_credentials'],
      redirect_uris: [],
      response_types: [],
      token_endpoint_auth_method: 'client_secret_basic',
      id_token_signed_response_alg: 'ES256',
      scope: SCOPES,
    },
  ],
  jwks: { keys: [signingKey] },
  scopes: SCOPES.split(' '),
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => RESOURCE,
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({
        scope: SCOPES,
        audience: RESOURCE,
        accessTokenTTL: 300,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: 'ES256' } },
      }),
    },
  },
};

const issuer = `http://127.0.0.1`;
const provider = new Provider(issuer, configuration);
const server = provider.listen(Number(port), '127.0.0.1', () => {
  writeFileSync(readyFile, `${server.address().port}\n`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
