'use strict';
/**
 * Between decoded protobuf messages and what the client hands its callers.
 *
 * Three directions, all driven by the descriptors of the loaded contract (protos.js), so a field
 * added to the .proto flows through without code here:
 *
 *   fromWire(type, message)   → the friendly object the client returns: lowerCamelCase fields,
 *                               enums by name, 64-bit integers as numbers, Timestamps as Date
 *                               (null when unset), Struct/Value/ListValue as plain JSON values;
 *   protoJSON(friendly)       → the canonical proto3 JSON mapping of the message it came from,
 *                               as protobuf's own printers write it (Go protojson, Python
 *                               MessageToJson): lowerCamelCase names, enums by name, 64-bit
 *                               integers as strings, Timestamps as RFC 3339, fields at their
 *                               default value left out. examples/submit.js prints this;
 *   toValue/toStruct/toListValue(js) → google.protobuf.Value & co. for structured arguments.
 */

const { enumValues, messageFields } = require('./protos');
const { InvalidArgument } = require('./errors');

/** Hidden on every friendly object: the type name and the decoded message it was made from. */
const WIRE = Symbol('switchyard.wire');

const LONG_KINDS = new Set(['TYPE_INT64', 'TYPE_UINT64', 'TYPE_SINT64', 'TYPE_FIXED64', 'TYPE_SFIXED64']);
const NUMBER_KINDS = new Set([
  'TYPE_DOUBLE', 'TYPE_FLOAT', 'TYPE_INT32', 'TYPE_UINT32', 'TYPE_SINT32', 'TYPE_FIXED32', 'TYPE_SFIXED32',
]);
const TIMESTAMP = 'google.protobuf.Timestamp';
const VALUE = 'google.protobuf.Value';
const STRUCT = 'google.protobuf.Struct';
const LIST_VALUE = 'google.protobuf.ListValue';
const JSON_VALUE_TYPES = new Set([VALUE, STRUCT, LIST_VALUE]);

/** Largest integer a double holds exactly: Struct numbers beyond it are rounded. */
const MAX_EXACT_INTEGER = Number.MAX_SAFE_INTEGER + 1;

// --- decoded message → friendly object ---------------------------------------------------

function attachWire(target, typeName, message) {
  Object.defineProperty(target, WIRE, { value: { typeName, message }, enumerable: false });
  return target;
}

function friendlyScalar(field, value) {
  if (field.kind === 'TYPE_MESSAGE') return fromWire(field.typeName, value);
  if (LONG_KINDS.has(field.kind)) return Number(value);
  return value;
}

/**
 * The friendly object for `message`, a decoded `typeName`; see the module comment. Task.result
 * falls back to parsing result_json when the scheduler did not fill the structured form (it is
 * older than this client, or the result is not strict JSON).
 */
function fromWire(typeName, message) {
  if (message === null || message === undefined) {
    return typeName === STRUCT ? {} : typeName === LIST_VALUE ? [] : null;
  }
  if (typeName === TIMESTAMP) return new Date(Number(message.seconds) * 1000 + Math.floor((message.nanos || 0) / 1e6));
  if (JSON_VALUE_TYPES.has(typeName)) return jsonValueFromWire(typeName, message);
  const friendly = {};
  for (const field of messageFields(typeName)) {
    const value = message[field.name];
    if (field.map) {
      friendly[field.name] = Object.fromEntries(
        Object.entries(value || {}).map(([key, entry]) => [key, friendlyScalar(field, entry)]),
      );
    } else if (field.repeated) {
      friendly[field.name] = (value || []).map((item) => friendlyScalar(field, item));
    } else {
      friendly[field.name] = friendlyScalar(field, value);
    }
  }
  if (typeName.endsWith('.Task') && 'result' in friendly && message.result == null) {
    friendly.result = parseResultJson(message.resultJson);
  }
  return attachWire(friendly, typeName, message);
}

function parseResultJson(text) {
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return null; // NaN, Infinity: not JSON to JavaScript; resultJson keeps the text
  }
}

function jsonValueFromWire(typeName, message) {
  if (typeName === STRUCT) {
    return Object.fromEntries(Object.entries(message.fields || {}).map(([key, value]) => [key, jsonValueFromWire(VALUE, value)]));
  }
  if (typeName === LIST_VALUE) return (message.values || []).map((value) => jsonValueFromWire(VALUE, value));
  switch (message.kind) {
    case 'numberValue':
      return message.numberValue;
    case 'stringValue':
      return message.stringValue;
    case 'boolValue':
      return message.boolValue;
    case 'structValue':
      return jsonValueFromWire(STRUCT, message.structValue);
    case 'listValue':
      return jsonValueFromWire(LIST_VALUE, message.listValue);
    default:
      return null; // nullValue, or a Value with nothing set
  }
}

// --- decoded message → canonical proto3 JSON -----------------------------------------------

function timestampJSON(message) {
  const seconds = Number(message.seconds);
  const nanos = message.nanos || 0;
  const whole = new Date(seconds * 1000).toISOString().replace(/\.\d+Z$/, '');
  if (nanos === 0) return `${whole}Z`;
  // 3, 6 or 9 fractional digits, as protobuf's printers write them.
  let digits = String(nanos).padStart(9, '0');
  if (digits.endsWith('000000')) digits = digits.slice(0, 3);
  else if (digits.endsWith('000')) digits = digits.slice(0, 6);
  return `${whole}.${digits}Z`;
}

