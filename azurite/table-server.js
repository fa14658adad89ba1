#!/usr/bin/env node
// Runs Azurite's table service in this process, on loopback, in memory,
// with telemetry off. It loads Azurite from node_modules beside it: in this
// repository's azurite/ (start-table.sh), or in the per-user cache folder that
// the Rust launcher (durable_status::emulator) writes this recipe to.
//
//   node table-server.js [--port N] [--host H] [--location DIR] [--exit-with-stdin]
//
// With --exit-with-stdin the emulator exits as soon as its standard input
// closes: a parent that holds the other end of the pipe (a test run, the
// demo) takes the emulator with it however it ends, even when it is killed.
"use strict";
const os = require("os");
const path = require("path");
const fs = require("fs");

const args = process.argv.slice(2);
function option(name, fallback) {
  const i = args.indexOf(name);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : fallback;
}

const host = option("--host", "127.0.0.1");
const port = option("--port", "10002");
const location = option("--location", undefined);
const exitWithStdin = args.includes("--exit-with-stdin");

const azuriteArgs = [
  "--tableHost", host,
  "--tablePort", port,
  "--disableTelemetry",
  "--silent",
  "--skipApiVersionCheck",
];
if (location) {
  azuriteArgs.push("--location", location);
} else {
  // In memory, Azurite still treats the working folder as its location;
  // keep it out of the caller's directory.
  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), "azurite-table-"));
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

process.argv = [process.argv[0], "azurite-table", ...azuriteArgs];
require(path.join(__dirname, "node_modules/azurite/dist/src/table/main.js"));
