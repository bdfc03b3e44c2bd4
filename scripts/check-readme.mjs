// Compiles every ```ts and ```js block of README.md, strict, as ESM and as CommonJS, against the packed
// package installed by exactly the `npm install` lines of README's "Install" section: what a user who
// follows the README gets. Needs `npm run build` first (like check-package.mjs) and the npm registry;
// without it the install fails and so does this check.
//
// All blocks are files of one program, as the modules of one app are: a declaration merge shown in one
// block (`declare module 'express-session'`) holds in the others. Names a fragment uses without declaring
// them come from scripts/readme-prelude.d.ts (see README, "Development"). scripts/readme-types.ts, compiled
// with them, fails when req.db, req.session or ctx.db is `any` (the blocks alone would still compile).
//
// The installed tree is kept under the OS temp dir, keyed by the install lines and this package's own
// dependencies, so later runs only swap in the freshly packed package.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync, copyFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

const root = resolve('.');
const started = Date.now();
const readme = readFileSync(join(root, 'README.md'), 'utf8');
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));

/** Fenced blocks with their language and the README line of their first code line. */
function codeBlocks(text) {
  const blocks = [];
  const lines = text.split('\n');
  let open;
  let section = '';
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    if (!open && /^#{1,6} /.test(line)) section = line.replace(/^#+ /, '');
    const fence = /^```(\w*)\s*$/.exec(line);
    if (!fence) {
      if (open) open.lines.push(line);
    } else if (open) {
      blocks.push({ ...open, code: open.lines.join('\n') });
      open = undefined;
    } else {
      open = { lang: fence[1], line: i + 2, section, lines: [] };
    }
  }
  if (open) throw new Error(`README.md: the code block opened at line ${open.line - 1} is never closed`);
  return blocks;
}

/** The README's install commands, in order: every `npm install` line of the "Install" section's sh blocks. */
function installCommands(blocks) {
  const commands = blocks
    .filter((b) => b.section === 'Install' && b.lang === 'sh')
    .flatMap((b) => b.lines)
    .map((line) => line.replace(/#.*/, '').trim())
    .filter((line) => /^npm (install|i)\b/.test(line))
    .map((line) => line.split(/\s+/).slice(1));
  if (!commands.some((args) => args.includes(pkg.name))) {
    throw new Error(`README.md: no \`npm install ${pkg.name} ...\` line in a sh block of the "Install" section`);
  }
  return commands;
}

function npm(args, cwd) {
  execFileSync('npm', [...args, '--no-audit', '--no-fund', '--loglevel=error'], { cwd, stdio: ['ignore', 'inherit', 'inherit'] });
}

/**
 * Runs tsc on one folder. Errors inside other packages' .d.ts files (tsc checks them: skipLibCheck is off so
 * that ours are checked) are set apart: a user cannot fix them and neither can we. Every other error, in a
 * block or in this package's types, is ours.
 */
function compile(tsc, dir) {
  let output = '';
  try {
    execFileSync(process.execPath, [tsc, '-p', dir, '--pretty', 'false'], { cwd: dir, encoding: 'utf8' });
  } catch (error) {
    output = String(error.stdout ?? '') + String(error.stderr ?? '');
    if (!/error TS\d+/.test(output)) throw error;
  }
  const errors = [];
  for (const line of output.split('\n')) {
    if (/^\S.*error TS\d+/.test(line)) errors.push(line);
    else if (line.trim() && errors.length) errors[errors.length - 1] += `\n${line}`;
  }
  const foreign = (error) => {
    const file = /^(.*?)\(\d+,\d+\): error/.exec(error)?.[1] ?? '';
    return file.includes('node_modules/') && !file.includes(`node_modules/${pkg.name}/`);
  };
  // readme-L0060.ts(3,5) -> README.md:62:5, so an error points at the README line to fix.
  const toReadme = (error) =>
    error.replace(/readme-L(\d+)\.ts\((\d+),(\d+)\)/g, (_, start, line, col) => `README.md:${Number(start) + Number(line) - 1}:${col}`);
  return { ours: errors.filter((e) => !foreign(e)).map(toReadme), theirs: errors.filter(foreign) };
}

const blocks = codeBlocks(readme);
const commands = installCommands(blocks);
const sources = blocks.filter((b) => b.lang === 'ts' || b.lang === 'js');
if (sources.length === 0) throw new Error('README.md: no ts or js code block found');

const key = createHash('sha256')
  .update(JSON.stringify({ commands, dependencies: pkg.dependencies, peers: pkg.peerDependencies, node: process.versions.node.split('.')[0] }))
  .digest('hex')
  .slice(0, 16);
