#!/usr/bin/env node
import { run } from "../dist/cas/cli.js";
await run();
