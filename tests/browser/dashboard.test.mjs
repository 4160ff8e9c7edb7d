// The dashboard in a real browser: Debian's Chromium driven by playwright-core, against the real
// tollgate binary and the mock upstream (both on port 0, as tests/python/conftest.py starts
// them), with a known workload made through the gateway. Run by scripts/browser-tests.
// Screenshots of every page at 1280×800 and 375×800 go to tests/browser/artifacts/.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, "../..");
const TARGET = process.env.CARGO_TARGET_DIR ? path.resolve(REPO, process.env.CARGO_TARGET_DIR) : path.join(REPO, "target");
const BIN = (name, env) => process.env[env] || path.join(TARGET, "debug", name);
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const ARTIFACTS = path.join(HERE, "artifacts");
const TZ = "America/New_York";
const PAGES = ["overview", "usage", "models", "keys", "requests", "credits", "insights", "webhooks"];

const procs = [];
let work, mockUrl, gw, adminKey, teamA, teamB, keyA, keyA2, keyB;
let context, page;
const consoleErrors = [];

// ---- processes ----
function startProcess(argv, stem, patterns) {
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0], argv.slice(1), {
      cwd: work,
      env: Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("TOLLGATE_"))),
      stdio: ["ignore", "pipe", "pipe"],
    });
    procs.push(child);
    const out = fs.createWriteStream(path.join(work, `${stem}.out`));
    const err = fs.createWriteStream(path.join(work, `${stem}.err`));
    child.stderr.pipe(err);
    let text = "";
    const timer = setTimeout(() => reject(new Error(`${stem} did not start: ${text}`)), 30000);
    child.stdout.on("data", (d) => {
      out.write(d);
      text += d;
      const found = patterns.map((p) => text.match(p));
      if (found.every(Boolean)) { clearTimeout(timer); resolve(found); }
    });
    child.on("exit", (code) => reject(new Error(`${stem} exited ${code}: ${text}`)));
  });
}

async function call(method, url, key, body, headers = {}) {
  const h = Object.assign({}, headers);
  if (key) h.authorization = `Bearer ${key}`;
  if (body !== undefined) h["content-type"] = "application/json";
  const r = await fetch(`${gw}${url}`, { method, headers: h, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.text();
  let json = null;
  try { json = JSON.parse(text); } catch (_) { json = null; }
  return { status: r.status, json, text, headers: r.headers };
}
async function ok(method, url, key, body) {
  const r = await call(method, url, key, body);
  assert.ok(r.status >= 200 && r.status < 300, `${method} ${url}: ${r.status} ${r.text}`);
  return r.json ?? r.text;
}
const chat = (key, model) => call("POST", "/v1/chat/completions", key, { model, messages: [{ role: "user", content: "hello from the browser tests" }] });

before(async () => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), "tollgate-browser-"));
  fs.rmSync(ARTIFACTS, { recursive: true, force: true });
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const [[, url]] = await startProcess([BIN("mock-upstream", "MOCK_UPSTREAM_BIN"), "--port", "0"], "mock", [/mock-upstream listening on (http:\/\/127\.0\.0\.1:\d+)/]);
  mockUrl = url;
  const config = path.join(work, "tollgate.toml");
  fs.writeFileSync(config, `[server]
listen = "127.0.0.1:0"
data_dir = ${JSON.stringify(path.join(work, "data"))}
upstream_timeout_secs = 5

[providers.mock]
kind = "openai"
base_url = "${mockUrl}/v1"
api_key = "sk-upstream-openai"
models = ["gpt-*", "text-embedding-*"]

[providers.mockant]
kind = "anthropic"
base_url = "${mockUrl}/v1"
api_key = "sk-upstream-anthropic"
models = ["claude-*"]

[webhooks]
allow_private_targets = true
`);
  const [[, gwUrl], [key]] = await startProcess([BIN("tollgate", "TOLLGATE_BIN"), "--config", config, "serve"], "tollgate",
    [/tollgate listening on (http:\/\/127\.0\.0\.1:\d+)/, /tg-[A-Za-z0-9]{43}/]);
  gw = gwUrl;
  adminKey = key;

  // The workload: team-a with two keys and three models (one refused request), team-b apart.
  teamA = (await ok("POST", "/admin/accounts", adminKey, { name: "team-a" })).id;
  await ok("POST", `/admin/accounts/${teamA}/credits`, adminKey, { amount_usd: "25.00", note: "initial" });
  keyA = await ok("POST", `/admin/accounts/${teamA}/keys`, adminKey, { name: "laptop" });
  keyA2 = await ok("POST", `/admin/accounts/${teamA}/keys`, adminKey, { name: "ci", limits: { spend_limit_nanos: 5000000000, spend_period: "monthly", rpm_limit: 600 } });
  teamB = (await ok("POST", "/admin/accounts", adminKey, { name: "team-b" })).id;
  await ok("POST", `/admin/accounts/${teamB}/credits`, adminKey, { amount_usd: "5" });
  keyB = await ok("POST", `/admin/accounts/${teamB}/keys`, adminKey, { name: "b" });
  for (const [k, m] of [[keyA, "gpt-4o"], [keyA, "gpt-4o-mini"], [keyA, "gpt-4o-mini"], [keyA2, "gpt-4o"], [keyB, "gpt-4o"]]) {
    assert.equal((await chat(k.key, m)).status, 200);
  }
  const msg = await call("POST", "/v1/messages", null, { model: "claude-sonnet-4-20250514", max_tokens: 50, messages: [{ role: "user", content: "hi" }] },
    { "x-api-key": keyA2.key, "anthropic-version": "2023-06-01" });
  assert.equal(msg.status, 200, msg.text);
  // More than one page of the request log (25 a page).
  for (let i = 0; i < 20; i++) assert.equal((await chat(keyA.key, "gpt-4o-mini")).status, 200);
  // Attributed traffic: two end users, one of them on two models, and a tag.
  for (const [model, user, tags] of [["gpt-4o", "cust-1", "feature=search"], ["gpt-4o-mini", "cust-1", ""], ["gpt-4o-mini", "cust-2", "feature=search"]]) {
    const headers = { "x-tollgate-user": user };
    if (tags) headers["x-tollgate-tags"] = tags;
    const r = await call("POST", "/v1/chat/completions", keyA.key, { model, messages: [{ role: "user", content: "attributed" }] }, headers);
    assert.equal(r.status, 200, r.text);
  }
  assert.equal((await chat(keyA.key, "gpt-unknown-model")).status, 404);

  context = await chromium.launchPersistentContext(path.join(work, "chromium-profile"), {
    executablePath: CHROMIUM,
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync"],
    viewport: { width: 1280, height: 800 },
    timezoneId: TZ,
    locale: "en-US",
    acceptDownloads: true,
  });
  page = context.pages()[0] || (await context.newPage());
  page.on("console", (m) => { if (m.type() === "error") consoleErrors.push(m.text()); });
  page.on("pageerror", (e) => consoleErrors.push(String(e)));
  page.on("dialog", (d) => d.accept());
});

