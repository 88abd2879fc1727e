// server_client.cjs — the client side of tests/test_server.sh: talks to a
// running `edgeseek serve` on loopback, with the official `openai` npm client
// (from tests/node_deps, when installed) and with raw HTTP for what a client
// library would not send.  Prints PASS/FAIL/SKIP lines that the shell script
// counts.  Every request has a time limit and every loop a fixed count.
//
//   node tests/server_client.cjs main URL KEY   the fast server (-np 4, key, small limits)
//   node tests/server_client.cjs slow URL PID   the slowed server (-np 1 --queue 1, --request-timeout 4,
//                                               EDGESEEK_SERVE_STEP_MS): keep-alive,
//                                               disconnect, queue, SIGTERM mid-stream
//   node tests/server_client.cjs slots URL DIR  the server with --slot-save-path DIR (-np 2,
//                                               --max-conn 3, slowed): slot save, restore,
//                                               erase, bad names, a busy slot; --max-conn's 503
//   node tests/server_client.cjs mtp URL PLAIN  the MTP model with --mtp (-np 4) at URL against the same
//                                               model without it at PLAIN: the same text at temperature 0,
//                                               alone and among concurrent requests; acceptance reported
"use strict";
const fs = require("fs");
const net = require("net");
const path = require("path");

const [mode, base, arg] = process.argv.slice(2);
const url = new URL(base);
let OpenAI = null;
try {
  OpenAI = require(path.resolve(process.env.ES_NODE_DEPS || "tests/node_deps", "node_modules", "openai"));
  if (OpenAI.default) OpenAI = OpenAI.default;
} catch (e) {
  OpenAI = null;
}

function pass() { console.log("PASS"); }
function fail(msg) { console.log("FAIL " + msg); }
function skip(msg) { console.log("SKIP " + msg); }
function check(ok, msg) { if (ok) pass(); else fail(msg); }

// the whole run is bounded
setTimeout(() => { fail("the client ran over 240 s"); process.exit(1); }, 240000).unref();

async function http(method, p, body, headers = {}, ms = 30000) {
  const r = await fetch(base + p, {
    method, headers: { "Content-Type": "application/json", ...headers },
    body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
    signal: AbortSignal.timeout(ms),
  });
  const text = await r.text();
  let json = null;
  try { json = JSON.parse(text); } catch (e) { json = null; }
  return { status: r.status, headers: r.headers, text, json };
}

// A raw exchange over one socket: writes the parts (with pauses), returns
// what the server sent until it closed, or what came by the deadline.
function raw(parts, ms) {
  return new Promise((resolve) => {
    const s = net.connect(Number(url.port), url.hostname);
    let got = "", done = false;
    const end = (why) => { if (!done) { done = true; s.destroy(); resolve({ got, why }); } };
    s.on("data", (d) => { got += d.toString(); });
    s.on("close", () => end("closed"));
    s.on("error", () => end("error"));
    setTimeout(() => end("timeout"), ms);
    s.on("connect", async () => {
      for (const p of parts) {
        if (typeof p === "number") await new Promise((r) => setTimeout(r, p));
        else if (!done) s.write(p);
      }
    });
  });
}

function errorShape(r, status, what) {
  const e = r.json && r.json.error;
  check(r.status === status && e && typeof e.message === "string" && e.message.length > 0 &&
        typeof e.type === "string" && e.code === status,
        `${what}: want ${status} with {"error":{message,type,code}}, got ${r.status} ${r.text.slice(0, 200)}`);
}

const QUESTIONS = [
  ["What is 487 + 356?", "843"], ["What is 613 - 278?", "335"], ["What is 125 + 250?", "375"],
  ["What is 904 - 123?", "781"], ["What is 312 + 489?", "801"], ["What is 700 - 299?", "401"],
  ["What is 146 + 146?", "292"], ["What is 555 - 222?", "333"],
];

async function chat(auth, messages, extra = {}) {
  return http("POST", "/v1/chat/completions", { model: "edgeseek", messages, temperature: 0, max_tokens: 96, ...extra },
              auth);
}

