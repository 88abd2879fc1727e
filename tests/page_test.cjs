// page_test.cjs — the browser side of tests/test_page.sh: starts a real
// `edgeseek serve` (the default model, a free loopback port, an API key) and
// drives the chat page at / in headless Chromium through playwright-core
// (from tests/node_deps): a question without the key (the error shows, the
// turn is not kept), then with it; the streamed answer read from the page and
// checked (487 + 356 = 843), the reasoning folded in a <details>; a second
// question sends the history (the earlier answer without its reasoning); a
// reload keeps the conversation; Stop in the middle of a long answer (the
// server slowed to 4 ms a step, EDGESEEK_SERVE_STEP_MS, so that it lasts); Reset
// empties it; every request the page makes goes to the server alone (the
// browser may resolve no other host).  Saves a screenshot.  Prints PASS, FAIL
// and SKIP lines and "N passed, N failed, N skipped" last.  Every wait is
// bounded, and so is the whole run.
//
//   node tests/page_test.cjs EDGESEEK MODEL SCREENSHOT.png
"use strict";
const { spawn } = require("child_process");
const fs = require("fs");
const os = require("os");
const path = require("path");

const [edgeseek, model, shot] = process.argv.slice(2);
const WAIT = 60000; // the longest wait for one thing, in ms
const LONG_QUESTION = "What is 100000000000000000000000000000000000 - 1?";
let nPass = 0, nFail = 0, nSkip = 0;
function check(ok, msg) {
  if (ok) nPass++;
  else { nFail++; console.log("FAIL " + msg); }
}
function summary() { console.log(`${nPass} passed, ${nFail} failed, ${nSkip} skipped`); }

let server = null, browser = null;
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "edgeseek-page-"));
async function cleanup() {
  if (browser) await browser.close().catch(() => {});
  browser = null;
  if (server && server.exitCode === null) {
    server.kill("SIGTERM");
    const t = setTimeout(() => server.kill("SIGKILL"), 10000);
    await new Promise((r) => server.once("exit", r));
    clearTimeout(t);
  }
  fs.rmSync(tmp, { recursive: true, force: true });
}
// the whole run is bounded
setTimeout(async () => {
  check(false, "the page test ran over 300 s");
  await cleanup();
  summary();
  process.exit(1);
}, 300000).unref();

// Starts the server on a free port; resolves with its URL once it is ready.
function startServer(keyFile) {
  return new Promise((resolve, reject) => {
    server = spawn(edgeseek, ["serve", "-m", model, "--port", "0", "-t", "1", "-np", "2", "--api-key-file", keyFile],
      // 4 ms a scheduler step: the long answer takes seconds, time enough to Stop it
      { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, EDGESEEK_SERVE_STEP_MS: "4" } });
    let log = "", url = null;
    const timer = setTimeout(() => reject(new Error("the server was not ready in 30 s: " + log)), 30000);
    const onData = (d) => {
      log += d.toString();
      const m = log.match(/listening on (http:\/\/[^/\s]+)\//);
      if (m) url = m[1];
      if (url && log.includes("ready:")) { clearTimeout(timer); resolve(url); }
    };
    server.stdout.on("data", onData);
    server.stderr.on("data", onData);
    server.on("exit", (code) => { clearTimeout(timer); reject(new Error("the server exited (" + code + "): " + log)); });
  });
}

// Asks a question on the page and waits for its answer to end; returns the
// last assistant message's state, answer and reasoning.
async function ask(page, text) {
  const before = await page.locator(".msg.assistant").count();
  await page.fill("#prompt", text);
  await page.press("#prompt", "Enter");
  const msg = page.locator(".msg.assistant").nth(before);
  await msg.waitFor({ timeout: WAIT });
  await page.waitForFunction((i) => {
    const m = document.querySelectorAll(".msg.assistant")[i];
    return m && m.dataset.state && m.dataset.state !== "streaming";
  }, before, { timeout: WAIT });
  return msg.evaluate((m) => ({
    state: m.dataset.state,
    answer: m.querySelector(".answer").textContent,
    reasoning: m.querySelector("details.reasoning .text").textContent,
    folded: !m.querySelector("details.reasoning").open,
    shown: !m.querySelector("details.reasoning").hidden,
    meta: m.querySelector(".meta").textContent,
  }));
}

