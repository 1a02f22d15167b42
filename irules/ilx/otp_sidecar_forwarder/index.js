// iRulesLX extension: relays ILX::call sendOTP (and confirmOTP) to the otp-sidecar daemon's Unix socket as
// MessagePack-RPC. No npm dependencies besides the appliance's own f5-nodejs: the encoder and
// decoder below cover exactly the types the daemon speaks.
//
// Replies the daemon's answer as is (an SM... SID or an "ERR ..." string), "ERR unavailable: ..."
// when the daemon cannot be reached, and "ERR timeout: ..." when it does not answer in time.
// Never a string starting with SM on failure, never an exception into ILX.
//
// Settings come from the extension's command arguments, which is how ILX hands an extension
// its settings (it passes no environment of ours): `--unix=PATH`, `--timeout-ms=N`,
// `--idle-ms=N`, `--token-file=PATH`, set with
//   tmsh modify ilx plugin otp_sidecar_plugin extensions { otp_sidecar_forwarder {
//     command-arguments "--unix=/run/otp-sidecar/otp.sock --token-file=/config/otp-sidecar/ilx_token" } }
// Elsewhere (tests, a plain Node), OTP_SIDECAR_UNIX, OTP_SIDECAR_ILX_TIMEOUT_MS,
// OTP_SIDECAR_ILX_IDLE_MS, OTP_SIDECAR_CALLER_TOKEN_FILE and OTP_SIDECAR_CALLER_TOKEN still
// count; a command argument wins. The token is read from a file, never given as an argument
// (arguments show in `ps` and in bigip.conf, hence in every UCS and qkview).
//
// In ILX's default `dedicated` mode each TMM has its own Node process running this file: each
// keeps its own one connection to the daemon (so the daemon sees one connection per TMM).
//
// Runs on every Node.js iRulesLX runs: 6.9.1 (most BIG-IPs), 8.x, and later ones. So: no
// async/await, no BigInt, no Buffer#subarray (a plain Uint8Array on Node 6: Buffer.concat
// then throws), nothing past what Node 6.9.1 has; tests/bigip.rs runs the tests on each.
'use strict';

const fs = require('fs');
const net = require('net');

const DEFAULT_SOCKET = '/run/otp-sidecar/otp.sock';
// ILX::call gives up after 3000 ms by default; answer before it does.
const DEFAULT_TIMEOUT_MS = 2800;
// Close our idle connection before the daemon's idle timeout (300 s) would: a close from
// this side can never race a request that is on its way.
const DEFAULT_IDLE_MS = 60000;
// Replies are tens of bytes; anything past this is not otp-sidecar.
const MAX_BUFFERED = 64 * 1024;
// The caller token the daemon's caller_tokens_file gives this BIG-IP, sent as the context's
// token with every sendOTP and confirmOTP ('' sends none; OTP_SIDECAR_CALLER_TOKEN overrides
// it, and a token the iRule passes wins over both). A secret: never logged here.
const CALLER_TOKEN = '';

// ---- Settings: command arguments, then the environment, then the defaults ----

/** A whole number in [min, max] from `text`, or undefined (with a warning) when it is not. */
function boundedInt(name, text, min, max, warnings) {
  if (text === undefined || text === '') return undefined;
  const n = Number(text);
  if (Number.isInteger(n) && n >= min && n <= max) return n;
  warnings.push(`${name} must be a whole number from ${min} to ${max}: ignored`);
  return undefined;
}

/**
 * The forwarder's settings from `argv` (the extension's command arguments: `--name=value`
 * words, as separate arguments or as one string) and `env`. Never throws: a bad value is
 * left out with a warning, a token file that cannot be read gives no token (the daemon then
 * answers ERR unauthorized, which says what is wrong).
 */