after(async () => {
  if (context) await context.close();
  for (const p of procs) p.kill("SIGTERM");
});

// ---- helpers in the page ----
const statText = (key) => page.locator(`[data-stat="${key}"]`).innerText();
const num = (s) => Number(String(s).replace(/[$,%\s]/g, ""));
async function goto(route) {
  // Re-entering the route shown already: leave it first, so the wait below sees a fresh draw.
  if (await page.evaluate((r) => location.hash === r, route)) await page.evaluate(() => { location.hash = "#/blank"; });
  await page.evaluate((r) => { location.hash = r; }, route);
  await page.waitForFunction((r) => document.querySelector("main")?.dataset.ready === r, route);
}
function noNewErrors(since, what) {
  assert.deepEqual(consoleErrors.slice(since), [], `console errors on ${what}`);
}
async function signIn(key) {
  await page.getByLabel("API key").fill(key);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.locator("#app").waitFor({ state: "visible" });
}

// ---- tests, in order (they share one browser and one gateway) ----
test("a wrong key is refused at sign-in", async () => {
  await page.goto(`${gw}/`);
  assert.equal(new URL(page.url()).pathname, "/dashboard");
  await page.getByLabel("API key").fill("tg-not-a-real-key");
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.locator("#signin-error").filter({ hasText: "refused" }).waitFor();
  assert.equal(await page.locator("#app").isVisible(), false);
  const cookies = await context.cookies(gw);
  assert.equal(cookies.length, 0);
  consoleErrors.length = 0; // the refused POST is logged by Chromium as a failed load: expected
});

test("sign in: an HttpOnly SameSite=Strict session cookie, nothing in localStorage", async () => {
  await signIn(keyA.key);
  const [cookie] = await context.cookies(gw);
  assert.equal(cookie.name, "tg_session");
  assert.equal(cookie.httpOnly, true);
  assert.equal(cookie.sameSite, "Strict");
  assert.ok(cookie.expires > Date.now() / 1000 + 11 * 3600 && cookie.expires < Date.now() / 1000 + 13 * 3600);
  assert.equal(await page.evaluate(() => document.cookie), "");
  const stored = await page.evaluate(() => JSON.stringify(Object.entries(localStorage)) + JSON.stringify(Object.entries(sessionStorage)));
  assert.ok(!stored.includes(keyA.key) && !stored.includes("tg_session"), stored);
  assert.match(await page.locator("#who").innerText(), /team-a/);
});

