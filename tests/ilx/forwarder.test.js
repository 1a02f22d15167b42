// The ILX forwarder, loaded as ILX would load it (with a stand-in f5-nodejs), driven against
// the real otp-sidecar daemon and against fake daemons that answer in ways the real one may
// (replies split in pieces, integers in any width) or must never (garbage, a bad frame).
//
// Runs on every Node.js iRulesLX runs (6.9.1, 8.11.1) and on the current LTS, under the tiny
// harness beside it (no node:test, no async/await: Node 6 has neither). tests/daemon/bigip.rs
// runs it once per runtime, as `node tests/ilx/forwarder.test.js`, and provides:
//   OTP_SIDECAR_BIN   the daemon binary
//   TWILIO_MOCK_URL   a mock Twilio: 201 for every number but +31600000000, which gets 21211
//   NODE_PATH         tests/ilx/stubs, for the stand-in f5-nodejs
'use strict';

const assert = require('assert');
const fs = require('fs');
const net = require('net');
const os = require('os');
const path = require('path');
const spawn = require('child_process').spawn;
const harness = require('./harness');

const test = harness.test;
const sleep = harness.sleep;
const series = harness.series;

const SID = 'SM0123456789abcdef0123456789abcdef';
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'otp-ilx-'));
const socketPath = path.join(dir, 'otp.sock');

process.env.OTP_SIDECAR_UNIX = socketPath;
const forwarderModule = require('../../irules/ilx/otp_sidecar_forwarder/index.js');
const ILXServer = require('f5-nodejs').ILXServer;

const ilx = ILXServer.instances[0];
const shared = forwarderModule.forwarder;

// Every daemon started here dies with the test process, whatever happens.
const children = [];
process.on('exit', () => {
  children.forEach((child) => { try { child.kill('SIGKILL'); } catch (e) { /* gone */ } });
  try {
    fs.readdirSync(dir).forEach((name) => fs.unlinkSync(path.join(dir, name)));
    fs.rmdirSync(dir);
  } catch (e) { /* best effort */ }
});

function like(text, pattern) {
  assert.ok(pattern.test(text), `${JSON.stringify(text)} does not match ${pattern}`);
}

/**
 * Starts the daemon on socketPath; resolves once it says it is ready. A test that failed
 * midway may have left its daemon running there: that one is stopped first.
 */
function startDaemon(extraArgs) {
  return Promise.all(children.map(stopDaemon)).then(() => spawnDaemon(extraArgs));
}

function spawnDaemon(extraArgs) {
  const child = spawn(process.env.OTP_SIDECAR_BIN, [
    'serve', '--unix', socketPath, '--twilio-api-url', process.env.TWILIO_MOCK_URL,
    '--rate-limit-phone=off', '--rate-limit-global=off', '--resend-dedup=false'].concat(extraArgs || []), {
    env: {
      PATH: process.env.PATH,
      TWILIO_ACCOUNT_SID: 'ACfeedfacefeedfacefeedfacefeedface',
      TWILIO_AUTH_TOKEN: 'authtoken-8f1d2c3b4a5e6f7a8b9c0d1e',
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  children.push(child);
  return new Promise((resolve, reject) => {
    let log = '';
    const timer = setTimeout(() => reject(new Error(`daemon not ready:\n${log}`)), 10000);
    child.stderr.on('data', (d) => {
      log += d;
      if (log.indexOf(' ready ') >= 0) { clearTimeout(timer); resolve(child); }
    });
    child.on('exit', (code) => { clearTimeout(timer); reject(new Error(`daemon exited ${code}:\n${log}`)); });
  });
}

function stopDaemon(child) {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) { resolve(); return; }
    child.once('exit', () => resolve());
    child.kill('SIGTERM');
  });
}

/** Runs body() against a fresh daemon, then stops it and drops the ILX forwarder's connection. */
function withDaemon(extraArgs, body) {
  let daemon = null;
  const cleanup = () => {
    shared.close();
    return daemon ? stopDaemon(daemon) : null;
  };
  return startDaemon(extraArgs)
    .then((child) => { daemon = child; return body(); })
    .then((value) => Promise.resolve(cleanup()).then(() => value),
      (err) => Promise.resolve(cleanup()).then(() => { throw err; }));
}

/** A Unix server at dir/name; `onConnection(socket, index)` for each client. */
function fakeDaemon(name, onConnection) {
  const p = path.join(dir, name);
  let connections = 0;
  const server = net.createServer((s) => {
    s.on('error', () => {});
    connections += 1;
    if (onConnection) onConnection(s, connections - 1);
  });
  return new Promise((resolve) => {
    server.listen(p, () => resolve({ server, path: p, connections: () => connections }));
  });
}

/**
 * The fake daemons' own decoder (not the forwarder's, which is under test): what requests
 * hold, uints, strings, arrays and maps (as a Map). [value, next], or null when incomplete.
 */
