#!/usr/bin/env node
import { run } from "../dist/writer-json/cli.js";
await run();
