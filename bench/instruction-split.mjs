// Splits a callgrind profile (bench/instructions.sh) into what V8's optimising compiler and the garbage
// collector executed and the rest: the request's own work. The first two come in bursts (a tier-up, a
// major GC) that land in one 5,000-request window and not in the next, moving the total by 1-2% from run
// to run; the rest is what differs between two apps.
//
//   node bench/instruction-split.mjs <callgrind.out> <requests>
import { readFileSync } from 'node:fs';

const [file, requestsArg] = process.argv.slice(2);
const requests = Number(requestsArg);
if (!file || !(requests > 0)) throw new Error('usage: node bench/instruction-split.mjs <callgrind.out> <requests>');

const COMPILER = /compiler::|maglev|Turbofan|v8::internal::Zone|OptimizedCompilationJob|BytecodeGraphBuilder/;
const GC = /Mark|Scaveng|Sweep|Evacuat|RememberedSet|LiveObject|BodyDescriptor|RecordMigrated|WriteBarrier|Heap::|GCTracer|MinorMC/;

// Callgrind's format: `fn=(id) name` opens a function (the name only on first use); a cost line is
// "<position> <instructions>"; a cost line right after `calls=` is a callee's inclusive cost, not self cost.
const names = new Map();
const sums = { compiler: 0, gc: 0, rest: 0 };
let kind = 'rest';
let afterCalls = false;
for (const line of readFileSync(file, 'utf8').split('\n')) {
  const named = /^c?fn=\((\d+)\)(?: (.*))?$/.exec(line);
  if (named) {
    if (named[2] !== undefined) names.set(named[1], named[2]);
    if (line.startsWith('fn=')) {
      const name = names.get(named[1]) ?? '';
      kind = COMPILER.test(name) ? 'compiler' : GC.test(name) ? 'gc' : 'rest';
      afterCalls = false;
    }
    continue;
  }
  if (line.startsWith('calls=')) {
    afterCalls = true;
    continue;
  }
  if (/^[\d+*-]/.test(line)) {
    const cost = Number(line.split(' ')[1]);
    if (afterCalls) afterCalls = false;
    else if (Number.isFinite(cost)) sums[kind] += cost;
  }
}
const per = (n) => `${(n / requests / 1000).toFixed(1)}k`;
console.log(`${per(sums.compiler + sums.gc + sums.rest)} in all: ${per(sums.rest)} the requests' own work, ${per(sums.compiler)} the JIT compiler, ${per(sums.gc)} GC`);
