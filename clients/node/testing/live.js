'use strict';
/**
 * What the live tests (test/*.test.js) share: the scheduler they run against, told by the
 * environment, and a TCP proxy that can cut every connection through it.
 *
 * tests/e2e/test_node_client.py starts a real scheduler with a Celery worker of
 * tests/support/e2e_app.py and runs `node --test clients/node/test/` with:
 *   SWITCHYARD_SCHEDULER  HOST:PORT of the leading scheduler (a worker "w1" is connected)
 *   SWITCHYARD_STANDBY    HOST:PORT of a standby scheduler on the same Redis (optional)
 *   SWITCHYARD_SECURE_*   a TLS + token scheduler, when the scheduler has those flags (see security.test.js)
 * Without SWITCHYARD_SCHEDULER the live tests skip, saying so. (Not under test/: node --test
 * runs every .js file there.)
 */

const net = require('node:net');
const { test } = require('node:test');

const SCHEDULER = process.env.SWITCHYARD_SCHEDULER || '';
const STANDBY = process.env.SWITCHYARD_STANDBY || '';
const NO_SCHEDULER =
  'no live scheduler: set SWITCHYARD_SCHEDULER=HOST:PORT of one with an e2e worker (tests/e2e/test_node_client.py does)';

/** A test that needs the live scheduler (`options` as node:test's); skipped, saying why, without one. */
function liveTest(name, options, fn) {
  if (typeof options === 'function') [options, fn] = [{}, options];
  return test(name, { timeout: 20_000, ...options, ...(SCHEDULER ? {} : { skip: NO_SCHEDULER }) }, fn);
}

/**
 * A loopback TCP proxy to `target` ("HOST:PORT"). cut() destroys every connection through it,
 * as a network failure would; it keeps accepting new ones.
 */
class TcpProxy {
  constructor(target) {
    const [host, port] = splitAddress(target);
    this.pairs = new Set();
    this.connections = 0;
    this.server = net.createServer((client) => {
      this.connections += 1;
      const upstream = net.connect(port, host);
      const pair = [client, upstream];
      this.pairs.add(pair);
      const drop = () => {
        this.pairs.delete(pair);
        client.destroy();
        upstream.destroy();
      };
      for (const socket of pair) {
        socket.on('error', drop);
        socket.on('close', drop);
      }
      client.pipe(upstream);
      upstream.pipe(client);
    });
  }

  /** Start listening on a free loopback port; resolves with the proxy. */
  listen() {
    return new Promise((resolve) => this.server.listen(0, '127.0.0.1', () => resolve(this)));
  }

  get address() {
    return `127.0.0.1:${this.server.address().port}`;
  }

  /** Destroy every open connection through the proxy; returns how many there were. */
  cut() {
    const count = this.pairs.size;
    for (const pair of [...this.pairs]) for (const socket of pair) socket.destroy();
    this.pairs.clear();
    return count;
  }

  close() {
    this.cut();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

function splitAddress(address) {
  const index = address.lastIndexOf(':');
  return [address.slice(0, index).replace(/^\[|\]$/g, ''), Number(address.slice(index + 1))];
}

/** A loopback address where nothing listens (a port just released). */
async function closedAddress() {
  const server = net.createServer();
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return `127.0.0.1:${port}`;
}

/** A logger that keeps every line, for asserting what the client reported. */
function recordingLogger() {
  const lines = [];
  const keep = (level) => (message) => lines.push(`${level}: ${message}`);
  return { lines, logger: { warn: keep('warn'), info: keep('info'), debug: keep('debug') } };
}

module.exports = { SCHEDULER, STANDBY, NO_SCHEDULER, TcpProxy, closedAddress, liveTest, recordingLogger };
