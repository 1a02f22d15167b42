// ILX::call's stand-in for run.tcl: loads the real forwarder as ILX does (with the f5-nodejs
// stand-in in tests/ilx/stubs on NODE_PATH; OTP_SIDECAR_UNIX names the daemon's socket) and
// serves calls read from stdin, one a line: the method, then each argument as the hex of its
// UTF-8 bytes. That is how ILX carries the iRule's Tcl strings: characters in, JS strings out,
// and the forwarder encodes them as UTF-8 itself. Answers each call with one line: the hex of
// the reply's UTF-8 bytes, a space, and the hex of the bytes the forwarder wrote to the daemon
// for it. Plain ES2015 with no dependencies: runs on Node 6 as well.
'use strict';

const net = require('net');
const path = require('path');
const readline = require('readline');

// The bytes the forwarder writes to the daemon during a call, for the test to check.
let frame = [];
const write = net.Socket.prototype.write;
net.Socket.prototype.write = function writeAndKeep(data) {
  if (Buffer.isBuffer(data)) frame.push(data);
  return write.apply(this, arguments);
};

require(path.join(__dirname, '..', '..', 'irules', 'ilx', 'otp_sidecar_forwarder', 'index.js'));
const ilx = require('f5-nodejs').ILXServer.instances[0];

const lines = readline.createInterface({ input: process.stdin });
lines.on('line', (line) => {
  const words = line.split(' ');
  const args = words.slice(1).map((hex) => Buffer.from(hex, 'hex').toString('utf8'));
  frame = [];
  ilx.call.apply(ilx, [words[0]].concat(args)).then((reply) => {
    const sent = Buffer.concat(frame).toString('hex');
    process.stdout.write(`${Buffer.from(String(reply), 'utf8').toString('hex')} ${sent}\n`);
  });
});
// run.tcl closing the pipe ends the host (the forwarder's connection would keep it alive).
lines.on('close', () => process.exit(0));
