// Restore a chosen version of the embeddings from the Dagster UI with nothing typed, in
// Debian's headless Chromium: open the embeddings asset page, follow its "Restore a
// version" link to the Launchpad of restore_debian_embeddings, open the Partition menu
// (the table's versions: "v1 | 2040 rows | model | run ... | time"), click the wanted
// version, Launch Run, then read the new latest version off the asset page.
// Prints one JSON line: {"choices": [...], "picked": "...", "config": "...", "runId": "...",
// "version": N, "overview": "..."}.
// Usage: node restore_a_version_from_the_launchpad.js http://127.0.0.1:PORT WANTED EXPECTED_NEW
const { chromium } = require('playwright-core');

const base = process.argv[2];
const wanted = Number(process.argv[3] || 1);
const expected = Number(process.argv[4] || 0);
const timeoutMs = Number(process.env.BROWSER_TIMEOUT_MS || 240000);
const shots = process.env.SCREENSHOT_DIR || '.';

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
  await row.scrollIntoViewIfNeeded();
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
  page.setDefaultTimeout(90000);
  const out = { choices: null, picked: null, config: null, runId: null, version: null, overview: null };
  try {
    await page.goto(`${base}/assets/debian/embeddings`, { waitUntil: 'domcontentloaded' });
    await dismissModal(page);
    const link = page.locator('a', { hasText: 'Restore a version' }).first();
    await link.waitFor({ state: 'visible' });
    out.overview = await page.locator('body').innerText();
    await page.screenshot({ path: `${shots}/1-asset-page.png`, fullPage: true });
    await link.click();

    // The Launchpad of restore_debian_embeddings: its Partition menu lists the versions.
    await page.waitForURL(/\/jobs\/restore_debian_embeddings\/playground/);
    const picker = page.getByPlaceholder('Partition');
    await picker.waitFor({ state: 'visible' });
    await picker.click();
    const choice = page.locator('[role="menuitem"], a, li', { hasText: new RegExp(`^\\s*v${wanted} [|\\[]`) }).first();
    await choice.waitFor({ state: 'visible' });
    out.choices = (await page.locator('[role="menuitem"]').allInnerTexts()).map((t) => t.trim());
    await page.screenshot({ path: `${shots}/2-version-menu.png` });
    out.picked = (await choice.innerText()).trim();
    await choice.click();
    await page.waitForTimeout(2500); // the partition's config loads into the editor
    out.config = await page.locator('.CodeMirror').first().innerText().catch(() => null);
    await page.screenshot({ path: `${shots}/3-launchpad-picked.png` });
    await page.locator('button', { hasText: /^\s*Launch Run\s*$/ }).first().click();
    await page.waitForURL(/\/runs\/[0-9a-f-]{36}/, { timeout: 60000 });
    out.runId = (page.url().match(/\/runs\/([0-9a-f-]{36})/) || [])[1] || null;

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
    await page.screenshot({ path: `${shots}/4-asset-after.png`, fullPage: true });
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
