// The stack otp-sidecar replaces, for the benchmark: a Node.js MessagePack-RPC server whose
// sendOTP calls the official twilio package, as the DevCentral iRulesLX snippet does.
// Twilio's own way to aim the package at another host: a custom httpClient that rewrites the
// URI and hands the request to the package's RequestClient, so the whole stack still runs.
//
// Usage: node baseline.js API_URL TCP_PORT UNIX_PATH   (NODE_PATH must hold twilio and
// msgpack-rpc-lite). Prints "ready" once both listeners are up.
'use strict';

const twilio = require('twilio');
const RequestClient = require('twilio/lib/base/RequestClient');
const rpc = require('msgpack-rpc-lite');

const [api, tcpPort, unixPath] = process.argv.slice(2);

class RedirectingClient {
  constructor(base) {
    this.base = base;
    this.inner = new (RequestClient.default || RequestClient)();
  }

  request(opts) {
    return this.inner.request({ ...opts, uri: opts.uri.replace('https://api.twilio.com', this.base) });
  }
}

const client = twilio(process.env.TWILIO_ACCOUNT_SID, process.env.TWILIO_AUTH_TOKEN, {
  httpClient: new RedirectingClient(api),
});

function sendOTP(params, callback) {
  const [otp, phone, sender] = params;
  client.messages
    .create({ to: phone, from: sender, body: `Your OTP is: ${otp}` })
    .then((message) => callback(null, message.sid))
    .catch((err) => callback(`ERR twilio ${err.code}: ${err.message}`));
}

let listening = 0;
const up = () => { listening += 1; if (listening === 2) console.log('ready'); };
rpc.createServer().on('sendOTP', sendOTP).listen(Number(tcpPort), '127.0.0.1', up);
rpc.createServer().on('sendOTP', sendOTP).listen(unixPath, up);