const app = join(tmpdir(), `typeorm-session-readme-${key}`);
const work = mkdtempSync(join(tmpdir(), 'typeorm-session-readme-pack-'));
try {
  const tarball = execFileSync('npm', ['pack', '--ignore-scripts', '--silent', '--pack-destination', work], {
    encoding: 'utf8',
  }).trim().split('\n').pop();
  const tgz = join(work, tarball);

  if (existsSync(join(app, '.installed'))) {
    // Same install lines and dependencies as the cached tree: only the package itself is new.
    const installed = join(app, 'node_modules', pkg.name);
    rmSync(installed, { recursive: true, force: true });
    mkdirSync(installed, { recursive: true });
    execFileSync('tar', ['-xzf', tgz, '-C', installed, '--strip-components=1']);
    console.log(`readme: reusing ${app}`);
  } else {
    // Installed beside the final folder and renamed at the end, so a failed install is never reused.
    const fresh = mkdtempSync(`${app}-tmp-`);
    writeFileSync(join(fresh, 'package.json'), JSON.stringify({ name: 'readme-check', version: '1.0.0', private: true }) + '\n');
    const saved = join(fresh, tarball);
    copyFileSync(tgz, saved);
    try {
      for (const args of commands) {
        const argv = args.map((arg) => (arg === pkg.name ? saved : arg));
        console.log(`readme: npm ${args.join(' ')}`);
        npm(argv, fresh);
      }
    } catch (error) {
      rmSync(fresh, { recursive: true, force: true });
      throw new Error('readme: the README\'s install lines failed (is the npm registry reachable?); nothing was checked', { cause: error });
    }
    writeFileSync(join(fresh, '.installed'), commands.map((c) => `npm ${c.join(' ')}`).join('\n') + '\n');
    try {
      renameSync(fresh, app);
    } catch (error) {
      // Another run finished the same install first: use its tree.
      if (!existsSync(join(app, '.installed'))) throw error;
      rmSync(fresh, { recursive: true, force: true });
    }
  }

  const tsc = join(app, 'node_modules', 'typescript', 'bin', 'tsc');
  if (!existsSync(tsc)) throw new Error('README "Install" lines do not install typescript: the blocks cannot be compiled as a user would');
  const prelude = readFileSync(join(root, 'scripts', 'readme-prelude.d.ts'), 'utf8');
  const typeChecks = readFileSync(join(root, 'scripts', 'readme-types.ts'), 'utf8');
  let failures = 0;
  for (const type of ['module', 'commonjs']) {
    const dir = join(app, `check-${type}`);
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir);
    writeFileSync(join(dir, 'package.json'), JSON.stringify({ type }) + '\n');
    writeFileSync(join(dir, 'readme-prelude.d.ts'), prelude);
    writeFileSync(join(dir, 'readme-types.ts'), typeChecks);
    const files = sources.map((b) => {
      const name = `readme-L${String(b.line).padStart(4, '0')}.ts`;
      // `export {}` makes a block a module, as a file of an app is, whatever it imports. A block with a
      // `declare module` stays exactly as written: whether it is a module changes what that declaration
      // means (an augmentation or an ambient module), and a user pastes it as it is.
      writeFileSync(join(dir, name), /^declare module /m.test(b.code) ? `${b.code}\n` : `${b.code}\nexport {};\n`);
      return name;
    });
    writeFileSync(
      join(dir, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          target: 'ES2022',
          module: 'nodenext',
          moduleResolution: 'nodenext',
          strict: true,
          noEmit: true,
          skipLibCheck: false,
          types: ['node'],
        },
        files: ['readme-prelude.d.ts', 'readme-types.ts', ...files],
      }, null, 2) + '\n',
    );
    const label = type === 'module' ? 'ESM' : 'CommonJS';
    const { ours, theirs } = compile(tsc, dir);
    if (theirs.length) console.log(`readme: ${label}: ignored, inside other packages' types:\n${theirs.join('\n')}`);
    if (ours.length) {
      failures++;
      console.error(`readme: code blocks fail to compile as ${label} (strict):\n${ours.join('\n')}`);
    } else {
      console.log(`readme: ${files.length} code blocks compile as ${label} (strict)`);
    }
  }
  console.log(`readme: ${((Date.now() - started) / 1000).toFixed(1)} s`);
  if (failures) process.exitCode = 1;
} finally {
  rmSync(work, { recursive: true, force: true });
}
