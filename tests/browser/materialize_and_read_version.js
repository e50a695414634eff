// Drive the Dagster UI in Debian's headless Chromium: open the demo asset group, click
// "Materialize all", then open the embeddings asset and read the Lance version from its
// latest materialisation metadata. Prints one JSON line: {"version": N, ...}.
// Usage: node materialize_and_read_version.js http://127.0.0.1:PORT
const { chromium } = require('playwright-core');

const base = process.argv[2];
const location = process.argv[3] || 'embed_assets_demo';
const timeoutMs = Number(process.env.BROWSER_TIMEOUT_MS || 240000);

// A fresh DAGSTER_HOME greets the first visit with a "Join the Dagster community" modal
// that covers the page; skip it when it shows.
async function dismissModal(page) {
  const skip = page.locator('button', { hasText: /^\s*Skip\s*$/ }).first();
  try {
    await skip.waitFor({ state: 'visible', timeout: 5000 });
    await skip.click();
  } catch (e) { /* no modal */ }
}

async function main() {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
  page.setDefaultTimeout(60000);
  try {
    await page.goto(`${base}/locations/${location}/asset-groups/debian`, { waitUntil: 'domcontentloaded' });
    await dismissModal(page);
    const button = page.locator('button', { hasText: /^\s*Materialize all\s*$/ }).first();
    await button.waitFor({ state: 'visible' });
    await button.click();
    // Dagster shows a toast linking to the run it launched.
    const runLink = page.locator('a[href*="/runs/"]').first();
    await runLink.waitFor({ state: 'attached', timeout: 60000 });
    const runHref = await runLink.getAttribute('href');
    const runId = (runHref.match(/\/runs\/([0-9a-f-]{36})/) || [])[1] || null;

    // Poll the asset page until its latest materialisation shows lance/version.
    const deadline = Date.now() + timeoutMs;
    let version = null;
    while (Date.now() < deadline && version === null) {
      await page.goto(`${base}/assets/debian/embeddings`, { waitUntil: 'domcontentloaded' });
      await dismissModal(page);
      try {
        const row = page.locator('tr', { hasText: 'lance/version' }).first();
        await row.waitFor({ state: 'visible', timeout: 15000 });
        // Cells: key | timestamp of the event | value; the value is the last one.
        const text = await row.locator('td').last().innerText();
        const m = text.trim().match(/^\d+$/);
        if (m) version = Number(m[0]);
      } catch (e) {
        await page.waitForTimeout(3000);
      }
    }
    console.log(JSON.stringify({ version, runId }));
    if (version === null) {
      await page.screenshot({ path: process.env.SCREENSHOT || 'browser-failure.png', fullPage: true });
      process.exitCode = 2;
    }
  } finally {
    await browser.close();
  }
}

main().catch((err) => { console.error(err); process.exit(1); });
