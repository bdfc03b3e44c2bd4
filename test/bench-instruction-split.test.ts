import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

// bench/instruction-split.mjs reads callgrind's own format: only a function's self cost counts (the cost
// line after `calls=` is a callee's inclusive cost, which counted again would double the total), and a
// name given once as `fn=(id) name` or `cfn=(id) name` is later given as `(id)` alone.

const SPLIT = join(__dirname, '..', 'bench', 'instruction-split.mjs');

const profile = `# callgrind format
version: 1
events: Ir
fl=(1) node
fn=(1) v8::internal::compiler::GraphReducer::ReduceTop()
0 3000
fn=(2) v8::internal::MarkCompactCollector::ProcessMarkingWorklist(unsigned long)
0 2000
fn=(3) Builtins_LoadIC
0 500
cfn=(4) v8::internal::Runtime_LoadIC_Miss(int)
calls=7 0
0 9000
0 100
fn=(4)
0 9000
fn=(1)
0 1000
totals: 24600
`;

function split(text: string, requests: number): string {
  const dir = mkdtempSync(join(tmpdir(), 'split-'));
  try {
    writeFileSync(join(dir, 'out'), text);
    // stderr piped: the refused run's error (asserted on below) would otherwise print its stack trace in a passing run.
    return execFileSync(process.execPath, [SPLIT, join(dir, 'out'), String(requests)], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test('counts self cost once, by kind, per request', () => {
  // compiler 3000 + 1000 (the reopened (1)), GC 2000, the rest 500 + 100 + 9000 (the callee's own block).
  expect(split(profile, 10)).toBe('1.6k in all: 1.0k the requests\' own work, 0.4k the JIT compiler, 0.2k GC');
});

test('refuses a missing request count', () => {
  expect(() => split(profile, 0)).toThrow(/usage/);
});
