// Drives otp-sidecar with msgpack-rpc-lite from npm, a client we did not write.
// Usage: node msgpack_rpc_lite_client.js unix PATH | tcp HOST PORT
// Prints one JSON object: the reply to each call, or the error text the daemon sent.
'use strict';
const rpc = require('msgpack-rpc-lite');

const [kind, a, b] = process.argv.slice(2);
const client = kind === 'unix'
  ? new rpc.Client({ path: a })
  : rpc.createClient(Number(b), a);

const call = (method, ...args) => client.request(method, ...args)
  .then(([result]) => ({ ok: result }), (error) => ({ err: String(error) }));

(async () => {
  // Sent together: several requests in flight on one connection, matched by msgid.
  const [ping, send, badPhone, unknown] = await Promise.all([
    call('ping'),
    call('sendOTP', '918273', '+31612345678', 'ACME'),
    call('sendOTP', '918273', '0612345678', 'ACME'),
    call('nope'),
  ]);
  console.log(JSON.stringify({ ping, send, bad_phone: badPhone, unknown }));
  client.close();
})().catch((e) => { console.error(e); process.exit(1); });
