#!/usr/bin/env node
/** The CLI's entry as an ES module: `node dist/src/cli/main.js ARGS`. */
import { runCli } from './cli.js';

await runCli(process.argv.slice(2));
