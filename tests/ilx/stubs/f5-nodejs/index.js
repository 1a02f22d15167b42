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

  listen() {
    this.listening = true;
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