async function mainTests(key) {
  const auth = { Authorization: "Bearer " + key };
  // still serving: checked after every bad request
  const alive = async (after) => {
    const r = await chat(auth, [{ role: "user", content: "What is 487 + 356?" }]);
    check(r.status === 200 && r.json.choices[0].message.content === "843", `serving after ${after}: ${r.status} ${r.text.slice(0, 200)}`);
  };

  if (!OpenAI) {
    skip("the openai npm client is not installed in tests/node_deps (npm install --prefix tests/node_deps openai@4)");
  } else {
    const client = new OpenAI({ apiKey: key, baseURL: base + "/v1", timeout: 60000, maxRetries: 0 });
    // non-streamed
    const r = await client.chat.completions.create({
      model: "edgeseek", messages: [{ role: "user", content: "What is 487 + 356?" }], temperature: 0 });
    const m = r.choices[0].message;
    check(m.content === "843", `openai non-streamed: content '${m.content}', want 843`);
    check(typeof m.reasoning_content === "string" && /\d/.test(m.reasoning_content) && !m.reasoning_content.includes("think>"),
          `openai non-streamed: reasoning_content '${m.reasoning_content}' should hold the trace`);
    check(!m.content.includes("think") && !m.content.includes("+"), "content holds no trace");
    check(r.choices[0].finish_reason === "stop", `finish_reason ${r.choices[0].finish_reason}`);
    check(r.usage && r.usage.prompt_tokens > 0 && r.usage.completion_tokens > 0 &&
          r.usage.total_tokens === r.usage.prompt_tokens + r.usage.completion_tokens &&
          r.usage.prompt_tokens_details && typeof r.usage.prompt_tokens_details.cached_tokens === "number",
          "usage: " + JSON.stringify(r.usage));
    // streamed, with usage
    const st = await client.chat.completions.create({
      model: "edgeseek", messages: [{ role: "user", content: "What is 613 - 278?" }], temperature: 0, stream: true,
      stream_options: { include_usage: true } });
    let content = "", reasoning = "", finish = null, usage = null, chunks = 0;
    for await (const ch of st) {
      chunks++;
      if (ch.usage) usage = ch.usage;
      const c = ch.choices[0];
      if (!c) continue;
      if (c.delta.content) content += c.delta.content;
      if (c.delta.reasoning_content) reasoning += c.delta.reasoning_content;
      if (c.finish_reason) finish = c.finish_reason;
    }
    check(content === "335", `openai streamed: content '${content}', want 335`);
    check(reasoning.length > 0 && /\d/.test(reasoning) && !reasoning.includes("think>"), `streamed reasoning '${reasoning}'`);
    check(finish === "stop" && chunks > 3, `streamed finish ${finish}, ${chunks} chunks`);
    check(usage && usage.completion_tokens > 0 && usage.prompt_tokens_details, "streamed usage: " + JSON.stringify(usage));
    // a second turn: the thought sent back is accepted and dropped, and the
    // slot's cache was rewritten to the turn as the template renders it
    const t1 = await client.chat.completions.create({
      model: "edgeseek", messages: [{ role: "user", content: "What is 125 + 250?" }], temperature: 0 });
    await new Promise((res) => setTimeout(res, 300));
    const t2 = await client.chat.completions.create({
      model: "edgeseek", temperature: 0, messages: [
        { role: "user", content: "What is 125 + 250?" },
        { role: "assistant", content: t1.choices[0].message.content, reasoning_content: t1.choices[0].message.reasoning_content },
        { role: "user", content: "What is 904 - 123?" }] });
    // (the model was trained on single questions: the answer is not checked)
    check(typeof t2.choices[0].message.content === "string" && !t2.choices[0].message.content.includes("think>"),
          `second turn: '${t2.choices[0].message.content}'`);
    check(t2.usage.prompt_tokens_details.cached_tokens > t1.usage.prompt_tokens,
          `second turn reuses the rewritten first turn: cached ${t2.usage.prompt_tokens_details.cached_tokens}, first prompt ${t1.usage.prompt_tokens}`);
    // text completion and the model list
    const cp = await client.completions.create({ model: "edgeseek", prompt: "What is", max_tokens: 4, temperature: 0, ignore_eos: true });
    check(typeof cp.choices[0].text === "string" && cp.choices[0].finish_reason === "length" && cp.usage.completion_tokens === 4,
          "completions: " + JSON.stringify(cp));
    const ml = await client.models.list();
    check(ml.data.length === 1 && typeof ml.data[0].id === "string", "models: " + JSON.stringify(ml.data));
    // a wrong key through the client: 401
    const bad = new OpenAI({ apiKey: "wrong", baseURL: base + "/v1", timeout: 20000, maxRetries: 0 });
    let st401 = 0;
    try { await bad.models.list(); } catch (e) { st401 = e.status; }
    check(st401 === 401, `openai with a wrong key: status ${st401}`);
  }

  // 8 concurrent clients at temperature 0 answer as one at a time
  const seq = [];
  for (const [q] of QUESTIONS) {
    const r = await chat(auth, [{ role: "user", content: q }]);
    seq.push(r.status === 200 ? JSON.stringify(r.json.choices[0].message) : "error " + r.status);
  }
  let right = 0;
  QUESTIONS.forEach(([, a], i) => { if (seq[i].includes(`"content":"${a}"`)) right++; });
  check(right >= 6, `sequential answers: ${right} of 8 right: ${seq.join(" | ")}`);
  const same = await Promise.all([0, 1, 2, 3, 4, 5, 6, 7].map(async (k) => {
    const out = [];
    for (const i of [k, (k + 3) % 8]) { // a bounded number of requests each
      const r = await chat(auth, [{ role: "user", content: QUESTIONS[i][0] }]);
      out.push(r.status === 200 && JSON.stringify(r.json.choices[0].message) === seq[i] ? "ok" : `q${i}: ${r.text.slice(0, 200)}`);
    }
    return out;
  }));
  const diffs = same.flat().filter((x) => x !== "ok");
  check(diffs.length === 0, "8 concurrent clients differ from sequential: " + diffs.join(" | "));
  // the same again streamed
  const streamed = await Promise.all([0, 1, 2, 3, 4, 5, 6, 7].map(async (k) => {
    const r = await chat(auth, [{ role: "user", content: QUESTIONS[k][0] }], { stream: true });
    let c = "", rs = "";
    for (const ev of r.text.split("\n\n")) {
      if (!ev.startsWith("data: {")) continue;
      const d = JSON.parse(ev.slice(6)).choices[0];
      if (d && d.delta.content) c += d.delta.content;
      if (d && d.delta.reasoning_content) rs += d.delta.reasoning_content;
    }
    const want = JSON.parse(seq[k]);
    return c === want.content && rs === want.reasoning_content && r.text.trimEnd().endsWith("data: [DONE]");
  }));
  check(streamed.every((x) => x), "8 concurrent streams differ from sequential: " + streamed.join(","));

  // errors, each followed by a request that must still work
  errorShape(await http("POST", "/v1/chat/completions", "{\"messages\": [", auth), 400, "malformed JSON");
  await alive("malformed JSON");
  const wt = await chat(auth, [{ role: "user", content: "hi" }], { temperature: "hot" });
  errorShape(wt, 400, "temperature as a string");
  check(wt.json && wt.json.error.param === "temperature", "the error names the field: " + wt.text);
  errorShape(await chat(auth, [{ role: "user", content: 5 }]), 400, "content as a number");
  errorShape(await chat(auth, [{ role: "user", content: "hi" }], { max_tokens: 1.5 }), 400, "max_tokens 1.5");
  errorShape(await chat(auth, [{ role: "user", content: "hi" }], { stream: "yes" }), 400, "stream as a string");
  errorShape(await chat(auth, [{ role: "user", content: "hi" }], { stop: [1] }), 400, "stop as numbers");
  errorShape(await chat(auth, [{ role: "wizard", content: "hi" }]), 400, "an unknown role");
  errorShape(await chat(auth, [{ role: "user", content: "hi" }], { n: 2 }), 400, "n=2");
  errorShape(await chat(auth, []), 400, "an empty message list");
  errorShape(await http("POST", "/v1/chat/completions", { temperature: 0 }, auth), 400, "no messages");
  errorShape(await http("POST", "/v1/chat/completions", "[1,2]", auth), 400, "a JSON list");
  await alive("wrong types");
  const big = await http("POST", "/v1/chat/completions",
                         { messages: [{ role: "user", content: "x".repeat(100 * 1024) }] }, auth);
  errorShape(big, 413, "a body over --max-body");
  await alive("an oversized body");
  // a body longer than its Content-Length says is refused at once
  const lie = await raw([`POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${key}\r\n` +
                         `Content-Length: 99999999\r\n\r\n{}`], 10000);
  check(lie.got.startsWith("HTTP/1.1 413"), "Content-Length over the limit: " + lie.got.slice(0, 100));
  // headers over --max-header: refused, the server goes on
  const hdr = await raw([`GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Big: ${"a".repeat(40000)}\r\n\r\n`], 10000);
  check(!hdr.got.startsWith("HTTP/1.1 200"), "oversized headers were served: " + hdr.got.slice(0, 100));
  await alive("oversized headers");
  // keys: none, wrong, right; /health needs none
  errorShape(await http("GET", "/v1/models"), 401, "no key");
  errorShape(await http("GET", "/v1/models", undefined, { Authorization: "Bearer " + key + "x" }), 401, "a longer key");
  errorShape(await http("GET", "/v1/models", undefined, { Authorization: "Bearer " + key.slice(0, -1) }), 401, "a shorter key");
  errorShape(await http("POST", "/tokenize", { content: "hi" }, { Authorization: "Bearer nope" }), 401, "a bad key on /tokenize");
  check((await http("GET", "/health")).status === 200, "/health without a key");
  await alive("a bad key");
  errorShape(await http("GET", "/nowhere", undefined, auth), 404, "an unknown path");
  errorShape(await http("GET", "/v1/chat/completions", undefined, auth), 405, "GET on a POST endpoint");
  // a slow client: part of a body, then silence: dropped after --idle-timeout
  // while other requests are served
  const t0 = Date.now();
  const slowP = raw([`POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${key}\r\n` +
                     "Content-Length: 100\r\n\r\n{\"messages\":"], 15000);
  await alive("(during) a slow client");
  const slow = await slowP;
  check(slow.why !== "timeout" && Date.now() - t0 < 12000, `slow client not dropped: ${slow.why} after ${Date.now() - t0} ms`);
  check(slow.got === "" || /^HTTP\/1\.1 (400|408)/.test(slow.got), "slow client answer: " + slow.got.slice(0, 100));
  await alive("a slow client");

  // tokenize / detokenize / metrics
  const tk = await http("POST", "/tokenize", { content: "What is 487 + 356?" }, auth);
  check(tk.status === 200 && Array.isArray(tk.json.tokens) && tk.json.tokens.length > 3, "tokenize: " + tk.text);
  const dt = await http("POST", "/detokenize", { tokens: tk.json ? tk.json.tokens : [] }, auth);
  check(dt.status === 200 && dt.json.content === "What is 487 + 356?", "detokenize: " + dt.text);
  errorShape(await http("POST", "/detokenize", { tokens: [-1] }, auth), 400, "a bad token id");
  errorShape(await http("POST", "/tokenize", { content: 3 }, auth), 400, "tokenize of a number");
  const mt = await http("GET", "/metrics", undefined, auth);
  check(mt.status === 200 && /^edgeseek_tokens_generated_total [1-9]/m.test(mt.text) && /^edgeseek_slots 4$/m.test(mt.text) &&
        /^edgeseek_queue_length 0$/m.test(mt.text) && /^edgeseek_prompt_tokens_total [1-9]/m.test(mt.text), "metrics: " + mt.text.slice(0, 300));
  const page = await http("GET", "/");
  check(page.status === 200 && page.text.includes("<html") && !/https?:\/\//.test(page.text.replace(/<!--[^]*?-->/g, "")),
        "the page at /: self-contained HTML");
  // stop strings, max_tokens and finish reasons
  const sp = await chat(auth, [{ role: "user", content: "What is 487 + 356?" }], { stop: ["4"] });
  check(sp.status === 200 && sp.json.choices[0].finish_reason === "stop" && !JSON.stringify(sp.json.choices[0].message).includes("4"),
        "stop string: " + sp.text.slice(0, 300));
  const ln = await chat(auth, [{ role: "user", content: "What is 487 + 356?" }], { max_tokens: 3 });
  check(ln.status === 200 && ln.json.choices[0].finish_reason === "length" && ln.json.usage.completion_tokens === 3,
        "max_tokens 3: " + ln.text.slice(0, 300));
  // slot files need --slot-save-path; erasing does not
  errorShape(await http("POST", "/slots/0?action=save", { filename: "a.bin" }, auth), 501, "save without --slot-save-path");
  const er = await http("POST", "/slots/0?action=erase", undefined, auth);
  check(er.status === 200 && er.json.id_slot === 0 && typeof er.json.n_erased === "number", "erase: " + er.text);
}

