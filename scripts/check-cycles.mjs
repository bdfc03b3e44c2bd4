// Fails when the modules of src/ import each other in a cycle, naming each cycle found. Type-only imports
// count too: a cycle of types still ties two modules that should be read, and changed, apart.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';

const root = resolve(process.argv[2] ?? 'src');

function sources(dir) {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return sources(path);
    return path.endsWith('.ts') && !path.endsWith('.d.ts') ? [path] : [];
  });
}

/** The relative modules a file imports or re-exports (`from './x.js'`, `import './x.js'`). */
function importsOf(file) {
  const text = readFileSync(file, 'utf8');
  const found = new Set();
  for (const match of text.matchAll(/(?:from|import)\s+['"](\.{1,2}\/[^'"]+)['"]/g)) {
    found.add(resolve(dirname(file), match[1].replace(/\.js$/, '.ts')));
  }
  return [...found];
}

const files = sources(root);
const graph = new Map(files.map((file) => [file, importsOf(file).filter((target) => files.includes(target))]));

// Depth-first search; a module met again while still on the path closes a cycle.
const cycles = [];
const done = new Set();
function visit(file, path) {
  const at = path.indexOf(file);
  if (at >= 0) {
    cycles.push([...path.slice(at), file]);
    return;
  }
  if (done.has(file)) return;
  path.push(file);
  for (const next of graph.get(file)) visit(next, path);
  path.pop();
  done.add(file);
}
for (const file of files) visit(file, []);

const name = (file) => relative(process.cwd(), file);
if (cycles.length) {
  console.error(`Import cycles in ${name(root)}:`);
  for (const cycle of cycles) console.error(`- ${cycle.map(name).join(' -> ')}`);
  process.exit(1);
}
console.log(`No import cycle among ${files.length} modules of ${name(root)}.`);
