#!/usr/bin/env node
import { run } from "../dist/ostree-convert/cli.js";
await run();
