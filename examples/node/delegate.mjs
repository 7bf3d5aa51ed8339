// Delegate with @grpc/grpc-js and @grpc/proto-loader, then verify the child token with jose against
// the JWK Set the service serves over HTTP, discovered the way a gateway does (RFC 8414 metadata).
//
//   cd examples/node && npm ci && node delegate.mjs
//
// Reads the variables `make run` prints: DELEGATION_ADDRESS, DELEGATION_PARENT_TOKEN and
// DELEGATION_ADMIN_URL; optional DELEGATION_CLIENT_ID (default billing) and DELEGATION_SCOPES
// (space-separated, default warehouse.items.r). Prints one JSON line; exits 1 when the service refuses.
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import grpc from '@grpc/grpc-js';
import protoLoader from '@grpc/proto-loader';
import { createRemoteJWKSet, jwtVerify } from 'jose';

const DEADLINE_MS = 5000;
const here = path.dirname(fileURLToPath(import.meta.url));
const protoRoot = process.env.DELEGATION_PROTO_ROOT ?? path.join(here, '..', '..', 'protos');

function required(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`error: set ${name} (make run prints it)`);
    process.exit(2);
  }
  return value;
}

const address = required('DELEGATION_ADDRESS');
const parentToken = required('DELEGATION_PARENT_TOKEN');
const adminUrl = required('DELEGATION_ADMIN_URL');
const clientId = process.env.DELEGATION_CLIENT_ID ?? 'billing';
const scopes = (process.env.DELEGATION_SCOPES ?? 'warehouse.items.r').split(' ').filter(Boolean);

// The same .proto files every other client is generated from; field names as in the proto.
const definition = protoLoader.loadSync('delegation/v1/delegation.proto', {
  includeDirs: [protoRoot],
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
});
const { delegation } = grpc.loadPackageDefinition(definition);
const service = new delegation.v1.DelegationService(address, grpc.credentials.createInsecure());

function delegate(request) {
  return new Promise((resolve, reject) => {
    service.Delegate(request, { deadline: Date.now() + DEADLINE_MS }, (error, response) =>
      error ? reject(error) : resolve(response),
    );
  });
}

let child;
try {
  child = await delegate({ parent_token: parentToken, client_id: clientId, scopes });
} catch (error) {
  // The ErrorInfo and BadRequest details travel in the grpc-status-details-bin trailer.
  const details = error.metadata?.get('grpc-status-details-bin') ?? [];
  console.log(
    JSON.stringify({
      delegated: false,
      code: grpc.status[error.code],
      message: error.details,
      has_error_details: details.length > 0,
    }),
  );
  service.close();
  process.exit(1);
}
service.close();

// Discover the JWKS as a gateway would: the RFC 8414 metadata names the issuer and the jwks_uri.
const metadataUrl = new URL('/.well-known/oauth-authorization-server', adminUrl);
const metadata = await (await fetch(metadataUrl, { signal: AbortSignal.timeout(DEADLINE_MS) })).json();
const jwks = createRemoteJWKSet(new URL(metadata.jwks_uri), { timeoutDuration: DEADLINE_MS });
const { payload, protectedHeader } = await jwtVerify(child.access_token, jwks, {
  issuer: metadata.issuer,
  typ: 'at+jwt',
  algorithms: metadata.access_token_signing_alg_values_supported,
});

console.log(
  JSON.stringify({
    delegated: true,
    verified_by: 'jose',
    alg: protectedHeader.alg,
    kid: protectedHeader.kid,
    iss: payload.iss,
    sub: payload.sub,
    client_id: payload.client_id,
    scope: payload.scope,
    jti: payload.jti,
    act: payload.act,
    exp: payload.exp,
  }),
);
