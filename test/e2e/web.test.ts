// The web chat page in headless Chromium (system /usr/bin/chromium through playwright-core):
// send messages, watch the reply stream in, keep history, stop a reply, start a new chat, and
// save screenshots (desktop and phone) to test-artifacts/ for a person to look at.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { loadTextModel, startServer, waitFor, type TestServer } from './helpers.ts';

const CHROMIUM = '/usr/bin/chromium';
const ARTIFACTS = 'test-artifacts';
const skip = existsSync(CHROMIUM) ? false : `${CHROMIUM} is absent (apt-get install -y chromium)`;

let srv: TestServer;
let browser: Browser;

before(async () => {
  if (skip) return;
  const { chromium } = await import('playwright-core');
  srv = await startServer(loadTextModel(), { maxBatch: 4 });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
      '--disable-sync', '--no-first-run'],
  });
  mkdirSync(ARTIFACTS, { recursive: true });
});
after(async () => {
  await browser?.close();
  await srv?.close();
});

async function open(viewport: { width: number; height: number }): Promise<Page> {
  const page = await browser.newPage({ viewport });
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => void (m.type() === 'error' && errors.push(m.text())));
  await page.goto(srv.url + '/');
  (page as Page & { errors?: string[] }).errors = errors;
  return page;
}

async function setMaxTokens(page: Page, n: string): Promise<void> {
  await page.getByText('Settings').click();
  await page.getByLabel('Max tokens').fill(n);
  await page.getByText('Settings').click();
}

async function ask(page: Page, text: string): Promise<void> {
  await page.getByLabel('Message').fill(text);
  await page.getByRole('button', { name: 'Send' }).click();
  await page.waitForSelector('body[data-state="streaming"]');
  await page.waitForSelector('body[data-state="idle"]', { timeout: 20_000 });
}

describe('web chat page', { skip }, () => {
  it('streams a reply, keeps the history, and starts over on New chat', async () => {
    const page = await open({ width: 1100, height: 760 });
    assert.equal(await page.title(), 'dsv3 chat');
    // (Browser-side code as strings: the tests are type-checked without the DOM library.)
    await page.waitForFunction(`document.getElementById('model').textContent === 'dsv3-test'`);
    await setMaxTokens(page, '12');

    await ask(page, 'Hello there! Who are you?');
    const bubbles = page.locator('#log .msg');
    assert.equal(await bubbles.count(), 2);
    assert.equal(await bubbles.nth(0).locator('.text').textContent(), 'Hello there! Who are you?');
    const reply = await bubbles.nth(1).locator('.text').textContent();
    assert.ok(reply && reply.length > 0, 'the reply streamed in');
    assert.match((await bubbles.nth(1).locator('.meta').textContent())!, /12 tokens/);

    // The second turn sends the history: the server sees both turns.
    const seen: unknown[] = [];
    page.on('request', (r) => void (r.url().endsWith('/v1/chat/completions') && seen.push(r.postDataJSON())));
    await ask(page, 'Tell me more.');
    assert.equal(await bubbles.count(), 4);
    const sent = seen[0] as { messages: { role: string; content: string }[]; stream: boolean };
    assert.equal(sent.stream, true);
    assert.deepEqual(sent.messages.map((x) => x.role), ['user', 'assistant', 'user']);
    assert.equal(sent.messages[1].content, reply);
    await page.screenshot({ path: join(ARTIFACTS, 'web-chat.png') });

    await page.getByRole('button', { name: 'New chat' }).click();
    assert.equal(await bubbles.count(), 0);
    await page.getByText('Ask something to start.').waitFor();
    assert.deepEqual((page as Page & { errors?: string[] }).errors, []);
    await page.close();
  });

  it('stops a reply with the Stop button, which frees the sequence on the server', async () => {
    const page = await open({ width: 1100, height: 760 });
    await page.getByLabel('Message').fill('Write a long story.');
    await page.getByRole('button', { name: 'Send' }).click();
    const text = page.locator('#log .msg.assistant .text');
    await page.waitForFunction(`document.querySelector('#log .msg.assistant .text').textContent.length > 10`);
    assert.equal(srv.scheduler.load.active, 1);
    await page.getByRole('button', { name: 'Stop' }).click();
    await page.waitForSelector('body[data-state="idle"]');
    await waitFor(() => srv.scheduler.load.active === 0, 2000, 'the server to cancel the reply');
    assert.ok(((await text.textContent()) ?? '').length > 0, 'the partial reply stays');
    assert.match((await page.locator('#log .msg.assistant .meta').textContent())!, /stopped/);
    await page.close();
  });

  it('fits a phone screen', async () => {
    const page = await open({ width: 390, height: 844 });
    await setMaxTokens(page, '16');
    await ask(page, 'Hi from a phone!');
    const width = await page.evaluate<number>('document.documentElement.scrollWidth');
    assert.ok(width <= 390, `no horizontal scroll (${width} px)`);
    const box = (await page.getByRole('button', { name: 'Send' }).boundingBox())!;
    assert.ok(box.x + box.width <= 390 && box.height >= 40, 'Send is on screen and big enough to tap');
    await page.screenshot({ path: join(ARTIFACTS, 'web-chat-phone.png') });
    await page.close();
  });
});
