#!/usr/bin/env node
import { run } from "../dist/dump/cli.js";
await run();
