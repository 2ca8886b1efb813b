'use strict';
// The Node client against a scheduler that requires TLS with client certificates (mTLS) and
// bearer tokens. tests/e2e/test_node_client.py starts one and passes it in:
//   SWITCHYARD_SECURE_SCHEDULER                   HOST:PORT
//   SWITCHYARD_SECURE_CA                          CA that signed the scheduler's and the client's certificates
//   SWITCHYARD_SECURE_WRONG_CA                    an unrelated CA
//   SWITCHYARD_SECURE_CLIENT_CERT, _CLIENT_KEY    a client certificate and its key
//   SWITCHYARD_SECURE_TOKEN, _OTHER_TOKEN         two tokens of role client
// or, when the scheduler cannot do that, SWITCHYARD_SECURE_SKIP with the reason.

const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { test } = require('node:test');

const sy = require('..');
const { recordingLogger } = require('../testing/live');

const env = process.env;
const SECURE = env.SWITCHYARD_SECURE_SCHEDULER || '';
const SKIP = SECURE
  ? false
  : env.SWITCHYARD_SECURE_SKIP ||
    'no TLS scheduler: set SWITCHYARD_SECURE_SCHEDULER and its certificates (tests/e2e/test_node_client.py does)';

function secureTest(name, fn) {
  return test(name, { skip: SKIP, timeout: 20_000 }, fn);
}

/** A client of the secure scheduler; `options` override the working defaults (undefined removes one). */
function secureClient(options = {}) {
  const merged = {
    tlsCa: env.SWITCHYARD_SECURE_CA,
    tlsCert: env.SWITCHYARD_SECURE_CLIENT_CERT,
    tlsKey: env.SWITCHYARD_SECURE_CLIENT_KEY,
    token: env.SWITCHYARD_SECURE_TOKEN,
    failoverTimeoutMs: 0,
    timeoutMs: 5_000,
    logger: recordingLogger().logger,
    env: {},
    ...options,
  };
  for (const key of Object.keys(merged)) if (merged[key] === undefined) delete merged[key];
  return new sy.SchedulerClient(SECURE, merged);
}

async function using(client, fn) {
  try {
    return await fn(client);
  } finally {
    client.close();
  }
}

secureTest('with the CA, a client certificate and a token every call works', async () => {
  await using(secureClient(), async (client) => {
    assert.ok((await client.queues()).length > 0);
    await assert.rejects(client.get('no-such-task'), sy.NotFound);
  });
});

secureTest('the token can come from SWITCHYARD_TOKEN', async () => {
  await using(secureClient({ token: undefined, env: { SWITCHYARD_TOKEN: env.SWITCHYARD_SECURE_TOKEN } }), async (client) => {
    assert.ok((await client.queues()).length > 0);
  });
});

secureTest('without a token the call is refused as unauthenticated', async () => {
  await using(secureClient({ token: undefined }), async (client) => {
    await assert.rejects(client.queues(), (error) => {
      assert.ok(error instanceof sy.Unauthenticated, String(error));
      assert.doesNotMatch(error.message, new RegExp(env.SWITCHYARD_SECURE_TOKEN));
      return true;
    });
  });
});

secureTest('a token file is read again when it changes', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'switchyard-token-'));
  const tokenFile = path.join(dir, 'token');
  try {
    fs.writeFileSync(tokenFile, `${env.SWITCHYARD_SECURE_TOKEN}\n`);
    await using(secureClient({ token: undefined, tokenFile }), async (client) => {
      assert.ok((await client.queues()).length > 0);
      fs.writeFileSync(tokenFile, 'not-a-token-the-scheduler-knows\n');
      await assert.rejects(client.queues(), sy.Unauthenticated);
      fs.writeFileSync(tokenFile, `${env.SWITCHYARD_SECURE_OTHER_TOKEN}\n`);
      assert.ok((await client.queues()).length > 0, 'the rotated token works without a new client');
    });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

secureTest('a scheduler whose certificate another CA signed is not trusted', async () => {
  await using(secureClient({ tlsCa: env.SWITCHYARD_SECURE_WRONG_CA }), async (client) => {
    await assert.rejects(client.queues(), sy.Unavailable);
  });
});

secureTest('without a client certificate the scheduler refuses the connection', async () => {
  await using(secureClient({ tlsCert: undefined, tlsKey: undefined }), async (client) => {
    await assert.rejects(client.queues(), (error) => error instanceof sy.Unavailable, 'mTLS is required');
  });
});

secureTest('plaintext does not reach a TLS scheduler', async () => {
  await using(secureClient({ tlsCa: undefined, tlsCert: undefined, tlsKey: undefined }), async (client) => {
    await assert.rejects(client.queues(), sy.Unavailable);
  });
});
