'use strict';
/**
 * The Switchyard contract, loaded at run time from the .proto files: the service definition
 * grpc-js calls through, and a small index of message and enum descriptors that the converters
 * in convert.js walk.
 *
 * Where the .proto files come from, first match wins:
 *   1. SWITCHYARD_PROTOS_DIR (a folder holding switchyard/v1/*.proto);
 *   2. in a Switchyard checkout (this package at clients/node), the repository's protos/: a
 *      field added to the .proto is on the wire without any build step;
 *   3. protos/ inside this package: `npm pack` copies the contract there
 *      (scripts/copy-protos.js), so an installed package carries the one it was built with.
 *
 * Messages are decoded with lowerCamelCase field names (the proto3 JSON names), enums as their
 * names, 64-bit integers as decimal strings (exact; convert.js turns them into numbers for the
 * friendly objects) and every field present (defaults filled in, unset messages as null).
 */

const fs = require('node:fs');
const path = require('node:path');
const protoLoader = require('@grpc/proto-loader');

const PACKAGE = 'switchyard.v1';
const SERVICE = `${PACKAGE}.Scheduler`;
const PROTO_FILES = ['switchyard/v1/scheduler.proto'];

/** How messages are decoded; the converters rely on every one of these. */
const LOADER_OPTIONS = Object.freeze({
  keepCase: false,
  longs: String,
  enums: String,
  bytes: String,
  defaults: true,
  oneofs: true,
});

/** Folders that may hold switchyard/v1/scheduler.proto, in the order they are tried. */
function candidateProtoDirs() {
  const packageRoot = path.resolve(__dirname, '..');
  const dirs = [];
  if (process.env.SWITCHYARD_PROTOS_DIR) dirs.push(path.resolve(process.env.SWITCHYARD_PROTOS_DIR));
  if (path.basename(path.dirname(packageRoot)) === 'clients') dirs.push(path.resolve(packageRoot, '..', '..', 'protos'));
  dirs.push(path.join(packageRoot, 'protos'));
  return dirs;
}

/** The folder the contract is loaded from; a clear error when there is none. */
function protoDir() {
  const dirs = candidateProtoDirs();
  const found = dirs.find((dir) => fs.existsSync(path.join(dir, PROTO_FILES[0])));
  if (!found) {
    throw new Error(
      `Switchyard .proto files not found (looked for ${PROTO_FILES[0]} in ${dirs.join(', ')}); ` +
        'set SWITCHYARD_PROTOS_DIR to the protos/ folder of the Switchyard repository',
    );
  }
  return found;
}

let loaded = null;

/**
 * The loaded contract: `{dir, definition, service}`; loaded once per process.
 * `definition` is proto-loader's package definition (type name → definition).
 */
function contract() {
  if (loaded === null) {
    const dir = protoDir();
    const definition = protoLoader.loadSync(PROTO_FILES, { ...LOADER_OPTIONS, includeDirs: [dir] });
    loaded = { dir, definition, service: definition[SERVICE] };
  }
  return loaded;
}

/**
 * Resolve a field's type name as the descriptor spells it (relative to the message's package,
 * or fully qualified) to a key of the package definition.
 */
function resolveTypeName(typeName, scope) {
  const { definition } = contract();
  const bare = typeName.replace(/^\./, '');
  if (definition[bare]) return bare;
  const scoped = `${scope}.${bare}`;
  if (definition[scoped]) return scoped;
  const suffix = `.${bare}`;
  const match = Object.keys(definition).find((key) => key.endsWith(suffix));
  if (!match) throw new Error(`type ${typeName} is not in the loaded Switchyard contract`);
  return match;
}

const messageIndex = new Map();

/**
 * A message's fields as `{name, number, kind, repeated, map, typeName}` records: `kind` is the
 * descriptor type (TYPE_STRING, TYPE_MESSAGE, ...), `typeName` the resolved message or enum name;
 * a map field (`map: true`) has its value's kind and type (keys are always strings here). Cached.
 */
function messageFields(fullName) {
  const cached = messageIndex.get(fullName);
  if (cached) return cached;
  const entry = contract().definition[fullName];
  if (!entry || entry.format !== 'Protocol Buffer 3 DescriptorProto') {
    throw new Error(`${fullName} is not a message of the loaded Switchyard contract`);
  }
  const scope = fullName.slice(0, fullName.lastIndexOf('.'));
  const mapEntries = new Map(
    (entry.type.nestedType || [])
      .filter((nested) => nested.options && nested.options.mapEntry)
      .map((nested) => [nested.name, nested]),
  );
  const fieldRecord = (field, ownScope) => ({
    name: field.name,
    number: field.number,
    kind: field.type,
    repeated: field.label === 'LABEL_REPEATED',
    typeName: field.typeName ? resolveTypeName(field.typeName, ownScope) : '',
  });
  const fields = entry.type.field.map((field) => {
    const mapEntry = field.label === 'LABEL_REPEATED' && mapEntries.get(field.typeName);
    if (mapEntry) {
      const valueField = mapEntry.field.find((f) => f.name === 'value');
      return { ...fieldRecord(valueField, scope), name: field.name, number: field.number, repeated: false, map: true };
    }
    return { ...fieldRecord(field, scope), map: false };
  });
  messageIndex.set(fullName, fields);
  return fields;
}

/** The names of an enum's values, in number order: `[{name, number}]`. */
function enumValues(fullName) {
  const entry = contract().definition[fullName];
  if (!entry || entry.format !== 'Protocol Buffer 3 EnumDescriptorProto') {
    throw new Error(`${fullName} is not an enum of the loaded Switchyard contract`);
  }
  return entry.type.value.map((value) => ({ name: value.name, number: value.number }));
}

/** Full names of every message and enum of the loaded contract: `{messages, enums}`. */
function typeNames() {
  const { definition } = contract();
  const names = Object.keys(definition);
  return {
    messages: names.filter((name) => definition[name].format === 'Protocol Buffer 3 DescriptorProto'),
    enums: names.filter((name) => definition[name].format === 'Protocol Buffer 3 EnumDescriptorProto'),
  };
}

module.exports = { PACKAGE, SERVICE, LOADER_OPTIONS, PROTO_FILES, contract, messageFields, enumValues, protoDir, typeNames };
