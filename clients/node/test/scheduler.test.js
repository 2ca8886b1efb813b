'use strict';
// The Node client against a live scheduler and a real Celery worker (tests/support/e2e_app.py),
// as testing/live.js describes: what a Node user submits runs, and what they watch arrives, once,
// through a dropped connection, a standby and an address that is down.

const assert = require('node:assert/strict');
const { execFile } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { after, before } = require('node:test');

const grpc = require('@grpc/grpc-js');

const sy = require('..');
const { SCHEDULER, STANDBY, TcpProxy, closedAddress, liveTest, recordingLogger } = require('../testing/live');

let client;
let scratch;

before(() => {
  if (!SCHEDULER) return;
  client = new sy.SchedulerClient(SCHEDULER, { timeoutMs: 5_000, failoverTimeoutMs: 10_000 });
  scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'switchyard-node-'));
});

after(() => {
  if (client) client.close();
  if (scratch) fs.rmSync(scratch, { recursive: true, force: true });
});

/** Keyword arguments of an e2e.wait_file task that runs until the test creates `name`. */
function gate(name, timeout = 15) {
  return { path: path.join(scratch, name), timeout };
}

function open(gateKwargs) {
  fs.writeFileSync(gateKwargs.path, 'go');
}

liveTest('submit with JSON values, watch it run, read the result back exactly', async () => {
  const kwargs = { n: 3, big: 2 ** 53, f: 1.5, s: 'é', none: null, nested: { list: [true, 'x', { deep: -2 }] } };
  const submitted = await client.submit('e2e.echo', { args: [1, 'two'], kwargs, contentType: 'text' });
  assert.match(submitted.taskId, /\S/);
  assert.equal(submitted.taskClass, 'TASK_CLASS_CPU');
  assert.equal(submitted.deduplicated, false);

  const seen = [];
  for await (const task of client.watch(submitted.taskId, { timeoutMs: 15_000 })) seen.push(task);
  const last = seen.at(-1);
  assert.equal(last.state, 'TASK_STATE_SUCCEEDED', JSON.stringify(last));
  assert.equal(seen.filter((task) => sy.isTerminal(task.state)).length, 1, 'the watch ends at the terminal state');
  assert.equal(last.workerId, 'w1');
  assert.ok(last.finishedAt instanceof Date && last.finishedAt >= last.submittedAt);
  assert.deepEqual(last.result, { args: [1, 'two'], kwargs });
  // Integers stay integers on the worker (Python sees 3, not 3.0).
  assert.match(last.resultJson, /"n": 3[,}]/);
  assert.deepEqual(await client.get(submitted.taskId).then((task) => task.result), last.result);
});

liveTest('JSON text arguments carry integers beyond 2^53 exactly', async () => {
  const { taskId } = await client.submit('e2e.echo', { argsJson: '[18446744073709551615]', contentType: 'text' });
  const task = await client.wait(taskId, { timeoutMs: 15_000 });
  assert.equal(task.state, 'TASK_STATE_SUCCEEDED');
  assert.match(task.resultJson, /\[18446744073709551615\]/);
});

liveTest('a batch is accepted whole and its results come in order', async () => {
  const results = await client.submitBatch([
    { taskName: 'e2e.echo', args: ['first'], contentType: 'text' },
    { taskName: 'e2e.echo', kwargs: { which: 'second' }, contentType: 'text', priority: 8 },
  ]);
  assert.equal(results.length, 2);
  assert.equal(results[1].priority, 8);
  const [first, second] = await Promise.all(results.map(({ taskId }) => client.wait(taskId, { timeoutMs: 15_000 })));
  assert.deepEqual(first.result, { args: ['first'], kwargs: {} });
  assert.deepEqual(second.result, { args: [], kwargs: { which: 'second' } });
});

liveTest('queues and workers describe the fleet', async () => {
  const queues = await client.queues();
  const cpu = queues.find((queue) => queue.name === 'cpu_standard');
  assert.ok(cpu, `cpu_standard in ${queues.map((queue) => queue.name)}`);
  assert.equal(typeof cpu.completed, 'number');
  assert.ok(cpu.completed >= 1, 'the tasks above completed');
  const workers = await client.workers();
  const w1 = workers.find((worker) => worker.workerId === 'w1');
  assert.ok(w1, 'worker w1 is listed');
  assert.equal(w1.status, 'WORKER_STATUS_CONNECTED');
  assert.equal(w1.workerType, 'WORKER_TYPE_CPU');
  assert.ok(w1.capabilities.cpuCount >= 1);
  assert.ok(w1.lastHeartbeatAt instanceof Date);
});

