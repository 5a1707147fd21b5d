// End-to-end tests of the built site (dist/) in headless Chromium, driven by Playwright
// (playwright-core with Debian's /usr/bin/chromium): training on WebGPU (SwiftShader) and on the
// CPU fallback, the panels, the console, the URL, and the speed of a training step at L = 8.
//
//   node tests/e2e.mjs http://127.0.0.1:PORT/ OUTPUT_DIR
//
// Prints one line per check and a cargo-style summary line ("test result: ok. N passed; M
// failed") that tests/run.sh counts.
import { chromium } from 'playwright-core';
import { mkdirSync, readFileSync } from 'node:fs';

const [base, out] = process.argv.slice(2);
mkdirSync(out, { recursive: true });
const FLAGS = ['--no-sandbox', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync'];
// The training checks' configurations (the URL sets them, which tests the URL). The CPU fallback
// trains a small network for 100 epochs; WebGPU here is SwiftShader, a CPU emulation of a GPU,
// on which the paper's network at L = 8 (the page's default) trains 6 epochs.
const SMALL = 'L=4&d=2&T=2.269185314213022&nlayers=4&nmlp=2&nhidden=10&batch=256&lr=0.005&seed=3';
const PAPER = 'L=8&d=2&seed=3';
const RUNS = {
  webgpu: { query: PAPER, L: '8', nlayers: '10', lr: '0.001', epochs: 6 },
  cpu: { query: SMALL, L: '4', nlayers: '4', lr: '0.005', epochs: 100 },
};
let passed = 0, failed = 0;
const speeds = [];

function check(name, ok, detail) {
  if (ok) { passed++; console.log(`test ${name} ... ok${detail ? ` (${detail})` : ''}`); }
  else { failed++; console.log(`test ${name} ... FAILED${detail ? `: ${detail}` : ''}`); }
}

async function open(webgpu) {
  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium', headless: true,
    args: webgpu ? [...FLAGS, '--enable-unsafe-webgpu'] : FLAGS,
  });
  const page = await browser.newPage({ viewport: { width: 1280, height: 2400 } });
  const errors = [];
  page.on('console', m => { if (m.type() === 'error') errors.push(m.text()); });
  page.on('pageerror', e => errors.push(String(e)));
  return { browser, page, errors };
}

const stat = (page, key) => page.locator('#stats').getAttribute(`data-${key}`);

async function waitEpoch(page, epoch, timeout) {
  await page.waitForFunction(
    e => Number(document.querySelector('#stats')?.dataset.epoch) >= e
      || document.querySelector('#error')?.hidden === false || document.querySelector('#fatal')?.hidden === false,
    epoch, { timeout, polling: 250 });
}

// Canvases with at least `min` non-white pixels (drawn panels).
async function drawnCanvases(page) {
  return page.$$eval('canvas', cs => cs.map(c => {
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let ink = 0; // opaque, not white (a canvas never drawn is transparent black)
    for (let i = 0; i < d.length; i += 4) if (d[i + 3] > 0 && (d[i] < 250 || d[i + 1] < 250 || d[i + 2] < 250)) ink++;
    return ink;
  }));
}

// The text of the page's error areas (empty when both are hidden).
async function pageErrors(page) {
  return page.evaluate(() => ['#error', '#fatal']
    .map(id => document.querySelector(id))
    .filter(e => !e.hidden)
    .map(e => e.textContent.trim())
    .join(' | '));
}

// Waits until every canvas has ink (the field and MI panels are computed on request).
async function waitDrawn(page, timeout) {
  try {
    await page.waitForFunction(() => [...document.querySelectorAll('canvas')].every(c => {
      const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      for (let i = 0; i < d.length; i += 16) if (d[i + 3] > 0 && d[i] < 250) return true;
      return false;
    }), null, { timeout, polling: 500 });
  } catch (_) { /* reported by the check that follows */ }
}

// Clicks `selector` and returns the bytes of the download it starts.
async function download(page, selector) {
  const [d] = await Promise.all([page.waitForEvent('download', { timeout: 60000 }), page.click(selector)]);
  return readFileSync(await d.path());
}

