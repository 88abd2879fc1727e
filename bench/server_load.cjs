// server_load.cjs — the load that bench/compare_server.sh puts on one running
// OpenAI-compatible server (edgeseek serve or llama.cpp's llama-server), on
// loopback, through /v1/completions with ignore_eos so every stream makes
// exactly the tokens asked for.  Prints one JSON line per figure.
//
//   node bench/server_load.cjs run URL TAG "1,2,4,8" N LONG_TOKENS
//     aggregate: C requests of N tokens each, started together (not streamed:
//       the client's own work per token stays out of the figure); tokens/s =
//       C * N / (wall time from the first request to the last answer)
//     ttft_idle: time to the first token of a LONG_TOKENS-token prompt alone
//     ttft_busy: the same while 3 other streams decode (they are cut after)
//   node bench/server_load.cjs table FILE
//     medians over the rounds of FILE's lines, and the ratios between engines
"use strict";
const fs = require("fs");

function now() { return Number(process.hrtime.bigint()) / 1e9; }

// A streamed completion; resolves with the times of the first and last
// events and the number of text events.  abort(): cut it (a disconnect).
function stream(base, prompt, n, ms, onFirst) {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), ms);
  const t0 = now();
  const p = (async () => {
    let first = 0, last = 0, events = 0, usage = null;
    try {
      const r = await fetch(base + "/v1/completions", {
        method: "POST", signal: ctl.signal, headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ prompt, max_tokens: n, temperature: 0, ignore_eos: true, stream: true,
                               stream_options: { include_usage: true }, cache_prompt: false }),
      });
      if (!r.ok) throw new Error("status " + r.status + ": " + (await r.text()).slice(0, 200));
      const dec = new TextDecoder();
      let buf = "";
      for await (const chunk of r.body) {
        buf += dec.decode(chunk, { stream: true });
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const ev = buf.slice(0, i);
          buf = buf.slice(i + 2);
          if (!ev.startsWith("data: {")) continue;
          const j = JSON.parse(ev.slice(6));
          if (j.usage) usage = j.usage;
          if (j.choices && j.choices.length) {
            if (!first) { first = now(); if (onFirst) onFirst(); }
            last = now();
            events++;
          }
        }
      }
    } catch (e) {
      if (!ctl.signal.aborted || !first) throw e;
    } finally {
      clearTimeout(timer);
    }
    return { t0, first, last, events, usage };
  })();
  return { p, abort: () => ctl.abort() };
}

async function complete(base, prompt, n, ms) {
  const r = await fetch(base + "/v1/completions", {
    method: "POST", signal: AbortSignal.timeout(ms), headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ prompt, max_tokens: n, temperature: 0, ignore_eos: true, cache_prompt: false }),
  });
  const j = await r.json();
  if (!r.ok) throw new Error("status " + r.status + ": " + JSON.stringify(j).slice(0, 200));
  return j;
}

async function tokenize(base, text) {
  const r = await fetch(base + "/tokenize", { method: "POST", headers: { "Content-Type": "application/json" },
                                              body: JSON.stringify({ content: text }) });
  return (await r.json()).tokens.length;
}

// A prompt of about `want` tokens, unique to this call (no cache reuse).
async function longPrompt(base, want, tag) {
  const unit = "The quick brown fox jumps over the lazy dog while counting 12, 345 and 6789. ";
  const per = Math.max(1, await tokenize(base, unit));
  let reps = Math.max(1, Math.floor(want / per));
  let text = `[${tag} ${Math.random().toString(36).slice(2)}] ` + unit.repeat(reps);
  for (let k = 0; k < 4; k++) { // settle on the count the server's tokenizer gives
    const n = await tokenize(base, text);
    if (Math.abs(n - want) <= per) break;
    reps = Math.max(1, reps + Math.round((want - n) / per));
    text = `[${tag} ${Math.random().toString(36).slice(2)}] ` + unit.repeat(reps);
  }
  return text;
}

