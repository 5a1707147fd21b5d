// End-to-end tests of the built site (dist/) in headless Chromium, driven by Playwright
// (playwright-core with Debian's /usr/bin/chromium): training on WebGPU (SwiftShader) and on the
// CPU fallback, the panels, the console, the URL, and the speed of a training step at L = 8.
//
//   node tests/e2e.mjs http://127.0.0.1:PORT/ OUTPUT_DIR
//
// Prints one line per check and a cargo-style summary line ("test result: ok. N passed; M
// failed") that tests/run.sh counts.
import { chromium } from 'playwright-core';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

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
async function drawnCanvases(page, selector = 'canvas') {
  return page.$$eval(selector, cs => cs.map(c => {
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
async function waitDrawn(page, timeout, selector = 'canvas') {
  try {
    await page.waitForFunction(sel => [...document.querySelectorAll(sel)].every(c => {
      const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      for (let i = 0; i < d.length; i += 16) if (d[i + 3] > 0 && d[i] < 250) return true;
      return false;
    }), selector, { timeout, polling: 500 });
  } catch (_) { /* reported by the check that follows */ }
}

// From now on, records how long the page takes to answer a click (from the moment the browser
// created the click event to the end of the page's handlers, which run before this listener) and
// the gaps between animation frames.
async function watchResponses(page) {
  await page.evaluate(() => {
    window.answers = [];
    window.addEventListener('click', e => window.answers.push(performance.now() - e.timeStamp));
    window.frameGaps = [];
    let last = performance.now();
    const tick = t => { window.frameGaps.push(t - last); last = t; requestAnimationFrame(tick); };
    requestAnimationFrame(tick);
  });
}

// Clicks a latent site of the receptive-field panel `n` times, every `ms` milliseconds, as a
// student would while the model trains.
async function clickSites(page, n, ms) {
  for (let i = 0; i < n; i++) {
    await page.waitForTimeout(ms);
    await page.locator('.site').nth(i % 4).click({ timeout: 60000 });
  }
}

// The slowest answer to a click since watchResponses, and the longest gap between frames.
async function responses(page) {
  return page.evaluate(() => ({
    slowest: Math.max(...window.answers), clicks: window.answers.length,
    gap: Math.max(...window.frameGaps.slice(1)), frames: window.frameGaps.length,
  }));
}

// The page must answer a click within this many milliseconds while the model trains.
const RESPONSIVE_MS = 100;

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
    await watchResponses(page);
    await page.click('#start');
    const t0 = Date.now();
    // The first WebGPU step compiles every kernel (SwiftShader: tens of seconds). Clicks while
    // it does, and while the model trains.
    if (webgpu) await clickSites(page, 12, 500);
    const epochs = run.epochs;
    await waitEpoch(page, epochs, 420000);
    if (webgpu) {
      const r = await responses(page);
      speeds.push(`${label}: the page answered ${r.clicks} clicks within ${r.slowest.toFixed(1)} ms while kernels compiled and the model trained; longest gap between animation frames ${r.gap.toFixed(0)} ms over ${r.frames} frames`);
      check(`${label}: the page answers clicks within ${RESPONSIVE_MS} ms while kernels compile and the model trains`,
        r.slowest < RESPONSIVE_MS && r.clicks >= 12, `slowest answer ${r.slowest.toFixed(1)} ms of ${r.clicks} clicks`);
    }
    await page.click('#start', { timeout: 120000 }); // pause
    // The model (in its worker) says it paused after the rows of every step it finished.
    await page.waitForFunction(() => document.querySelector('#stats')?.dataset.running === 'false', null, { timeout: 120000 });
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
    if (webgpu && process.env.NEURALRG_BINS) {
      // The model trained on WebGPU, saved (its tensors read back asynchronously), is read by
      // the command line with the log q the page computed on the GPU.
      const trained = Number(await stat(page, 'epoch'));
      const [d] = await Promise.all([page.waitForEvent('download', { timeout: 120000 }), page.click('#save')]);
      const bytes = readFileSync(await d.path());
      await page.waitForFunction(() => document.querySelector('#model')?.dataset.logQ, null, { timeout: 60000 });
      const saved = await modelLine(page);
      const read = sampleModelFile(bytes, d.suggestedFilename());
      check(`${label}: the model saved from WebGPU is read by sample with the page's log q`,
        sameLogQ(read.json.log_q_probes, saved.logQ) && saved.epoch === trained,
        `page ${saved.logQ.join(', ')}; sample ${read.json.log_q_probes.join(', ')}; epoch ${saved.epoch}`);
    }
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

// The page's model line: its epoch and log q at the probe configurations.
async function modelLine(page) {
  const el = page.locator('#model');
  return {
    epoch: Number(await el.getAttribute('data-epoch')),
    logQ: (await el.getAttribute('data-log-q')).split(',').map(Number),
    text: await el.textContent(),
  };
}

// log q in f32 on two backends: equal to 1e-3 absolute plus 1e-4 relative.
const sameLogQ = (a, b) => a.length === 3 && a.length === b.length
  && a.every((v, i) => Number.isFinite(v) && Math.abs(v - b[i]) <= 1e-3 + 1e-4 * Math.abs(b[i]));

// Unpacks a model file saved by the page with tar and reads it with the command line's
// `sample`; returns sample's JSON.
function sampleModelFile(bytes, name) {
  const dir = mkdtempSync(join(tmpdir(), 'neuralrg-page-model-'));
  try {
    writeFileSync(join(dir, name), bytes);
    execFileSync('tar', ['-xf', name], { cwd: dir });
    const run = readdirSync(dir).find(f => f !== name);
    const json = execFileSync(join(process.env.NEURALRG_BINS, 'sample'),
      ['--folder', join(dir, run), '-n', '256', '--json'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    return { run, json: JSON.parse(json) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

// Models move between the command line and the page: a run folder trained natively (by
// tests/web.sh) opens in the page with the log q that train wrote to summary.json, and is
// sampled and looked inside without training; the page's model file, trained on, unpacked
// with tar, is read by `sample` with the log q the page shows; dropped on the page, it opens
// again. On the CPU fallback; the WebGPU run saves its model too (trainingRun).
async function models() {
  const run = process.env.NEURALRG_NATIVE_RUN;
  if (!run || !process.env.NEURALRG_BINS) throw new Error('NEURALRG_NATIVE_RUN and NEURALRG_BINS are not set (tests/web.sh sets them)');
  const summary = JSON.parse(readFileSync(join(run, 'summary.json'), 'utf8'));
  const ckpt = readdirSync(join(run, 'savings')).filter(f => f.endsWith('.ckpt')).sort().pop();
  const { browser, page, errors } = await open(false);
  try {
    // Another setup first: the controls must take over the model's.
    await page.goto(`${base}?${SMALL}&cpu=true`);
    await page.waitForFunction(() => !/looking/.test(document.querySelector('#backend')?.textContent ?? 'looking'), null, { timeout: 60000 });
    await page.setInputFiles('#open-files', [join(run, 'parameters.json'), join(run, 'savings', ckpt)]);
    await page.waitForFunction(() => document.querySelector('#model')?.dataset.logQ || document.querySelector('#error')?.hidden === false,
      null, { timeout: 120000, polling: 250 });
    const opened = await modelLine(page);
    const L = await page.locator('select[name=L]').inputValue();
    check('a natively trained L=8 model opens in the page with the same log q',
      sameLogQ(opened.logQ, summary.log_q_probes) && L === '8' && opened.epoch === summary.epochs,
      `page ${opened.logQ.join(', ')}; summary.json ${summary.log_q_probes.join(', ')}; L ${L}; epoch ${opened.epoch}; ${await pageErrors(page)}`);
    // The panels of the samples, the RG picture, the receptive field and the MI, in page order.
    const looked = ['samples', 'rg', 'field', 'mi'].map(p => `#panel-${p} canvas`).join(', ');
    await waitDrawn(page, 180000, looked);
    const inks = await drawnCanvases(page, looked);
    const still = Number(await stat(page, 'epoch'));
    check('the opened model is sampled and looked inside without training',
      inks.every(n => n > 500) && still === summary.epochs && (await stat(page, 'running')) === 'false',
      `ink of samples, rg, field, mi: ${inks.join(', ')}; epoch ${still}`);
    await page.screenshot({ path: `${out}/model-opened.png`, fullPage: true });

    // Train on in the page, save, and read the file with the command line.
    for (let k = 1; k <= 3; k++) {
      await page.click('#step');
      await waitEpoch(page, summary.epochs + k, 60000);
    }
    const [d] = await Promise.all([page.waitForEvent('download', { timeout: 120000 }), page.click('#save')]);
    const name = d.suggestedFilename();
    const bytes = readFileSync(await d.path());
    await page.waitForFunction(e => Number(document.querySelector('#model')?.dataset.epoch) === e, summary.epochs + 3, { timeout: 60000 });
    const saved = await modelLine(page);
    const read = sampleModelFile(bytes, name);
    check('the page\'s model file is read by sample with the page\'s log q',
      /\.tar$/.test(name) && saved.epoch === summary.epochs + 3 && sameLogQ(read.json.log_q_probes, saved.logQ)
        && read.json.n === 256 && !sameLogQ(saved.logQ, opened.logQ),
      `${name} -> ${read.run}; page ${saved.logQ.join(', ')}; sample ${read.json.log_q_probes.join(', ')}`);

    // Dropped on the page, the file opens again.
    await page.goto(`${base}?${SMALL}&cpu=true`);
    await page.waitForFunction(() => !/looking/.test(document.querySelector('#backend')?.textContent ?? 'looking'), null, { timeout: 60000 });
    const drop = await page.evaluateHandle(([b, n]) => {
      const dt = new DataTransfer();
      dt.items.add(new File([new Uint8Array(b)], n));
      return dt;
    }, [[...bytes], name]);
    await page.dispatchEvent('body', 'drop', { dataTransfer: drop });
    await page.waitForFunction(() => document.querySelector('#model')?.dataset.logQ || document.querySelector('#error')?.hidden === false,
      null, { timeout: 120000, polling: 250 });
    const dropped = await modelLine(page);
    check('a model file dropped on the page opens',
      dropped.epoch === saved.epoch && sameLogQ(dropped.logQ, saved.logQ) && /Opened/.test(dropped.text),
      `${dropped.text.slice(0, 160)} ${await pageErrors(page)}`);

    // What is not a model is refused with a message.
    await page.setInputFiles('#open-files', [join(run, 'parameters.json')]);
    await page.waitForFunction(() => document.querySelector('#error')?.hidden === false, null, { timeout: 30000 });
    const msg = await page.locator('#error').textContent();
    const shown = /no checkpoint among the files/.test(msg);
    check('files without a checkpoint are refused, saying what to open', shown && errors.length === 0,
      `${msg.trim()} ${errors.join(' | ')}`);
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
    await watchResponses(page);
    await page.click('#start');
    await clickSites(page, 8, 400);
    await waitEpoch(page, 15, 600000);
    const r = await responses(page);
    speeds.push(`${label}: the page answered ${r.clicks} clicks within ${r.slowest.toFixed(1)} ms while the paper's network trained at L=8 on the CPU; longest gap between animation frames ${r.gap.toFixed(0)} ms over ${r.frames} frames`);
    check(`${label}: the page answers clicks within ${RESPONSIVE_MS} ms while the paper's network trains at L=8`,
      r.slowest < RESPONSIVE_MS && r.gap < RESPONSIVE_MS && r.clicks >= 8, `slowest answer ${r.slowest.toFixed(1)} ms of ${r.clicks} clicks; longest frame gap ${r.gap.toFixed(1)} ms`);
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
  ['models', models],
  ['speed-cpu', () => speed('speed-cpu')],
]) {
  try { await fn(); } catch (e) { check(name, false, String(e).split('\n')[0]); }
}
console.log('');
for (const s of speeds) console.log(`speed: ${s}`);
console.log(`screenshots in ${out}`);
console.log(`test result: ${failed ? 'FAILED' : 'ok'}. ${passed} passed; ${failed} failed; finished in ${((Date.now() - t0) / 1000).toFixed(1)}s`);
process.exit(failed ? 1 : 0);