test("overview numbers equal /v1/usage and /v1/credits", async () => {
  const since = consoleErrors.length;
  await goto("#/overview");
  const u = await ok("GET", `/v1/usage?timezone=${encodeURIComponent(TZ)}`, keyA.key);
  const c = await ok("GET", "/v1/credits", keyA.key);
  assert.equal(num(await statText("today-requests")), u.daily.request_count);
  assert.equal(num(await statText("today-tokens")), u.daily.total_tokens);
  assert.equal(num(await statText("today-cost")), u.daily.cost_micro / 1e6);
  assert.equal(num(await statText("today-credits")), u.daily_breakdown[0].credits);
  assert.equal(num(await statText("month-requests")), u.monthly.request_count);
  assert.equal(num(await statText("month-tokens")), u.monthly.total_tokens);
  assert.equal(num(await statText("month-credits")), u.total_credits_used);
  const rate = (100 * (u.monthly.request_count - u.monthly.success_count) / u.monthly.request_count).toFixed(1);
  assert.equal(await statText("month-error-rate"), `${rate}%`);
  assert.equal(num(await statText("balance")), c.balance_credits);
  assert.equal(num(await statText("available")), c.available_credits);
  assert.equal(num(await statText("held")), c.uncollected_micro / 1e6);
  assert.equal(num(await statText("in-flight")), 0);
  assert.equal(u.daily.request_count, 29, "the workload: 28 successes and 1 refusal for team-a today");
  noNewErrors(since, "overview");
});

test("a request made elsewhere shows on the overview within 5 s", async () => {
  const before = num(await statText("today-requests"));
  assert.equal((await chat(keyA.key, "gpt-4o-mini")).status, 200);
  const t0 = Date.now();
  await page.waitForFunction((want) => Number(document.querySelector('[data-stat="today-requests"]').textContent.replace(/,/g, "")) === want,
    before + 1, { timeout: 5000, polling: 100 });
  assert.ok(Date.now() - t0 < 5000);
});

test("the usage chart: expected points, stacked series, tooltip with exact values", async () => {
  const since = consoleErrors.length;
  await goto("#/usage");
  const chart = page.locator("#chart");
  await page.waitForFunction(() => document.querySelector("#chart")?.dataset.drawn?.startsWith("cost/day/model/"));
  assert.equal(await chart.getAttribute("data-points"), "7", "last 7 days by day");
  const rt = await ok("GET", `/v1/model-usage?period=last_7_days&granularity=day&timezone=${encodeURIComponent(TZ)}`, keyA.key);
  const models = Object.keys(rt.usageByModel).length;
  assert.equal(Number(await chart.getAttribute("data-series")), models);
  // The canvas has drawn something: non-blank pixels.
  const painted = await page.evaluate(() => {
    const c = document.querySelector("#chart canvas");
    const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
    return n;
  });
  assert.ok(painted > 1000, `canvas pixels painted: ${painted}`);
  // Hover today's bucket (the last): the tooltip shows its exact total.
  const hoverLast = async () => {
    await page.mouse.move(0, 0);
    const over = await page.locator("#chart .u-over").boundingBox();
    await page.mouse.move(over.x + over.width - 3, over.y + over.height / 2);
    await page.locator("#chart-tip").waitFor({ state: "visible" });
  };
  await hoverLast();
  const today = rt.timeSeries[rt.timeSeries.length - 1];
  assert.equal(await page.locator("#chart-tip .t").innerText(), today.date);
  assert.equal(num(await page.locator("#chart-tip [data-total]").innerText()), today.cost);
  await page.getByLabel("Metric").selectOption("requests");
  await page.waitForFunction(() => document.querySelector("#chart")?.dataset.drawn?.startsWith("requests/day/model/"));
  await hoverLast();
  assert.equal(num(await page.locator("#chart-tip [data-total]").innerText()), today.requests);
  // Hourly for today: 24 buckets (a DST day would have 23 or 25).
  await page.getByLabel("Granularity").selectOption("hour");
  await page.getByLabel("Period").selectOption("today");
  await page.waitForFunction(() => /^requests\/hour\/model\/(\S+)\/\1$/.test(document.querySelector("#chart")?.dataset.drawn || ""));
  const rtHour = await ok("GET", `/v1/model-usage?period=today&granularity=hour&timezone=${encodeURIComponent(TZ)}`, keyA.key);
  assert.equal(Number(await chart.getAttribute("data-points")), rtHour.timeSeries.length);
  await page.getByLabel("Stack by").selectOption("key");
  await page.waitForFunction(() => document.querySelector("#chart")?.dataset.drawn?.startsWith("requests/hour/key/"));
  assert.equal(await chart.getAttribute("data-series"), "2", "team-a's two keys");
  await page.getByLabel("Granularity").selectOption("day");
  await page.getByLabel("Period").selectOption("last_7_days");
  await page.getByLabel("Metric").selectOption("cost");
  await page.getByLabel("Stack by").selectOption("model");
  await page.waitForFunction(() => document.querySelector("#chart")?.dataset.drawn?.startsWith("cost/day/model/"));
  // A custom range: three days, three buckets.
  await page.getByLabel("Period").selectOption("custom");
  await page.getByLabel("From", { exact: true }).fill(rt.timeSeries[0].date);
  await page.getByLabel("To", { exact: true }).fill(rt.timeSeries[2].date);
  await page.waitForFunction((end) => document.querySelector("#chart")?.dataset.drawn?.endsWith(`/${end}`), rt.timeSeries[2].date);
  assert.equal(await chart.getAttribute("data-points"), "3");
  await page.getByLabel("Period").selectOption("last_7_days");
  await page.waitForFunction(() => document.querySelector("#chart")?.dataset.points === "7");
  noNewErrors(since, "usage");
});