function settingsFrom(argv, env) {
  const given = {};
  const warnings = [];
  argv.join(' ').split(/\s+/).filter((w) => w !== '').forEach((word) => {
    const m = /^--(unix|timeout-ms|idle-ms|token-file)=(.*)$/.exec(word);
    if (m) given[m[1]] = m[2];
    // Only an option's name is ever repeated: a stray word might be a secret.
    else if (/^--[a-z-]+(=|$)/.test(word)) warnings.push(`unknown command argument ${word.split('=')[0]}: ignored`);
    else warnings.push('a command argument that is not --name=value: ignored');
  });
  const pick = (arg, name) => (given[arg] !== undefined && given[arg] !== '' ? given[arg] : env[name]);
  const settings = {
    path: pick('unix', 'OTP_SIDECAR_UNIX') || DEFAULT_SOCKET,
    timeoutMs: boundedInt('timeout-ms', pick('timeout-ms', 'OTP_SIDECAR_ILX_TIMEOUT_MS'), 100, 60000,
      warnings) || DEFAULT_TIMEOUT_MS,
    idleMs: boundedInt('idle-ms', pick('idle-ms', 'OTP_SIDECAR_ILX_IDLE_MS'), 1000, 3600000, warnings)
      || DEFAULT_IDLE_MS,
    token: CALLER_TOKEN,
    tokenFrom: CALLER_TOKEN ? 'index.js' : 'none',
    warnings,
  };
  const tokenFile = pick('token-file', 'OTP_SIDECAR_CALLER_TOKEN_FILE');
  if (tokenFile) {
    try {
      settings.token = fs.readFileSync(tokenFile, 'utf8').trim();
      settings.tokenFrom = `file ${tokenFile}`;
    } catch (err) {
      settings.token = '';
      settings.tokenFrom = 'none';
      warnings.push(`cannot read the token file ${tokenFile} (${err.code || err.message}): no token sent`);
    }
  } else if (env.OTP_SIDECAR_CALLER_TOKEN) {
    settings.token = env.OTP_SIDECAR_CALLER_TOKEN;
    settings.tokenFrom = 'OTP_SIDECAR_CALLER_TOKEN';
  }
  return settings;
}

/** One line for the log (on stderr, which ILX logs; see docs/deploy-bigip.md): never the token. */
function describeSettings(s) {
  return `otp_sidecar_forwarder pid ${process.pid}: socket ${s.path}, timeout ${s.timeoutMs} ms, `
    + `idle close ${s.idleMs} ms, caller token: ${s.tokenFrom}`
    + s.warnings.map((w) => `; ${w}`).join('');
}

// ---- MessagePack: the subset used by MessagePack-RPC requests and otp-sidecar replies ----

function encodeStr(s) {
  const bytes = Buffer.from(String(s), 'utf8');
  const n = bytes.length;
  let head;
  if (n < 32) head = Buffer.from([0xa0 | n]);
  else if (n < 0x100) head = Buffer.from([0xd9, n]);
  else if (n < 0x10000) head = Buffer.from([0xda, n >> 8, n & 0xff]);
  else { head = Buffer.alloc(5); head[0] = 0xdb; head.writeUInt32BE(n, 1); }
  return Buffer.concat([head, bytes]);
}

function encodeUint(n) {
  if (n < 0x80) return Buffer.from([n]);
  const b = Buffer.alloc(5);
  b[0] = 0xce;
  b.writeUInt32BE(n >>> 0, 1);
  return b;
}

function encodeArrayHeader(n) {
  if (n < 16) return Buffer.from([0x90 | n]);
  return Buffer.from([0xdc, n >> 8, n & 0xff]);
}

/** A map of string keys to string values (fewer than 16 entries). */
function encodeStrMap(entries) {
  const parts = [Buffer.from([0x80 | entries.length])];
  for (const [k, v] of entries) parts.push(encodeStr(k), encodeStr(v));
  return Buffer.concat(parts);
}

/** [0, msgid, method, params]: string params, or a string map given as an array of pairs. */
function encodeRequest(msgid, method, params) {
  const parts = [encodeArrayHeader(4), encodeUint(0), encodeUint(msgid), encodeStr(method),
    encodeArrayHeader(params.length)];
  for (const p of params) parts.push(Array.isArray(p) ? encodeStrMap(p) : encodeStr(p));
  return Buffer.concat(parts);
}

