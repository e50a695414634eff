// Drive a rollback from the Dagster UI in Debian's headless Chromium, as a user would:
// open the embeddings asset page, follow its "Roll back this asset" link to the
// Launchpad of rollback_debian_embeddings (config prefilled: to: previous), click
// "Launch Run", then read the new Lance version and the checks off the asset page.
// Prints one JSON line: {"version": N, "runId": "...", "config": "...", "checks": {name: status}}.
// Usage: node rollback_from_asset_page.js http://127.0.0.1:PORT [expected_version]
const { chromium } = require('playwright-core');

const base = process.argv[2];
const expected = Number(process.argv[3] || 0);
const timeoutMs = Number(process.env.BROWSER_TIMEOUT_MS || 240000);
const shots = process.env.SCREENSHOT_DIR || '.';

// A fresh DAGSTER_HOME greets the first visit with a "Join the Dagster community" modal
// that covers the page; skip it when it shows.
async function dismissModal(page) {
  const skip = page.locator('button', { hasText: /^\s*Skip\s*$/ }).first();
  try {
    await skip.waitFor({ state: 'visible', timeout: 5000 });
    await skip.click();
  } catch (e) { /* no modal */ }
}

async function readVersion(page) {
  const row = page.locator('tr', { hasText: 'lance/version' }).first();
  await row.waitFor({ state: 'visible', timeout: 15000 });
  await row.scrollIntoViewIfNeeded(); // so the screenshot shows it
  // Cells: key | timestamp of the event | value; the value is the last one.
  const m = (await row.locator('td').last().innerText()).trim().match(/^\d+$/);
  return m ? Number(m[0]) : null;
}

async function main() {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const page = await browser.newPage({ viewport: { width: 1600, height: 1100 } });
  page.setDefaultTimeout(60000);
  const out = { version: null, runId: null, config: null, checks: null };
  try {
    await page.goto(`${base}/assets/debian/embeddings`, { waitUntil: 'domcontentloaded' });
    await dismissModal(page);
    const link = page.locator('a', { hasText: 'Roll back this asset' }).first();
    await link.waitFor({ state: 'visible' });
    await page.screenshot({ path: `${shots}/1-asset-page.png` });
    await link.click();

    // The Launchpad of the table's rollback job, its config already there.
    const launch = page.locator('button', { hasText: /^\s*Launch Run\s*$/ }).first();
    await launch.waitFor({ state: 'visible' });
    await page.waitForURL(/\/jobs\/rollback_debian_embeddings\/playground/);
    await page.waitForTimeout(1500); // the editor validates the config before enabling launch
    out.config = await page.locator('.CodeMirror').first().innerText().catch(() => null);
    await page.screenshot({ path: `${shots}/2-launchpad.png` });
    await launch.click();
    await page.waitForURL(/\/runs\/[0-9a-f-]{36}/, { timeout: 60000 });
    out.runId = (page.url().match(/\/runs\/([0-9a-f-]{36})/) || [])[1] || null;

    // Poll the asset page until its latest materialisation shows the new version.
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      await page.goto(`${base}/assets/debian/embeddings`, { waitUntil: 'domcontentloaded' });
      await dismissModal(page);
      try {
        out.version = await readVersion(page);
        if (out.version !== null && (!expected || out.version === expected)) break;
      } catch (e) { /* not rendered yet */ }
      await page.waitForTimeout(3000);
    }
    await page.screenshot({ path: `${shots}/3-asset-after.png`, fullPage: true });
    // The checks tab lists each check with its status for the latest materialisation
    // (name, then status, one line each): read them as {name: status}.
    await page.goto(`${base}/assets/debian/embeddings?view=checks`, { waitUntil: 'domcontentloaded' });
    await dismissModal(page);
    await page.getByText('vectors_finite').first().waitFor({ state: 'visible', timeout: 30000 });
    await page.waitForTimeout(1500);
    const lines = (await page.locator('body').innerText()).split('\n').map((l) => l.trim());
    out.checks = {};
    for (const name of ['vectors_finite', 'vector_dimension', 'no_zero_vectors', 'unique_keys',
      'index_freshness', 'drift']) {
      // the name may repeat on the next line (a truncation tooltip's copy): skip it
      let j = lines.indexOf(name);
      if (j < 0) { out.checks[name] = null; continue; }
      while (j < lines.length && (lines[j] === name || lines[j] === '')) j += 1;
      out.checks[name] = lines[j] || null;
    }
    await page.screenshot({ path: `${shots}/4-checks.png`, fullPage: true });
    console.log(JSON.stringify(out));
    if (out.version === null || (expected && out.version !== expected)) process.exitCode = 2;
  } catch (err) {
    await page.screenshot({ path: `${shots}/failure.png`, fullPage: true }).catch(() => {});
    console.log(JSON.stringify(out));
    throw err;
  } finally {
    await browser.close();
  }
}

main().catch((err) => { console.error(err); process.exit(1); });