test("the usage chart filters by end user and by tag, and stacks by end user", async () => {
  const since = consoleErrors.length;
  await goto("#/usage");
  const chart = page.locator("#chart");
  // The chart's numbers are /v1/model-usage's, with the same filters.
  const rt = async (extra) => ok("GET", `/v1/model-usage?period=last_7_days&granularity=day&timezone=${encodeURIComponent(TZ)}&${extra}`, keyA.key);
  const total = async () => num((await page.locator("#chart-summary").innerText()).match(/total ([\d,]+)/)[1]);
  await page.getByLabel("Metric").selectOption("requests");
  await page.getByLabel("Stack by").selectOption("model");
  await page.waitForFunction(() => document.querySelector("#chart")?.dataset.drawn?.startsWith("requests/day/model/"));
  const user = page.getByLabel("End user");
  await user.fill("cust-1");
  await user.dispatchEvent("change");
  await page.waitForFunction(() => document.querySelector("#chart")?.dataset.who === "cust-1|");
  const one = await rt("user=cust-1");
  assert.equal(Number(await chart.getAttribute("data-series")), Object.keys(one.usageByModel).length);
  assert.equal(Object.keys(one.usageByModel).length, 2, "cust-1 used two models");
  assert.equal(await total(), one.timeSeries.reduce((a, p) => a + p.requests, 0));
  assert.equal(await total(), 2);
  await user.fill("");
  await user.dispatchEvent("change");
  const tag = page.getByLabel("Tag");
  await tag.fill("feature=search");
  await tag.dispatchEvent("change");
  await page.waitForFunction(() => document.querySelector("#chart")?.dataset.who === "|feature=search");
  const tagged = await rt("tag=feature%3Dsearch");
  assert.equal(await total(), tagged.timeSeries.reduce((a, p) => a + p.requests, 0));
  assert.equal(await total(), 2);
  // A bad tag is the API's 400, shown, not a blank chart.
  await tag.fill("feature");
  await tag.dispatchEvent("change");
  await page.waitForFunction(() => /tag/.test(document.querySelector("#chart-summary")?.textContent || "") && document.querySelector("#chart-summary")?.className === "error");
  await tag.fill("");
  await tag.dispatchEvent("change");
  await page.waitForFunction(() => document.querySelector("#chart")?.dataset.who === "|");
  // Stacked by end user: cust-1, cust-2 and the usage that named none.
  await page.getByLabel("Stack by").selectOption("user");
  await page.waitForFunction(() => document.querySelector("#chart")?.dataset.drawn?.startsWith("requests/day/user/"));
  assert.equal(await chart.getAttribute("data-series"), "3");
  const legend = await page.locator("#chart-legend").innerText();
  for (const label of ["cust-1", "cust-2", "(no end user)"]) assert.ok(legend.includes(label), legend);
  const all = await rt("");
  assert.equal(await total(), all.timeSeries.reduce((a, p) => a + p.requests, 0));
  await page.getByLabel("Stack by").selectOption("model");
  await page.getByLabel("Metric").selectOption("cost");
  await page.waitForFunction(() => document.querySelector("#chart")?.dataset.drawn?.startsWith("cost/day/model/"));
  // The one 400 asked for above is the only console error (Chromium logs the failed fetch).
  const errs = consoleErrors.slice(since).filter((e) => !/status of 400/.test(e));
  assert.deepEqual(errs, [], "console errors on usage filters");
});