async function trainingRun(label, webgpu) {
  const { browser, page, errors } = await open(webgpu);
  const run = webgpu ? RUNS.webgpu : RUNS.cpu;
  try {
    await page.goto(`${base}?${run.query}`);
    await page.waitForFunction(() => !/looking/.test(document.querySelector('#backend')?.textContent ?? 'looking'), null, { timeout: 60000 });
    const backend = await page.locator('#backend').textContent();
    check(`${label}: backend is named`, webgpu ? /WebGPU/.test(backend) : /CPU/.test(backend), backend);
    // The URL carries the configuration: the controls show it.
    check(`${label}: controls read the URL`,
      (await page.locator('select[name=L]').inputValue()) === run.L
        && (await page.locator('input[name=nlayers]').inputValue()) === run.nlayers
        && (await page.locator('input[name=lr]').inputValue()) === run.lr);
    await page.click('#start');
    const t0 = Date.now();
    // The first WebGPU step compiles every kernel (SwiftShader: tens of seconds).
    const epochs = run.epochs;
    await waitEpoch(page, epochs, 420000);
    await page.click('#start', { timeout: 120000 }); // pause
    const [epoch, f, f0] = [Number(await stat(page, 'epoch')), Number(await stat(page, 'f')), Number(await stat(page, 'f-first'))];
    if (webgpu) {
      // The paper's network at L = 8: the speed of WebGPU (median of the steps after the first).
      const ms = Number(await stat(page, 'ms-per-step'));
      speeds.push(`${label} (webgpu): ${ms.toFixed(1)} ms per training step at L=8, batch 512 (median of steps 2 to ${epoch})`);
      // One more step, which also measures (samples, rates, observables).
      await page.click('#step', { timeout: 120000 });
      await waitEpoch(page, epoch + 1, 120000);
    }
    check(`${label}: training runs`, epoch >= epochs,
      `epoch ${epoch} in ${((Date.now() - t0) / 1000).toFixed(1)} s ${await pageErrors(page)}`);
    check(`${label}: the loss falls`, f < f0 - 0.5, `F ${f0.toFixed(3)} -> ${f.toFixed(3)}, ${run.query}`);
    // Panels: loss, samples, RG in pictures, rates, observables, receptive field (click a
    // site), MI.
    await page.locator('.site').nth(5).click({ timeout: 120000 });
    await page.click('#mi', { timeout: 120000 });
    await waitDrawn(page, 240000);
    const ink = await drawnCanvases(page);
    check(`${label}: all ${ink.length} canvases are drawn`, ink.length === 7 && ink.every(n => n > 500), ink.join(','));
    if (!webgpu) {
      // Export: a panel as PNG, the history and the measurements as CSV.
      const png = await download(page, '#panel-rg button.export');
      const csv = (await download(page, '#csv')).toString();
      const rows = csv.trim().split('\n');
      const measured = (await download(page, '#csv-measurements')).toString().trim().split('\n');
      check(`${label}: a panel downloads as PNG and the history as CSV`,
        png.subarray(1, 4).toString() === 'PNG' && /^epoch,/.test(rows[0]) && rows.length === epoch + 1
          && /mh_acceptance/.test(measured[0]) && measured.length >= 2,
        `${png.length} bytes of PNG; ${rows.length - 1} rows: ${rows[0].slice(0, 60)}...; ${measured.length - 1} measurements`);
    }
    check(`${label}: a clicked site is chosen`, (await page.locator('.site.chosen').count()) === 1);
    const shown = await pageErrors(page);
    check(`${label}: no error in the page or the console`, !shown && errors.length === 0, [shown, ...errors].join(' | '));
    await page.screenshot({ path: `${out}/${label}.png`, fullPage: true });
    if (webgpu) {
      // A lost GPU (here destroyed on purpose, as a driver reset would lose it): the page says
      // so, stops cleanly, and trains again on the CPU when asked.
      await page.evaluate(() => window.neuralrgLoseDevice());
      await page.waitForFunction(() => /device was lost/.test(document.querySelector('#error')?.textContent ?? ''), null, { timeout: 60000 });
      const message = (await page.locator('#error').textContent()).trim();
      const cpu = /CPU/.test(await page.locator('#backend').textContent());
      await page.click('#start');
      await waitEpoch(page, 2, 120000);
      const after = Number(await stat(page, 'epoch'));
      check(`${label}: a lost device is reported and training goes on on the CPU`,
        cpu && after >= 2 && await stat(page, 'backend') === 'cpu', `${message}; epoch ${after} on ${await stat(page, 'backend')}`);
      await page.screenshot({ path: `${out}/${label}-device-lost.png`, fullPage: true });
    }
  } finally {
    await browser.close();
  }
}