async function run(base, tag, cs, n, longTokens) {
  const out = (o) => console.log(JSON.stringify({ tag, ...o }));
  await complete(base, "Warm up: once upon a time", 8, 600000); // first-use costs stay out of the figures
  for (const c of cs) {
    const t0 = now();
    const rs = await Promise.all(Array.from({ length: c }, (_, k) =>
      complete(base, `Stream ${k} of ${c}, ${Math.random()}: once upon a time`, n, 600000)));
    const t1 = now();
    const toks = rs.reduce((a, r) => a + (r.usage ? r.usage.completion_tokens : n), 0);
    out({ test: "aggregate", c, tokens: toks, seconds: t1 - t0, tps: toks / (t1 - t0) });
  }
  if (longTokens > 0) {
    const lp = await longPrompt(base, longTokens, tag);
    const idle = await stream(base, lp, 1, 600000).p;
    out({ test: "ttft_idle", prompt_tokens: idle.usage ? idle.usage.prompt_tokens : longTokens, seconds: idle.first - idle.t0 });
    // three streams decoding, each past its first token, then the long prompt
    const lp2 = await longPrompt(base, longTokens, tag + "b");
    let going = 0;
    const busy = [0, 1, 2].map((k) => stream(base, `Background ${k} ${Math.random()}: once upon a time`, 100000, 600000,
                                             () => going++));
    for (let i = 0; i < 12000 && going < 3; i++) await new Promise((r) => setTimeout(r, 50)); // at most 10 min
    await new Promise((r) => setTimeout(r, 500));
    const b = await stream(base, lp2, 1, 600000).p;
    busy.forEach((s) => s.abort());
    const bg = await Promise.all(busy.map((s) => s.p.catch(() => ({ events: 0 }))));
    out({ test: "ttft_busy", prompt_tokens: b.usage ? b.usage.prompt_tokens : longTokens, seconds: b.first - b.t0,
          background_events: bg.map((x) => x.events) });
  }
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

function table(file) {
  const rows = fs.readFileSync(file, "utf8").split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l));
  const models = [...new Set(rows.map((r) => r.model))];
  for (const m of models) {
    const rm = rows.filter((r) => r.model === m);
    const engines = [...new Set(rm.map((r) => r.engine))];
    console.log(`\n${m} (medians over ${Math.max(...rm.map((r) => r.round))} rounds)`);
    console.log("| test | " + engines.join(" | ") + (engines.length > 1 ? " | edgeseek / llama-server |" : " |"));
    console.log("|---|" + engines.map(() => "---:|").join("") + (engines.length > 1 ? "---:|" : ""));
    const keys = [...new Set(rm.map((r) => r.test === "aggregate" ? `aggregate t/s, ${r.c} streams` : r.test))];
    const val = {};
    for (const k of keys) {
      const cells = engines.map((e) => {
        const xs = rm.filter((r) => r.engine === e &&
          (r.test === "aggregate" ? `aggregate t/s, ${r.c} streams` : r.test) === k).map((r) => r.test === "aggregate" ? r.tps : r.seconds);
        const v = xs.length ? median(xs) : NaN;
        val[e + k] = v;
        return xs.length ? v.toFixed(k.startsWith("aggregate") ? 2 : 3) + (k.startsWith("ttft") ? " s" : "") : "-";
      });
      let ratio = "";
      if (engines.length > 1) {
        const a = val["edgeseek" + k], b = val["llama-server" + k];
        ratio = isFinite(a) && isFinite(b) ? (k.startsWith("ttft") ? (b / a) : (a / b)).toFixed(2) + "x" : "-";
        ratio = " | " + ratio;
      }
      console.log(`| ${k} | ${cells.join(" | ")}${ratio} |`);
    }
    for (const e of engines) {
      const one = val[e + "aggregate t/s, 1 streams"];
      const parts = [2, 4, 8].filter((c) => isFinite(val[e + `aggregate t/s, ${c} streams`]))
        .map((c) => `${c}: ${(val[e + `aggregate t/s, ${c} streams`] / one).toFixed(2)}x`);
      const ti = val[e + "ttft_idle"], tb = val[e + "ttft_busy"];
      console.log(`${e}: aggregate over its own single stream ${parts.join(", ")}` +
                  (isFinite(ti) && isFinite(tb) ? `; long prompt's first token busy/idle ${(tb / ti).toFixed(2)}x` : ""));
    }
  }
}

(async () => {
  const [cmd, ...a] = process.argv.slice(2);
  if (cmd === "table") return table(a[0]);
  if (cmd !== "run") { console.error("usage: server_load.cjs run URL TAG CS N LONG | table FILE"); process.exit(2); }
  await run(a[0], a[1], a[2].split(",").map(Number), Number(a[3]), Number(a[4]));
})().catch((e) => { console.error("server_load: " + (e && e.stack ? e.stack : e)); process.exit(1); });
