// A tiny test runner for the ILX forwarder's tests that every Node.js iRulesLX runs can load:
// 6.9.1 (no node:test, no async/await, no node: prefixes), 8.11.1 and the current LTS.
// No dependencies. Tests run one after another, in the order they were added:
//
//   test('name', () => promise)       passes when the promise resolves
//   test('name', (done) => { ... })   passes when done() is called, fails on done(err)
//
// A throw, a rejection, a timeout, and any uncaught exception or unhandled rejection while a
// test runs fail that test: an uncaught exception is exactly what kills an ILX extension's
// process on the appliance. Prints one `ok`/`not ok` line per test, then `N passed, N failed`,
// and exits 1 when anything failed.
'use strict';

const tests = [];
let current = null;

function test(name, fn) {
  tests.push({ name, fn });
}

function describe(err) {
  if (err instanceof Error) return err.stack || String(err);
  return `a non-Error: ${String(err)}`;
}

process.on('uncaughtException', (err) => {
  const text = `uncaught exception (it would kill the ILX extension): ${describe(err)}`;
  if (current) current(new Error(text));
  else {
    console.log(`not ok - outside any test: ${text}`);
    process.exit(1);
  }
});

process.on('unhandledRejection', (err) => {
  const text = `unhandled rejection: ${describe(err)}`;
  if (current) current(new Error(text));
  else console.log(`# outside any test: ${text}`);
});

/** Runs the tests added so far, then exits. */
function run(options) {
  const timeoutMs = (options && options.timeoutMs) || 30000;
  let passed = 0;
  let failed = 0;
  let index = 0;
  console.log(`# node ${process.version}`);

  function next() {
    if (index >= tests.length) {
      console.log(`${passed} passed, ${failed} failed`);
      process.exit(failed === 0 && passed > 0 ? 0 : 1);
      return;
    }
    const t = tests[index];
    index += 1;
    let finished = false;
    const timer = setTimeout(() => {
      finish(new Error(`did not finish within ${timeoutMs} ms`));
    }, timeoutMs);
    function finish(err) {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      if (current === finish) current = null;
      if (err) {
        failed += 1;
        console.log(`not ok ${index} - ${t.name}`);
        console.log(describe(err).split('\n').map((l) => `    ${l}`).join('\n'));
      } else {
        passed += 1;
        console.log(`ok ${index} - ${t.name}`);
      }
      setImmediate(next);
    }
    current = finish;
    try {
      if (t.fn.length > 0) {
        t.fn((err) => finish(err || null));
      } else {
        const result = t.fn();
        if (result && typeof result.then === 'function') {
          result.then(() => finish(null), (err) => finish(err || new Error('rejected')));
        } else {
          finish(null);
        }
      }
    } catch (err) {
      finish(err);
    }
  }

  next();
}

/** Resolves after ms. */
function sleep(ms) {
  return new Promise((resolve) => { setTimeout(resolve, ms); });
}

/** Runs promise-returning steps one after another, each given the previous one's value. */
function series(steps) {
  return steps.reduce((p, step) => p.then(step), Promise.resolve());
}

module.exports = { test, run, sleep, series };