function decodeRequestAt(buf, pos) {
  if (pos >= buf.length) return null;
  const b = buf[pos];
  const have = (n) => pos + n <= buf.length;
  const str = (start, n) => (start + n <= buf.length ? [buf.toString('utf8', start, start + n), start + n] : null);
  const items = (n, start, asMap) => {
    const out = [];
    let at = start;
    for (let i = 0; i < (asMap ? 2 * n : n); i += 1) {
      const r = decodeRequestAt(buf, at);
      if (!r) return null;
      out.push(r[0]);
      at = r[1];
    }
    if (!asMap) return [out, at];
    const m = new Map();
    for (let i = 0; i < out.length; i += 2) m.set(out[i], out[i + 1]);
    return [m, at];
  };
  if (b <= 0x7f) return [b, pos + 1];
  if (b >= 0xa0 && b <= 0xbf) return str(pos + 1, b & 0x1f);
  if (b >= 0x90 && b <= 0x9f) return items(b & 0x0f, pos + 1, false);
  if (b >= 0x80 && b <= 0x8f) return items(b & 0x0f, pos + 1, true);
  if (b === 0xce) return have(5) ? [buf.readUInt32BE(pos + 1), pos + 5] : null;
  if (b === 0xd9) return have(2) ? str(pos + 2, buf[pos + 1]) : null;
  if (b === 0xda) return have(3) ? str(pos + 3, buf.readUInt16BE(pos + 1)) : null;
  if (b === 0xdb) return have(5) ? str(pos + 5, buf.readUInt32BE(pos + 1)) : null;
  if (b === 0xdc) return have(3) ? items(buf.readUInt16BE(pos + 1), pos + 3, false) : null;
  throw new Error(`the forwarder sent 0x${b.toString(16)}, which no request needs`);
}

/**
 * Calls `onRequest(request, bytes)` for every complete request a client sends: request is
 * [0, msgid, method, params], bytes its encoding.
 */
function onRequests(socket, onRequest) {
  let buffer = Buffer.alloc(0);
  socket.on('data', (chunk) => {
    buffer = Buffer.concat([buffer, chunk]);
    for (;;) {
      const r = decodeRequestAt(buffer, 0);
      if (!r) return;
      const bytes = buffer.slice(0, r[1]);
      buffer = buffer.slice(r[1]);
      onRequest(r[0], bytes);
    }
  });
}

/** The MessagePack bytes of a string (fixstr, str8 or str16). */
function mpStr(s) {
  const bytes = Buffer.from(s, 'utf8');
  const n = bytes.length;
  let head;
  if (n < 32) head = Buffer.from([0xa0 | n]);
  else if (n < 0x100) head = Buffer.from([0xd9, n]);
  else head = Buffer.from([0xda, n >> 8, n & 0xff]);
  return Buffer.concat([head, bytes]);
}

/** [1, msgid, nil, result] with the msgid's own encoding given as bytes. */
function responseWith(msgidBytes, result) {
  return Buffer.concat([Buffer.from([0x94, 0x01]), msgidBytes, Buffer.from([0xc0]), mpStr(result)]);
}

/** msgid as the smallest MessagePack uint, like the daemon writes it. */
function uintBytes(n) {
  if (n < 0x80) return Buffer.from([n]);
  if (n < 0x100) return Buffer.from([0xcc, n]);
  if (n < 0x10000) return Buffer.from([0xcd, n >> 8, n & 0xff]);
  const b = Buffer.alloc(5);
  b[0] = 0xce;
  b.writeUInt32BE(n, 1);
  return b;
}

/** Writes buf in pieces of the given sizes (cycling), each after the reader had its turn. */
function trickle(socket, buf, sizes) {
  let at = 0;
  let i = 0;
  function more() {
    if (at >= buf.length || socket.destroyed) return;
    const n = sizes[i % sizes.length];
    i += 1;
    socket.write(buf.slice(at, at + n));
    at += n;
    setImmediate(more);
  }
  more();
}

/**
 * A relay in front of the real daemon that passes requests on as they are and hands the
 * daemon's replies back in pieces of 1, 2, 3, 5… bytes: a piece ends mid-reply, or holds the
 * end of one reply and the start of the next.
 */
function chunkingRelay(name, target) {
  const sizes = [1, 2, 3, 5, 8, 13, 21, 34, 55, 7];
  return fakeDaemon(name, (client) => {
    const upstream = net.createConnection(target);
    let queue = Buffer.alloc(0);
    let pumping = false;
    let i = 0;
    function pump() {
      if (queue.length === 0 || client.destroyed) { pumping = false; return; }
      pumping = true;
      const n = sizes[i % sizes.length];
      i += 1;
      client.write(queue.slice(0, n));
      queue = queue.slice(Math.min(n, queue.length));
      setImmediate(pump);
    }
    upstream.on('data', (d) => {
      queue = Buffer.concat([queue, d]);
      if (!pumping) pump();
    });
    upstream.on('error', () => client.destroy());
    upstream.on('close', () => client.end());
    client.on('data', (d) => upstream.write(d));
    client.on('close', () => upstream.destroy());
  });
}

// ---- The ILX side ----

test('registers sendOTP and confirmOTP with ILXServer and listens', () => {
  assert.ok(ilx.methods.has('sendOTP'));
  assert.ok(ilx.methods.has('confirmOTP'));
  assert.strictEqual(ilx.listening, true);
});

