#!/usr/bin/env node
// Runs one Azurite service (table or blob) in this process, on loopback, in
// memory, with telemetry off. It loads Azurite from node_modules beside it:
// in this repository's azurite/ (start-table.sh), or in the per-user cache
// folder that the Rust launcher (durable_status::emulator) writes this
// recipe to.
//
//   node service.js [--service table|blob] [--port N] [--host H] [--location DIR]
//                   [--exit-with-stdin] [-- AZURITE FLAGS...]
//
// With --exit-with-stdin the emulator exits as soon as its standard input
// closes: a parent that holds the other end of the pipe (a test run, the
// demo) takes the emulator with it however it ends, even when it is killed.
// Flags after `--` go to Azurite as they are (--cert, --key, --oauth).
"use strict";
const os = require("os");
const path = require("path");
const fs = require("fs");

const all = process.argv.slice(2);
const split = all.indexOf("--");
const args = split >= 0 ? all.slice(0, split) : all;
const passThrough = split >= 0 ? all.slice(split + 1) : [];
function option(name, fallback) {
  const i = args.indexOf(name);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : fallback;
}

const SERVICES = {
  table: { port: "10002", entry: "node_modules/azurite/dist/src/table/main.js" },
  blob: { port: "10000", entry: "node_modules/azurite/dist/src/blob/main.js" },
};
const service = option("--service", "table");
if (!SERVICES[service]) {
  console.error(`unknown service '${service}': table or blob`);
  process.exit(2);
}
const host = option("--host", "127.0.0.1");
const port = option("--port", SERVICES[service].port);
const location = option("--location", undefined);
const exitWithStdin = args.includes("--exit-with-stdin");

const azuriteArgs = [
  `--${service}Host`, host,
  `--${service}Port`, port,
  "--disableTelemetry",
  "--silent",
  "--skipApiVersionCheck",
  ...passThrough,
];
if (location) {
  azuriteArgs.push("--location", location);
} else {
  // In memory, Azurite still treats the working folder as its location;
  // keep it out of the caller's directory.
  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), `azurite-${service}-`));
  azuriteArgs.push("--inMemoryPersistence");
  process.chdir(scratch);
  process.on("exit", () => fs.rmSync(scratch, { recursive: true, force: true }));
}

if (exitWithStdin) {
  process.stdin.on("data", () => {});
  process.stdin.on("end", () => process.exit(0));
  process.stdin.on("error", () => process.exit(0));
  process.stdin.resume();
}
process.on("SIGTERM", () => process.exit(0));
process.on("SIGINT", () => process.exit(0));

process.argv = [process.argv[0], `azurite-${service}`, ...azuriteArgs];
require(path.join(__dirname, SERVICES[service].entry));
