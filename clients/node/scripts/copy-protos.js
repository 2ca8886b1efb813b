#!/usr/bin/env node
'use strict';
/**
 * Ship the contract inside the package: `npm pack` (prepack) copies the repository's
 * protos/switchyard/v1/*.proto into clients/node/protos/, and postpack (`--clean`) removes the
 * copy again, so a checkout always loads the repository's current .proto files (lib/protos.js).
 */

const fs = require('node:fs');
const path = require('node:path');

const PACKAGE_PROTOS = path.join(__dirname, '..', 'protos');
const REPO_PROTOS = path.resolve(__dirname, '..', '..', '..', 'protos');
const SUBDIR = path.join('switchyard', 'v1');

if (process.argv.includes('--clean')) {
  fs.rmSync(PACKAGE_PROTOS, { recursive: true, force: true });
} else {
  const source = path.join(REPO_PROTOS, SUBDIR);
  if (!fs.existsSync(source)) {
    console.error(`copy-protos: ${source} not found; pack the package from a Switchyard checkout`);
    process.exit(1);
  }
  const target = path.join(PACKAGE_PROTOS, SUBDIR);
  fs.rmSync(PACKAGE_PROTOS, { recursive: true, force: true });
  fs.mkdirSync(target, { recursive: true });
  for (const name of fs.readdirSync(source).filter((file) => file.endsWith('.proto'))) {
    fs.copyFileSync(path.join(source, name), path.join(target, name));
  }
}