// ---- Against the real daemon ----

test('success: the SID', () => withDaemon([], () => ilx.call('sendOTP', '918273', '+31612345678', 'ACME')
  .then((reply) => assert.strictEqual(reply, SID))));

test('Twilio error: the daemon\'s ERR string', () => withDaemon([], () => ilx.call('sendOTP', '918273', '+31600000000', 'ACME')
  .then((reply) => like(reply, /^ERR twilio 21211: /))));

test('bad input: ERR bad_request from the daemon', () => withDaemon([], () => ilx.call('sendOTP', '918273', '+31612345678')
  .then((reply) => like(reply, /^ERR bad_request: /))));

test('ip, user and locale reach the daemon as the context map', () => withDaemon([], () => {
  // The daemon limits each user to 5 sends in 10 minutes (its default): the sixth for
  // "dave" is refused, so the user arrived; another user still gets through.
  const five = [0, 1, 2, 3, 4].map((i) => () => ilx.call('sendOTP', '918273', `+3160000010${i}`,
    'ACME', '192.0.2.44%1', 'dave', 'nl-NL').then((reply) => assert.strictEqual(reply, SID)));
  return series(five.concat([
    () => ilx.call('sendOTP', '918273', '+31600000109', 'ACME', '', 'dave', ''),
    (refused) => like(refused, /^ERR rate_limited: retry in \d+ s$/),
    () => ilx.call('sendOTP', '918273', '+31600000109', 'ACME', '', 'erin', ''),
    (reply) => assert.strictEqual(reply, SID),
  ]));
}));

test('sequential calls on one connection: every reply, not only the first', () => withDaemon([], () => {
  let first = null;
  const phones = ['+31612345678', '+31612345678', '+31600000000', '+31612345678', '+31612345678',
    '+31600000000', '+31612345678', '+31612345678'];
  return series(phones.map((phone, i) => () => ilx.call('sendOTP', '918273', phone, 'ACME')
    .then((reply) => {
      if (phone === '+31600000000') like(reply, /^ERR twilio 21211/);
      else assert.strictEqual(reply, SID, `call ${i + 1}`);
      if (i === 0) first = shared.socket;
      assert.ok(first && shared.socket === first, `call ${i + 1} was not on the first connection`);
    })));
}));

test('pipelined calls on one connection, answered out of order', () => withDaemon([], () => {
  const phones = Array.from({ length: 25 }, (_, i) => (i % 5 === 0 ? '+31600000000' : '+31612345678'));
  const calls = phones.map((p) => ilx.call('sendOTP', '918273', p, 'ACME'));
  const socket = shared.socket;
  return Promise.all(calls).then((replies) => {
    replies.forEach((reply, i) => {
      if (phones[i] === '+31600000000') like(reply, /^ERR twilio 21211/);
      else assert.strictEqual(reply, SID, `call ${i + 1}`);
    });
    assert.ok(socket && shared.socket === socket, 'the connection was dropped');
  });
}));

test('the daemon\'s replies split in pieces and run together (a relay re-chunks them)', () => withDaemon([], () => chunkingRelay('relay.sock', socketPath).then((relay) => {
  const forwarder = new forwarderModule.Forwarder({ path: relay.path, timeoutMs: 20000 });
  const one = (phone) => forwarder.call('sendOTP', ['918273', phone, 'ACME']);
  const check = (phone, reply) => {
    if (phone === '+31600000000') like(reply, /^ERR twilio 21211: /);
    else assert.strictEqual(reply, SID);
  };
  const sequential = ['+31612345678', '+31600000000', '+31612345678', '+31612345678'];
  const pipelined = Array.from({ length: 20 }, (_, i) => (i % 3 === 0 ? '+31600000000' : '+31612345678'));
  return series(sequential.map((phone) => () => one(phone).then((reply) => check(phone, reply))))
    .then(() => Promise.all(pipelined.map(one)))
    .then((replies) => {
      replies.forEach((reply, i) => check(pipelined[i], reply));
      assert.strictEqual(relay.connections(), 1, 'all calls on one connection');
    })
    .then(() => { forwarder.close(); relay.server.close(); },
      (err) => { forwarder.close(); relay.server.close(); throw err; });
})));

test('non-ASCII user names reach the daemon as UTF-8, each its own rate-limit key', () => withDaemon([], () => {
  // Five sends per user (the daemon's default): the sixth is refused. What a Latin-1 or
  // low-byte encoder would have made of the name (Aukasz, 0-, Jose Muller) is another user.
  const steps = [];
  [['José Müller', 'Jose Muller'], ['Łukasz', 'Aukasz'], ['田中', '0-']].forEach((pair) => {
    const user = pair[0];
    [0, 1, 2, 3, 4].forEach((i) => {
      steps.push(() => ilx.call('sendOTP', '918273', '+31612345678', 'ACME', '', user, '')
        .then((reply) => assert.strictEqual(reply, SID, `${user}, send ${i + 1}`)));
    });
    steps.push(() => ilx.call('sendOTP', '918273', '+31612345678', 'ACME', '', user, '')
      .then((reply) => like(reply, /^ERR rate_limited: /)));
    steps.push(() => ilx.call('sendOTP', '918273', '+31612345678', 'ACME', '', pair[1], '')
      .then((reply) => assert.strictEqual(reply, SID, `${pair[1]} is not ${user}`)));
  });
  return series(steps);
}));

