// broker-example ttn_decoder: decodes TTN v3 uplinks with a ttn-formatters
// decoder. Stand-in for the real Express service, using only Node's stdlib.
//
// Listens on port 3001 (env PORT overrides). Request:
//
//   POST /          (or POST /decode)
//   {
//     "end_device_ids": { "device_id": "..." },
//     "uplink_message": { "f_port": 1, "frm_payload": "<base64>" },
//     "decoder": "<name>"
//   }
//
// The decoder name is the top-level field "decoder"; the query parameter
// ?decoder=<name> is accepted too and wins over the body field. Names must
// match [A-Za-z0-9_-]+ (no paths). The decoder is loaded, like the real
// service does, from ../ttn_formatters/uplink/<name>.js relative to the
// working directory (/usr/src/ttn_decoder in the image) and follows TTN's
// convention decodeUplink({bytes, fPort}) -> {data, warnings, errors}.
//
// Responses: 200 {"device_id", "decoder", "decoded": <data>, "warnings", "errors"};
// 400 bad JSON / missing or invalid field; 404 unknown decoder or path;
// 422 when the decoder reports errors.

'use strict';

const fs = require('fs');
const http = require('http');
const path = require('path');

const NAME_RE = /^[A-Za-z0-9_-]+$/;
const MAX_BODY = 1024 * 1024;

function formattersDir() {
  return path.join(process.cwd(), '../ttn_formatters/uplink/');
}

function loadDecoder(name) {
  const file = path.join(formattersDir(), name + '.js');
  if (!fs.existsSync(file)) {
    return null;
  }
  const mod = require(file);
  if (mod && typeof mod.decodeUplink === 'function') {
    return mod.decodeUplink;
  }
  return null;
}

function send(res, status, body) {
  const data = JSON.stringify(body);
  res.writeHead(status, {
    'Content-Type': 'application/json',
    'Content-Length': Buffer.byteLength(data),
  });
  res.end(data);
}

function decode(msg, queryName) {
  if (msg === null || typeof msg !== 'object' || Array.isArray(msg)) {
    return [400, { error: 'body must be a JSON object' }];
  }
  const name = queryName !== null ? queryName : msg.decoder;
  if (typeof name !== 'string' || !NAME_RE.test(name)) {
    return [400, { error: 'decoder name missing or not [A-Za-z0-9_-]+' }];
  }
  const uplink = msg.uplink_message;
  if (!uplink || typeof uplink.frm_payload !== 'string') {
    return [400, { error: 'uplink_message.frm_payload missing' }];
  }
  const decodeUplink = loadDecoder(name);
  if (decodeUplink === null) {
    return [404, { error: `unknown decoder: ${name}` }];
  }
  const bytes = Array.from(Buffer.from(uplink.frm_payload, 'base64'));
  let result;
  try {
    result = decodeUplink({ bytes, fPort: uplink.f_port });
  } catch (e) {
    return [422, { error: `decoder ${name} failed: ${e.message}` }];
  }
  const errors = (result && result.errors) || [];
  const body = {
    device_id: (msg.end_device_ids || {}).device_id,
    decoder: name,
    decoded: result ? result.data : undefined,
    warnings: (result && result.warnings) || [],
    errors,
  };
  return [errors.length > 0 ? 422 : 200, body];
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://localhost');
  if (req.method !== 'POST' || (url.pathname !== '/' && url.pathname !== '/decode')) {
    send(res, 404, { error: 'POST / or /decode' });
    return;
  }
  const chunks = [];
  let size = 0;
  req.on('data', (chunk) => {
    size += chunk.length;
    if (size > MAX_BODY) {
      send(res, 413, { error: 'body too large' });
      req.destroy();
      return;
    }
    chunks.push(chunk);
  });
  req.on('end', () => {
    if (res.headersSent) {
      return;
    }
    let msg;
    try {
      msg = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    } catch (e) {
      send(res, 400, { error: 'body is not valid JSON' });
      return;
    }
    const [status, body] = decode(msg, url.searchParams.get('decoder'));
    send(res, status, body);
  });
});

const port = Number(process.env.PORT || 3001);
server.listen(port, () => {
  console.log(`broker-example ttn_decoder listening on port ${port}`);
});

// As PID 1 of a container, Node sets no SIGTERM handler and the signal is
// ignored: a stop would wait out the whole grace period. Requests in flight
// are small; exit at once.
process.on('SIGTERM', () => {
  server.close();
  process.exit(0);
});
