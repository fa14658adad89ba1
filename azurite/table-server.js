#!/usr/bin/env node
// Azurite's table service: service.js for the table (see there).
"use strict";
process.argv.splice(2, 0, "--service", "table");
require("./service.js");