test('a non-ASCII phone: the daemon\'s ERR invalid_phone, the connection still in use', () => withDaemon([], () => {
  let socket = null;
  return series(['田中', 'Łukasz', '+31 6 José Müller'].map((phone) => () => ilx.call('sendOTP', '918273', phone, 'ACME', '', 'José Müller', '')
    .then((reply) => {
      like(reply, /^ERR invalid_phone: /);
      if (!socket) socket = shared.socket;
      assert.ok(shared.socket === socket, 'the connection was dropped');
    })))
    .then(() => ilx.call('sendOTP', '918273', '+31612345678', 'ACME', '', 'José Müller', ''))
    .then((reply) => assert.strictEqual(reply, SID));
}));

test('daemon down: ERR unavailable', () => ilx.call('sendOTP', '918273', '+31612345678', 'ACME')
  .then((reply) => like(reply, /^ERR unavailable: /)));

test('nothing an ILX request or reply throws escapes the handler', (done) => {
  // ILX's req.params() throwing: an ERR reply. ILX refusing the reply (res.reply throws,
  // here after ERR unavailable, no daemon running): swallowed, where it would have been an
  // unhandled rejection (the harness fails the test on one; Node 15+ dies of it).
  const handler = ilx.methods.get('sendOTP');
  const replies = [];
  handler({ params: () => { throw new Error('no params'); } }, { reply: (text) => replies.push(text) });
  handler({ params: () => ['918273', '+31612345678', 'ACME'] }, {
    reply: (text) => {
      replies.push(text);
      setTimeout(() => {
        try {
          assert.strictEqual(replies.length, 2);
          like(replies[0], /^ERR internal: /);
          like(replies[1], /^ERR unavailable: /);
          done();
        } catch (err) { done(err); }
      }, 20);
      throw new Error('ILX is gone');
    },
  });
});

test('daemon restarted between calls: reconnects', () => {
  let daemon = null;
  const done = () => (daemon ? stopDaemon(daemon) : null);
  return series([
    () => startDaemon(),
    (child) => { daemon = child; return ilx.call('sendOTP', '918273', '+31612345678', 'ACME'); },
    (reply) => { assert.strictEqual(reply, SID); return stopDaemon(daemon); },
    () => startDaemon(),
    (child) => { daemon = child; return ilx.call('sendOTP', '918273', '+31612345678', 'ACME'); },
    (reply) => assert.strictEqual(reply, SID),
  ]).then(() => { shared.close(); return done(); },
    (err) => { shared.close(); return Promise.resolve(done()).then(() => { throw err; }); });
});

test('Verify mode: sendOTP answers VE..., confirmOTP approves by SID or phone', () => {
  // A dry run in Verify mode makes up VE... SIDs; a Messages daemon refuses a VE... SID.
  let ve = null;
  return withDaemon(['--dry-run', '--verify-service-sid', 'VA0123456789abcdef0123456789abcdef'], () => series([
    () => ilx.call('sendOTP', '918273', '+31612345678', 'ACME'),
    (reply) => { like(reply, /^VE[0-9a-f]{32}$/); ve = reply; return ilx.call('confirmOTP', ve); },
    (reply) => { assert.strictEqual(reply, ve); return ilx.call('confirmOTP', '+31612345678'); },
    (reply) => { like(reply, /^VE[0-9a-f]{32}$/); return ilx.call('confirmOTP', 'nonsense'); },
    (reply) => { like(reply, /^ERR bad_request: /); return ilx.call('confirmOTP'); },
    (reply) => like(reply, /^ERR bad_request: /),
  ])).then(() => withDaemon([], () => ilx.call('confirmOTP', ve)))
    .then((reply) => like(reply, /^ERR bad_request: a VE. SID needs Verify mode/));
});

test('caller tokens: the iRule\'s or the forwarder\'s own reaches the daemon as context.token', () => {
  const TOKEN = 'tok-ilx-0f1e2d3c4b5a69788796a5b4';
  const tokens = path.join(dir, 'tokens');
  fs.writeFileSync(tokens, `# this BIG-IP\nbigip-ilx ${TOKEN}\n`);
  let ve = null;
  const restore = () => { shared.token = ''; };
  return withDaemon(['--dry-run', '--verify-service-sid', 'VA0123456789abcdef0123456789abcdef',
    '--caller-tokens-file', tokens], () => series([
    () => ilx.call('sendOTP', '918273', '+31612345678', 'ACME'),
    (reply) => {
      like(reply, /^ERR unauthorized: /);
      return ilx.call('sendOTP', '918273', '+31612345678', 'ACME', '', '', '', '', 'tok-wrong-0000000000000000');
    },
    (reply) => {
      like(reply, /^ERR unauthorized: caller token not accepted/);
      return ilx.call('sendOTP', '918273', '+31612345678', 'ACME', '192.0.2.1', 'alice', '', '', TOKEN);
    },
    (reply) => { like(reply, /^VE[0-9a-f]{32}$/); ve = reply; return ilx.call('confirmOTP', ve); },
    (reply) => { like(reply, /^ERR unauthorized: /); return ilx.call('confirmOTP', ve, TOKEN); },
    (reply) => {
      assert.strictEqual(reply, ve);
      shared.token = TOKEN;
      return ilx.call('sendOTP', '918273', '+31612345678', 'ACME');
    },
    (reply) => { like(reply, /^VE[0-9a-f]{32}$/); return ilx.call('confirmOTP', '+31612345678'); },
    (reply) => like(reply, /^VE[0-9a-f]{32}$/),
  ])).then(restore, (err) => { restore(); throw err; });
});