test("models table equals /v1/model-usage for the month", async () => {
  const since = consoleErrors.length;
  await goto("#/models");
  const rt = await ok("GET", `/v1/model-usage?period=current_month&timezone=${encodeURIComponent(TZ)}`, keyA.key);
  const rows = page.locator("#models-table tbody tr[data-model]");
  await rows.first().waitFor();
  assert.equal(await rows.count(), Object.keys(rt.usageByModel).length);
  for (const [id, m] of Object.entries(rt.usageByModel)) {
    const row = page.locator(`#models-table tr[data-model="${id}"]`);
    const cells = await row.locator("td").allInnerTexts();
    assert.equal(num(cells[2]), m.requestCount, id);
    assert.equal(num(cells[6]), m.totalCost, id);
    assert.equal(num(cells[8]), m.avgCostPerRequest, id);
  }
  noNewErrors(since, "models");
});

test("keys table: each key's month as /v1/usage?key_id= has it", async () => {
  const since = consoleErrors.length;
  await goto("#/keys");
  for (const k of [keyA, keyA2]) {
    const u = await ok("GET", `/v1/usage?key_id=${k.id}&timezone=UTC`, keyA.key);
    const row = page.locator(`#keys-table tr[data-key-id="${k.id}"]`);
    assert.equal(num(await row.locator("[data-requests]").innerText()), u.monthly.request_count, k.id);
    assert.ok(Number(await row.locator("[data-last-used]").getAttribute("data-last-used")) > 0);
  }
  assert.match(await page.locator(`#keys-table tr[data-key-id="${keyA2.id}"]`).innerText(), /\/ \$5 monthly/);
  // A user key may not create keys: no form.
  assert.equal(await page.getByRole("button", { name: "Create key" }).count(), 0);
  noNewErrors(since, "keys");
});

test("requests log: newest first, filtered, paged", async () => {
  const since = consoleErrors.length;
  await goto("#/requests");
  const exp = await ok("GET", "/v1/usage/export?format=json", keyA.key);
  const rows = page.locator("#requests-table tbody tr[data-request-id]");
  await rows.first().waitFor();
  const newestFirst = exp.map((r) => r.request_id).reverse();
  assert.ok(exp.length > 25 && exp.length < 50, `${exp.length} records`);
  const shown = () => page.locator("#requests-table tbody tr[data-request-id]").evaluateAll((trs) => trs.map((t) => t.dataset.requestId));
  assert.deepEqual(await shown(), newestFirst.slice(0, 25));
  // Older, then Newer: the second page is the rest, and back.
  await page.getByRole("button", { name: "Older" }).click();
  await page.waitForFunction((n) => document.querySelectorAll("#requests-table tbody tr[data-request-id]").length === n, newestFirst.length - 25);
  assert.deepEqual(await shown(), newestFirst.slice(25));
  assert.equal(await page.getByRole("button", { name: "Older" }).isDisabled(), true);
  await page.getByRole("button", { name: "Newer" }).click();
  await page.waitForFunction(() => document.querySelectorAll("#requests-table tbody tr[data-request-id]").length === 25);
  assert.deepEqual(await shown(), newestFirst.slice(0, 25));
  assert.equal(await page.getByRole("button", { name: "Newer" }).isDisabled(), true);
  await page.getByLabel("Status").selectOption("refused");
  await page.waitForFunction(() => document.querySelectorAll("#requests-table tbody tr[data-request-id]").length === 1);
  assert.match(await rows.first().innerText(), /gpt-unknown-model/);
  await page.getByLabel("Status").selectOption("");
  await page.getByLabel("Model").selectOption("gpt-4o-mini");
  await page.waitForFunction((n) => document.querySelectorAll("#requests-table tbody tr[data-request-id]").length === n,
    exp.filter((r) => r.model_requested === "gpt-4o-mini").length);
  await page.getByLabel("Model").selectOption("");
  await page.waitForFunction(() => document.querySelectorAll("#requests-table tbody tr[data-request-id]").length === 25);
  noNewErrors(since, "requests");
});

