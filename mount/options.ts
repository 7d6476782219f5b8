/**
 * composefs mount options, in both dialects: the original `descriptor=`/`base=` and upstream
 * mount.composefs's `basedir=` (colon-separated list), `digest=`, `verity`, `upperdir=`,
 * `workdir=`, `ro`, `idmap=` (a user namespace file, e.g. /proc/PID/ns/user). Every path that will end up
 * inside an overlayfs option string is checked here: it must be absolute and may not contain a
 * comma, a colon, a backslash or a control character, so a crafted path cannot inject options.
 */
import * as path from 'node:path';
import { CfsError, ErrorCode } from '../format/index.js';

export interface ComposefsOptions {
  /** The image file. */
  image: string;
  /** Object directories (data-only lower layers), in lookup order. */
  basedirs: string[];
  /** fs-verity digest the image must have. */
  digest?: string;
  /** Require fs-verity on objects (overlayfs verity=require). */
  verity: boolean;
  upperdir?: string;
  workdir?: string;
  readOnly: boolean;
  /** Use the plain lowerdir list instead of data-only layers (`::`). */
  legacy: boolean;
  /** User namespace file whose mapping the image and objects are shown through. */
  idmap?: string;
}

const bad = (msg: string): never => {
  throw new CfsError(ErrorCode.Usage, msg, { input: 'mount options' });
};

/** A path that is safe inside an overlayfs option string. */
export function checkMountPath(what: string, p: string): string {
  if (!path.isAbsolute(p)) bad(`${what} must be an absolute path: ${JSON.stringify(p)}`);
  if (/[,:\\\x00-\x1f\x7f]/.test(p)) bad(`${what} may not contain a comma, colon, backslash or control character: ${JSON.stringify(p)}`);
  return path.normalize(p);
}

/** Split a mount(8) -o string: comma-separated, no escapes (our paths may not contain commas). */
export function parseOptionString(opts: string): [string, string | undefined][] {
  if (/[\n\r\0]/.test(opts)) bad('newline or NUL in mount options');
  return opts
    .split(',')
    .filter((o) => o !== '')
    .map((o) => {
      const eq = o.indexOf('=');
      return eq === -1 ? [o, undefined] : [o.slice(0, eq), o.slice(eq + 1)];
    });
}

/**
 * Build composefs options from mount(8) style input. `source` is the device argument (`none`, or
 * the image as upstream mount.composefs takes it). `resolveBase` maps a base to its objects
 * directory (a cfs-cas store root → its objects/).
 */
export function parseComposefsOptions(source: string, optString: string, resolveBase: (dir: string) => string = (d) => d): ComposefsOptions {
  const o: ComposefsOptions = { image: '', basedirs: [], verity: false, readOnly: false, legacy: false };
  let image: string | undefined;
  for (const [key, value] of parseOptionString(optString)) {
    const need = (): string => (value === undefined || value === '' ? bad(`option ${key} needs a value`) : value);
    switch (key) {
      case 'descriptor':
      case 'source':
        image = need();
        break;
      case 'base':
        o.basedirs.push(need());
        break;
      case 'basedir':
        o.basedirs.push(...need().split(':'));
        break;
      case 'digest':
        o.digest = need().toLowerCase();
        if (!/^[0-9a-f]{64}$/.test(o.digest)) bad(`digest= must be 64 hex characters`);
        break;
      case 'verity':
        o.verity = true;
        break;
      case 'upperdir':
        o.upperdir = need();
        break;
      case 'workdir':
        o.workdir = need();
        break;
      case 'ro':
        o.readOnly = true;
        break;
      case 'rw':
        o.readOnly = false;
        break;
      case 'idmap':
        o.idmap = need();
        break;
      case 'legacy':
        o.legacy = true;
        break;
      case 'defaults':
      case 'noauto':
      case 'auto':
      case 'nofail':
      case 'user':
      case 'nouser':
        break; // fstab options mount(8) may pass along
      default:
        bad(`unknown composefs mount option ${JSON.stringify(key)}`);
    }
  }
  if (image === undefined) {
    if (!source || source === 'none' || source === 'composefs') bad('no image: give descriptor=IMAGE (or the image as the source)');
    image = source;
  }
  o.image = path.resolve(image!);
  if (o.basedirs.length === 0) bad('no object directory: give base=DIR or basedir=DIR[:DIR...]');
  o.basedirs = o.basedirs.map((b) => checkMountPath('base', resolveBase(path.resolve(b))));
  if ((o.upperdir === undefined) !== (o.workdir === undefined)) bad('upperdir= and workdir= go together');
  if (o.upperdir) o.upperdir = checkMountPath('upperdir', o.upperdir);
  if (o.workdir) o.workdir = checkMountPath('workdir', o.workdir);
  if (o.idmap) {
    o.idmap = path.resolve(o.idmap);
    if (o.upperdir) bad('idmap= cannot be combined with upperdir= (overlayfs has no idmapped upper layer)');
    if (o.legacy) bad('idmap= needs the data-only form; drop legacy');
  }
  return o;
}

/** The overlayfs option string for a mounted image at `lower`. */
export function overlayOptions(o: ComposefsOptions, lower: string): string {
  checkMountPath('image mount', lower);
  const layers = o.legacy ? [lower, ...o.basedirs].join(':') : `${lower}::${o.basedirs.join('::')}`;
  const opts = [`lowerdir=${layers}`, 'metacopy=on', 'redirect_dir=on'];
  if (o.upperdir) opts.push(`upperdir=${o.upperdir}`, `workdir=${o.workdir}`);
  if (o.verity) opts.push('verity=require');
  if (o.readOnly || !o.upperdir) opts.push('ro');
  return opts.join(',');
}