/**
 * The iRule's ILX::call arguments as sendOTP's: otp, phone, sender, then optionally ip, user
 * locale, channel and token, which become the context map (empty values left out); `token`,
 * when given, is the token sent when the iRule passes none.
 */
function sendOtpParams(args, token) {
  const params = args.slice(0, 3);
  const given = args.slice(3, 8);
  if (!given[4] && token) given[4] = token;
  const context = ['ip', 'user', 'locale', 'channel', 'token']
    .map((key, i) => [key, given[i]])
    .filter(([, value]) => value !== undefined && value !== '');
  if (context.length > 0) params.push(context);
  return params;
}

/** confirmOTP's params: the phone or VE... SID, and a context map with the token if any. */
function confirmOtpParams(args, token) {
  const chosen = args[1] || token;
  return chosen ? [args[0] || '', [['token', chosen]]] : [args[0] || ''];
}

const INCOMPLETE = Symbol('incomplete');

/** A 64-bit integer as two 32-bit reads (readBig*64BE arrived in Node 12); exact to 2^53. */
function read64(buf, pos, signed) {
  const high = signed ? buf.readInt32BE(pos) : buf.readUInt32BE(pos);
  return high * 0x100000000 + buf.readUInt32BE(pos + 4);
}

class Malformed extends Error {}

/** Decodes one value at buf[pos]; returns [value, next] or INCOMPLETE. */
function decodeAt(buf, pos, depth) {
  if (depth > 8) throw new Malformed('nested too deep');
  if (pos >= buf.length) return INCOMPLETE;
  const b = buf[pos];
  const need = (n) => pos + n <= buf.length;
  const bytes = (start, n) => (start + n <= buf.length
    ? [buf.toString('utf8', start, start + n), start + n] : INCOMPLETE);
  const array = (n, start) => {
    const items = [];
    let at = start;
    for (let i = 0; i < n; i += 1) {
      const r = decodeAt(buf, at, depth + 1);
      if (r === INCOMPLETE) return INCOMPLETE;
      items.push(r[0]);
      at = r[1];
    }
    return [items, at];
  };
  // A map as a Map (keys of any type, no prototype to trip over).
  const map = (n, start) => {
    const r = array(2 * n, start);
    if (r === INCOMPLETE) return INCOMPLETE;
    const entries = new Map();
    for (let i = 0; i < r[0].length; i += 2) entries.set(r[0][i], r[0][i + 1]);
    return [entries, r[1]];
  };
  if (b <= 0x7f) return [b, pos + 1];
  if (b >= 0xe0) return [b - 0x100, pos + 1];
  if (b >= 0xa0 && b <= 0xbf) return bytes(pos + 1, b & 0x1f);
  if (b >= 0x90 && b <= 0x9f) return array(b & 0x0f, pos + 1);
  if (b >= 0x80 && b <= 0x8f) return map(b & 0x0f, pos + 1);
  switch (b) {
    case 0xc0: return [null, pos + 1];
    case 0xc2: return [false, pos + 1];
    case 0xc3: return [true, pos + 1];
    case 0xcc: return need(2) ? [buf[pos + 1], pos + 2] : INCOMPLETE;
    case 0xcd: return need(3) ? [buf.readUInt16BE(pos + 1), pos + 3] : INCOMPLETE;
    case 0xce: return need(5) ? [buf.readUInt32BE(pos + 1), pos + 5] : INCOMPLETE;
    case 0xcf: return need(9) ? [read64(buf, pos + 1, false), pos + 9] : INCOMPLETE;
    case 0xd0: return need(2) ? [buf.readInt8(pos + 1), pos + 2] : INCOMPLETE;
    case 0xd1: return need(3) ? [buf.readInt16BE(pos + 1), pos + 3] : INCOMPLETE;
    case 0xd2: return need(5) ? [buf.readInt32BE(pos + 1), pos + 5] : INCOMPLETE;
    case 0xd3: return need(9) ? [read64(buf, pos + 1, true), pos + 9] : INCOMPLETE;
    case 0xca: return need(5) ? [buf.readFloatBE(pos + 1), pos + 5] : INCOMPLETE;
    case 0xcb: return need(9) ? [buf.readDoubleBE(pos + 1), pos + 9] : INCOMPLETE;
    case 0xc4: case 0xd9: return need(2) ? bytes(pos + 2, buf[pos + 1]) : INCOMPLETE;
    case 0xc5: case 0xda: return need(3) ? bytes(pos + 3, buf.readUInt16BE(pos + 1)) : INCOMPLETE;
    case 0xc6: case 0xdb: return need(5) ? bytes(pos + 5, buf.readUInt32BE(pos + 1)) : INCOMPLETE;
    case 0xdc: return need(3) ? array(buf.readUInt16BE(pos + 1), pos + 3) : INCOMPLETE;
    case 0xdd: return need(5) ? array(buf.readUInt32BE(pos + 1), pos + 5) : INCOMPLETE;
    case 0xde: return need(3) ? map(buf.readUInt16BE(pos + 1), pos + 3) : INCOMPLETE;
    case 0xdf: return need(5) ? map(buf.readUInt32BE(pos + 1), pos + 5) : INCOMPLETE;
    default: throw new Malformed(`unexpected MessagePack byte 0x${b.toString(16)}`);
  }
}