test('closes its own idle connection, before the daemon would, and reconnects', () => withDaemon([], () => {
  const forwarder = new forwarderModule.Forwarder({ path: socketPath, idleMs: 500 });
  const send = () => forwarder.call('sendOTP', ['918273', '+31612345678', 'ACME']);
  let first = null;
  let closed = null;
  return series([
    send,
    (reply) => {
      assert.strictEqual(reply, SID);
      first = forwarder.socket;
      closed = new Promise((resolve, reject) => {
        first.once('close', resolve);
        setTimeout(() => reject(new Error('the idle connection was not closed')), 5000).unref();
      });
      // A call inside the idle window keeps the connection.
      return sleep(50);
    },
    send,
    (reply) => {
      assert.strictEqual(reply, SID);
      assert.strictEqual(forwarder.socket, first);
      return closed;
    },
    () => { assert.strictEqual(forwarder.socket, null); return send(); },
    (reply) => {
      assert.strictEqual(reply, SID);
      assert.notStrictEqual(forwarder.socket, first);
    },
  ]).then(() => forwarder.close(), (err) => { forwarder.close(); throw err; });
}));

// ---- Against fake daemons ----

test('a silent daemon: ERR timeout before ILX gives up', () => fakeDaemon('silent.sock').then((silent) => {
  const forwarder = new forwarderModule.Forwarder({ path: silent.path, timeoutMs: 300 });
  return forwarder.call('sendOTP', ['918273', '+31612345678', 'ACME']).then((reply) => {
    assert.strictEqual(reply, 'ERR timeout: otp-sidecar did not answer within 300 ms');
    forwarder.close();
    silent.server.close();
  });
}));

test('a garbage reply: ERR unavailable, never SM', () => fakeDaemon('liar.sock', (s) => {
  s.on('data', () => s.write(Buffer.from('SM-not-msgpack\xc1', 'binary')));
}).then((liar) => {
  const forwarder = new forwarderModule.Forwarder({ path: liar.path, timeoutMs: 2000 });
  return forwarder.call('sendOTP', ['918273', '+31612345678', 'ACME']).then((reply) => {
    like(reply, /^ERR unavailable: /);
    forwarder.close();
    liar.server.close();
  });
}));

test('a bad frame fails every call in flight with ERR, then the next call reconnects', () => {
  // The first connection gets three requests and answers them with a reply and a byte that
  // is no MessagePack (0xc1); the second answers [2, ...] (a notification: ignored), then
  // properly; the third answers a map where the response should be; the fourth properly.
  const answers = [
    (s) => {
      const seen = [];
      onRequests(s, (req) => {
        seen.push(req[1]);
        if (seen.length === 3) s.write(Buffer.concat([responseWith(uintBytes(seen[0]), SID), Buffer.from([0xc1])]));
      });
    },
    (s) => onRequests(s, (req) => {
      s.write(Buffer.concat([Buffer.from([0x93, 0x02, 0xa4]), Buffer.from('note'), Buffer.from([0x90]),
        responseWith(uintBytes(req[1]), SID)]));
    }),
    (s) => onRequests(s, () => s.write(Buffer.from([0x81, 0xa1, 0x61, 0x01]))),
    (s) => onRequests(s, (req) => s.write(responseWith(uintBytes(req[1]), SID))),
  ];
  return fakeDaemon('badframe.sock', (s, i) => answers[i](s)).then((fake) => {
    const forwarder = new forwarderModule.Forwarder({ path: fake.path, timeoutMs: 2000 });
    const send = () => forwarder.call('sendOTP', ['918273', '+31612345678', 'ACME']);
    return Promise.all([send(), send(), send()]).then((replies) => {
      assert.strictEqual(replies[0], SID);
      like(replies[1], /^ERR unavailable: bad reply from otp-sidecar/);
      like(replies[2], /^ERR unavailable: bad reply from otp-sidecar/);
      assert.strictEqual(forwarder.pending.size, 0);
      return send();
    }).then((reply) => {
      assert.strictEqual(reply, SID, 'after a notification');
      assert.strictEqual(fake.connections(), 2);
      forwarder.close(); // the next calls on a third connection
      return Promise.all([send(), send()]);
    }).then((replies) => {
      replies.forEach((r) => like(r, /^ERR unavailable: bad reply from otp-sidecar/));
      return send();
    }).then((reply) => {
      assert.strictEqual(reply, SID);
      assert.strictEqual(fake.connections(), 4);
      forwarder.close();
      fake.server.close();
    });
  });
});

