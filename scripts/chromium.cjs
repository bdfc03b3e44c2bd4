// Where the browser suite (test/browser.test.ts) finds a Chromium: CHROMIUM_PATH, or Debian's `chromium`
// package. Never downloaded: CI installs the package (.ci/run). Shared by jest.config.cjs (which leaves the
// suite out when there is none outside CI), scripts/test.mjs (which then says so) and the suite itself.
const { existsSync } = require('node:fs');

const candidates = () => [process.env.CHROMIUM_PATH, '/usr/bin/chromium', '/usr/bin/chromium-browser'].filter(Boolean);

/** The path of a Chromium executable, or null. */
function findChromium() {
  return candidates().find((path) => existsSync(path)) ?? null;
}

/** Whether this is CI, where a missing browser fails the suite instead of leaving it out. */
const isCI = () => process.env.CI === 'true' || process.env.CI === '1';

const missingChromiumMessage = () =>
  `The browser suite (test/browser.test.ts) did not run: no Chromium at ${candidates().join(', ')}. ` +
  'Install it (apt-get install -y chromium) or set CHROMIUM_PATH.';

module.exports = { findChromium, isCI, missingChromiumMessage };