test("CSV download equals /v1/usage/export", async () => {
  await goto("#/requests");
  const [download] = await Promise.all([page.waitForEvent("download"), page.locator("#download-csv").click()]);
  const got = fs.readFileSync(await download.path(), "utf8");
  const want = await call("GET", "/v1/usage/export?format=csv", keyA.key);
  assert.equal(got, want.text);
  assert.ok(got.split("\r\n").length > 5);
  // The usage page's link carries its range.
  await goto("#/usage");
  await page.locator("#download-csv").waitFor();
  const href = await page.locator("#download-csv").getAttribute("href");
  assert.match(href, /^\/v1\/usage\/export\?format=csv&start=\d{4}-\d\d-\d\d&end=\d{4}-\d\d-\d\d&timezone=America%2FNew_York$/);
  const [dl2] = await Promise.all([page.waitForEvent("download"), page.locator("#download-csv").click()]);
  const want2 = await call("GET", href, keyA.key);
  assert.equal(fs.readFileSync(await dl2.path(), "utf8"), want2.text);
});

test("credits: balance and history as the API has them", async () => {
  const since = consoleErrors.length;
  await goto("#/credits");
  const c = await ok("GET", "/v1/credits", keyA.key);
  assert.equal(num(await statText("credits-balance")), c.balance_credits);
  assert.match(await page.locator("#credits-table").innerText(), /25,000,000[\s\S]*\$25[\s\S]*initial/);
  noNewErrors(since, "credits");
});

test("insights: the page shows what /v1/usage/insights says (the workload's duplicates)", async () => {
  const since = consoleErrors.length;
  await goto("#/insights");
  const i = await ok("GET", `/v1/usage/insights?period=last_30_days&timezone=${encodeURIComponent(TZ)}&limit=10`, keyA.key);
  const d = i.duplicates;
  // The same "hello from the browser tests" body, answered over and over.
  assert.ok(d.count >= 20, `duplicates: ${JSON.stringify(d)}`);
  const usd = (n) => Number(n) / 1e9;
  const waste = d.wasted_cost.nanos + i.retry_loops.failed_cost.nanos + i.unused_responses.cost.nanos;
  assert.equal(num(await statText("insights-waste")), usd(waste));
  assert.equal(num(await statText("insights-mix")), usd(i.model_mix.potential_savings.nanos));
  const summary = await page.locator('[data-summary="duplicates"]').innerText();
  assert.ok(summary.startsWith(`${d.count.toLocaleString("en-US")} answered again within 600 s`), summary);
  const table = await page.locator("#insights-duplicates").innerText();
  for (const t of d.top) assert.ok(table.includes(t.fingerprint), `${t.fingerprint} not in ${table}`);
  const mix = await page.locator("#insights-mix-table").innerText();
  assert.match(mix, /gpt-4o\s[\s\S]*gpt-4o-mini/);
  // A new history cap redraws with the API's figure for it.
  await page.getByLabel("History cap (tokens)").fill("3");
  await page.getByLabel("History cap (tokens)").press("Enter");
  await page.getByLabel("History cap (tokens)").blur();
  const capped = await ok("GET", `/v1/usage/insights?period=last_30_days&timezone=${encodeURIComponent(TZ)}&history_cap=3`, keyA.key);
  await page.waitForFunction(() => document.querySelector('[data-stat="insights-cap"]')?.closest(".card")?.innerText.includes("3 tokens"));
  assert.equal(num(await statText("insights-cap")), usd(capped.conversation_growth.savings_at_cap.nanos));
  noNewErrors(since, "insights");
});

