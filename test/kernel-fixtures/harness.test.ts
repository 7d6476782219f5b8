/**
 * The VM harness's host-side parts, without booting anything: the initramfs archive, module
 * dependency resolution from .modinfo, reading RESULT lines from a serial console, and the
 * verdict (a harness that cannot fail proves nothing).
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { Cpio } from '../../kernel-fixtures/cpio.js';
import { type Kernel, readModinfo, resolveModules } from '../../kernel-fixtures/kernels.js';
import { judge, type Run } from '../../kernel-fixtures/report.js';
import { parseResults } from '../../kernel-fixtures/vm.js';

/** A minimal ELF64 relocatable with only a .modinfo and a section name table. */
function fakeModule(modinfo: string[]): Buffer {
  const info = Buffer.from(modinfo.map((s) => `${s}\0`).join(''), 'latin1');
  const names = Buffer.from('\0.modinfo\0.shstrtab\0', 'latin1');
  const infoOff = 64;
  const namesOff = infoOff + info.length;
  const shoff = (namesOff + names.length + 7) & ~7;
  const out = Buffer.alloc(shoff + 3 * 64);
  out.writeUInt32BE(0x7f454c46, 0);
  out[4] = 2; // ELFCLASS64
  out[5] = 1; // little endian
  out.writeBigUInt64LE(BigInt(shoff), 0x28);
  out.writeUInt16LE(64, 0x3a);
  out.writeUInt16LE(3, 0x3c);
  out.writeUInt16LE(2, 0x3e);
  info.copy(out, infoOff);
  names.copy(out, namesOff);
  const section = (i: number, name: number, off: number, size: number): void => {
    out.writeUInt32LE(name, shoff + i * 64);
    out.writeBigUInt64LE(BigInt(off), shoff + i * 64 + 0x18);
    out.writeBigUInt64LE(BigInt(size), shoff + i * 64 + 0x20);
  };
  section(1, 1, infoOff, info.length);
  section(2, 10, namesOff, names.length);
  return out;
}