// A hidden tab (document.hidden, as when the user switches tabs): training pauses and the page
// says so, instead of training at the one step a minute browsers allow hidden tabs; it goes on
// when the tab is visible again.
async function hiddenTab() {
  const { browser, page, errors } = await open(false);
  try {
    await page.goto(`${base}?${SMALL}&cpu=true`);
    await page.click('#start');
    await waitEpoch(page, 3, 120000);
    await page.evaluate(() => {
      Object.defineProperty(document, 'hidden', { value: true, configurable: true });
      document.dispatchEvent(new Event('visibilitychange'));
    });
    await page.waitForFunction(() => !document.querySelector('#notice').hidden, null, { timeout: 30000 });
    const text = (await page.locator('#notice').textContent()).trim();
    const e1 = Number(await stat(page, 'epoch'));
    await page.waitForTimeout(1500);
    const e2 = Number(await stat(page, 'epoch'));
    await page.evaluate(() => {
      delete document.hidden;
      document.dispatchEvent(new Event('visibilitychange'));
    });
    await waitEpoch(page, e2 + 3, 60000);
    const back = await page.locator('#notice').isHidden();
    check('a hidden tab pauses training and says so', /Paused while the tab is hidden/.test(text)
      && e2 - e1 <= 1 && back && errors.length === 0, `${text}; epochs ${e1} -> ${e2} while hidden, ${errors.join(' | ')}`);
  } finally {
    await browser.close();
  }
}

async function urlRoundTrip() {
  const { browser, page, errors } = await open(false);
  try {
    await page.goto(`${base}?${SMALL}&cpu=true`);
    await page.locator('input[name=nhidden]').fill('6');
    await page.locator('input[name=nhidden]').dispatchEvent('change');
    await page.selectOption('select[name=d]', '1');
    await page.waitForFunction(() => /d=1/.test(location.search));
    const url = page.url();
    const page2 = await browser.newPage();
    await page2.goto(url);
    const ok = (await page2.locator('input[name=nhidden]').inputValue()) === '6'
      && (await page2.locator('select[name=d]').inputValue()) === '1'
      && (await page2.locator('select[name=L]').inputValue()) === '4'
      && page2.url() === url;
    check('the URL round-trips the configuration', ok && errors.length === 0, url.split('?')[1]);
    // A bad value in the address is named in the page, not a dead page.
    await page2.goto(`${base}?L=6`);
    const msg = await page2.locator('#error').textContent();
    check('a bad URL value is reported', /L = 6|L=6|6/.test(msg) && await page2.locator('#error').isVisible(), msg.trim());
    // A lattice or batch beyond what the page offers is refused before anything is allocated:
    // the value is named and the defaults (L = 8) are used.
    for (const [query, needle] of [['L=1024', /L = 1024 is not offered/], ['T=40', /T = 40 is not offered/], ['L=16&batch=100000', /needs about .* of memory/]]) {
      await page2.goto(`${base}?${query}&cpu=true`);
      const text = await page2.locator('#error').textContent();
      const l = await page2.locator('select[name=L]').inputValue();
      check(`an oversized URL (${query}) is refused in the page`, needle.test(text) && l === '8', `${text.trim()}; L = ${l}`);
    }
    // Presets, by address and in the page.
    await page2.goto(`${base}?preset=ordered&cpu=true`);
    const ordered = (await page2.locator('select[name=preset]').inputValue()) === 'ordered'
      && /T = 1\.800/.test(await page2.locator('label.temperature').textContent());
    await page2.selectOption('select[name=preset]', 'chain');
    await page2.waitForFunction(() => /d=1/.test(location.search));
    const chain = (await page2.locator('select[name=d]').inputValue()) === '1'
      && (await page2.locator('select[name=L]').inputValue()) === '16';
    check('presets are chosen by address and in the page', ordered && chain, page2.url().split('?')[1]);
    // Embedding: hide= hides controls and panels; unknown keys and names are reported.
    await page2.goto(`${base}?preset=first-look&hide=controls,mi,bogus&colour=red&cpu=true`);
    const hidden = await page2.locator('section.controls').isHidden() && await page2.locator('#panel-mi').isHidden()
      && await page2.locator('#panel-loss').isVisible();
    const unknown = (await page2.locator('#unknown').textContent()).trim();
    check('hide= hides parts of the page; unknown address keys are reported', hidden
      && /colour/.test(unknown) && /hide=bogus/.test(unknown) && /hide=controls,mi/.test(page2.url()), unknown);
    await page2.screenshot({ path: `${out}/embedded.png`, fullPage: true });
  } finally {
    await browser.close();
  }
}

