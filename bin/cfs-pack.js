#!/usr/bin/env node
import { run } from "../dist/pack/cli.js";
await run();
