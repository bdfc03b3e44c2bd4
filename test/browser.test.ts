import { mkdirSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { findChromium, missingChromiumMessage } from '../scripts/chromium.cjs';
import { ExampleClient, startExample, type ExampleServer } from './helpers/example-server.js';

// The example apps in a real browser: Debian's Chromium, headless, driven by playwright-core. Two devices
// are two browser contexts (separate cookie jars). An attacker's pages come from a second server on
// another port. Screenshots of the main pages go to artifacts/browser/ (gitignored).
//
// Without a Chromium the suite cannot run. jest.config.cjs leaves it out then (npm test says so at the
// end), except in CI, where the one test below fails instead: CI never skips.
const executablePath = findChromium();
const ARTIFACTS = 'artifacts/browser';
const PHONE = {
  viewport: { width: 390, height: 844 },
  userAgent:
    'Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1',
  isMobile: true,
  hasTouch: true,
};
const DESKTOP = { viewport: { width: 1000, height: 720 } };

jest.setTimeout(180_000);

if (!executablePath) {
  test('a Chromium for the browser suite is installed', () => {
    throw new Error(missingChromiumMessage());
  });
} else {
  let browser: Browser;
  beforeAll(async () => {
    mkdirSync(ARTIFACTS, { recursive: true });
    browser = await chromium.launch({
      executablePath,
      headless: true,
      // Each launch gets a fresh temporary profile from Playwright; these keep Chromium off the network.
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    });
  });
  afterAll(() => browser?.close());

  describe.each(['express', 'koa'])('the %s example in Chromium', (which) => {
    let server: ExampleServer;
    let attacker: Server;
    let attackerBase: string;
    let attackerPage: (path: string) => Promise<string>;
    const contexts: BrowserContext[] = [];

    beforeAll(async () => {
      server = await startExample(which, { SESSION_SECRET: '' });
      // The attacker's site: a page that auto-submits a form to the example, as issue 18 described.
      attacker = createServer((req, res) => {
        attackerPage(req.url ?? '/').then(
          (html) => res.writeHead(200, { 'content-type': 'text/html' }).end(html),
          () => res.writeHead(500).end(),
        );
      });
      await new Promise<void>((resolve) => attacker.listen(0, '127.0.0.1', resolve));
      attackerBase = `http://127.0.0.1:${(attacker.address() as { port: number }).port}`;
    });
    afterAll(async () => {
      await Promise.all(contexts.map((c) => c.close()));
      await new Promise((resolve) => attacker?.close(resolve));
      await server?.stop();
    });

    async function device(options: object = DESKTOP): Promise<Page> {
      const context = await browser.newContext(options);
      contexts.push(context);
      return context.newPage();
    }
    const shot = (page: Page, name: string) => page.screenshot({ path: `${ARTIFACTS}/${which}-${name}.png`, fullPage: true });
    const userIdOf = async (page: Page) =>
      ((await (await page.context().request.get(`${server.base}/me`)).json()) as { userId: number | null }).userId;

    async function register(page: Page, email: string, password: string) {
      await page.goto(`${server.base}/`);
      const form = page.locator('form[action="/register"]');
      await form.locator('input[name=email]').fill(email);
      await form.locator('input[name=password]').fill(password);
      await submitAndWait(page, form.locator('button'));
      await expectText(page, '.user-email', email);
    }
    async function signIn(page: Page, email: string, password: string) {
      await page.goto(`${server.base}/`);
      const form = page.locator('form[action="/login"]');
      await form.locator('input[name=email]').fill(email);
      await form.locator('input[name=password]').fill(password);
      await submitAndWait(page, form.locator('button'));
    }
    async function expectText(page: Page, selector: string, text: string) {
      expect(await page.locator(selector).first().textContent()).toContain(text);
    }
    /** Waits until the attacker's page has sent the browser to the example and the answer has loaded. */
    async function landedOnExample(page: Page) {
      await page.waitForURL((url) => url.origin === server.base, { waitUntil: 'load' });
    }
    async function submitAndWait(page: Page, button: ReturnType<Page['locator']>) {
      await Promise.all([page.waitForEvent('load'), button.click()]);
    }

    test('two devices: A sees both, revokes B, and B is signed out on its next request', async () => {
      const email = `a.rather.long.name.for.the.layout.check.${which}@an-example-domain-that-keeps-going.example.com`;
      const desktop = await device();
      await desktop.goto(`${server.base}/`);
      await shot(desktop, 'start');
      await register(desktop, email, 'correct horse battery');
      await shot(desktop, 'home');

      const phone = await device(PHONE);
      await signIn(phone, email, 'correct horse battery');
      await expectText(phone, '.user-email', email);

      await desktop.goto(`${server.base}/sessions`);
      const items = desktop.locator('li.session');
      expect(await items.count()).toBe(2);
      expect(await desktop.locator('li.session.current .device').textContent()).toMatch(/Chrome .* on Linux\s+This device/);
      expect(await desktop.locator('li.session:not(.current) .device').textContent()).toContain('Safari 17 on iOS');
      expect(await desktop.locator('li.session:not(.current) dd').first().textContent()).toBe('127.0.0.1');
      await shot(desktop, 'sessions');

      await phone.goto(`${server.base}/sessions`);
      expect(await phone.locator('li.session.current .device').textContent()).toContain('Safari 17 on iOS');
      // Nothing wider than the phone's screen: long names wrap.
      // Given as a string, run in the page: the tests' tsconfig has no DOM types.
      const pageWidth = await phone.evaluate('document.documentElement.scrollWidth');
      expect(pageWidth).toBeLessThanOrEqual(PHONE.viewport.width);
      await shot(phone, 'sessions-phone');

      await submitAndWait(desktop, desktop.locator('li.session:not(.current) button'));
      expect(await desktop.locator('.notice').textContent()).toContain('Signed out that device');
      expect(await items.count()).toBe(1);

      await phone.reload();
      expect(phone.url()).toBe(`${server.base}/`); // /sessions sent it to the sign-in page
      expect(await phone.locator('form[action="/login"]').count()).toBe(1);
      expect(await userIdOf(phone)).toBeNull();
      expect(await userIdOf(desktop)).not.toBeNull();
    });

    test('a sign-in form auto-submitted from another origin is refused; the browser stays signed out', async () => {
      const mallory = new ExampleClient(server.base);
      expect((await mallory.form('/register', { email: `mallory-${which}@example.com`, password: 'mallory password' })).status).toBe(303);
      await mallory.form('/logout', {});
      attackerPage = async () => {
        // The attacker's own session gives them a valid token, which is no use for the victim's session.
        const token = await new ExampleClient(server.base).csrfToken();
        return `<!doctype html><title>Win a prize</title>
<form method="post" action="${server.base}/login">
<input name="email" value="mallory-${which}@example.com"><input name="password" value="mallory password">
<input name="csrf" value="${token}"></form>
<script>document.forms[0].submit()</script>`;
      };
      const victim = await device();
      await victim.goto(`${server.base}/`); // a visitor of the site already has a session of their own
      await victim.goto(`${attackerBase}/login-csrf`, { waitUntil: 'commit' });
      await landedOnExample(victim);
      expect(await userIdOf(victim)).toBeNull();
      expect(victim.url()).toBe(`${server.base}/login`);
      expect(await victim.locator('h1').textContent()).toBe('This form has expired');
      await shot(victim, 'csrf-refused');
    });

    test('a sign-out form auto-submitted from another origin is refused; the session stays valid', async () => {
      const victim = await device();
      await register(victim, `logout-victim-${which}@example.com`, 'victim password');
      const userId = await userIdOf(victim);
      attackerPage = async () => `<!doctype html><title>Cute cats</title>
<form method="post" action="${server.base}/logout"></form><script>document.forms[0].submit()</script>`;
      await victim.goto(`${attackerBase}/logout-csrf`, { waitUntil: 'commit' });
      await landedOnExample(victim);
      expect(await userIdOf(victim)).toBe(userId);
      expect(await victim.locator('h1').textContent()).toBe('This form has expired');
      await victim.goto(`${server.base}/`);
      await expectText(victim, '.user-email', `logout-victim-${which}@example.com`);
    });

    test('after 5 wrong passwords the account is locked for the window, even for the right one', async () => {
      const email = `carol-${which}@example.com`;
      const page = await device();
      await register(page, email, 'carol password');
      await submitAndWait(page, page.locator('nav button', { hasText: 'Sign out' }));
      expect(await userIdOf(page)).toBeNull();

      for (let i = 0; i < 5; i++) {
        await signIn(page, email, `wrong ${i}`);
        await expectText(page, '.notice', 'Wrong e-mail address or password.');
      }
      await signIn(page, email, 'wrong again');
      await expectText(page, '.notice', 'Too many failed sign-in attempts');
      await signIn(page, email, 'carol password');
      await expectText(page, '.notice', 'Too many failed sign-in attempts');
      await shot(page, 'rate-limited');
      expect(await userIdOf(page)).toBeNull();
    });

    test('sign out all other devices, then sign out everywhere', async () => {
      const email = `dave-${which}@example.com`;
      const first = await device();
      await register(first, email, 'dave password');
      const second = await device(PHONE);
      await signIn(second, email, 'dave password');
      const third = await device();
      await signIn(third, email, 'dave password');

      await first.goto(`${server.base}/sessions`);
      expect(await first.locator('li.session').count()).toBe(3);
      await submitAndWait(first, first.locator('button', { hasText: 'Sign out all other devices' }));
      expect(await first.locator('.notice').textContent()).toContain('Signed out 2 other devices.');
      expect(await first.locator('li.session').count()).toBe(1);
      expect(await userIdOf(second)).toBeNull();
      expect(await userIdOf(third)).toBeNull();

      await signIn(second, email, 'dave password');
      expect(await userIdOf(second)).not.toBeNull();
      await first.goto(`${server.base}/sessions`);
      await submitAndWait(first, first.locator('button', { hasText: 'Sign out everywhere' }));
      expect(first.url()).toBe(`${server.base}/`);
      expect(await first.locator('form[action="/login"]').count()).toBe(1);
      expect(await userIdOf(first)).toBeNull();
      await second.reload();
      expect(await second.locator('form[action="/login"]').count()).toBe(1);
      expect(await userIdOf(second)).toBeNull();
    });

    test('without SESSION_SECRET the app warns once and still runs', () => {
      expect(server.output().match(/SESSION_SECRET is not set/g)).toHaveLength(1);
    });
  });
}