// ---- The connection to the daemon ----

/**
 * One persistent connection to the daemon, opened on first use and again after it drops.
 * Many calls may be in flight; replies are matched by msgid.
 */
class Forwarder {
  /** `options` wins over `settings` (default: this process's arguments and environment). */
  constructor(options = {}, settings = settingsFrom(process.argv.slice(2), process.env)) {
    this.settings = settings;
    this.path = options.path || settings.path;
    this.timeoutMs = options.timeoutMs || settings.timeoutMs;
    this.idleMs = options.idleMs || settings.idleMs;
    this.token = options.token !== undefined ? options.token : settings.token;
    this.socket = null;
    this.buffer = Buffer.alloc(0);
    this.pending = new Map();
    this.nextId = 1;
    this.idleTimer = null;
  }

  /** Resolves with the daemon's reply as a string; never rejects. */
  call(method, params) {
    return new Promise((resolve) => {
      const msgid = this.nextId;
      this.nextId = this.nextId >= 0x7fffffff ? 1 : this.nextId + 1;
      clearTimeout(this.idleTimer);
      const timer = setTimeout(() => {
        this.pending.delete(msgid);
        this.closeWhenIdle();
        resolve(`ERR timeout: otp-sidecar did not answer within ${this.timeoutMs} ms`);
      }, this.timeoutMs);
      this.pending.set(msgid, (reply) => { clearTimeout(timer); resolve(reply); });
      try {
        this.connection().write(encodeRequest(msgid, method, params));
      } catch (err) {
        this.pending.delete(msgid);
        clearTimeout(timer);
        resolve(`ERR internal: the forwarder could not send the call (${err.message})`);
      }
    });
  }

  connection() {
    if (this.socket) return this.socket;
    const socket = net.createConnection(this.path);
    this.socket = socket;
    this.buffer = Buffer.alloc(0);
    socket.on('data', (chunk) => this.receive(socket, chunk));
    socket.on('error', (err) => this.drop(socket, `ERR unavailable: ${err.code || err.message}`));
    socket.on('close', () => this.drop(socket, 'ERR unavailable: connection to otp-sidecar closed'));
    return socket;
  }

