#!/usr/bin/env node
import { run } from "../dist/mount/cli.js";
await run();