// The speed control: at one step a second, three seconds of training give about three steps;
// back at full speed, training goes on at once.
async function pace() {
  const { browser, page, errors } = await open(false);
  try {
    await page.goto(`${base}?${SMALL}&cpu=true`);
    await page.waitForFunction(() => !/looking/.test(document.querySelector('#backend')?.textContent ?? 'looking'), null, { timeout: 60000 });
    await page.selectOption('#speed', '1000');
    await page.click('#start');
    await waitEpoch(page, 1, 60000);
    const e1 = Number(await stat(page, 'epoch'));
    await page.waitForTimeout(3000);
    const e2 = Number(await stat(page, 'epoch'));
    await page.selectOption('#speed', '0');
    await waitEpoch(page, e2 + 20, 60000);
    const e3 = Number(await stat(page, 'epoch'));
    const shown = await pageErrors(page);
    check('the speed control slows training to one step a second and back',
      e2 - e1 >= 2 && e2 - e1 <= 4 && e3 >= e2 + 20 && !shown && errors.length === 0,
      `${e2 - e1} steps in 3 s at 1 step/s, then epoch ${e2} -> ${e3} at full speed ${shown} ${errors.join(' | ')}`);
  } finally {
    await browser.close();
  }
}

// Milliseconds per step at L = 8 with the paper's network (batch 512) on the CPU fallback: the
// page's median of the last 9 steps, read at epoch 15. (WebGPU's is read in its training run.)
async function speed(label) {
  const { browser, page, errors } = await open(false);
  try {
    await page.goto(`${base}?L=8&d=2&cpu=true`);
    await page.waitForFunction(() => !/looking/.test(document.querySelector('#backend')?.textContent ?? 'looking'), null, { timeout: 60000 });
    await page.click('#start');
    await waitEpoch(page, 15, 600000);
    const ms = Number(await stat(page, 'ms-per-step'));
    const how = 'median of steps 7 to 15';
    await page.click('#start', { timeout: 300000 });
    const backend = await stat(page, 'backend');
    speeds.push(`${label} (${backend}): ${ms.toFixed(1)} ms per training step at L=8, batch 512 (${how})`);
    const shown = await pageErrors(page);
    const trained = ms > 0;
    check(`${label}: L=8 trains`, trained && !shown && errors.length === 0, `${ms.toFixed(1)} ms/step ${shown} ${errors.join(' | ')}`);
  } finally {
    await browser.close();
  }
}

const t0 = Date.now();
for (const [name, fn] of [
  ['webgpu', () => trainingRun('webgpu', true)],
  ['cpu-fallback', () => trainingRun('cpu-fallback', false)],
  ['url', urlRoundTrip],
  ['hidden-tab', hiddenTab],
  ['pace', pace],
  ['speed-cpu', () => speed('speed-cpu')],
]) {
  try { await fn(); } catch (e) { check(name, false, String(e).split('\n')[0]); }
}
console.log('');
for (const s of speeds) console.log(`speed: ${s}`);
console.log(`screenshots in ${out}`);
console.log(`test result: ${failed ? 'FAILED' : 'ok'}. ${passed} passed; ${failed} failed; finished in ${((Date.now() - t0) / 1000).toFixed(1)}s`);
process.exit(failed ? 1 : 0);