test('an error that is no ERR string is never passed on as one (nor as SM)', () => fakeDaemon('errors.sock', (s) => {
  // Errors: an SM string, a number, a map; then a result that is not a string.
  const errors = [mpStr('SM0123456789abcdef0123456789abcdef'), Buffer.from([0x2a]),
    Buffer.from([0x81, 0xa1, 0x61, 0x01]), null];
  let n = 0;
  onRequests(s, (req) => {
    const error = errors[n % errors.length];
    n += 1;
    s.write(error
      ? Buffer.concat([Buffer.from([0x94, 0x01]), uintBytes(req[1]), error, Buffer.from([0xc0])])
      : Buffer.concat([Buffer.from([0x94, 0x01]), uintBytes(req[1]), Buffer.from([0xc0, 0x07])]));
  });
}).then((fake) => {
  const forwarder = new forwarderModule.Forwarder({ path: fake.path, timeoutMs: 2000 });
  const send = () => forwarder.call('sendOTP', ['918273', '+31612345678', 'ACME']);
  const replies = [];
  return series([0, 1, 2, 3].map(() => () => send().then((r) => { replies.push(r); }))).then(() => {
    replies.forEach((r) => like(r, /^ERR internal: /));
    forwarder.close();
    fake.server.close();
  });
}));

test('msgids in every integer width, uint64 and int64 too (no BigInt before Node 12)', () => {
  // The daemon writes the smallest width; another peer may use any. Each reply carries the
  // request's msgid in the next encoding.
  const widths = [
    (id) => uintBytes(id),
    (id) => Buffer.from([0xcc, id]),
    (id) => Buffer.from([0xcd, 0, id]),
    (id) => Buffer.from([0xce, 0, 0, 0, id]),
    (id) => Buffer.from([0xcf, 0, 0, 0, 0, 0, 0, 0, id]),
    (id) => Buffer.from([0xd0, id]),
    (id) => Buffer.from([0xd1, 0, id]),
    (id) => Buffer.from([0xd2, 0, 0, 0, id]),
    (id) => Buffer.from([0xd3, 0, 0, 0, 0, 0, 0, 0, id]),
  ];
  return fakeDaemon('widths.sock', (s) => {
    let n = 0;
    onRequests(s, (req) => {
      s.write(responseWith(widths[n % widths.length](req[1]), `${SID.slice(0, 33)}${n % 10}`));
      n += 1;
    });
  }).then((fake) => {
    const forwarder = new forwarderModule.Forwarder({ path: fake.path, timeoutMs: 2000 });
    const calls = widths.map((_, i) => () => forwarder.call('sendOTP', ['918273', '+31612345678', 'ACME'])
      .then((reply) => assert.strictEqual(reply, `${SID.slice(0, 33)}${i}`, `width ${i}`)));
    return series(calls).then(() => {
      assert.strictEqual(fake.connections(), 1);
      forwarder.close();
      fake.server.close();
    });
  });
});

