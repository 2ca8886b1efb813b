#!/usr/bin/env node
'use strict';
/**
 * Submit one task and print it as JSON: the canonical proto3 JSON of switchyard.v1.Task
 * (lowerCamelCase names, enums by name, 64-bit integers as strings, RFC 3339 timestamps, fields
 * at their default left out), the same shape grpcurl and the Go example print.
 *
 *   node examples/submit.js --scheduler 127.0.0.1:50051 --task e2e.echo --kwargs '{"x": 1}' --content-type text --wait
 *
 * Without --wait it prints the task as it stands right after submission; with --wait, its
 * terminal state. Exit status: 0 when printed (with --wait: when the task succeeded), 1 when a
 * waited-for task ended otherwise or a call failed, 2 for a usage error.
 */

const fs = require('node:fs');
const path = require('node:path');
const { parseArgs } = require('node:util');

const { SchedulerClient, SwitchyardError, protoJSON } = require(path.join(__dirname, '..'));

const USAGE = `usage: submit.js --scheduler HOST:PORT[,HOST:PORT] --task NAME [--args JSON] [--kwargs JSON]
                 [--content-type T] [--wait] [--tls-ca FILE [--tls-cert FILE --tls-key FILE]] [--token-file FILE]

  --scheduler   scheduler address(es); default $SWITCHYARD_SCHEDULER or 127.0.0.1:50051
  --task        Celery task name, e.g. media.transcribe
  --args        positional arguments, a JSON array
  --kwargs      keyword arguments, a JSON object
  --content-type  kind of content (audio, video, document, text, ...): drives classification
  --wait        wait for the task to finish and print its terminal state
  --tls-ca      CA certificate (PEM) to verify the scheduler with: turns TLS on
  --tls-cert, --tls-key  client certificate and key (PEM) for mTLS
  --token-file  file holding a bearer token (default: $SWITCHYARD_TOKEN)`;

class UsageError extends Error {}

function parseJson(text, flag, kind) {
  let value;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new UsageError(`${flag} is not valid JSON: ${error.message}`);
  }
  const ok = kind === 'array' ? Array.isArray(value) : value !== null && typeof value === 'object' && !Array.isArray(value);
  if (!ok) throw new UsageError(`${flag} must be a JSON ${kind}; got ${text}`);
  return value;
}

function options(argv) {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      options: {
        scheduler: { type: 'string' },
        task: { type: 'string' },
        args: { type: 'string' },
        kwargs: { type: 'string' },
        'content-type': { type: 'string' },
        wait: { type: 'boolean', default: false },
        'tls-ca': { type: 'string' },
        'tls-cert': { type: 'string' },
        'tls-key': { type: 'string' },
        'token-file': { type: 'string' },
        help: { type: 'boolean', short: 'h', default: false },
      },
    }).values;
  } catch (error) {
    throw new UsageError(error.message);
  }
  if (parsed.help) return null;
  if (!parsed.task) throw new UsageError('--task NAME is required');
  return parsed;
}

async function main(argv) {
  const flags = options(argv);
  if (flags === null) {
    console.log(USAGE);
    return 0;
  }
  const submitOptions = {};
  if (flags.args !== undefined) submitOptions.args = parseJson(flags.args, '--args', 'array');
  if (flags.kwargs !== undefined) submitOptions.kwargs = parseJson(flags.kwargs, '--kwargs', 'object');
  if (flags['content-type'] !== undefined) submitOptions.contentType = flags['content-type'];
  const client = new SchedulerClient(flags.scheduler || process.env.SWITCHYARD_SCHEDULER || '127.0.0.1:50051', {
    tlsCa: flags['tls-ca'],
    tlsCert: flags['tls-cert'],
    tlsKey: flags['tls-key'],
    tokenFile: flags['token-file'],
  });
  try {
    const { taskId } = await client.submit(flags.task, submitOptions);
    const task = flags.wait ? await client.wait(taskId) : await client.get(taskId);
    fs.writeSync(1, `${JSON.stringify(protoJSON(task), null, 2)}\n`);
    return flags.wait && task.state !== 'TASK_STATE_SUCCEEDED' ? 1 : 0;
  } finally {
    client.close();
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error) => {
    if (error instanceof UsageError) {
      console.error(`${USAGE}\n\nsubmit.js: error: ${error.message}`);
      process.exitCode = 2;
    } else if (error instanceof SwitchyardError) {
      console.error(`submit.js: error: ${error.code}: ${error.message}`);
      process.exitCode = 1;
    } else {
      console.error(error);
      process.exitCode = 1;
    }
  },
);
