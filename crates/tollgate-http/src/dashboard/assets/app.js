// tollgate dashboard: one page, no build step. It reads the gateway's own APIs with the session
// cookie (HttpOnly: this script never sees it); the CSRF token from GET /dashboard/api/session
// goes in `x-csrf-token` on every request that changes something. DOM is built with
// createElement/textContent only (no innerHTML), so nothing the API returns can become markup.
"use strict";

(() => {
  const S = {
    me: null, // GET /dashboard/api/session
    csrf: null,
    tz: Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC",
    timer: null,
    chart: null,
    reqCursors: [],
  };
  const $ = (id) => document.getElementById(id);
  const POLL_MS = 2000;

  // ---- DOM ----
  function h(tag, attrs, ...kids) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "text") el.textContent = v;
      else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else if (k === "class") el.className = v;
      else el.setAttribute(k, v === true ? "" : v);
    }
    for (const kid of kids.flat()) {
      if (kid === null || kid === undefined || kid === false) continue;
      el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    }
    return el;
  }
  let uid = 0;
  const nextId = (p) => `${p}-${++uid}`;
  /** A labelled control: the label's `for` names the control. */
  function field(label, control) {
    if (!control.id) control.id = nextId("f");
    return h("div", {}, h("label", { for: control.id, text: label }), control);
  }
  function select(options, value, attrs) {
    const s = h("select", attrs || {});
    for (const [v, text] of options) s.append(h("option", { value: v, text, selected: v === value }));
    return s;
  }
  function table(headers, rows, attrs) {
    const thead = h("thead", {}, h("tr", {}, headers.map((x) => {
      const [text, cls] = Array.isArray(x) ? x : [x, ""];
      return h("th", { scope: "col", class: cls, text });
    })));
    const tbody = h("tbody", {}, rows);
    if (!rows.length) tbody.append(h("tr", {}, h("td", { colspan: headers.length, class: "empty", text: "Nothing here yet." })));
    return h("div", { class: "table-wrap" }, h("table", attrs || {}, thead, tbody));
  }
  /** A cell of text, or of a node (a chip, a button). */
  const td = (content, cls, attrs) => (content instanceof Node
    ? h("td", Object.assign({ class: cls || "" }, attrs || {}), content)
    : h("td", Object.assign({ class: cls || "", text: content ?? "—" }, attrs || {})));
  const chip = (text) => h("span", { class: `chip ${text}`, text });

  // ---- numbers: shown as the APIs give them, only grouped for reading ----
  const intFmt = new Intl.NumberFormat("en-US");
  const int = (n) => (n === null || n === undefined ? "—" : intFmt.format(n));
  const trimZeros = (s) => (s.includes(".") ? s.replace(/0+$/, "").replace(/\.$/, "") : s);
  /** Exact decimal of an integer divided by 10^places (string arithmetic: no float error). */
  function scaled(n, places) {
    const neg = n < 0;
    let digits = String(Math.abs(n)).padStart(places + 1, "0");
    const whole = digits.slice(0, digits.length - places);
    const frac = digits.slice(digits.length - places);
    return (neg ? "-" : "") + trimZeros(`${whole}.${frac}`);
  }
  const usdNanos = (n) => `$${scaled(n, 9)}`;
  const usdMicro = (n) => `$${scaled(n, 6)}`;
  /** A USD JSON number (Runtype's): its exact decimal, at most 9 places, never exponent form. */
  const usdNumber = (v) => `$${trimZeros(Number(v).toFixed(9))}`;
  const pct = (a, b) => (b > 0 ? `${((100 * a) / b).toFixed(1)}%` : "—");
  const when = (ms) => (ms ? new Date(ms).toLocaleString(undefined, { timeZone: S.tz }) : "—");

  // ---- API ----
  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }
  async function api(path, opts = {}) {
    const method = opts.method || "GET";
    const headers = Object.assign({}, opts.headers || {});
    if (method !== "GET" && S.csrf) headers["x-csrf-token"] = S.csrf;
    let body;
    if (opts.body !== undefined) {
      headers["content-type"] = "application/json";
      body = JSON.stringify(opts.body);
    }
    const r = await fetch(path, { method, headers, body, credentials: "same-origin" });
    const text = await r.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
    if (r.status === 401 && !opts.signingIn) {
      showSignIn("Your session has ended. Sign in again.");
      throw new ApiError(401, "signed out");
    }
    if (!r.ok) throw new ApiError(r.status, (data && data.error && data.error.message) || text || r.statusText);
    return data;
  }
  /** Adds the viewed account (admins) to a query. */
  function q(params) {
    const u = new URLSearchParams();
    for (const [k, v] of Object.entries(params || {})) if (v !== undefined && v !== null && v !== "") u.set(k, v);
    const acct = route().params.get("account");
    if (acct) u.set("account_id", acct);
    const s = u.toString();
    return s ? `?${s}` : "";
  }
  const viewedAccount = () => route().params.get("account") || (S.me && S.me.account_id);
  const isAdmin = () => S.me && S.me.role === "admin";

  // ---- session ----
  function showSignIn(message) {
    stopPolling();
    S.me = null; S.csrf = null;
    $("app").hidden = true;
    $("signin").hidden = false;
    $("signin-error").textContent = message || "";
    $("api-key").focus();
  }
  async function loadSession() {
    const me = await api("/dashboard/api/session", { signingIn: true });
    if (!me || !me.signed_in) return false;
    S.me = me; S.csrf = me.csrf_token;
    return true;
  }
  async function signIn(ev) {
    ev.preventDefault();
    const input = $("api-key");
    const key = input.value.trim();
    $("signin-error").textContent = "";
    if (!key) { $("signin-error").textContent = "Enter an API key."; return; }
    try {
      await api("/dashboard/api/session", { method: "POST", headers: { authorization: `Bearer ${key}` }, signingIn: true });
      input.value = "";
      if (await loadSession()) startApp();
    } catch (e) {
      $("signin-error").textContent = e.status === 401 ? "That key was refused: it is unknown, revoked or expired." : e.message;
    }
  }
  async function signOut() {
    try { await api("/dashboard/api/session", { method: "DELETE" }); } catch (_) { /* shown below */ }
    showSignIn("Signed out.");
  }

  // ---- routing: #/page?account=acct_… ----
  function route() {
    const raw = location.hash.replace(/^#\/?/, "");
    const [page, query] = raw.split("?");
    return { page: page || "overview", params: new URLSearchParams(query || "") };
  }
  function link(page, extra) {
    const p = new URLSearchParams(extra || {});
    const acct = route().params.get("account");
    if (acct && !p.has("account")) p.set("account", acct);
    const s = p.toString();
    return `#/${page}${s ? `?${s}` : ""}`;
  }
  const PAGES = {};
  function stopPolling() { if (S.timer) { clearInterval(S.timer); S.timer = null; } }
  /** Re-runs `fn` every POLL_MS while `view` is on the page (a page left mid-load stops). */
  function poll(fn, view) {
    if (!view.isConnected) return;
    stopPolling();
    const timer = setInterval(() => {
      if (!view.isConnected) { clearInterval(timer); return; }
      if (!document.hidden) fn().catch(() => {});
    }, POLL_MS);
    S.timer = timer;
  }
  async function render() {
    if (!S.me) return;
    stopPolling();
    if (S.chart) { S.chart.destroy(); S.chart = null; }
    const { page } = route();
    const main = $("main");
    for (const a of document.querySelectorAll("#nav a")) {
      const acct = route().params.get("account");
      a.setAttribute("href", link(a.dataset.page, acct ? { account: acct } : {}));
      if (a.dataset.page === page) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
    }
    const acct = route().params.get("account");
    $("viewing").hidden = !acct || acct === S.me.account_id;
    $("viewing").textContent = acct ? `Viewing account ${acct}` : "";
    // Each draw gets its own container: a page still loading when the route changes writes
    // into a detached one, never over the newer page.
    const view = h("div", {}, h("p", { class: "muted", text: "Loading…" }));
    main.replaceChildren(view);
    // Which route the page shows once it is drawn (a hash change mid-load draws the newer one).
    const hash = location.hash;
    main.dataset.ready = "";
    const fn = PAGES[page] || PAGES.overview;
    const done = () => { if (location.hash === hash) main.dataset.ready = hash; };
    try {
      await fn(view);
      done();
    } catch (e) {
      if (e.status === 401) return;
      done();
      view.replaceChildren(h("h1", { text: e.status === 404 ? "Not found" : "Something went wrong" }),
        h("p", { class: "error", role: "alert", "data-error-status": String(e.status || ""), text: `${e.status || ""} ${e.message}` }));
    }
  }
  function startApp() {
    $("signin").hidden = true;
    $("app").hidden = false;
    const me = S.me;
    $("who").textContent = `${me.account_name || me.account_id} · ${me.key_name || ""} …${me.key_last4 || ""} (${me.role})`;
    for (const el of document.querySelectorAll("[data-admin]")) el.hidden = me.role !== "admin";
    render();
  }

  // ---- shared controls: range (Runtype presets + custom) and time zone ----
  const PERIODS = [["today", "Today"], ["yesterday", "Yesterday"], ["last_7_days", "Last 7 days"],
    ["last_30_days", "Last 30 days"], ["current_month", "This month"], ["last_month", "Last month"],
    ["current_year", "This year"], ["custom", "Custom range"]];
  function rangeControls(state, onChange) {
    const period = select(PERIODS, state.period, { name: "period" });
    const start = h("input", { type: "date", name: "startDate", value: state.startDate || "" });
    const end = h("input", { type: "date", name: "endDate", value: state.endDate || "" });
    const tz = h("input", { type: "text", name: "timezone", value: state.tz, spellcheck: "false" });
    const startF = field("From", start), endF = field("To", end);
    const sync = () => { startF.hidden = endF.hidden = period.value !== "custom"; };
    sync();
    period.addEventListener("change", () => { state.period = period.value; sync(); if (period.value !== "custom" || (start.value && end.value)) onChange(); });
    for (const [el, k] of [[start, "startDate"], [end, "endDate"]]) el.addEventListener("change", () => { state[k] = el.value; if (start.value && end.value) onChange(); });
    tz.addEventListener("change", () => { state.tz = tz.value.trim() || "UTC"; onChange(); });
    return [field("Period", period), startF, endF, field("Time zone", tz)];
  }
  function rangeParams(state) {
    const p = { timezone: state.tz };
    if (state.period === "custom" && state.startDate && state.endDate) { p.startDate = state.startDate; p.endDate = state.endDate; }
    else if (state.period !== "custom") p.period = state.period;
    return p;
  }
  function csvLink(params, label) {
    const href = `/v1/usage/export${q(Object.assign({ format: "csv" }, params))}`;
    return h("a", { href, download: "usage.csv", class: "button-link", id: "download-csv", text: label || "Download CSV" });
  }

  // ---- Overview ----
  function stat(key, label, value, sub) {
    return h("div", { class: "card stat" }, h("div", { class: "label", text: label }),
      h("div", { class: "value", "data-stat": key, text: value }), sub ? h("div", { class: "sub", text: sub }) : null);
  }
  PAGES.overview = async (main) => {
    const load = async () => {
      const [u, c, live] = await Promise.all([
        api(`/v1/usage${q({ timezone: S.tz })}`),
        api(`/v1/credits${q({})}`),
        api(`/dashboard/api/live${q({})}`),
      ]);
      // Newest first: the first row is today (the period's days up to today).
      const todayRow = (u.daily_breakdown || [])[0];
      const d = u.daily, m = u.monthly;
      const errs = (w) => pct(w.request_count - w.success_count, w.request_count);
      const cards = h("div", {},
        h("h2", {}, "Today ", h("span", { class: "live", "aria-live": "off", text: `live · ${u.timezone}` })),
        h("div", { class: "stats" },
          stat("today-requests", "Requests", int(d.request_count)),
          stat("today-tokens", "Tokens", int(d.total_tokens), `${int(d.prompt_tokens)} in · ${int(d.completion_tokens)} out`),
          stat("today-cost", "Spent", usdMicro(d.cost_micro)),
          stat("today-credits", "Credits used", int(todayRow ? todayRow.credits : 0)),
          stat("today-error-rate", "Error rate", errs(d), `${int(d.request_count - d.success_count)} not successful`)),
        h("h2", { text: "This month" }),
        h("div", { class: "stats" },
          stat("month-requests", "Requests", int(m.request_count)),
          stat("month-tokens", "Tokens", int(m.total_tokens), `${int(m.prompt_tokens)} in · ${int(m.completion_tokens)} out`),
          stat("month-cost", "Spent", usdMicro(m.cost_micro)),
          stat("month-credits", "Credits used", int(u.total_credits_used)),
          stat("month-error-rate", "Error rate", errs(m))),
        h("h2", { text: "Credits" }),
        h("div", { class: "stats" },
          stat("balance", "Balance (credits)", int(c.balance_credits), usdMicro(c.balance_micro)),
          stat("available", "Available (credits)", int(c.available_credits)),
          stat("held", "Held by requests in flight", usdMicro(c.uncollected_micro)),
          stat("in-flight", "Requests in flight", int(live.in_flight))));
      main.replaceChildren(h("h1", { text: "Overview" }), cards);
    };
    await load();
    poll(load, main);
  };

  // ---- Usage over time ----
  const usageState = { metric: "cost", granularity: "day", period: "last_7_days", group: "model", tz: null, user: "", tag: "" };
  const PALETTE = ["#3b82f6", "#f59e0b", "#10b981", "#ef4444", "#8b5cf6", "#06b6d4", "#ec4899", "#84cc16", "#f97316", "#64748b"];
  const metricValue = (p, metric) => (metric === "cost" ? p.cost_nanos : metric === "tokens" ? p.tokens : p.requests);
  const metricText = (v, metric) => (metric === "cost" ? usdNanos(v) : int(v));
  PAGES.usage = async (main) => {
    usageState.tz = usageState.tz || S.tz;
    const st = usageState;
    // Focusable: the arrow keys move the tooltip from bucket to bucket.
    const chartBox = h("div", { id: "chart", role: "img", tabindex: "0", "aria-label": "Usage chart" });
    const tip = h("div", { class: "chart-tip", hidden: true, id: "chart-tip", "aria-hidden": "true" });
    chartBox.addEventListener("keydown", (ev) => {
      const u = S.chart;
      if (!u || !["ArrowLeft", "ArrowRight", "Home", "End"].includes(ev.key)) return;
      ev.preventDefault();
      const n = u.data[0].length;
      const cur = u.cursor.idx ?? (ev.key === "ArrowLeft" ? n : -1);
      const i = ev.key === "Home" ? 0 : ev.key === "End" ? n - 1 : Math.min(n - 1, Math.max(0, cur + (ev.key === "ArrowLeft" ? -1 : 1)));
      u.setCursor({ left: u.valToPos(i, "x"), top: 10 });
    });
    const legend = h("div", { class: "legend", id: "chart-legend" });
    const summary = h("p", { class: "muted", id: "chart-summary" });
    const dl = h("span", {});
    const metric = select([["cost", "Cost (USD)"], ["tokens", "Tokens"], ["requests", "Requests"]], st.metric, { name: "metric" });
    const gran = select([["hour", "Hour"], ["day", "Day"], ["week", "Week"], ["month", "Month"]], st.granularity, { name: "granularity" });
    const group = select([["model", "Model"], ["key", "Key"], ["provider", "Provider"], ["user", "End user"]], st.group, { name: "group" });
    // Who spent it: one end user (x-tollgate-user, `user`, `metadata.user_id`) or one tag.
    const userIn = h("input", { name: "user", type: "search", placeholder: "any", value: st.user, spellcheck: "false", autocomplete: "off" });
    const tagIn = h("input", { name: "tag", type: "search", placeholder: "key=value", value: st.tag, spellcheck: "false", autocomplete: "off" });
    // Controls changed in quick succession: only the newest answer is drawn.
    let seq = 0;
    const draw = async () => {
      const mine = ++seq;
      const who = { user: st.user, tag: st.tag };
      const data = await api(`/dashboard/api/series${q(Object.assign(rangeParams(st), { granularity: st.granularity, group: st.group }, who))}`);
      if (mine !== seq) return;
      dl.replaceChildren(csvLink(Object.assign({ start: data.meta.startDate, end: data.meta.endDate, timezone: data.meta.timezone }, who)));
      plot(chartBox, tip, legend, data, st.metric);
      chartBox.dataset.who = `${who.user}|${who.tag}`;
      const total = data.groups.reduce((a, g) => a + g.points.reduce((b, p) => b + metricValue(p, st.metric), 0), 0);
      summary.className = "muted";
      summary.textContent = `${data.meta.startDate} to ${data.meta.endDate} (${data.meta.timezone}) · ${data.buckets.length} ${data.meta.granularity} buckets · total ${metricText(total, st.metric)}`;
    };
    const redraw = () => draw().catch((e) => { summary.textContent = e.message; summary.className = "error"; });
    metric.addEventListener("change", () => { st.metric = metric.value; redraw(); });
    gran.addEventListener("change", () => { st.granularity = gran.value; redraw(); });
    group.addEventListener("change", () => { st.group = group.value; redraw(); });
    userIn.addEventListener("change", () => { st.user = userIn.value.trim(); redraw(); });
    tagIn.addEventListener("change", () => { st.tag = tagIn.value.trim(); redraw(); });
    main.replaceChildren(h("h1", { text: "Usage over time" }),
      h("div", { class: "controls" }, field("Metric", metric), field("Granularity", gran), ...rangeControls(st, redraw), field("Stack by", group),
        field("End user", userIn), field("Tag", tagIn), h("div", {}, dl)),
      h("div", { class: "card chart-card" }, chartBox, tip, legend), summary);
    await draw();
  };
  function plot(box, tip, legend, data, metric) {
    if (S.chart) { S.chart.destroy(); S.chart = null; }
    // x is the bucket's index: bars sit on whole numbers, labelled with the bucket's date.
    const xs = data.buckets.map((_, i) => i);
    const gran = data.meta.granularity;
    const short = (label) => (gran === "hour" ? label.slice(11, 16) : gran === "month" ? label.slice(0, 7) : label.slice(5, 10));
    const groups = data.groups.slice(0, 9);
    if (data.groups.length > 9) {
      // The rest as one "other" group, so the stack stays readable.
      const rest = data.groups.slice(9);
      groups.push({ id: "other", label: `${rest.length} others`, points: data.buckets.map((_, i) => rest.reduce((a, g) => ({
        requests: a.requests + g.points[i].requests, tokens: a.tokens + g.points[i].tokens, cost_nanos: a.cost_nanos + g.points[i].cost_nanos }), { requests: 0, tokens: 0, cost_nanos: 0 })) });
    }
    const raw = groups.map((g) => g.points.map((p) => metricValue(p, metric)));
    // Stacked: each series drawn at the sum of itself and those below it.
    const stacked = raw.map((_, gi) => xs.map((_, i) => raw.slice(gi).reduce((a, r) => a + r[i], 0)));
    const scale = metric === "cost" ? 1e-9 : 1;
    const css = getComputedStyle(document.documentElement);
    const axis = { stroke: css.getPropertyValue("--muted").trim(), grid: { stroke: css.getPropertyValue("--line").trim(), width: 1 }, ticks: { show: false } };
    const width = Math.max(280, box.clientWidth || 600);
    const fmtDate = (i) => data.buckets[i]?.date ?? "";
    const opts = {
      width, height: 320,
      legend: { show: false },
      cursor: { points: { show: false } },
      scales: { x: { time: false, range: () => [-0.5, xs.length - 0.5] }, y: { range: (u, min, max) => [0, max > 0 ? max * 1.08 : 1] } },
      axes: [Object.assign({}, axis, {
        splits: () => { const step = Math.max(1, Math.ceil(xs.length / Math.max(2, Math.floor(width / 70)))); return xs.filter((i) => i % step === 0); },
        values: (u, ticks) => ticks.map((t) => (data.buckets[t] ? short(data.buckets[t].date) : "")),
      }),
        Object.assign({}, axis, { size: 70, values: (u, ticks) => ticks.map((t) => (metric === "cost" ? `$${+(t).toPrecision(3)}` : intFmt.format(t))) })],
      series: [{}].concat(groups.map((g, gi) => ({
        label: g.label, stroke: PALETTE[gi % PALETTE.length], fill: PALETTE[gi % PALETTE.length] + "cc", width: 1,
        paths: uPlot.paths.bars({ size: [0.7, 48] }), points: { show: false },
      }))),
      hooks: {
        setCursor: [(u) => {
          const i = u.cursor.idx;
          if (i === null || i === undefined || u.cursor.left < 0) { tip.hidden = true; return; }
          const lines = groups.map((g, gi) => h("div", {}, h("span", {}, h("span", { class: "swatch", "data-c": gi }), g.label), h("span", { class: "num", text: metricText(raw[gi][i], metric) })));
          const total = raw.reduce((a, r) => a + r[i], 0);
          tip.replaceChildren(h("div", { class: "t", text: fmtDate(i) }), ...lines, h("div", {}, h("strong", { text: "Total" }), h("strong", { class: "num", "data-total": "", text: metricText(total, metric) })));
          for (const sw of tip.querySelectorAll(".swatch")) sw.style.background = PALETTE[+sw.dataset.c % PALETTE.length];
          tip.hidden = false;
          const left = Math.min(u.cursor.left + 60, u.over.clientWidth - 150);
          tip.style.left = `${Math.max(0, left)}px`;
          tip.style.top = "20px";
        }],
      },
    };
    const series = [xs].concat(stacked.map((s) => s.map((v) => v * scale)));
    box.replaceChildren();
    box.dataset.points = String(xs.length);
    box.dataset.series = String(groups.length);
    // What is drawn, for whoever waits for a redraw (tests, assistive tech reading the label).
    box.dataset.drawn = `${metric}/${gran}/${data.meta.group}/${data.meta.startDate}/${data.meta.endDate}`;
    box.setAttribute("aria-label", `Usage chart: ${metric} per ${gran}, stacked by ${data.meta.group}, ${data.meta.startDate} to ${data.meta.endDate}`);
    S.chart = new uPlot(opts, series, box);
    legend.replaceChildren(...groups.map((g, gi) => {
      const sw = h("span", { class: "swatch" });
      sw.style.background = PALETTE[gi % PALETTE.length];
      return h("span", {}, sw, `${g.label}: ${metricText(raw[gi].reduce((a, b) => a + b, 0), metric)}`);
    }));
  }

  // ---- Models ----
  const modelsState = { period: "current_month", tz: null };
  PAGES.models = async (main) => {
    modelsState.tz = modelsState.tz || S.tz;
    const st = modelsState;
    const out = h("div", {});
    let seq = 0;
    const load = async () => {
      const mine = ++seq;
      const data = await api(`/dashboard/api/series${q(Object.assign(rangeParams(st), { granularity: "month", group: "model" }))}`);
      if (mine !== seq) return;
      const totalCost = data.totals.cost_nanos;
      const rows = data.groups.map((g) => h("tr", { "data-model": g.id },
        td(g.id, "mono"), td(g.owned_by || "—"), td(int(g.totals.requests), "num"), td(int(g.totals.input_tokens), "num"),
        td(int(g.totals.output_tokens), "num"), td(int(g.totals.cached_tokens), "num"), td(usdNumber(g.totals.cost), "num", { "data-cost": "" }),
        td(pct(g.totals.cost_nanos, totalCost), "num"), td(usdNumber(g.totals.avg_cost_per_request), "num")));
      out.replaceChildren(h("p", { class: "muted", text: `${data.meta.startDate} to ${data.meta.endDate} (${data.meta.timezone}); cost is the model cost in USD, as /v1/model-usage reports it.` }),
        table(["Model", "Owner", ["Requests", "num"], ["Input tokens", "num"], ["Output tokens", "num"], ["Cached tokens", "num"], ["Cost", "num"], ["Share of spend", "num"], ["Avg cost / request", "num"]], rows, { id: "models-table" }));
    };
    main.replaceChildren(h("h1", { text: "Models" }), h("div", { class: "controls" }, ...rangeControls(st, () => load().catch(showErr(out)))), out);
    await load();
  };
  const showErr = (el) => (e) => el.replaceChildren(h("p", { class: "error", role: "alert", text: e.message }));

  // ---- Keys ----
  PAGES.keys = async (main) => {
    const out = h("div", {});
    const created = h("div", { role: "status" });
    const load = async () => {
      const data = await api(`/dashboard/api/keys${q({})}`);
      const rows = data.data.map((k) => {
        const key = k.key, l = key.limits || {};
        const spend = l.spend_limit_nanos ? h("span", {}, h("progress", { max: l.spend_limit_nanos, value: Math.min(k.period_spend_nanos || 0, l.spend_limit_nanos), "aria-label": `Spend of ${key.name} against its limit` }),
          ` ${usdNanos(k.period_spend_nanos || 0)} / ${usdNanos(l.spend_limit_nanos)} ${l.spend_period || "total"}`) : "—";
        const limitText = (used, lim) => (lim ? `${int(used)} / ${int(lim)}` : "—");
        const actions = isAdmin() && !key.revoked_at_ms ? h("button", { type: "button", class: "danger", "aria-label": `Revoke ${key.name}`, text: "Revoke", onclick: async () => {
          if (!confirm(`Revoke key ${key.name} (…${key.last4})? Requests with it will be refused.`)) return;
          try { await api(`/admin/keys/${encodeURIComponent(key.id)}`, { method: "DELETE" }); await load(); } catch (e) { created.replaceChildren(h("p", { class: "error", text: e.message })); }
        } }) : null;
        return h("tr", { "data-key-id": key.id },
          td(key.name), td(`${key.prefix || ""}…${key.last4}`, "mono"), td(key.role), td(chip(key.revoked_at_ms ? "revoked" : "active")),
          td(int(k.month.requests), "num", { "data-requests": "" }), td(int(k.month.total_tokens), "num"), td(usdNanos(k.month.cost_nanos), "num"),
          h("td", {}, spend), td(limitText(k.minute_requests, l.rpm_limit), "num"), td(limitText(k.minute_tokens, l.tpm_limit), "num"),
          td(when(k.last_used_ms), "", { "data-last-used": k.last_used_ms || "" }), h("td", {}, actions));
      });
      out.replaceChildren(table(["Name", "Key", "Role", "Status", ["Requests (month)", "num"], ["Tokens (month)", "num"], ["Cost (month)", "num"], "Spend limit", ["This minute / rpm", "num"], ["This minute / tpm", "num"], "Last used", ""], rows, { id: "keys-table" }));
    };
    const parts = [h("h1", { text: "Keys" }), h("p", { class: "muted", text: "Usage this UTC month; spend in each key's limit period; requests and tokens in the current UTC minute against rpm / tpm limits." })];
    if (isAdmin()) {
      const name = h("input", { type: "text", name: "name", required: true });
      const role = select([["user", "user"], ["admin", "admin"]], "user", { name: "role" });
      const form = h("form", { class: "inline", "aria-label": "New key", onsubmit: async (ev) => {
        ev.preventDefault();
        try {
          const k = await api(`/admin/accounts/${encodeURIComponent(viewedAccount())}/keys`, { method: "POST", body: { name: name.value.trim() || "default", role: role.value } });
          name.value = "";
          created.replaceChildren(h("div", { class: "secret" }, h("strong", { text: "New key (shown once): " }), h("code", { "data-new-key": "", text: k.key })));
          await load();
        } catch (e) { created.replaceChildren(h("p", { class: "error", text: e.message })); }
      } }, field("Key name", name), field("Role", role), h("button", { type: "submit", class: "primary", text: "Create key" }));
      parts.push(form);
    }
    main.replaceChildren(...parts, created, out);
    await load();
  };

  // ---- Requests ----
  const reqState = { model: "", key_id: "", status: "", cursor: null, stack: [] };
  PAGES.requests = async (main) => {
    const st = reqState;
    const out = h("div", {});
    const pager = h("div", { class: "pager" });
    const dl = h("span", {});
    const keys = await api(`/dashboard/api/keys${q({})}`).catch(() => ({ data: [] }));
    const models = await api(`/dashboard/api/series${q({ period: "current_year", granularity: "month", group: "model", timezone: "UTC" })}`).catch(() => ({ groups: [] }));
    const model = select([["", "All models"]].concat(models.groups.map((g) => [g.id, g.id])), st.model, { name: "model" });
    const key = select([["", "All keys"]].concat(keys.data.map((k) => [k.key.id, `${k.key.name} …${k.key.last4}`])), st.key_id, { name: "key" });
    const status = select([["", "All statuses"], ["success", "success"], ["error", "error"], ["cancelled", "cancelled"], ["interrupted", "interrupted"], ["refused", "refused"]], st.status, { name: "status" });
    let seq = 0;
    const load = async () => {
      const mine = ++seq;
      const data = await api(`/dashboard/api/requests${q({ model: st.model, key_id: st.key_id, status: st.status, cursor: st.cursor, limit: 25 })}`);
      if (mine !== seq) return;
      dl.replaceChildren(csvLink({ model: st.model, key_id: st.key_id }));
      const rows = data.data.map((r) => h("tr", { "data-request-id": r.request_id },
        td(when(r.created_at_ms)), td(r.key_name || r.key_id), td(r.model_requested, "mono"), td(chip(r.status)), td(r.provenance),
        td(`${int(r.input_tokens)} / ${int(r.output_tokens)}`, "num"), td(`$${r.charged_usd}`, "num"), td(`${int(r.latency_ms)} ms`, "num"),
        td(r.ttft_ms === null ? "—" : `${int(r.ttft_ms)} ms`, "num")));
      out.replaceChildren(table(["Time", "Key", "Model", "Status", "Provenance", ["Tokens in / out", "num"], ["Charged", "num"], ["Latency", "num"], ["First token", "num"]], rows, { id: "requests-table" }));
      const newer = h("button", { type: "button", text: "Newer", disabled: !st.stack.length, onclick: () => { st.cursor = st.stack.pop() || null; load().catch(showErr(out)); } });
      const older = h("button", { type: "button", text: "Older", disabled: !data.next_cursor, onclick: () => { st.stack.push(st.cursor); st.cursor = data.next_cursor; load().catch(showErr(out)); } });
      pager.replaceChildren(newer, older, h("span", { class: "muted", text: `${data.data.length} shown` }));
    };
    const reset = () => { st.cursor = null; st.stack = []; load().catch(showErr(out)); };
    model.addEventListener("change", () => { st.model = model.value; reset(); });
    key.addEventListener("change", () => { st.key_id = key.value; reset(); });
    status.addEventListener("change", () => { st.status = status.value; reset(); });
    main.replaceChildren(h("h1", { text: "Requests" }), h("div", { class: "controls" }, field("Model", model), field("Key", key), field("Status", status), h("div", {}, dl)), out, pager);
    await load();
  };

  // ---- Credits ----
  PAGES.credits = async (main) => {
    const out = h("div", {});
    const msg = h("div", { role: "status" });
    const load = async () => {
      const c = await api(`/dashboard/api/credits${q({})}`);
      const rows = c.entries.map((e) => h("tr", {}, td(when(e.created_at_ms)), td(chip(e.kind)), td(int(e.amount_credits), "num"), td(usdNanos(e.amount_nanos), "num"), td(e.note || "—")));
      out.replaceChildren(h("div", { class: "stats" },
        stat("credits-balance", "Balance (credits)", int(c.balance_credits), usdNanos(c.balance_nanos)),
        stat("credits-available", "Available (credits)", int(c.available_credits)),
        stat("credits-held", "Held", usdNanos(c.held_nanos))),
        h("h2", { text: "Grants and refunds" }), table(["Date", "Kind", ["Credits", "num"], ["USD", "num"], "Note"], rows, { id: "credits-table" }));
    };
    const parts = [h("h1", { text: "Credits" })];
    if (isAdmin()) {
      const amount = h("input", { type: "text", name: "amount_usd", inputmode: "decimal", placeholder: "10.00", required: true });
      const kind = select([["grant", "grant"], ["refund", "refund"]], "grant", { name: "kind" });
      const note = h("input", { type: "text", name: "note" });
      parts.push(h("form", { class: "inline", "aria-label": "Grant credits", onsubmit: async (ev) => {
        ev.preventDefault();
        try {
          const idem = `dash-${Date.now()}-${Math.random().toString(36).slice(2)}`;
          await api(`/admin/accounts/${encodeURIComponent(viewedAccount())}/credits`, { method: "POST", headers: { "idempotency-key": idem }, body: { amount_usd: amount.value.trim(), kind: kind.value, note: note.value.trim() || undefined } });
          amount.value = ""; note.value = "";
          msg.replaceChildren(h("p", { class: "muted", text: "Credited." }));
          await load();
        } catch (e) { msg.replaceChildren(h("p", { class: "error", text: e.message })); }
      } }, field("Amount (USD)", amount), field("Kind", kind), field("Note", note), h("button", { type: "submit", class: "primary", text: "Add credits" })));
    }
    main.replaceChildren(...parts, msg, out);
    await load();
  };

  // ---- Insights: where the money leaks (GET /v1/usage/insights) ----
  PAGES.insights = async (main) => {
    const state = S.insights || (S.insights = { period: "last_30_days", tz: S.tz, cap: "" });
    const out = h("div", {});
    const cap = h("input", { type: "text", name: "history_cap", inputmode: "numeric", placeholder: "8000", value: state.cap });
    const load = async () => {
      const r = rangeParams(state);
      const p = { timezone: r.timezone, period: r.period, start: r.startDate, end: r.endDate, history_cap: state.cap, limit: 10 };
      const i = await api(`/v1/usage/insights${q(p)}`);
      const money = (m) => usdNanos(m.nanos);
      const ids = (recs) => (recs.total ? `${int(recs.total)} requests: ${recs.request_ids.join(", ")}${recs.next_offset !== null ? ", …" : ""}` : "none");
      const section = (key, title, summary, body, recs) => h("section", { class: "card insight", "data-insight": key },
        h("h2", { text: title }), h("p", { class: "summary", "data-summary": key, text: summary }), body || null,
        h("p", { class: "muted ids", text: `Records: ${ids(recs)}` }));
      const d = i.duplicates, rl = i.retry_loops, un = i.unused_responses, g = i.conversation_growth, mm = i.model_mix, ca = i.cache;
      out.replaceChildren(...[
        i.fingerprints === "off" ? h("p", { class: "error", role: "alert", text: "Request fingerprints are off (insights.fingerprints, or no security.encryption_key on replicas): duplicates, retry loops and conversations cannot be found." }) : null,
        h("div", { class: "stats" },
          stat("insights-waste", "Duplicates + failed retries + abandoned", usdNanos(d.wasted_cost.nanos + rl.failed_cost.nanos + un.cost.nanos)),
          stat("insights-mix", "Cheaper siblings would save", money(mm.potential_savings)),
          stat("insights-cap", `History capped at ${int(g.history_cap_tokens)} tokens would save`, money(g.savings_at_cap)),
          stat("insights-cache", "Prompt cache saved", money(ca.saved))),
        section("duplicates", "Duplicate requests", `${int(d.count)} answered again within ${int(d.window_secs)} s: ${money(d.wasted_cost)} wasted (${int(d.wasted_input_tokens)} input, ${int(d.wasted_output_tokens)} output tokens)`,
          table(["Fingerprint", "Model", "Keys", ["Requests", "num"], ["Duplicates", "num"], ["Wasted", "num"]],
            d.top.map((t) => h("tr", {}, td(t.fingerprint, "mono"), td(t.model), td(t.key_ids.join(", ")), td(int(t.requests), "num"), td(int(t.duplicates), "num"), td(money(t.wasted_cost), "num"))), { id: "insights-duplicates" }), d.records),
        section("retry_loops", "Retry loops", `${int(rl.count)} loops, ${int(rl.failed_attempts)} failed attempts costing ${money(rl.failed_cost)} (${int(rl.resolved)} ended in an answer)`,
          table(["Key", ["Loops", "num"], ["Failed attempts", "num"], ["Cost", "num"]],
            rl.by_key.map((k) => h("tr", {}, td(k.key_id), td(int(k.count), "num"), td(int(k.requests), "num"), td(money(k.cost), "num"))), { id: "insights-retries" }), rl.records),
        section("unused_responses", "Abandoned responses", `${int(un.count)} responses the client left: ${money(un.cost)} (${int(un.output_tokens)} output tokens never read)`, null, un.records),
        section("conversation_growth", "Growing conversations", `${int(g.count)} conversations resent their whole history over ${int(g.turns)} turns: ${money(g.cost)}; capping history at ${int(g.history_cap_tokens)} tokens would have saved ${money(g.savings_at_cap)}`,
          table(["Conversation", "Model", ["Turns", "num"], ["First input", "num"], ["Last input", "num"], ["Cost", "num"], ["Saved at cap", "num"]],
            g.top.map((c) => h("tr", {}, td(c.conversation, "mono"), td(c.model), td(int(c.turns), "num"), td(int(c.first_input_tokens), "num"), td(int(c.last_input_tokens), "num"), td(money(c.cost), "num"), td(money(c.savings_at_cap), "num"))), { id: "insights-growth" }), g.records),
        section("model_mix", "Model mix", `${money(mm.total_cost)} in total; the configured cheaper siblings would have cost ${money(mm.potential_savings)} less`,
          table(["Model", ["Requests", "num"], ["Cost", "num"], ["Share", "num"], "Cheaper sibling", ["On the sibling", "num"], ["Savings", "num"]],
            mm.models.map((m) => h("tr", {}, td(m.model), td(int(m.requests), "num"), td(money(m.cost), "num"), td(`${(m.share_of_cost * 100).toFixed(1)}%`, "num"), td(m.sibling || "—"), td(m.sibling_cost ? money(m.sibling_cost) : "—", "num"), td(m.savings ? money(m.savings) : "—", "num"))), { id: "insights-mix-table" }), mm.records),
        section("cache", "Prompt cache", `${int(ca.cached_tokens)} of ${int(ca.input_tokens)} input tokens read from the cache, saving ${money(ca.saved)}; ${int(ca.uncached_repeated_prefix_requests)} of ${int(ca.repeated_prefix_requests)} repeated conversation openings (${(ca.uncached_repeated_share * 100).toFixed(1)}%) were not cached`, null, ca.records)].filter(Boolean));
    };
    const reload = () => load().catch((e) => out.replaceChildren(h("p", { class: "error", role: "alert", text: e.message })));
    cap.addEventListener("change", () => { state.cap = cap.value.trim(); reload(); });
    main.replaceChildren(h("h1", { text: "Insights" }),
      h("p", { class: "muted", text: "Where the money leaks: duplicate requests, retry loops, abandoned responses, conversations resending their history, expensive models with cheaper siblings, and the prompt cache. Prompts are never stored: requests are compared by keyed fingerprints." }),
      h("div", { class: "controls" }, ...rangeControls(state, reload), field("History cap (tokens)", cap)), out);
    await load();
  };

  // ---- Webhooks ----
  const EVENTS = ["usage.threshold", "credits.low", "credits.depleted", "credits.projected_exhaustion", "rate_limit.exceeded", "credits.granted", "api_key.created", "api_key.revoked"];
  PAGES.webhooks = async (main) => {
    const out = h("div", {});
    const msg = h("div", { role: "status" });
    const detail = h("div", {});
    const act = (fn) => async () => { try { await fn(); await load(); } catch (e) { msg.replaceChildren(h("p", { class: "error", text: e.message })); } };
    const showDeliveries = async (w) => {
      const d = await api(`/v1/webhooks/${encodeURIComponent(w.id)}/deliveries${q({ limit: 50 })}`);
      const rows = d.data.map((x) => h("tr", {}, td(new Date(x.attempted_at).toLocaleString(undefined, { timeZone: S.tz })), td(x.event_type), td(chip(x.state)),
        td(String(x.attempt), "num"), td(x.status_code ? String(x.status_code) : "—", "num"), td(x.error || "—"), td(x.next_retry_at ? new Date(x.next_retry_at).toLocaleString(undefined, { timeZone: S.tz }) : "—")));
      detail.replaceChildren(h("h2", { text: `Deliveries to ${w.url}` }), table(["Attempted", "Event", "State", ["Attempt", "num"], ["HTTP status", "num"], "Error", "Next retry"], rows, { id: "deliveries-table" }));
    };
    const load = async () => {
      const list = await api(`/v1/webhooks${q({})}`);
      const rows = list.data.map((w) => h("tr", { "data-webhook-id": w.id },
        td(w.url, "mono"), td((w.events || []).join(", ")), td(chip(w.active ? "active" : "disabled")), td(w.failing_since ? new Date(w.failing_since).toLocaleString(undefined, { timeZone: S.tz }) : (w.disabled_reason || "—")),
        h("td", {}, h("div", { class: "row-actions" },
          h("button", { type: "button", text: "Test", "aria-label": `Send a test event to ${w.url}`, onclick: act(async () => { await api(`/v1/webhooks/${encodeURIComponent(w.id)}/test${q({})}`, { method: "POST", body: {} }); msg.replaceChildren(h("p", { class: "muted", text: "Test event queued." })); }) }),
          h("button", { type: "button", text: w.active ? "Disable" : "Enable", onclick: act(() => api(`/v1/webhooks/${encodeURIComponent(w.id)}${q({})}`, { method: "PATCH", body: { active: !w.active } })) }),
          h("button", { type: "button", text: "Deliveries", onclick: () => showDeliveries(w).catch(showErr(detail)) }),
          h("button", { type: "button", class: "danger", text: "Delete", "aria-label": `Delete webhook ${w.url}`, onclick: act(async () => { if (confirm(`Delete the webhook to ${w.url}?`)) await api(`/v1/webhooks/${encodeURIComponent(w.id)}${q({})}`, { method: "DELETE" }); }) })))));
      out.replaceChildren(table(["URL", "Events", "State", "Failing since", ""], rows, { id: "webhooks-table" }));
    };
    const url = h("input", { type: "url", name: "url", placeholder: "https://example.com/hooks/tollgate", required: true });
    const boxes = EVENTS.map((e) => { const cb = h("input", { type: "checkbox", name: "events", value: e, checked: e === "credits.low" }); return h("label", {}, cb, e); });
    const form = h("form", { class: "inline", "aria-label": "New webhook", onsubmit: async (ev) => {
      ev.preventDefault();
      const events = boxes.map((l) => l.querySelector("input")).filter((c) => c.checked).map((c) => c.value);
      try {
        const w = await api(`/v1/webhooks${q({})}`, { method: "POST", body: { url: url.value.trim(), events } });
        url.value = "";
        msg.replaceChildren(h("div", { class: "secret" }, h("strong", { text: "Signing secret (shown once): " }), h("code", { "data-webhook-secret": "", text: w.secret || "" })));
        await load();
      } catch (e) { msg.replaceChildren(h("p", { class: "error", role: "alert", text: e.message })); }
    } }, field("Endpoint URL", url), h("fieldset", {}, h("legend", { text: "Events" }), boxes), h("button", { type: "submit", class: "primary", text: "Create webhook" }));
    main.replaceChildren(h("h1", { text: "Webhooks" }), form, msg, out, detail);
    await load();
  };

  // ---- All accounts (admin) ----
  PAGES.accounts = async (main) => {
    if (!isAdmin()) throw new ApiError(403, "this page needs an admin key");
    const load = async () => {
      const a = await api(`/dashboard/api/accounts?timezone=${encodeURIComponent(S.tz)}`);
      const rows = a.data.map((x) => h("tr", { "data-account-id": x.id },
        td(x.name), td(x.id, "mono"), td(chip(x.disabled ? "disabled" : "active")), td(int(x.month.requests), "num"), td(int(x.month.total_tokens), "num"),
        td(usdMicro(x.cost_micro), "num"), td(int(x.balance_credits), "num"), td(int(x.in_flight), "num"),
        h("td", {}, h("a", { href: `#/overview?account=${encodeURIComponent(x.id)}`, text: "Open" }))));
      main.replaceChildren(h("h1", { text: "All accounts" }), h("p", { class: "muted", text: `This month from ${a.period_start}.` }),
        table(["Name", "Account", "State", ["Requests", "num"], ["Tokens", "num"], ["Spent", "num"], ["Balance (credits)", "num"], ["In flight", "num"], ""], rows, { id: "accounts-table" }));
    };
    await load();
    poll(load, main);
  };

  // ---- theme ----
  function applyTheme(t) {
    if (t) document.documentElement.dataset.theme = t; else delete document.documentElement.dataset.theme;
    const dark = t ? t === "dark" : matchMedia("(prefers-color-scheme: dark)").matches;
    const b = $("theme-toggle");
    b.setAttribute("aria-pressed", String(dark));
    b.textContent = dark ? "Light" : "Dark";
    b.setAttribute("aria-label", dark ? "Switch to light theme" : "Switch to dark theme");
    if (S.chart && route().page === "usage") render();
  }

  // The chart follows the window's width (a phone turned, a window resized).
  window.addEventListener("resize", () => {
    const box = $("chart");
    if (S.chart && box) S.chart.setSize({ width: Math.max(280, box.clientWidth), height: 320 });
  });

  // The system theme may change while the page is open (and does, under test emulation).
  matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => {
    let t = null;
    try { t = localStorage.getItem("tollgate-theme"); } catch (_) { t = null; }
    applyTheme(t);
  });

  // ---- start ----
  document.addEventListener("DOMContentLoaded", async () => {
    $("signin-form").addEventListener("submit", signIn);
    $("signout").addEventListener("click", signOut);
    // Only the theme preference is kept in the browser; never a key or a session.
    let theme = null;
    try { theme = localStorage.getItem("tollgate-theme"); } catch (_) { theme = null; }
    applyTheme(theme);
    $("theme-toggle").addEventListener("click", () => {
      const dark = $("theme-toggle").getAttribute("aria-pressed") === "true";
      const t = dark ? "light" : "dark";
      try { localStorage.setItem("tollgate-theme", t); } catch (_) { /* private mode */ }
      applyTheme(t);
    });
    window.addEventListener("hashchange", () => { render(); $("main").focus(); });
    try {
      if (await loadSession()) startApp(); else showSignIn("");
    } catch (e) {
      showSignIn(e.message);
    }
  });
})();
