// Stand-in for the appliance's f5-nodejs module: the part of ILXServer an extension uses
// (addMethod, listen, req.params(), res.reply()), plus call(), which does what ILX::call does.
'use strict';

class ILXServer {
  constructor() {
    this.methods = new Map();
    this.listening = false;
    ILXServer.instances.push(this);
  }

  addMethod(name, handler) {
    this.methods.set(name, handler);
  }

  /**
   * With F5_STUB_ILX_STDIO=1 (a test running the extension as its own process, as ILX does),
   * takes calls as JSON lines on stdin, ["method", "arg", ...], and writes each reply as a
   * JSON line on stdout; the process ends when stdin does.
   */
  listen() {
    this.listening = true;
    if (process.env.F5_STUB_ILX_STDIO !== '1') return;
    let pending = '';
    process.stdin.setEncoding('utf8');
    process.stdin.on('data', (chunk) => {
      pending += chunk;
      let nl = pending.indexOf('\n');
      while (nl >= 0) {
        const call = JSON.parse(pending.slice(0, nl));
        pending = pending.slice(nl + 1);
        this.call.apply(this, call).then((reply) => process.stdout.write(`${JSON.stringify(reply)}\n`));
        nl = pending.indexOf('\n');
      }
    });
    process.stdin.on('end', () => setTimeout(() => process.exit(0), 100));
  }

  /** Like ILX::call: runs the method with string params and resolves with its reply. */
  call(name, ...params) {
    const handler = this.methods.get(name);
    if (!handler) return Promise.reject(new Error(`no ILX method ${name}`));
    return new Promise((resolve) => {
      handler({ params: () => params.map(String) }, { reply: resolve });
    });
  }
}

ILXServer.instances = [];

module.exports = { ILXServer };