function numberJSON(value) {
  if (Number.isNaN(value)) return 'NaN';
  if (value === Infinity) return 'Infinity';
  if (value === -Infinity) return '-Infinity';
  return value;
}

function isDefault(field, value) {
  if (value === null || value === undefined) return true;
  if (field.map) return Object.keys(value).length === 0;
  if (field.repeated) return value.length === 0;
  switch (field.kind) {
    case 'TYPE_MESSAGE':
      return false; // a set message is printed even when empty
    case 'TYPE_ENUM':
      return value === 0 || value === enumZeroName(field.typeName);
    case 'TYPE_BOOL':
      return value === false;
    case 'TYPE_STRING':
    case 'TYPE_BYTES':
      return value === '';
    default:
      return Number(value) === 0 && !Object.is(Number(value), -0);
  }
}

function enumZeroName(typeName) {
  const zero = enumValues(typeName).find((value) => value.number === 0);
  return zero ? zero.name : undefined;
}

function scalarJSON(field, value) {
  if (field.kind === 'TYPE_MESSAGE') return messageJSON(field.typeName, value);
  if (LONG_KINDS.has(field.kind)) return String(value);
  if (NUMBER_KINDS.has(field.kind)) return numberJSON(value);
  return value; // strings, bools, enum names, bytes as base64
}

/** The canonical proto3 JSON of a decoded `typeName` message. */
function messageJSON(typeName, message) {
  if (typeName === TIMESTAMP) return timestampJSON(message);
  if (JSON_VALUE_TYPES.has(typeName)) return jsonValueFromWire(typeName, message);
  const json = {};
  for (const field of messageFields(typeName)) {
    const value = message[field.name];
    if (isDefault(field, value)) continue;
    if (field.map) {
      json[field.name] = Object.fromEntries(Object.entries(value).map(([key, entry]) => [key, scalarJSON(field, entry)]));
    } else if (field.repeated) {
      json[field.name] = value.map((item) => scalarJSON(field, item));
    } else {
      json[field.name] = scalarJSON(field, value);
    }
  }
  return json;
}

/**
 * The canonical proto3 JSON mapping (as an object, ready for JSON.stringify) of a message the
 * client returned: a task, a queue, a worker, a submission result. Throws for anything else.
 */
function protoJSON(friendly) {
  const wire = friendly && friendly[WIRE];
  if (!wire) throw new TypeError('protoJSON takes a message returned by SchedulerClient (a task, queue, worker ...)');
  return messageJSON(wire.typeName, wire.message);
}

// --- plain JSON → google.protobuf.Value & co. ----------------------------------------------

function describe(path) {
  return path || 'the value';
}

/** A JavaScript value as a google.protobuf.Value; InvalidArgument for what JSON cannot hold. */
function toValue(value, path = '') {
  if (value === null) return { nullValue: 'NULL_VALUE' };
  switch (typeof value) {
    case 'string':
      return { stringValue: value };
    case 'boolean':
      return { boolValue: value };
    case 'number':
      if (!Number.isFinite(value)) {
        throw new InvalidArgument(`${describe(path)} is ${value}, which JSON cannot carry`);
      }
      if (Number.isInteger(value) && Math.abs(value) > MAX_EXACT_INTEGER) {
        throw new InvalidArgument(
          `${describe(path)} is an integer beyond 2^53 that a structured argument cannot carry exactly; ` +
            'pass the arguments as JSON text (argsJson/kwargsJson) or the number as a string',
        );
      }
      return { numberValue: value };
    case 'bigint':
      throw new InvalidArgument(
        `${describe(path)} is a BigInt; pass the arguments as JSON text (argsJson/kwargsJson) to send it exactly`,
      );
    case 'object':
      if (Array.isArray(value)) return { listValue: toListValue(value, path) };
      if (value instanceof Date) return { stringValue: value.toISOString() }; // as JSON.stringify does
      return { structValue: toStruct(value, path) };
    default:
      throw new InvalidArgument(`${describe(path)} is a ${typeof value}, which JSON cannot carry`);
  }
}

/** A plain object as a google.protobuf.Struct. */
function toStruct(object, path = 'kwargs') {
  if (object === null || typeof object !== 'object' || Array.isArray(object)) {
    throw new InvalidArgument(`${describe(path)} must be a plain object of keyword arguments`);
  }
  const fields = {};
  for (const [key, value] of Object.entries(object)) {
    if (value === undefined) continue; // as JSON.stringify leaves it out
    fields[key] = toValue(value, `${path}.${key}`);
  }
  return { fields };
}

/** An array as a google.protobuf.ListValue. */
function toListValue(array, path = 'args') {
  if (!Array.isArray(array)) throw new InvalidArgument(`${describe(path)} must be an array of positional arguments`);
  return { values: array.map((value, index) => toValue(value === undefined ? null : value, `${path}[${index}]`)) };
}

module.exports = { WIRE, fromWire, protoJSON, messageJSON, toValue, toStruct, toListValue };
