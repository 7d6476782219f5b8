/**
 * The verdict of a test:kernel run: a table kernel × check, the details of everything that is
 * not a plain PASS, and the counts. A check fails when it reports FAIL, when a required check is
 * missing, and, for an expected failure (a negative control), when it does not FAIL with the
 * expected detail; a run that did not reach its end counts as one more failure.
 */
import type { CheckResult } from './vm.js';

export interface Run {
  kernel: string;
  results: CheckResult[];
  /** Why this kernel's run is broken as a whole (no END marker, setup failure). */
  error?: string;
  log?: string;
}

export interface Verdict {
  text: string;
  passed: number;
  failed: number;
  skipped: number;
}

interface Cell {
  text: string;
  /** true: as expected; false: a failure; null: skipped or not applicable. */
  ok: boolean | null;
  result?: CheckResult;
}

/** `expectedFails`: check name → the detail its FAIL must have. */
export function judge(runs: Run[], required: string[], expectedFails: Map<string, RegExp>): Verdict {
  const cell = (r: Run, check: string): Cell => {
    const x = r.results.find((y) => y.name === check);
    if (!x) return required.includes(check) ? { text: 'MISSING', ok: false } : { text: '-', ok: null };
    const want = expectedFails.get(check);
    if (want) return x.status === 'FAIL' && want.test(x.detail) ? { text: 'FAIL (expected)', ok: true, result: x } : { text: `${x.status} (must FAIL)`, ok: false, result: x };
    return { text: x.status, ok: x.status === 'PASS' ? true : x.status === 'SKIP' ? null : false, result: x };
  };
  const names = [...new Set([...runs.flatMap((r) => r.results.map((x) => x.name)), ...required])];
  const width = Math.max(5, ...names.map((n) => n.length));
  const colw = runs.map((r) => Math.max(r.kernel.length, 16));
  const line = (first: string, cols: string[]): string => `${first.padEnd(width)}  ${cols.map((c, i) => c.padEnd(colw[i])).join('  ')}`.trimEnd();
  const out = ['', line('check', runs.map((r) => r.kernel))];
  const counts = { passed: 0, failed: 0, skipped: 0 };
  for (const n of names) {
    const cells = runs.map((r) => cell(r, n));
    for (const c of cells) counts[c.ok === true ? 'passed' : c.ok === false ? 'failed' : 'skipped']++;
    out.push(line(n, cells.map((c) => c.text)));
  }
  for (const r of runs) {
    for (const n of names) {
      const c = cell(r, n);
      if (c.ok === true) continue;
      if (c.result) out.push(`${r.kernel}: ${c.text} ${n}: ${c.result.detail}`);
      else if (c.ok === false) out.push(`${r.kernel}: ${n} was not reported`);
      if (c.ok === false) {
        const context = (r.log ?? '').split('\n').filter((l) => l.startsWith(`ERR ${n}:`) || l.startsWith(`DMESG ${n}:`));
        out.push(...context.map((l) => `  ${l}`));
      }
    }
    if (r.error) {
      counts.failed++;
      out.push(`${r.kernel}: ${r.error}`, '--- console (last 60 lines) ---', ...(r.log ?? '').split('\n').slice(-60), '---');
    }
  }
  out.push('', `kernel: ${counts.passed} passed, ${counts.failed} failed, ${counts.skipped} skipped`);
  return { text: out.join('\n'), ...counts };
}
