'use strict';
// The package without a scheduler: its types match the contract, requests are checked before
// any call, and messages print as canonical proto3 JSON.

const assert = require('node:assert/strict');
const { execFileSync, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { test } = require('node:test');

const protoLoader = require('@grpc/proto-loader');

const sy = require('..');
const { contract, messageFields, typeNames } = require('../lib/protos');
const { fromWire } = require('../lib/convert');

const PACKAGE_ROOT = path.join(__dirname, '..');

test('messages.d.ts is generated from the current .proto files', () => {
  const result = spawnSync(process.execPath, [path.join(PACKAGE_ROOT, 'scripts', 'gen-types.js'), '--check'], {
    encoding: 'utf8',
  });
  assert.equal(result.status, 0, result.stderr);
});

test('the TypeScript types compile against what a user writes', (t) => {
  const tsc = path.join(PACKAGE_ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
  if (!fs.existsSync(tsc)) {
    t.skip('typescript is not installed (npm ci in clients/node installs it)');
    return;
  }
  const result = spawnSync(process.execPath, [tsc, '-p', path.join(__dirname, 'tsconfig.json')], { encoding: 'utf8' });
  assert.equal(result.status, 0, `tsc found errors:\n${result.stdout}${result.stderr}`);
});

test('field names are the proto3 JSON names protoc would give', () => {
  // The client speaks lowerCamelCase (protobufjs' conversion); protoc's JSON name rule is the
  // reference that Go's protojson and Python's json_format print.
  const snake = protoLoader.loadSync(['switchyard/v1/scheduler.proto'], { includeDirs: [contract().dir], keepCase: true });
  const protocJsonName = (name) => name.replace(/_(.)/g, (_, next) => next.toUpperCase());
  for (const fullName of typeNames().messages.filter((name) => name.startsWith('switchyard.v1.'))) {
    const expected = snake[fullName].type.field.map((field) => protocJsonName(field.name));
    assert.deepEqual(messageFields(fullName).map((field) => field.name), expected, fullName);
  }
});

test('the public names are exactly these', () => {
  assert.deepEqual(Object.keys(sy).sort(), [
    'AUTO_IDEMPOTENCY_KEY_PREFIX', 'Aborted', 'AlreadyExists', 'Cancelled', 'DEFAULT_SCHEDULER_PORT',
    'DEFAULT_TARGET', 'DeadlineExceeded', 'FailedPrecondition', 'InternalError', 'InvalidArgument',
    'LEADER_METADATA_KEY', 'NotFound', 'OutOfRange', 'PermissionDenied', 'ResourceExhausted',
    'SchedulerClient', 'SwitchyardError', 'TERMINAL_STATES', 'TOKEN_ENV', 'Unauthenticated',
    'Unavailable', 'Unimplemented', 'buildSubmitRequest', 'isTerminal', 'parseAddresses', 'protoJSON',
  ]);
});

test('an ES module imports the same names', () => {
  const out = execFileSync(process.execPath, ['--input-type=module', '-e',
    "import { SchedulerClient, NotFound } from '@switchyard/client'; console.log(typeof SchedulerClient, typeof NotFound);"],
  { cwd: PACKAGE_ROOT, encoding: 'utf8', env: { ...process.env, NODE_PATH: '' } });
  assert.equal(out.trim(), 'function function');
});

test('addresses: several, defaults, repeats', () => {
  assert.deepEqual(sy.parseAddresses('a:1, b ,a:1,[::1],::1'), ['a:1', 'b:50051', '[::1]:50051', '[::1]:50051'].filter(
    (value, index, all) => all.indexOf(value) === index,
  ));
  assert.deepEqual(sy.parseAddresses(['x:2', 'unix:/tmp/s']), ['x:2', 'unix:/tmp/s']);
  assert.throws(() => sy.parseAddresses(' , '), sy.InvalidArgument);
});

test('submissions are checked before any call, each mistake with its own message', () => {
  const cases = [
    [['t', { args: [1], kwargsJson: '{}' }], /not a mix/],
    [['t', { args: 'x' }], /args must be an array/],
    [['t', { priority: 11 }], /priority must be 0/],
    [['t', { priority: 1.5 }], /priority must be 0/],
    [['t', { gpu: 'lots' }], /gpu must be one of unspecified, none, preferred, required/],
    [['t', { serializer: 'xml' }], /serializer must be one of unspecified, json, msgpack/],
    [['t', { softTimeLimitSeconds: 5, hardTimeLimitSeconds: 2 }], /must not exceed/],
    [['t', { hardTimeLimitSeconds: -1 }], /finite number of seconds/],
    [['t', { contentTyp: 'text' }], /unknown submit option "contentTyp"/],
    [['t', { labels: { zone: 3 } }], /labels.zone must be a string/],
    [['t', { kwargs: { n: 2 ** 60 } }], /beyond 2\^53/],
    [['t', { kwargs: { n: 10n } }], /BigInt/],
    [['t', { args: [NaN] }], /JSON cannot carry/],
    [['', {}], /task name/],
  ];
  for (const [args, message] of cases) {
    assert.throws(() => sy.buildSubmitRequest(...args), (error) => error instanceof sy.InvalidArgument && message.test(error.message),
      `${JSON.stringify(args, (_, v) => (typeof v === 'bigint' ? `${v}n` : v))} should fail with ${message}`);
  }
});

test('arguments go as structured values, JSON text passes through', () => {
  const structured = sy.buildSubmitRequest('t', { args: [1, 'a'], kwargs: { x: { y: [null, true] } }, gpu: 'required' });
  assert.deepEqual(structured.args, { values: [{ numberValue: 1 }, { stringValue: 'a' }] });
  assert.deepEqual(structured.kwargs.fields.x, {
    structValue: { fields: { y: { listValue: { values: [{ nullValue: 'NULL_VALUE' }, { boolValue: true }] } } } },
  });
  assert.equal(structured.gpu, 'GPU_REQUIREMENT_REQUIRED');
  const text = sy.buildSubmitRequest('t', { argsJson: '[18446744073709551615]' });
  assert.equal(text.argsJson, '[18446744073709551615]');
  assert.equal(text.args, undefined);
});

test('a task prints as canonical proto3 JSON and reads back as friendly values', () => {
  const definition = contract().definition['switchyard.v1.Task'];
  const wire = definition.deserialize(definition.serialize({
    taskId: 't1',
    state: 'TASK_STATE_SUCCEEDED',
    gpuMemoryMb: '18446744073709551615',
    progress: 1,
    submittedAt: { seconds: 1700000000, nanos: 120000000 },
    startedAt: { seconds: 1700000001, nanos: 123456000 },
    finishedAt: { seconds: 1700000002, nanos: 0 },
    labels: { zone: 'eu' },
    resultJson: '{"n": 3}',
    result: { structValue: { fields: { n: { numberValue: 3 } } } },
  }));
  const task = fromWire('switchyard.v1.Task', wire);
  assert.equal(task.state, 'TASK_STATE_SUCCEEDED');
  assert.ok(task.submittedAt instanceof Date);
  assert.equal(task.submittedAt.toISOString(), '2023-11-14T22:13:20.120Z');
  assert.equal(task.dispatchedAt, null);
  assert.deepEqual(task.result, { n: 3 });
  assert.deepEqual(sy.protoJSON(task), {
    taskId: 't1',
    state: 'TASK_STATE_SUCCEEDED',
    gpuMemoryMb: '18446744073709551615',
    progress: 1,
    submittedAt: '2023-11-14T22:13:20.120Z',
    startedAt: '2023-11-14T22:13:21.123456Z',
    finishedAt: '2023-11-14T22:13:22Z',
    labels: { zone: 'eu' },
    resultJson: '{"n": 3}',
    result: { n: 3 },
  });
  assert.throws(() => sy.protoJSON({ taskId: 'x' }), TypeError);
});

test('a result the scheduler sent only as text is parsed from it', () => {
  const definition = contract().definition['switchyard.v1.Task'];
  const wire = definition.deserialize(definition.serialize({ taskId: 't', resultJson: '[1, "a"]' }));
  assert.deepEqual(fromWire('switchyard.v1.Task', wire).result, [1, 'a']);
  const nan = definition.deserialize(definition.serialize({ taskId: 't', resultJson: 'NaN' }));
  assert.equal(fromWire('switchyard.v1.Task', nan).result, null);
});

test('client options are checked', () => {
  assert.throws(() => new sy.SchedulerClient('h:1', { timeoutMS: 5 }), /unknown client option "timeoutMS"/);
  assert.throws(() => new sy.SchedulerClient('h:1', { tlsCert: 'c.pem' }), /tlsCert and tlsKey go together/);
  assert.throws(() => new sy.SchedulerClient('h:1', { tlsCa: '/nonexistent/ca.pem' }), /cannot read the TLS CA certificate/);
  assert.throws(() => new sy.SchedulerClient('h:1', { tokenFile: '/nonexistent/token' }), /cannot read the token file/);
  assert.throws(() => new sy.SchedulerClient('h:1', { env: { SWITCHYARD_TOKEN: '  ' } }), /SWITCHYARD_TOKEN is empty/);
});

test('the packed package carries the contract and loads it from there', (t) => {
  const npm = spawnSync('npm', ['--version'], { encoding: 'utf8' });
  if (npm.status !== 0) {
    t.skip('npm is not installed');
    return;
  }
  const destination = fs.mkdtempSync(path.join(require('node:os').tmpdir(), 'switchyard-pack-'));
  try {
    const packed = JSON.parse(execFileSync('npm', ['pack', '--silent', '--json', '--pack-destination', destination], {
      cwd: PACKAGE_ROOT, encoding: 'utf8',
    }));
    const files = packed[0].files.map((file) => file.path);
    for (const expected of ['protos/switchyard/v1/scheduler.proto', 'protos/switchyard/v1/worker.proto',
      'index.d.ts', 'messages.d.ts', 'lib/client.js', 'examples/submit.js', 'README.md']) {
      assert.ok(files.includes(expected), `${expected} in ${files.join(', ')}`);
    }
    assert.ok(!files.some((file) => file.startsWith('test') || file.startsWith('node_modules')), files.join(', '));
    assert.ok(!fs.existsSync(path.join(PACKAGE_ROOT, 'protos')), 'postpack removed the copy from the checkout');
    execFileSync('tar', ['-xzf', path.join(destination, packed[0].filename), '-C', destination]);
    const unpacked = path.join(destination, 'package');
    const loaded = execFileSync(process.execPath, ['-e',
      "const { protoDir } = require('./lib/protos'); const sy = require('.');" +
      "console.log(protoDir(), sy.buildSubmitRequest('t', { kwargs: { a: 1 } }).kwargs.fields.a.numberValue);"],
    { cwd: unpacked, encoding: 'utf8', env: { ...process.env, NODE_PATH: path.join(PACKAGE_ROOT, 'node_modules'), SWITCHYARD_PROTOS_DIR: '' } });
    assert.equal(loaded.trim(), `${path.join(unpacked, 'protos')} 1`);
  } finally {
    fs.rmSync(destination, { recursive: true, force: true });
  }
});