liveTest('errors come back typed, with the scheduler\'s message', async () => {
  await assert.rejects(client.get('no-such-task'), (error) => {
    assert.ok(error instanceof sy.NotFound, String(error));
    assert.equal(error.code, 'NOT_FOUND');
    assert.match(error.message, /no-such-task/);
    return true;
  });
  await assert.rejects(
    client.submit('e2e.echo', { queue: 'no_such_queue' }),
    (error) => error instanceof sy.InvalidArgument && /no_such_queue/.test(error.message),
  );
});

liveTest('a watch ends at its deadline, and cancel stops the task', async () => {
  const blocked = gate('never');
  const { taskId } = await client.submit('e2e.wait_file', { kwargs: blocked, contentType: 'text' });
  const started = Date.now();
  const states = [];
  await assert.rejects(
    (async () => {
      for await (const task of client.watch(taskId, { timeoutMs: 1_000 })) states.push(task.state);
    })(),
    (error) => error instanceof sy.DeadlineExceeded && /did not finish within 1000 ms/.test(error.message),
  );
  assert.ok(Date.now() - started < 5_000);
  assert.ok(states.length >= 1 && !states.some(sy.isTerminal), states.join());

  const controller = new AbortController();
  await assert.rejects(
    (async () => {
      for await (const task of client.watch(taskId, { signal: controller.signal })) {
        assert.equal(sy.isTerminal(task.state), false);
        controller.abort();
      }
    })(),
    sy.Cancelled,
  );

  const cancelled = await client.cancel(taskId);
  assert.equal(cancelled.task.state, 'TASK_STATE_CANCELLED');
  assert.ok(['TASK_STATE_PENDING', 'TASK_STATE_DISPATCHED', 'TASK_STATE_RUNNING'].includes(cancelled.previousState));
  await assert.rejects(client.cancel(taskId), sy.FailedPrecondition);
});

liveTest('a submission retried after its reply was lost returns the task it created', async () => {
  // The first attempt reaches the scheduler, which creates the task; its reply is replaced by
  // UNAVAILABLE, as when the connection drops at that moment. The retry must carry the same
  // made-up idempotency key and get the same task back, reported as new.
  const attempts = [];
  const loseFirstReply = (options, nextCall) => {
    if (!options.method_definition.path.endsWith('/SubmitTask')) return new grpc.InterceptingCall(nextCall(options));
    const attempt = { key: null, taskId: null };
    attempts.push(attempt);
    const lose = attempts.length === 1;
    return new grpc.InterceptingCall(nextCall(options), {
      start(metadata, listener, next) {
        next(metadata, {
          onReceiveMessage(message, nextMessage) {
            attempt.taskId = message.taskId;
            nextMessage(message); // a unary call with a failed status reports the status, not this
          },
          onReceiveStatus(status, nextStatus) {
            nextStatus(lose ? { code: grpc.status.UNAVAILABLE, details: 'reply lost (test)', metadata: status.metadata } : status);
          },
        });
      },
      sendMessage(message, next) {
        attempt.key = message.idempotencyKey;
        next(message);
      },
    });
  };
  const retrying = new sy.SchedulerClient(SCHEDULER, { interceptors: [loseFirstReply], logger: recordingLogger().logger });
  try {
    await retrying.queues(); // a client that never reached a scheduler reports the first failure instead
    const submitted = await retrying.submit('e2e.echo', { args: ['once'], contentType: 'text' });
    assert.equal(attempts.length, 2, 'one retry');
    assert.ok(attempts[0].key.startsWith(sy.AUTO_IDEMPOTENCY_KEY_PREFIX));
    assert.equal(attempts[1].key, attempts[0].key, 'the retry reuses the key');
    assert.equal(submitted.taskId, attempts[0].taskId, 'the task the first attempt created');
    assert.equal(submitted.deduplicated, false, 'new to the caller');
  } finally {
    retrying.close();
  }
});