test("webhooks: create, test, deliveries, disable, delete", async () => {
  const since = consoleErrors.length;
  await goto("#/webhooks");
  await page.getByLabel("Endpoint URL").fill(`${gw}/health`);
  await page.getByLabel("credits.granted").check();
  await page.getByRole("button", { name: "Create webhook" }).click();
  const secret = await page.locator("[data-webhook-secret]").innerText();
  assert.match(secret, /^whsec_/);
  const list = await ok("GET", "/v1/webhooks", keyA.key);
  assert.equal(list.data.length, 1);
  assert.deepEqual([...list.data[0].events].sort(), ["credits.granted", "credits.low"]);
  const id = list.data[0].id;
  const row = page.locator(`#webhooks-table tr[data-webhook-id="${id}"]`);
  await row.getByRole("button", { name: "Test" }).click();
  await page.getByText("Test event queued.").waitFor();
  // The delivery is attempted (the target answers 405 to a POST): it shows under Deliveries.
  for (let i = 0; i < 50; i++) {
    const d = await ok("GET", `/v1/webhooks/${id}/deliveries`, keyA.key);
    if (d.data.length) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  await row.getByRole("button", { name: "Deliveries" }).click();
  await page.locator("#deliveries-table tbody tr").first().waitFor();
  assert.match(await page.locator("#deliveries-table").innerText(), /webhook\.test/);
  await row.getByRole("button", { name: "Disable" }).click();
  await page.locator(`#webhooks-table tr[data-webhook-id="${id}"] .chip.disabled`).waitFor();
  assert.equal((await ok("GET", `/v1/webhooks/${id}`, keyA.key)).active, false);
  await page.locator(`#webhooks-table tr[data-webhook-id="${id}"]`).getByRole("button", { name: /^Delete/ }).click();
  await page.locator(`#webhooks-table tr[data-webhook-id="${id}"]`).waitFor({ state: "detached" });
  assert.equal((await ok("GET", "/v1/webhooks", keyA.key)).data.length, 0);
  noNewErrors(since, "webhooks");
});

test("a cookie-authenticated POST without the CSRF header is refused", async () => {
  const res = await page.evaluate(async () => {
    const body = JSON.stringify({ url: `${location.origin}/health`, events: ["credits.low"] });
    const bare = await fetch("/v1/webhooks", { method: "POST", headers: { "content-type": "application/json" }, body });
    const wrong = await fetch("/v1/webhooks", { method: "POST", headers: { "content-type": "application/json", "x-csrf-token": "f".repeat(64) }, body });
    const me = await (await fetch("/dashboard/api/session")).json();
    const right = await fetch("/v1/webhooks", { method: "POST", headers: { "content-type": "application/json", "x-csrf-token": me.csrf_token }, body });
    return { bare: bare.status, bareBody: await bare.json(), wrong: wrong.status, right: right.status, rightBody: await right.json() };
  });
  assert.equal(res.bare, 403);
  assert.equal(res.bareBody.error.code, "permission_denied");
  assert.equal(res.bareBody.error.type, "permission_error");
  assert.equal(res.wrong, 403);
  assert.equal(res.right, 201);
  await ok("DELETE", `/v1/webhooks/${res.rightBody.id}`, keyA.key);
  consoleErrors.length = 0; // the refused fetches are logged as failed loads: expected
});

test("a user cannot reach another account's pages (404)", async () => {
  for (const p of ["overview", "keys", "requests"]) {
    await goto(`#/${p}?account=${teamB}`);
    const err = page.locator("[data-error-status]");
    await err.waitFor();
    assert.equal(await err.getAttribute("data-error-status"), "404", p);
    assert.ok(!(await page.locator("main").innerText()).includes("team-b"));
  }
  const r = await page.evaluate(async (id) => (await fetch(`/v1/usage?account_id=${id}`)).status, teamB);
  assert.equal(r, 404);
  consoleErrors.length = 0; // the refused reads are logged as failed loads: expected
});

test("every page at 1280×800 and 375×800: no console errors, no horizontal scroll", async () => {
  for (const [w, hgt] of [[1280, 800], [375, 800]]) {
    await page.setViewportSize({ width: w, height: hgt });
    for (const p of PAGES) {
      const since = consoleErrors.length;
      await goto(`#/${p}`);
      if (p === "usage") await page.locator("#chart canvas").waitFor();
      const scroll = await page.evaluate(() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]);
      assert.ok(scroll[0] <= scroll[1], `${p} at ${w}px scrolls sideways: ${scroll}`);
      await page.screenshot({ path: path.join(ARTIFACTS, `${p}-${w}x${hgt}.png`), fullPage: true });
      noNewErrors(since, `${p} at ${w}px`);
    }
  }
  await page.setViewportSize({ width: 1280, height: 800 });
});

test("keyboard: the sign-out button and nav are reachable by Tab with labelled controls", async () => {
  await goto("#/usage");
  // Every form control on the page has an accessible label.
  const unlabelled = await page.evaluate(() => [...document.querySelectorAll("main select, main input")]
    .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute("aria-label")).map((el) => el.name));
  assert.deepEqual(unlabelled, []);
  // The chart's tooltip moves with the arrow keys.
  await page.waitForFunction(() => document.querySelector("#chart")?.dataset.drawn);
  const rt = await ok("GET", `/v1/model-usage?period=last_7_days&granularity=day&timezone=${encodeURIComponent(TZ)}`, keyA.key);
  await page.locator("#chart").focus();
  await page.keyboard.press("End");
  await page.locator("#chart-tip").waitFor({ state: "visible" });
  assert.equal(await page.locator("#chart-tip .t").innerText(), rt.timeSeries[6].date);
  await page.keyboard.press("ArrowLeft");
  assert.equal(await page.locator("#chart-tip .t").innerText(), rt.timeSeries[5].date);
  await page.keyboard.press("Home");
  assert.equal(await page.locator("#chart-tip .t").innerText(), rt.timeSeries[0].date);
  await page.locator("#main").focus();
  await page.keyboard.press("Shift+Tab");
  const seen = new Set();
  for (let i = 0; i < 20; i++) {
    seen.add(await page.evaluate(() => document.activeElement?.textContent?.trim()));
    await page.keyboard.press("Shift+Tab");
  }
  assert.ok(seen.has("Sign out") && seen.has("Keys"), [...seen].join("|"));
});

