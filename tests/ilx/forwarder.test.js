// The ILX forwarder, loaded as ILX would load it (with a stand-in f5-nodejs), driven against
// the real otp-sidecar daemon. Run by tests/bigip.rs, which provides:
//   OTP_SIDECAR_BIN   the daemon binary
//   TWILIO_MOCK_URL   a mock Twilio: 201 for every number but +31600000000, which gets 21211
'use strict';

const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { spawn } = require('node:child_process');

const SID = 'SM0123456789abcdef0123456789abcdef';
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'otp-ilx-'));
const socketPath = path.join(dir, 'otp.sock');

process.env.OTP_SIDECAR_UNIX = socketPath;
const forwarderModule = require('../../irules/ilx/otp_sidecar_forwarder/index.js');
const { ILXServer } = require('f5-nodejs');

const ilx = ILXServer.instances[0];

/** Starts the daemon on socketPath; resolves once it says it is ready. */
function startDaemon(extraArgs = []) {
  const child = spawn(process.env.OTP_SIDECAR_BIN, [
    'serve', '--unix', socketPath, '--twilio-api-url', process.env.TWILIO_MOCK_URL,
    '--rate-limit-phone=off', '--rate-limit-global=off', ...extraArgs,
  ], {
    env: {
      PATH: process.env.PATH,
      TWILIO_ACCOUNT_SID: 'ACfeedfacefeedfacefeedfacefeedface',
      TWILIO_AUTH_TOKEN: 'authtoken-8f1d2c3b4a5e6f7a8b9c0d1e',
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  return new Promise((resolve, reject) => {
    let log = '';
    const timer = setTimeout(() => reject(new Error(`daemon not ready:\n${log}`)), 10000);
    child.stderr.on('data', (d) => {
      log += d;
      if (log.includes(' ready ')) { clearTimeout(timer); resolve(child); }
    });
    child.on('exit', (code) => reject(new Error(`daemon exited ${code}:\n${log}`)));
  });
}

function stopDaemon(child) {
  return new Promise((resolve) => { child.once('exit', resolve); child.kill('SIGTERM'); });
}

/** A Unix server that accepts and answers with `answer(socket)` (or never, if absent). */
function fakeDaemon(name, answer) {
  const p = path.join(dir, name);
  const server = net.createServer((s) => { s.on('data', () => answer && answer(s)); });
  return new Promise((resolve) => server.listen(p, () => resolve({ server, path: p })));
}

test('registers sendOTP and confirmOTP with ILXServer and listens', () => {
  assert.ok(ilx.methods.has('sendOTP'));
  assert.ok(ilx.methods.has('confirmOTP'));
  assert.strictEqual(ilx.listening, true);
});

test('the forwarder against the real daemon', async (t) => {
  let daemon = await startDaemon();
  t.after(async () => { forwarderModule.forwarder.close(); if (daemon) await stopDaemon(daemon); });

  await t.test('success: the SID', async () => {
    assert.strictEqual(await ilx.call('sendOTP', '918273', '+31612345678', 'ACME'), SID);
  });

  await t.test('Twilio error: the daemon\'s ERR string', async () => {
    const reply = await ilx.call('sendOTP', '918273', '+31600000000', 'ACME');
    assert.match(reply, /^ERR twilio 21211: /);
  });

  await t.test('bad input: ERR bad_request from the daemon', async () => {
    assert.match(await ilx.call('sendOTP', '918273', '+31612345678'), /^ERR bad_request: /);
  });

  await t.test('ip, user and locale reach the daemon as the context map', async () => {
    // The daemon limits each user to 5 sends in 10 minutes (its default): the sixth for
    // "dave" is refused, so the user arrived; another user still gets through.
    for (let i = 0; i < 5; i += 1) {
      const reply = await ilx.call('sendOTP', '918273', `+3160000010${i}`, 'ACME',
        '192.0.2.44%1', 'dave', 'nl-NL');
      assert.strictEqual(reply, SID);
    }
    const refused = await ilx.call('sendOTP', '918273', '+31600000109', 'ACME', '', 'dave', '');
    assert.match(refused, /^ERR rate_limited: retry in \d+ s$/);
    assert.strictEqual(
      await ilx.call('sendOTP', '918273', '+31600000109', 'ACME', '', 'erin', ''), SID);
  });

  await t.test('concurrent calls on one connection', async () => {
    const phones = Array.from({ length: 25 }, (_, i) => (i % 5 === 0 ? '+31600000000' : '+31612345678'));
    const replies = await Promise.all(phones.map((p) => ilx.call('sendOTP', '918273', p, 'ACME')));
    replies.forEach((reply, i) => {
      if (phones[i] === '+31600000000') assert.match(reply, /^ERR twilio 21211/);
      else assert.strictEqual(reply, SID);
    });
  });

  await t.test('daemon down: ERR unavailable', async () => {
    await stopDaemon(daemon);
    daemon = null;
    const reply = await ilx.call('sendOTP', '918273', '+31612345678', 'ACME');
    assert.match(reply, /^ERR unavailable: /);
  });

  await t.test('daemon restarted between calls: reconnects', async () => {
    daemon = await startDaemon();
    assert.strictEqual(await ilx.call('sendOTP', '918273', '+31612345678', 'ACME'), SID);
    await stopDaemon(daemon);
    daemon = await startDaemon();
    assert.strictEqual(await ilx.call('sendOTP', '918273', '+31612345678', 'ACME'), SID);
  });
});

test('Verify mode: sendOTP answers VE..., confirmOTP approves by SID or phone', async (t) => {
  // A dry run in Verify mode makes up VE... SIDs; a Messages daemon refuses confirmOTP.
  let daemon = await startDaemon(['--dry-run', '--verify-service-sid',
    'VA0123456789abcdef0123456789abcdef']);
  t.after(async () => { forwarderModule.forwarder.close(); if (daemon) await stopDaemon(daemon); });
  const ve = await ilx.call('sendOTP', '918273', '+31612345678', 'ACME');
  assert.match(ve, /^VE[0-9a-f]{32}$/);
  assert.strictEqual(await ilx.call('confirmOTP', ve), ve);
  assert.match(await ilx.call('confirmOTP', '+31612345678'), /^VE[0-9a-f]{32}$/);
  assert.match(await ilx.call('confirmOTP', 'nonsense'), /^ERR bad_request: /);
  assert.match(await ilx.call('confirmOTP'), /^ERR bad_request: /);
  await stopDaemon(daemon);
  daemon = await startDaemon();
  assert.match(await ilx.call('confirmOTP', ve), /^ERR bad_request: confirmOTP needs Verify mode/);
});

test('closes its own idle connection, before the daemon would, and reconnects', async () => {
  const daemon = await startDaemon();
  const forwarder = new forwarderModule.Forwarder({ path: socketPath, idleMs: 150 });
  try {
    assert.strictEqual(await forwarder.call('sendOTP', ['918273', '+31612345678', 'ACME']), SID);
    const first = forwarder.socket;
    const closed = new Promise((resolve, reject) => {
      first.once('close', resolve);
      setTimeout(() => reject(new Error('the idle connection was not closed')), 2000).unref();
    });
    // A call inside the idle window keeps the connection.
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.strictEqual(await forwarder.call('sendOTP', ['918273', '+31612345678', 'ACME']), SID);
    assert.strictEqual(forwarder.socket, first);
    await closed;
    assert.strictEqual(forwarder.socket, null);
    assert.strictEqual(await forwarder.call('sendOTP', ['918273', '+31612345678', 'ACME']), SID);
    assert.notStrictEqual(forwarder.socket, first);
  } finally {
    forwarder.close();
    await stopDaemon(daemon);
  }
});

test('a silent daemon: ERR timeout before ILX gives up', async () => {
  const silent = await fakeDaemon('silent.sock');
  const forwarder = new forwarderModule.Forwarder({ path: silent.path, timeoutMs: 300 });
  const started = Date.now();
  const reply = await forwarder.call('sendOTP', ['918273', '+31612345678', 'ACME']);
  assert.strictEqual(reply, 'ERR timeout: otp-sidecar did not answer within 300 ms');
  assert.ok(Date.now() - started < 3000);
  forwarder.close();
  silent.server.close();
});

test('a garbage reply: ERR unavailable, never SM', async () => {
  const liar = await fakeDaemon('liar.sock', (s) => s.write(Buffer.from('SM-not-msgpack\xc1')));
  const forwarder = new forwarderModule.Forwarder({ path: liar.path, timeoutMs: 2000 });
  const reply = await forwarder.call('sendOTP', ['918273', '+31612345678', 'ACME']);
  assert.match(reply, /^ERR unavailable: /);
  forwarder.close();
  liar.server.close();
});

test('the default socket path and timeout', () => {
  delete process.env.OTP_SIDECAR_UNIX;
  const f = new forwarderModule.Forwarder();
  assert.strictEqual(f.path, '/run/otp-sidecar/otp.sock');
  assert.ok(f.timeoutMs < 3000, 'answers before ILX::call times out');
  assert.ok(f.idleMs < 300000, 'closes before the daemon\'s idle timeout');
});

test('the context map: empty values left out, none at all without them', () => {
  const { sendOtpParams, encodeRequest } = forwarderModule;
  assert.deepStrictEqual(sendOtpParams(['1', 'p', 's']), ['1', 'p', 's']);
  assert.deepStrictEqual(sendOtpParams(['1', 'p', 's', '', '', '']), ['1', 'p', 's']);
  assert.deepStrictEqual(sendOtpParams(['1', 'p', 's', '10.0.0.1', '', 'en']),
    ['1', 'p', 's', [['ip', '10.0.0.1'], ['locale', 'en']]]);
  assert.deepStrictEqual(sendOtpParams(['1', 'p', 's', '', '', '', 'voice']),
    ['1', 'p', 's', [['channel', 'voice']]]);
  const bytes = encodeRequest(2, 'sendOTP', ['1234', 'p', 's', [['user', 'al']]]);
  const want = Buffer.concat([
    Buffer.from([0x94, 0x00, 0x02, 0xa7]), Buffer.from('sendOTP'),
    Buffer.from([0x94, 0xa4]), Buffer.from('1234'), Buffer.from([0xa1]), Buffer.from('p'),
    Buffer.from([0xa1]), Buffer.from('s'),
    Buffer.from([0x81, 0xa4]), Buffer.from('user'), Buffer.from([0xa2]), Buffer.from('al'),
  ]);
  assert.deepStrictEqual(bytes, want);
});

test('request bytes match the MessagePack-RPC spec', () => {
  const bytes = forwarderModule.encodeRequest(1, 'sendOTP', ['1234', 'x'.repeat(40)]);
  const want = Buffer.concat([
    Buffer.from([0x94, 0x00, 0x01, 0xa7]), Buffer.from('sendOTP'),
    Buffer.from([0x92, 0xa4]), Buffer.from('1234'),
    Buffer.from([0xd9, 40]), Buffer.from('x'.repeat(40)),
  ]);
  assert.deepStrictEqual(bytes, want);
  const big = forwarderModule.encodeRequest(300, 'm', []);
  assert.deepStrictEqual(big.subarray(0, 7), Buffer.from([0x94, 0x00, 0xce, 0, 0, 1, 44]));
});
