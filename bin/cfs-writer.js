#!/usr/bin/env node
import { run } from "../dist/writer/cli.js";
await run();
