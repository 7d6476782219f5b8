#!/usr/bin/env node
import { runHelper } from "../dist/mount/cli.js";
await runHelper();