  /**
   * Everything in a data handler stays inside this try: an exception out of it would be
   * uncaught and kill the extension's process, for every user. A bad frame fails every call
   * in flight with an ERR and drops the connection; the next call opens a new one.
   */
  receive(socket, chunk) {
    try {
      if (this.socket !== socket) return; // already dropped
      this.buffer = Buffer.concat([this.buffer, chunk]);
      if (this.buffer.length > MAX_BUFFERED) {
        this.drop(socket, 'ERR unavailable: oversized reply from otp-sidecar');
        return;
      }
      for (;;) {
        const r = decodeAt(this.buffer, 0, 0);
        if (r === INCOMPLETE) return;
        // slice, not subarray: a Buffer on every Node.js.
        this.buffer = this.buffer.slice(r[1]);
        this.settle(r[0]);
      }
    } catch (err) {
      this.drop(socket, `ERR unavailable: bad reply from otp-sidecar (${err.message})`);
    }
  }

  /** Hands a [1, msgid, error, result] response to the call waiting for it. */
  settle(message) {
    // A notification, [2, method, params], answers no call.
    if (Array.isArray(message) && message.length === 3 && message[0] === 2) return;
    if (!Array.isArray(message) || message.length !== 4 || message[0] !== 1) {
      throw new Malformed('not a response');
    }
    const [, msgid, error, result] = message;
    const done = this.pending.get(msgid);
    if (!done) return; // already timed out
    this.pending.delete(msgid);
    this.closeWhenIdle();
    if (error !== null && error !== undefined) {
      // Every failure the iRule sees starts with ERR: never SM, never a bare value.
      done(typeof error === 'string' && error.startsWith('ERR ') ? error
        : 'ERR internal: unexpected error from otp-sidecar');
    } else if (typeof result === 'string') done(result);
    else done('ERR internal: unexpected result from otp-sidecar');
  }

  /** With nothing in flight, closes the connection after idleMs unless a call comes first. */
  closeWhenIdle() {
    const socket = this.socket;
    if (!socket || this.pending.size > 0) return;
    clearTimeout(this.idleTimer);
    this.idleTimer = setTimeout(() => {
      if (this.socket !== socket || this.pending.size > 0) return;
      this.socket = null;
      socket.end();
    }, this.idleMs);
    this.idleTimer.unref();
  }

  /** Forgets a broken connection and fails the calls that were waiting on it. */
  drop(socket, reason) {
    if (this.socket !== socket) return;
    this.socket = null;
    socket.destroy();
    const waiting = [...this.pending.values()];
    this.pending.clear();
    for (const done of waiting) done(reason);
  }

  close() {
    clearTimeout(this.idleTimer);
    if (this.socket) this.drop(this.socket, 'ERR unavailable: forwarder closed');
  }
}

// ---- ILX registration ----

/** Answers ILX; nothing thrown here can reach the extension's process. */
function reply(res, text) {
  try {
    res.reply(text);
  } catch (err) {
    // ILX refused the reply (the call is gone): nobody is left to tell.
  }
}

/** An ILX method that relays to `method`; `params(args)` makes its params from ILX's. */
function relay(forwarder, method, params) {
  return (req, res) => {
    try {
      forwarder.call(method, params(req.params().map((p) => String(p))))
        .then((text) => reply(res, text));
    } catch (err) {
      reply(res, `ERR internal: ${method} could not be relayed (${err.message})`);
    }
  };
}

function register(ilx, forwarder) {
  ilx.addMethod('sendOTP', relay(forwarder, 'sendOTP',
    (args) => sendOtpParams(args, forwarder.token)));
  // Verify mode: the phone number or VE... SID whose code APM accepted.
  ilx.addMethod('confirmOTP', relay(forwarder, 'confirmOTP',
    (args) => confirmOtpParams(args, forwarder.token)));
}

// Loaded by ILX (or by a test with a stand-in f5-nodejs): register and listen.
const f5 = require('f5-nodejs');

const ilx = new f5.ILXServer();
const forwarder = new Forwarder();
console.error(describeSettings(forwarder.settings));
register(ilx, forwarder);
ilx.listen();

module.exports = {
  Forwarder, settingsFrom, describeSettings, encodeRequest, sendOtpParams, confirmOtpParams, decodeAt, INCOMPLETE, forwarder,
};