test("dark theme: follows the system and the toggle", async () => {
  await page.emulateMedia({ colorScheme: "dark" });
  await goto("#/overview");
  const bg = () => page.evaluate(() => getComputedStyle(document.body).backgroundColor);
  assert.equal(await bg(), "rgb(14, 17, 22)");
  await page.screenshot({ path: path.join(ARTIFACTS, "overview-dark-1280x800.png"), fullPage: true });
  await goto("#/usage");
  await page.locator("#chart canvas").waitFor();
  await page.screenshot({ path: path.join(ARTIFACTS, "usage-dark-1280x800.png"), fullPage: true });
  await page.getByRole("button", { name: "Switch to light theme" }).click();
  assert.equal(await bg(), "rgb(246, 247, 249)");
  await page.getByRole("button", { name: "Switch to dark theme" }).click();
  assert.equal(await bg(), "rgb(14, 17, 22)");
  await page.evaluate(() => localStorage.removeItem("tollgate-theme"));
  await page.emulateMedia({ colorScheme: "light" });
});

test("sign out: the session ends on the server", async () => {
  const [cookie] = await context.cookies(gw);
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.locator("#signin").waitFor({ state: "visible" });
  assert.equal((await context.cookies(gw)).length, 0);
  // The old cookie, replayed, is refused.
  const r = await call("GET", "/v1/usage", null, undefined, { cookie: `tg_session=${cookie.value}` });
  assert.equal(r.status, 401);
});

test("admin: all-accounts overview, open any account, create and revoke a key, grant", async () => {
  const since = consoleErrors.length;
  await signIn(adminKey);
  await goto("#/accounts");
  const row = page.locator(`#accounts-table tr[data-account-id="${teamA}"]`);
  const uA = await ok("GET", `/v1/usage?account_id=${teamA}&timezone=${encodeURIComponent(TZ)}`, adminKey);
  assert.equal(num((await row.locator("td").allInnerTexts())[3]), uA.monthly.request_count);
  assert.equal(await page.locator(`#accounts-table tr[data-account-id="${teamB}"]`).count(), 1);
  for (const [w, hgt] of [[1280, 800], [375, 800]]) {
    await page.setViewportSize({ width: w, height: hgt });
    const scroll = await page.evaluate(() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]);
    assert.ok(scroll[0] <= scroll[1], `accounts at ${w}px scrolls sideways: ${scroll}`);
    await page.screenshot({ path: path.join(ARTIFACTS, `accounts-${w}x${hgt}.png`), fullPage: true });
  }
  await page.setViewportSize({ width: 1280, height: 800 });
  await row.getByRole("link", { name: "Open" }).click();
  await page.locator('[data-stat="month-requests"]').waitFor();
  assert.equal(num(await statText("month-requests")), uA.monthly.request_count);
  assert.match(await page.locator("#viewing").innerText(), new RegExp(teamA));

  await goto(`#/keys?account=${teamA}`);
  await page.getByLabel("Key name").fill("made-in-browser");
  await page.getByRole("button", { name: "Create key" }).click();
  const secret = await page.locator("[data-new-key]").innerText();
  assert.match(secret, /^tg-/);
  assert.equal((await chat(secret, "gpt-4o-mini")).status, 200);
  const keys = await ok("GET", `/admin/accounts/${teamA}/keys`, adminKey);
  const made = keys.data.find((k) => k.name === "made-in-browser");
  await page.getByRole("button", { name: "Revoke made-in-browser" }).click();
  await page.locator(`#keys-table tr[data-key-id="${made.id}"] .chip.revoked`).waitFor();
  assert.equal((await chat(secret, "gpt-4o-mini")).status, 401);

  await goto(`#/credits?account=${teamA}`);
  const before = num(await statText("credits-balance"));
  await page.getByLabel("Amount (USD)").fill("1.50");
  await page.getByLabel("Note").fill("from the dashboard");
  await page.getByRole("button", { name: "Add credits" }).click();
  await page.getByText("from the dashboard").waitFor();
  assert.equal(num(await statText("credits-balance")), before + 1500000);
  noNewErrors(since, "admin pages");
});