liveTest('a standby\'s pointer leads the client to the leader', { skip: !STANDBY && 'no SWITCHYARD_STANDBY' }, async () => {
  // Only the standby's address is given: the leader is found through its trailing metadata.
  const following = new sy.SchedulerClient(STANDBY, { logger: recordingLogger().logger });
  try {
    const queues = await following.queues();
    assert.ok(queues.length > 0);
    assert.equal(following.currentAddress, SCHEDULER, 'later calls go straight to the leader');
  } finally {
    following.close();
  }
});

liveTest('an address that is down is skipped for the next one', async () => {
  const down = await closedAddress();
  const { lines, logger } = recordingLogger();
  const skipping = new sy.SchedulerClient(`${down},${SCHEDULER}`, { logger });
  try {
    const task = await skipping.get((await skipping.submit('e2e.echo', { contentType: 'text' })).taskId);
    assert.equal(task.taskName, 'e2e.echo');
    assert.equal(skipping.currentAddress, SCHEDULER);
    assert.ok(lines.some((line) => line.startsWith('debug: scheduler at ' + down)), lines.join('\n'));
  } finally {
    skipping.close();
  }
  // Nothing there at all: one clear error, at once, naming every address tried.
  const nowhere = new sy.SchedulerClient([down, await closedAddress()], { logger });
  try {
    await assert.rejects(nowhere.queues(), (error) => error instanceof sy.Unavailable && error.message.includes(down));
  } finally {
    nowhere.close();
  }
});

liveTest('a watch resumes after the connection drops, without repeating a state', async () => {
  const proxy = await new TcpProxy(SCHEDULER).listen();
  const { lines, logger } = recordingLogger();
  const watching = new sy.SchedulerClient(proxy.address, { logger });
  const release = gate('resume');
  try {
    const { taskId } = await watching.submit('e2e.wait_file', { kwargs: release, contentType: 'text' });
    const seen = [];
    let cut = 0;
    for await (const task of watching.watch(taskId, { timeoutMs: 15_000 })) {
      seen.push(task);
      if (task.state === 'TASK_STATE_RUNNING' && !cut) {
        cut = proxy.cut();
        open(release); // the task finishes while the client is reconnecting, or just after
      }
    }
    assert.ok(cut >= 1, 'the connection was cut');
    assert.ok(proxy.connections >= 2, 'the client connected again');
    assert.equal(seen.at(-1).state, 'TASK_STATE_SUCCEEDED');
    const keys = seen.map((task) => `${task.state}/${task.attempt}/${task.progress}/${task.workerId}`);
    assert.equal(new Set(keys).size, keys.length, `no state twice: ${keys.join(' ')}`);
    assert.ok(lines.some((line) => /^warn: lost the scheduler at .*reconnecting/.test(line)), lines.join('\n'));
    assert.ok(lines.some((line) => line.startsWith('info: reconnected to')), lines.join('\n'));
  } finally {
    watching.close();
    await proxy.close();
  }
});

function runExample(args) {
  return new Promise((resolve) => {
    execFile(process.execPath, [path.join(__dirname, '..', 'examples', 'submit.js'), ...args], { timeout: 15_000 },
      (error, stdout, stderr) => resolve({ code: error ? error.code : 0, stdout, stderr }));
  });
}

liveTest('examples/submit.js prints the task as proto3 JSON', async () => {
  const waited = await runExample(['--scheduler', SCHEDULER, '--task', 'e2e.echo', '--kwargs', '{"x": 1}',
    '--content-type', 'text', '--wait']);
  assert.equal(waited.code, 0, waited.stderr);
  const task = JSON.parse(waited.stdout);
  assert.equal(task.state, 'TASK_STATE_SUCCEEDED');
  assert.equal(task.taskName, 'e2e.echo');
  assert.deepEqual(task.result, { args: [], kwargs: { x: 1 } });
  assert.match(task.finishedAt, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3,9})?Z$/);

  const queued = await runExample(['--scheduler', SCHEDULER, '--task', 'e2e.echo']);
  assert.equal(queued.code, 0, queued.stderr);
  assert.equal(JSON.parse(queued.stdout).taskName, 'e2e.echo');

  const failing = await runExample(['--scheduler', SCHEDULER, '--task', 'e2e.echo', '--kwargs', '[1]']);
  assert.equal(failing.code, 2);
  assert.match(failing.stderr, /--kwargs must be a JSON object/);
});