test('the decoder reads 64-bit integers with two 32-bit reads', () => {
  const decode = (bytes) => forwarderModule.decodeAt(Buffer.from(bytes), 0, 0);
  assert.deepStrictEqual(decode([0xcf, 0, 0, 0, 1, 0, 0, 0, 2]), [4294967298, 9]);
  assert.deepStrictEqual(decode([0xcf, 0, 0x1f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
    [Number.MAX_SAFE_INTEGER, 9]);
  assert.deepStrictEqual(decode([0xd3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]), [-1, 9]);
  assert.deepStrictEqual(decode([0xd3, 0xff, 0xff, 0xff, 0xfe, 0, 0, 0, 0]), [-8589934592, 9]);
  assert.deepStrictEqual(decode([0xd3, 0, 0, 0, 0, 0x80, 0, 0, 0]), [2147483648, 9]);
  assert.strictEqual(decode([0xcf, 0, 0, 0, 0, 0, 0, 0]), forwarderModule.INCOMPLETE);
  assert.strictEqual(decode([0xd3, 0, 0, 0, 0, 0, 0, 0]), forwarderModule.INCOMPLETE);
});

test('non-ASCII phone and context round-trip as UTF-8, replies split mid-character', () => {
  // The fake daemon answers each call with its phone and context values joined by " | ",
  // one byte at a time, so multibyte characters arrive in pieces.
  const requests = [];
  return fakeDaemon('echo.sock', (s) => onRequests(s, (req, bytes) => {
    requests.push(bytes);
    const params = req[3];
    const values = [params[1]].concat(params[3] ? Array.from(params[3].values()) : []);
    trickle(s, responseWith(uintBytes(req[1]), values.join(' | ')), [1]);
  })).then((fake) => {
    const forwarder = new forwarderModule.Forwarder({ path: fake.path, timeoutMs: 20000 });
    let pieces = 0;
    const receive = forwarder.receive;
    forwarder.receive = function counted(socket, chunk) {
      pieces += 1;
      return receive.call(this, socket, chunk);
    };
    const cases = [
      [['918273', '田中', 'ACME', '', 'José Müller', 'es-ñ'], '田中 | José Müller | es-ñ'],
      [['918273', 'Łukasz', 'ACME', '', '田中'], 'Łukasz | 田中'],
      [['918273', '+31612345678', 'ACME', '', 'Łukasz'], '+31612345678 | Łukasz'],
      // Past 31 bytes (str8) and past 255 (str16) in the reply.
      [['918273', '+31612345678', 'ACME', '', 'Ñ'.repeat(20)], `+31612345678 | ${'Ñ'.repeat(20)}`],
      [['918273', '田中'.repeat(50), 'ACME'], '田中'.repeat(50)],
    ];
    return series(cases.map((c) => () => forwarder
      .call('sendOTP', forwarderModule.sendOtpParams(c[0]))
      .then((reply) => assert.strictEqual(reply, c[1]))))
      .then(() => {
        assert.ok(pieces > 2 * cases.length, `the replies came in ${pieces} pieces`);
        // The strings went out as UTF-8 with byte counts in their headers.
        const has = (bytes, head, s) => bytes.indexOf(Buffer.concat([Buffer.from(head), Buffer.from(s, 'utf8')])) >= 0;
        assert.ok(has(requests[0], [0xa6], '田中'), 'phone 田中 as 6 bytes');
        assert.ok(has(requests[0], [0xa4, 0x75, 0x73, 0x65, 0x72, 0xad], 'José Müller'), 'user as 13 bytes');
        assert.ok(has(requests[0], [0xa5], 'es-ñ'), 'locale as 5 bytes');
        assert.ok(has(requests[1], [0xa7], 'Łukasz'), 'phone Łukasz as 7 bytes');
        assert.ok(has(requests[3], [0xa4, 0x75, 0x73, 0x65, 0x72, 0xd9, 40], 'Ñ'.repeat(20)), 'str8 of 40 bytes');
        assert.ok(has(requests[4], [0xda, 0x01, 0x2c], '田中'.repeat(50)), 'str16 of 300 bytes');
        forwarder.close();
        fake.server.close();
      });
  });
});

/**
 * Runs index.js as its own process, as ILX runs an extension: `args` as its command
 * arguments, no OTP_SIDECAR_* in its environment; sends `calls` through the stand-in ILX's
 * stdin; resolves with { log, replies }.
 */
function runAsIlx(args, calls) {
  return new Promise((resolve, reject) => {
    const env = { PATH: process.env.PATH, NODE_PATH: process.env.NODE_PATH, F5_STUB_ILX_STDIO: '1' };
    const child = spawn(process.execPath,
      [path.join(__dirname, '../../irules/ilx/otp_sidecar_forwarder/index.js')].concat(args),
      { env, stdio: ['pipe', 'pipe', 'pipe'] });
    children.push(child);
    let out = '';
    const replies = [];
    const log = [];
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk) => log.push(chunk));
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk) => {
      out += chunk;
      let nl = out.indexOf('\n');
      while (nl >= 0) {
        const line = out.slice(0, nl);
        out = out.slice(nl + 1);
        replies.push(JSON.parse(line));
        nl = out.indexOf('\n');
      }
      if (replies.length === calls.length) child.stdin.end();
    });
    child.on('error', reject);
    child.on('close', () => resolve({ log: log.join(''), replies }));
    calls.forEach((call) => child.stdin.write(`${JSON.stringify(call)}\n`));
  });
}

test('settings as ILX passes them: the extension\'s command arguments, no environment', () => {
  const TOKEN = 'tok-ilx-args-5e4d3c2b1a09f8e7d6c5';
  const tokens = path.join(dir, 'tokens-args');
  const tokenFile = path.join(dir, 'ilx_token');
  fs.writeFileSync(tokens, `bigip-ilx ${TOKEN}\n`);
  fs.writeFileSync(tokenFile, `${TOKEN}\n`);
  const send = ['sendOTP', '918273', '+31612345678', 'ACME'];
  return withDaemon(['--dry-run', '--caller-tokens-file', tokens], () => series([
    // One string, as tmsh's command-arguments holds it, and as separate arguments.
    () => runAsIlx([`--unix=${socketPath} --token-file=${tokenFile} --timeout-ms=2500`], [send]),
    (r) => {
      like(r.replies[0], /^SM[0-9a-f]{32}$/);
      like(r.log, new RegExp(`socket ${socketPath}, timeout 2500 ms, .*caller token: file ${tokenFile}`));
      assert.ok(r.log.indexOf(TOKEN) < 0, 'the token was logged');
      return runAsIlx([`--unix=${socketPath}`, '--idle-ms=5000'], [send]);
    },
    (r) => {
      like(r.replies[0], /^ERR unauthorized: /);
      like(r.log, /idle close 5000 ms, caller token: none/);
      return runAsIlx([`--unix=${socketPath}`, `--token-file=${tokenFile}.missing`, '--timeout-ms=99999', TOKEN], [send]);
    },
    (r) => {
      like(r.replies[0], /^ERR unauthorized: /);
      like(r.log, /timeout 2800 ms.*not --name=value.*timeout-ms must be a whole number from 100 to 60000.*cannot read the token file/);
      assert.ok(r.log.indexOf(TOKEN) < 0, 'a stray argument was logged');
      return runAsIlx([], [send]);
    },
    (r) => {
      like(r.replies[0], /^ERR unavailable: /);
      like(r.log, /socket \/run\/otp-sidecar\/otp\.sock/);
    },
  ]));
});

