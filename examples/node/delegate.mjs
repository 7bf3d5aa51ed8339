// Delegate with @grpc/grpc-js and @grpc/proto-loader, then verify the child token with jose against
// the JWK Set the service serves over HTTP, discovered the way a gateway does (RFC 8414 metadata).
//
//   cd examples/node && npm ci && node delegate.mjs
//
// Reads the variables `make run` prints: DELEGATION_ADDRESS, DELEGATION_PARENT_TOKEN and
// DELEGATION_ADMIN_URL; optional DELEGATION_CLIENT_ID (default billing), DELEGATION_SCOPES
// (space-separated, default warehouse.items.r) and DELEGATION_AUDIENCE (the `aud` the child must
// name, as the subsystem that receives it checks; default warehouse, the default scope's audience).
// Prints one JSON line; exits 1 when the service refuses or the child does not verify.
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import grpc from '@grpc/grpc-js';
import protoLoader from '@grpc/proto-loader';
import { createRemoteJWKSet, jwtVerify } from 'jose';
import protobuf from 'protobufjs';

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
const audience = process.env.DELEGATION_AUDIENCE ?? 'warehouse';

// The error model of AIP-193: a refused call's google.rpc.Status travels, serialised, in the
// grpc-status-details-bin trailer; its details are Any messages (ErrorInfo, BadRequest). The four
// messages are declared here with their field numbers from googleapis' google/rpc/*.proto.
const rpc = protobuf.Root.fromJSON({
  nested: {
    google: {
      nested: {
        protobuf: {
          nested: {
            Any: { fields: { type_url: { type: 'string', id: 1 }, value: { type: 'bytes', id: 2 } } },
          },
        },
        rpc: {
          nested: {
            Status: {
              fields: {
                code: { type: 'int32', id: 1 },
                message: { type: 'string', id: 2 },
                details: { rule: 'repeated', type: 'google.protobuf.Any', id: 3 },
              },
            },
            ErrorInfo: {
              fields: {
                reason: { type: 'string', id: 1 },
                domain: { type: 'string', id: 2 },
                metadata: { keyType: 'string', type: 'string', id: 3 },
              },
            },
            BadRequest: {
              fields: { field_violations: { rule: 'repeated', type: 'FieldViolation', id: 1 } },
              nested: {
                FieldViolation: {
                  fields: {
                    field: { type: 'string', id: 1 },
                    description: { type: 'string', id: 2 },
                    reason: { type: 'string', id: 3 },
                  },
                },
              },
            },
          },
        },
      },
    },
  },
});
const Status = rpc.lookupType('google.rpc.Status');
const ErrorInfo = rpc.lookupType('google.rpc.ErrorInfo');
const BadRequest = rpc.lookupType('google.rpc.BadRequest');

// What a refused call says: its code and message, the ErrorInfo (reason, domain, metadata) and one
// entry per BadRequest field violation (one per refused scope).
function errorDetails(error) {
  const refusal = {
    code: grpc.status[error.code],
    message: error.details,
    reason: '',
    domain: '',
    metadata: {},
    violations: [],
  };
  for (const bytes of error.metadata?.get('grpc-status-details-bin') ?? []) {
    const status = Status.toObject(Status.decode(bytes), { defaults: true });
    for (const detail of status.details) {
      const type = detail.type_url.slice(detail.type_url.lastIndexOf('/') + 1);
      if (type === 'google.rpc.ErrorInfo') {
        const info = ErrorInfo.toObject(ErrorInfo.decode(detail.value), { defaults: true });
        Object.assign(refusal, { reason: info.reason, domain: info.domain, metadata: info.metadata });
      } else if (type === 'google.rpc.BadRequest') {
        const bad = BadRequest.toObject(BadRequest.decode(detail.value), { defaults: true });
        for (const { field, reason, description } of bad.field_violations) {
          refusal.violations.push({ field, reason, description });
        }
      }
    }
  }
  return refusal;
}

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
  console.log(JSON.stringify({ delegated: false, ...errorDetails(error) }));
  service.close();
  process.exit(1);
}
service.close();

// Discover the JWKS as a gateway would: the RFC 8414 metadata names the issuer and the jwks_uri.
const metadataUrl = new URL('/.well-known/oauth-authorization-server', adminUrl);
const metadata = await (await fetch(metadataUrl, { signal: AbortSignal.timeout(DEADLINE_MS) })).json();
const jwks = createRemoteJWKSet(new URL(metadata.jwks_uri), { timeoutDuration: DEADLINE_MS });
// As the subsystem that receives the child checks it: signature, issuer, type, and that it is meant
// for this audience (RFC 9068 §4: a resource server rejects a token whose aud does not name it).
let verified;
try {
  verified = await jwtVerify(child.access_token, jwks, {
    issuer: metadata.issuer,
    audience,
    typ: 'at+jwt',
    algorithms: metadata.access_token_signing_alg_values_supported,
  });
} catch (error) {
  const failure = { delegated: true, verified: false, error: error.code, claim: error.claim ?? null };
  console.log(JSON.stringify(failure));
  process.exit(1);
}
const { payload, protectedHeader } = verified;

console.log(
  JSON.stringify({
    delegated: true,
    verified_by: 'jose',
    alg: protectedHeader.alg,
    kid: protectedHeader.kid,
    iss: payload.iss,
    aud: payload.aud,
    sub: payload.sub,
    client_id: payload.client_id,
    scope: payload.scope,
    jti: payload.jti,
    act: payload.act,
    exp: payload.exp,
  }),
);