function sseRaw(body, onEvent, ms) {
  // a streamed request over a raw socket: onEvent(text, socket) for each event
  return new Promise((resolve) => {
    const s = net.connect(Number(url.port), url.hostname);
    let buf = "", done = false, all = "";
    const end = (why) => { if (!done) { done = true; s.destroy(); resolve({ why, all }); } };
    s.on("data", (d) => {
      buf += d.toString();
      all += d.toString();
      let i;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        const ev = buf.slice(0, i);
        buf = buf.slice(i + 2);
        if (onEvent(ev, s) === "stop") end("stopped");
      }
    });
    s.on("close", () => end("closed"));
    s.on("error", () => end("error"));
    setTimeout(() => end("timeout"), ms);
    const b = JSON.stringify(body);
    s.write(`POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(b)}\r\n\r\n${b}`);
  });
}

async function metric(name) {
  const m = await http("GET", "/metrics");
  const x = new RegExp("^" + name + " (\\S+)$", "m").exec(m.text);
  return x ? Number(x[1]) : NaN;
}

async function slowTests(pid) {
  // keep-alive comments while a long prompt is prefilled (4 tokens a step)
  const long = "What is 487 + 356? ".repeat(30);
  let sawKeepAlive = false, firstText = false;
  const ka = await sseRaw({ messages: [{ role: "user", content: long }], max_tokens: 2, temperature: 0, stream: true },
    (ev) => {
      if (ev.includes(": keep-alive") && !firstText) sawKeepAlive = true;
      if (ev.includes("reasoning_content") || ev.includes("\"content\":\"8")) firstText = true;
      if (ev.includes("data: [DONE]")) return "stop";
      return "";
    }, 60000);
  check(ka.why === "stopped" && sawKeepAlive, `keep-alive during a long prefill: ${ka.why}, seen ${sawKeepAlive}`);
  // a client that disconnects mid-stream frees its slot at once
  let chunks = 0;
  const body = { messages: [{ role: "user", content: "What is 487 + 356?" }], max_tokens: 400, temperature: 0, stream: true, ignore_eos: true };
  await sseRaw(body, (ev) => (ev.startsWith("data: {") && ++chunks >= 5 ? "stop" : ""), 30000);
  let busy = NaN;
  for (let i = 0; i < 20; i++) { // at most 2 s
    busy = await metric("edgeseek_slots_busy");
    if (busy === 0) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  const gen = await metric("edgeseek_tokens_generated_total");
  check(busy === 0 && gen < 100, `disconnect mid-stream: busy ${busy}, generated ${gen} of 400`);
  const ok = await http("POST", "/v1/chat/completions", { messages: [{ role: "user", content: "What is 613 - 278?" }], temperature: 0, max_tokens: 96 });
  check(ok.status === 200 && ok.json.choices[0].message.content === "335", "serving after a disconnect: " + ok.text.slice(0, 200));
  // --request-timeout 4: a request of 400 tokens (8 s at 20 ms a step) ends by length
  const tt = Date.now();
  const lt = await http("POST", "/v1/chat/completions", { ...body, stream: false }, {}, 30000);
  const took = Date.now() - tt;
  check(lt.status === 200 && lt.json.choices[0].finish_reason === "length" && lt.json.usage.completion_tokens < 400 &&
        took >= 3500 && took < 7500, `--request-timeout: ${took} ms, ${lt.text.slice(-200)}`);
  // one slot, a queue of one: the third request at once gets 503 with Retry-After
  let cancelled = false;
  const holder = sseRaw(body, (ev) => {
    if (ev.includes("\"finish_reason\":\"cancelled\"")) cancelled = true;
    return ev.includes("[DONE]") ? "stop" : "";
  }, 30000);
  await new Promise((r) => setTimeout(r, 300));
  const queued = http("POST", "/v1/chat/completions", { ...body, max_tokens: 2, stream: false }, {}, 60000);
  await new Promise((r) => setTimeout(r, 300));
  const third = await http("POST", "/v1/chat/completions", { ...body, max_tokens: 2, stream: false });
  errorShape(third, 503, "a full queue");
  check(third.headers.get("retry-after") !== null, "503 carries Retry-After");
  check((await metric("edgeseek_queue_length")) === 1, "the queue holds one");
  // SIGTERM while one streams and one waits: both end, the stream with
  // finish_reason cancelled and [DONE], and the server exits (the shell checks 0)
  process.kill(Number(pid), "SIGTERM");
  const [s, q] = await Promise.all([holder, queued.catch((e) => ({ status: "err " + e, text: "" }))]);
  check(s.why === "stopped" && cancelled, `a stream at SIGTERM ends cancelled with [DONE]: ${s.why} ${cancelled}`);
  check((q.status === 200 && q.json && q.json.choices[0].finish_reason === "cancelled") || q.status === 503,
        "the queued request at SIGTERM: " + q.status + " " + q.text.slice(0, 200));
}

async function slots() {
  const r = await http("GET", "/slots");
  return r.status === 200 && Array.isArray(r.json) ? r.json : [];
}

// Waits (at most ms of wall time, however loaded the machine) until f() is true.
async function until(f, ms) {
  const end = Date.now() + ms;
  for (;;) {
    if (await f()) return true;
    if (Date.now() > end) return false;
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function slotTests(dir) {
  const action = (id, act, filename) =>
    http("POST", `/slots/${id}?action=${act}`, filename === undefined ? undefined : { filename });
  const P = { prompt: "What is 487 + 356?", max_tokens: 8, temperature: 0, ignore_eos: true };
  for (const sl of await slots()) await action(sl.id, "erase");
  const a1 = await http("POST", "/v1/completions", P);
  check(a1.status === 200 && a1.json.usage.prompt_tokens_details.cached_tokens === 0, "a first completion: " + a1.text);
  let list = await slots();
  const held = list.find((x) => x.n_tokens > 0);
  check(list.length === 2 && held && !held.is_processing, "GET /slots: " + JSON.stringify(list));
  if (!held) return;
  const k = held.id;
  const sv = await action(k, "save", "a.bin");
  const size = fs.existsSync(dir + "/a.bin") ? fs.statSync(dir + "/a.bin").size : -1;
  check(sv.status === 200 && sv.json.id_slot === k && sv.json.filename === "a.bin" && sv.json.n_saved === held.n_tokens &&
        sv.json.n_written === size && sv.json.timings && typeof sv.json.timings.save_ms === "number",
        `save: ${sv.text}, the file ${size} bytes`);
  const er = await action(k, "erase");
  check(er.status === 200 && er.json.n_erased === held.n_tokens, "erase: " + er.text);
  list = await slots();
  check(list.every((x) => x.n_tokens === 0), "after erase the slots hold nothing: " + JSON.stringify(list));
  // restored into the other slot, the file's cache serves the same prompt:
  // all but its last token come from it, with the same text
  const rs = await action(1 - k, "restore", "a.bin");
  check(rs.status === 200 && rs.json.id_slot === 1 - k && rs.json.n_restored === held.n_tokens && rs.json.n_read === size,
        "restore: " + rs.text);
  const a2 = await http("POST", "/v1/completions", P);
  check(a2.status === 200 && a2.json.usage.prompt_tokens_details.cached_tokens === a2.json.usage.prompt_tokens - 1 &&
        a2.json.choices[0].text === a1.json.choices[0].text,
        `after restore: ${a2.text}; before: ${a1.text}`);
  // names that would leave the directory, or are not files, are refused
  for (const bad of ["../evil.bin", "a/b.bin", ".hidden", "", "x".repeat(201)])
    errorShape(await action(k, "save", bad), 400, `save as '${bad.slice(0, 20)}'`);
  check(!fs.existsSync(dir + "/../evil.bin"), "no file was written outside the directory");
  errorShape(await http("POST", `/slots/${k}?action=save`, { file: "a.bin" }), 400, "no filename");
  errorShape(await http("POST", `/slots/${k}?action=save`, "{"), 400, "a malformed body");
  errorShape(await action(k, "restore", "missing.bin"), 404, "restore of a missing file");
  fs.writeFileSync(dir + "/junk.bin", "not a session\n");
  const junk = await action(k, "restore", "junk.bin");
  errorShape(junk, 400, "restore of a file that is not a session");
  check(junk.json && /not an edgeseek session file/.test(junk.json.error.message) && !junk.text.includes(dir),
        "the refusal says why, naming the file alone: " + junk.text);
  fs.writeFileSync(dir + "/../outside.bin", "x");
  fs.symlinkSync("../outside.bin", dir + "/link.bin");
  errorShape(await action(k, "restore", "link.bin"), 400, "restore through a symbolic link");
  errorShape(await action(7, "erase"), 404, "no slot 7");
  errorShape(await action("x", "erase"), 400, "slot 'x'");
  errorShape(await action(k, "frob"), 400, "an unknown action");
  errorShape(await http("GET", `/slots/${k}?action=erase`), 405, "GET on a slot action");
  // a slot that is generating is not saved
  const body = { messages: [{ role: "user", content: "What is 487 + 356?" }], max_tokens: 2000, ignore_eos: true,
                 temperature: 0, stream: true };
  let stopNow = false;
  const holder = sseRaw(body, () => (stopNow ? "stop" : ""), 60000);
  let busy = null;
  await until(async () => { busy = (await slots()).find((x) => x.is_processing); return !!busy; }, 20000);
  check(!!busy, "a streaming request shows as a busy slot");
  if (busy) errorShape(await action(busy.id, "save", "busy.bin"), 503, "save of a busy slot");
  const mt = await http("GET", "/metrics");
  check(/^edgeseek_kv_cache_bytes_per_token 400$/m.test(mt.text) && /^edgeseek_kv_cache_bytes [1-9]\d*$/m.test(mt.text),
        "/metrics: the caches at their type (q8_0): " + mt.text.slice(-400));
  // --max-conn 3: with three connections open (the stream and two sockets
  // that sent half a request), the next one gets 503 at once
  const socks = [0, 1].map(() => {
    const so = net.connect(Number(url.port), url.hostname);
    so.on("error", () => {});
    so.write("GET /health HTTP/1.1\r\n");
    return so;
  });
  let full = null;
  await until(async () => {
    full = await http("GET", "/v1/models", undefined, {}, 10000).catch(() => null);
    return full && full.status === 503;
  }, 20000);
  if (full) errorShape(full, 503, "a connection over --max-conn");
  check(full && /max-conn/.test(full.text) && full.headers.get("retry-after") !== null,
        "the 503 names --max-conn and carries Retry-After: " + (full && full.text.slice(0, 200)));
  // when they close, the server serves again
  socks.forEach((so) => so.destroy());
  stopNow = true;
  const h = await holder;
  check(h.why === "stopped", "the held stream ended: " + h.why);
  const back = await until(async () => {
    const r = await http("GET", "/v1/models", undefined, {}, 10000).catch(() => null);
    return r && r.status === 200;
  }, 20000);
  check(back, "served again once the connections closed");
}

// --mtp: the text of every request at temperature 0 equals the server without
// it, one request at a time and 8 at once (streamed and not); the drafts kept
// show in usage and /metrics
async function mtpTests(plain) {
  const msg = (r) => r.status === 200 ? JSON.stringify(r.json.choices[0].message) : "error " + r.status + " " + r.text.slice(0, 200);
  const at = async (b, q, extra = {}) => {
    const r = await fetch(b + "/v1/chat/completions", {
      method: "POST", headers: { "Content-Type": "application/json" }, signal: AbortSignal.timeout(60000),
      body: JSON.stringify({ model: "edgeseek", messages: [{ role: "user", content: q }], temperature: 0, max_tokens: 96, ...extra }) });
    const text = await r.text();
    let json = null;
    try { json = JSON.parse(text); } catch (e) { json = null; }
    return { status: r.status, text, json };
  };
  const want = [];
  for (const [q] of QUESTIONS) want.push(msg(await at(plain, q)));
  let right = 0;
  QUESTIONS.forEach(([, a], i) => { if (want[i].includes(`"content":"${a}"`)) right++; });
  check(right >= 6, `the plain server's answers: ${right} of 8 right: ${want.join(" | ")}`);
  // one at a time, through the openai client when it is there
  const alone = [];
  let accepted = 0, rejected = 0;
  if (OpenAI) {
    const client = new OpenAI({ apiKey: "none", baseURL: base + "/v1", timeout: 60000, maxRetries: 0 });
    for (const [q] of QUESTIONS) {
      const r = await client.chat.completions.create({
        model: "edgeseek", messages: [{ role: "user", content: q }], temperature: 0, max_tokens: 96 });
      alone.push(JSON.stringify(r.choices[0].message));
      const d = r.usage && r.usage.completion_tokens_details;
      if (d) { accepted += d.accepted_prediction_tokens; rejected += d.rejected_prediction_tokens; }
    }
  } else {
    skip("the openai npm client is not installed in tests/node_deps: plain HTTP instead");
    for (const [q] of QUESTIONS) {
      const r = await at(base, q);
      alone.push(msg(r));
      const d = r.json && r.json.usage.completion_tokens_details;
      if (d) { accepted += d.accepted_prediction_tokens; rejected += d.rejected_prediction_tokens; }
    }
  }
  const diff = alone.map((m, i) => m === want[i] ? null : `q${i}: ${m} vs ${want[i]}`).filter((x) => x);
  check(diff.length === 0, "--mtp, one request at a time, differs from the plain server: " + diff.join(" | "));
  check(accepted > 0 && accepted >= 2 * rejected,
        `usage.completion_tokens_details: ${accepted} drafts kept, ${rejected} dropped (the trained block keeps most)`);
  // 8 at once, twice each, non-streamed then streamed
  const same = await Promise.all([0, 1, 2, 3, 4, 5, 6, 7].map(async (k) => {
    const out = [];
    for (const i of [k, (k + 3) % 8]) {
      const m = msg(await at(base, QUESTIONS[i][0]));
      out.push(m === want[i] ? "ok" : `q${i}: ${m}`);
    }
    return out;
  }));
  const d8 = same.flat().filter((x) => x !== "ok");
  check(d8.length === 0, "--mtp, 8 concurrent clients, differs from the plain server: " + d8.join(" | "));
  const streamed = await Promise.all([0, 1, 2, 3, 4, 5, 6, 7].map(async (k) => {
    const r = await at(base, QUESTIONS[k][0], { stream: true, stream_options: { include_usage: true } });
    let c = "", rs = "", usage = null;
    for (const ev of r.text.split("\n\n")) {
      if (!ev.startsWith("data: {")) continue;
      const e = JSON.parse(ev.slice(6));
      if (e.usage) usage = e.usage;
      const d = e.choices[0];
      if (d && d.delta.content) c += d.delta.content;
      if (d && d.delta.reasoning_content) rs += d.delta.reasoning_content;
    }
    const w = JSON.parse(want[k]);
    return c === w.content && rs === w.reasoning_content && usage && usage.completion_tokens_details ? "ok" : `q${k}: ${c}`;
  }));
  check(streamed.every((x) => x === "ok"), "--mtp, 8 concurrent streams, differ from the plain server: " + streamed.join(","));
  // a length limit met in the middle of a kept draft's two tokens
  for (const n of [1, 2, 3, 7]) {
    const r = await http("POST", "/v1/completions", { model: "edgeseek", prompt: "What is", max_tokens: n, temperature: 0, ignore_eos: true });
    const p = await fetch(plain + "/v1/completions", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ model: "edgeseek", prompt: "What is", max_tokens: n, temperature: 0, ignore_eos: true }),
      signal: AbortSignal.timeout(30000) }).then((x) => x.json()).catch(() => null);
    check(r.status === 200 && r.json.usage.completion_tokens === n && p && r.json.choices[0].text === p.choices[0].text,
          `completions max_tokens ${n} with --mtp: ${r.text.slice(0, 200)} vs ${p && p.choices[0].text}`);
  }
  // sampling: the acceptance rule, a text comes back
  const smp = await at(base, QUESTIONS[0][0], { temperature: 0.8, seed: 3 });
  check(smp.status === 200 && typeof smp.json.choices[0].message.content === "string", "--mtp sampling: " + smp.text.slice(0, 200));
  const drafts = await metric("edgeseek_mtp_drafts_total"), kept = await metric("edgeseek_mtp_drafts_accepted_total");
  const ratio = await metric("edgeseek_mtp_acceptance_ratio");
  check(drafts > 0 && kept > 0 && kept <= drafts && Math.abs(ratio - kept / drafts) < 1e-3,
        `/metrics: ${drafts} drafts, ${kept} kept, ratio ${ratio}`);
  console.log(`(--mtp acceptance over these requests: ${kept} of ${drafts})`);
}

(async () => {
  try {
    if (mode === "main") await mainTests(arg);
    else if (mode === "mtp") await mtpTests(process.argv[4]);
    else if (mode === "slots") await slotTests(arg);
    else await slowTests(arg);
  } catch (e) {
    fail("client error: " + (e && e.stack ? e.stack : e));
  }
  process.exit(0);
})();