test('command arguments win over the environment, which still counts elsewhere', () => {
  const s = forwarderModule.settingsFrom(['--unix=/a.sock'], {
    OTP_SIDECAR_UNIX: '/b.sock', OTP_SIDECAR_ILX_IDLE_MS: '7000', OTP_SIDECAR_CALLER_TOKEN: 'tok-env',
  });
  assert.strictEqual(s.path, '/a.sock');
  assert.strictEqual(s.idleMs, 7000);
  assert.strictEqual(s.token, 'tok-env');
  assert.strictEqual(s.tokenFrom, 'OTP_SIDECAR_CALLER_TOKEN');
  assert.ok(forwarderModule.describeSettings(s).indexOf('tok-env') < 0);
});

test('the default socket path and timeout', () => {
  delete process.env.OTP_SIDECAR_UNIX;
  const f = new forwarderModule.Forwarder();
  assert.strictEqual(f.path, '/run/otp-sidecar/otp.sock');
  assert.ok(f.timeoutMs < 3000, 'answers before ILX::call times out');
  assert.ok(f.idleMs < 300000, 'closes before the daemon\'s idle timeout');
});

test('the context map: empty values left out, none at all without them', () => {
  const sendOtpParams = forwarderModule.sendOtpParams;
  assert.deepStrictEqual(sendOtpParams(['1', 'p', 's']), ['1', 'p', 's']);
  assert.deepStrictEqual(sendOtpParams(['1', 'p', 's', '', '', '']), ['1', 'p', 's']);
  assert.deepStrictEqual(sendOtpParams(['1', 'p', 's', '10.0.0.1', '', 'en']),
    ['1', 'p', 's', [['ip', '10.0.0.1'], ['locale', 'en']]]);
  assert.deepStrictEqual(sendOtpParams(['1', 'p', 's', '', '', '', 'voice']),
    ['1', 'p', 's', [['channel', 'voice']]]);
  // A token: the iRule's (an eighth argument) wins over the forwarder's own setting.
  assert.deepStrictEqual(sendOtpParams(['1', 'p', 's'], 'mine'), ['1', 'p', 's', [['token', 'mine']]]);
  assert.deepStrictEqual(sendOtpParams(['1', 'p', 's', 'a', '', '', '', 'rule'], 'mine'),
    ['1', 'p', 's', [['ip', 'a'], ['token', 'rule']]]);
  assert.deepStrictEqual(sendOtpParams(['1', 'p', 's', '', '', '', '', ''], ''), ['1', 'p', 's']);
  const confirmOtpParams = forwarderModule.confirmOtpParams;
  assert.deepStrictEqual(confirmOtpParams(['VE1']), ['VE1']);
  assert.deepStrictEqual(confirmOtpParams(['VE1'], 'mine'), ['VE1', [['token', 'mine']]]);
  assert.deepStrictEqual(confirmOtpParams(['VE1', 'rule'], 'mine'), ['VE1', [['token', 'rule']]]);
  const bytes = forwarderModule.encodeRequest(2, 'sendOTP', ['1234', 'p', 's', [['user', 'al']]]);
  const want = Buffer.concat([
    Buffer.from([0x94, 0x00, 0x02, 0xa7]), Buffer.from('sendOTP'),
    Buffer.from([0x94, 0xa4]), Buffer.from('1234'), Buffer.from([0xa1]), Buffer.from('p'),
    Buffer.from([0xa1]), Buffer.from('s'),
    Buffer.from([0x81, 0xa4]), Buffer.from('user'), Buffer.from([0xa2]), Buffer.from('al'),
  ]);
  assert.ok(bytes.equals(want), bytes.toString('hex'));
});

test('request bytes match the MessagePack-RPC spec', () => {
  const bytes = forwarderModule.encodeRequest(1, 'sendOTP', ['1234', 'x'.repeat(40)]);
  const want = Buffer.concat([
    Buffer.from([0x94, 0x00, 0x01, 0xa7]), Buffer.from('sendOTP'),
    Buffer.from([0x92, 0xa4]), Buffer.from('1234'),
    Buffer.from([0xd9, 40]), Buffer.from('x'.repeat(40)),
  ]);
  assert.ok(bytes.equals(want), bytes.toString('hex'));
  const big = forwarderModule.encodeRequest(300, 'm', []);
  assert.ok(big.slice(0, 7).equals(Buffer.from([0x94, 0x00, 0xce, 0, 0, 1, 44])));
});

harness.run({ timeoutMs: 30000 });