describe('kernel-fixtures harness', () => {
  it('reads depends= and softdep= from .modinfo', () => {
    const info = readModinfo(fakeModule(['license=GPL', 'depends=a,b-c', 'softdep=pre: crc32c', 'name=x']));
    expect(info.get('depends')).toEqual(['a,b-c']);
    expect(info.get('softdep')).toEqual(['pre: crc32c']);
    expect(info.get('name')).toEqual(['x']);
    expect(() => readModinfo(Buffer.from('not an elf file at all, just text....................................'))).toThrow(/ELF64/);
  });

  it('orders modules dependencies first, skips built-ins, follows softdeps, maps crc32c to crc32c_generic when modular', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cfs-kmod-'));
    try {
      const mods = path.join(dir, 'lib', 'modules', '6.1.0-test');
      const put = (rel: string, info: string[]): void => {
        fs.mkdirSync(path.dirname(path.join(mods, 'kernel', rel)), { recursive: true });
        fs.writeFileSync(path.join(mods, 'kernel', rel), fakeModule(info));
      };
      put('fs/erofs/erofs.ko', ['depends=libcrc32c']);
      put('lib/libcrc32c.ko', ['depends=', 'softdep=pre: crc32c']);
      put('crypto/crc32c_generic.ko', ['depends=']);
      put('fs/overlayfs/overlay.ko', ['depends=']);
      put('drivers/block/virtio_blk.ko', ['depends=virtio,virtio-ring']);
      put('drivers/virtio/virtio_ring.ko', ['depends=']);
      fs.writeFileSync(path.join(mods, 'modules.builtin'), 'kernel/drivers/virtio/virtio.ko\n');
      const k = (crc: string): Kernel => ({ pkg: 'p', release: '6.1.0-test', version: [6, 1], vmlinuz: '', config: new Map([['CRYPTO_CRC32C', crc]]), modulesDir: mods });
      const names = (crc: string, want: string[]): string[] => resolveModules(k(crc), want).map((m) => m.name);
      expect(names('m', ['erofs', 'overlay', 'virtio_blk'])).toEqual(['crc32c_generic', 'libcrc32c', 'erofs', 'overlay', 'virtio_ring', 'virtio_blk']);
      expect(names('y', ['erofs'])).toEqual(['libcrc32c', 'erofs']);
      expect(() => names('y', ['nosuch'])).toThrow(/module nosuch is neither built in nor shipped/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('writes a newc archive that cpio lists and extracts byte for byte', () => {
    const bb = '/bin/busybox';
    if (!fs.existsSync(bb)) {
      console.log('cpio extraction test skipped: no /bin/busybox to read the archive with');
      return;
    }
    const c = new Cpio().file('a/b/odd-length', 'xyz', 0o600).symlink('a/link', 'b/odd-length').chardev('dev/console', 5, 1).file('top', Buffer.alloc(4097, 7));
    expect(() => c.file('top', 'again')).toThrow(/added twice/);
    const raw = zlib.gunzipSync(c.finish());
    const list = spawnSync(bb, ['cpio', '-t', '-v'], { input: raw, encoding: 'latin1' });
    expect(list.status, list.stderr).toBe(0);
    const entries = list.stdout.trim().split('\n');
    expect(entries.map((l) => l.split(' -> ')[0].split(/\s+/).pop())).toEqual(['a', 'a/b', 'a/b/odd-length', 'a/link', 'dev', 'dev/console', 'top']);
    expect(entries.find((l) => l.endsWith('dev/console'))).toMatch(/^crw------- /);
    // newc header: "070701" then 13 hex fields; rdevmajor and rdevminor are the 10th and 11th
    const hdr = raw.toString('latin1', raw.indexOf('dev/console\0') - 110, raw.indexOf('dev/console\0'));
    expect([hdr.slice(6 + 9 * 8, 6 + 10 * 8), hdr.slice(6 + 10 * 8, 6 + 11 * 8)].map((f) => parseInt(f, 16))).toEqual([5, 1]);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cfs-cpio-'));
    try {
      const x = spawnSync(bb, ['cpio', '-i', '-d', '-m'], { input: raw, cwd: dir, encoding: 'latin1' });
      expect(x.status, x.stderr).toBe(0);
      expect(fs.readFileSync(path.join(dir, 'a/b/odd-length'), 'latin1')).toBe('xyz');
      expect(fs.statSync(path.join(dir, 'a/b/odd-length')).mode & 0o777).toBe(0o600);
      expect(fs.readlinkSync(path.join(dir, 'a/link'))).toBe('b/odd-length');
      expect(fs.readFileSync(path.join(dir, 'top')).equals(Buffer.alloc(4097, 7))).toBe(true);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('reads RESULT lines from a console log with CRLF and escape sequences; END marks completion', () => {
    const log = '\x1bc\x1b[?7lSeaBIOS\r\n=== BOOT 6.1\r\nRESULT mount:tree PASS form=legacy\r\nERR x: y\r\nRESULT manifest:tree FAIL 3 lines differ\r\nRESULT verity:tree SKIP no verity\r\nRESULT bad-status MAYBE\r\n'
      .replace(/\x1b(\[[0-9;?]*[A-Za-z]|c)/g, '')
      .replace(/\r/g, '');
    expect(parseResults(log)).toEqual([
      { name: 'mount:tree', status: 'PASS', detail: 'form=legacy' },
      { name: 'manifest:tree', status: 'FAIL', detail: '3 lines differ' },
      { name: 'verity:tree', status: 'SKIP', detail: 'no verity' },
    ]);
  });

  it('fails a run on a FAIL, a missing check, an unfinished boot, or a negative control that passes or fails for another reason', () => {
    const ok = (name: string, detail = '') => ({ name, status: 'PASS' as const, detail });
    const good: Run = {
      kernel: 'k1',
      results: [ok('mount:t'), { name: 'manifest:bad', status: 'FAIL', detail: '2 manifest lines differ' }, { name: 'verity:t', status: 'SKIP', detail: 'old kernel' }],
    };
    const expected = new Map([['manifest:bad', /^2 manifest lines differ$/]]);
    const required = ['mount:t', 'manifest:bad', 'verity:t'];
    const v = judge([good], required, expected);
    expect(v).toMatchObject({ passed: 2, failed: 0, skipped: 1 });
    expect(v.text).toMatch(/^manifest:bad +FAIL \(expected\)$/m);
    expect(v.text).toMatch(/k1: SKIP verity:t: old kernel/);
    expect(v.text.trim().split('\n').pop()).toBe('kernel: 2 passed, 0 failed, 1 skipped');

    const runOf = (results: Run['results'], extra: Partial<Run> = {}): Run => ({ kernel: 'k2', results, ...extra });
    const cases: [Run, RegExp][] = [
      [runOf([{ name: 'mount:t', status: 'FAIL', detail: 'no' }, good.results[1], good.results[2]], { log: 'ERR mount:t: boom\nERR other: x' }), /k2: FAIL mount:t: no\n  ERR mount:t: boom\n(?!.*ERR other)/],
      [runOf([good.results[1], good.results[2]]), /k2: mount:t was not reported/],
      [runOf([ok('mount:t'), ok('manifest:bad'), good.results[2]]), /k2: PASS \(must FAIL\) manifest:bad/],
      [runOf([ok('mount:t'), { name: 'manifest:bad', status: 'FAIL', detail: '900 manifest lines differ' }, good.results[2]]), /FAIL \(must FAIL\) manifest:bad: 900/],
      [runOf(good.results, { error: 'the guest did not reach the end', log: 'panic' }), /k2: the guest did not reach the end\n--- console .*\npanic/],
    ];
    for (const [run, message] of cases) {
      const bad = judge([good, run], required, expected);
      expect(bad.failed, message.source).toBeGreaterThan(0);
      expect(bad.text).toMatch(message);
    }
  });
});