async function main() {
  let chromium;
  try {
    chromium = require(path.resolve(process.env.ES_NODE_DEPS || "tests/node_deps", "node_modules", "playwright-core"))
      .chromium;
  } catch (e) {
    nSkip++;
    console.log("SKIP playwright-core is not in tests/node_deps (.ci/run installs it)");
    return;
  }
  const key = "sk-page-" + process.pid;
  const keyFile = path.join(tmp, "key");
  fs.writeFileSync(keyFile, key + "\n");
  const base = await startServer(keyFile);
  const origin = new URL(base).origin;
  browser = await chromium.launch({
    executablePath: process.env.ES_CHROMIUM || "/usr/bin/chromium",
    timeout: WAIT,
    // root in CI: no sandbox; and no host but loopback can even be resolved
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
      "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"],
  });
  const page = await browser.newPage({ viewport: { width: 900, height: 900 } });
  page.setDefaultTimeout(WAIT);
  const requests = [], bodies = [], problems = [];
  page.on("request", (r) => {
    requests.push(r.url());
    if (r.url().endsWith("/v1/chat/completions")) bodies.push(JSON.parse(r.postData() || "null"));
  });
  page.on("pageerror", (e) => problems.push(String(e)));

  const r = await page.goto(base + "/", { timeout: WAIT });
  check(r && r.status() === 200, "GET / answered " + (r && r.status()));
  check((await page.title()) === "edgeseek chat", "the page's title is '" + (await page.title()) + "'");

  // 1. without the key: the error shows and the turn is not kept
  let a = await ask(page, "What is 487 + 356?");
  check(a.state === "error" && /401/.test(a.meta), `without the key: state ${a.state}, '${a.meta}'`);

  // 2. with the key: the answer, the reasoning folded
  await page.click("#settings summary");
  await page.fill("#key", key);
  a = await ask(page, "What is 487 + 356?");
  check(a.state === "done" && a.answer.trim() === "843", `487 + 356: state ${a.state}, answer '${a.answer}'`);
  check(a.shown && a.folded && a.reasoning.includes("7+6+0=13"),
    `the reasoning: shown ${a.shown}, folded ${a.folded}, '${a.reasoning}'`);
  check(!a.answer.includes("think") && !a.answer.includes("7+6"), "the answer holds the reasoning: " + a.answer);
  const first = bodies[bodies.length - 1];
  check(first && first.stream === true && first.messages.length === 1 && first.messages[0].content === "What is 487 + 356?",
    "the first request (the failed turn must not be sent): " + JSON.stringify(first));
  fs.mkdirSync(path.dirname(shot), { recursive: true });
  await page.screenshot({ path: shot, fullPage: true });
  check(fs.existsSync(shot) && fs.statSync(shot).size > 1000, "no screenshot at " + shot);

  // 3. a second question sends the history, the answer without its reasoning
  a = await ask(page, "What is 613 - 278?");
  check(a.state === "done" && a.answer.trim().length > 0, `turn 2: state ${a.state}, answer '${a.answer}'`);
  const second = bodies[bodies.length - 1];
  check(second && second.messages.length === 3 && second.messages[1].role === "assistant" &&
    second.messages[1].content === "843" && Object.keys(second.messages[1]).join() === "role,content",
    "the second request's history: " + JSON.stringify(second && second.messages));

  // 4. a reload keeps the conversation
  await page.reload({ timeout: WAIT });
  check(await page.locator(".msg.assistant").count() === 2 && await page.locator(".msg.user").count() === 2,
    "after a reload: " + await page.locator(".msg").count() + " messages");

  // 5. Stop in the middle of a long answer (it runs to the end of the
  // context); the stopped turn is not sent again
  if (!(await page.locator("#settings").evaluate((d) => d.open))) await page.click("#settings summary");
  await page.fill("#key", key);
  let stopped = false;
  for (let attempt = 0; attempt < 3 && !stopped; attempt++) {
    await page.click("#reset");
    const before = await page.locator(".msg.assistant").count();
    await page.fill("#prompt", LONG_QUESTION);
    await page.press("#prompt", "Enter");
    await page.waitForFunction((i) => {
      const m = document.querySelectorAll(".msg.assistant")[i];
      return m && (m.querySelector(".answer").textContent.includes("000") || m.dataset.state !== "streaming");
    }, before, { timeout: WAIT, polling: 10 });
    await page.click("#stop").catch(() => {});
    await page.waitForFunction((i) => document.querySelectorAll(".msg.assistant")[i].dataset.state !== "streaming",
      before, { timeout: WAIT });
    stopped = await page.locator(".msg.assistant").nth(before).getAttribute("data-state") === "stopped";
  }
  check(stopped, "Stop did not stop a long answer");

  // 6. Reset empties the conversation; the next question goes alone
  await page.click("#reset");
  check(await page.locator(".msg").count() === 0, "Reset left messages on the page");
  a = await ask(page, "What is 613 - 278?");
  check(a.state === "done" && a.answer.trim() === "335", `after Reset, 613 - 278: state ${a.state}, '${a.answer}'`);
  const last = bodies[bodies.length - 1];
  check(last && last.messages.length === 1, "after Reset the request held " + JSON.stringify(last && last.messages));

  const foreign = requests.filter((u) => !u.startsWith(origin + "/"));
  check(foreign.length === 0, "requests that were not to the server: " + foreign.join(", "));
  check(requests.some((u) => u === origin + "/v1/models"), "the page did not ask for the model's name");
  check(problems.length === 0, "script errors on the page: " + problems.join("; "));
}

main()
  .catch((e) => check(false, "the page test stopped: " + (e && e.stack ? e.stack : e)))
  .then(cleanup)
  .then(() => { summary(); process.exit(nFail ? 1 : 0); });
