/* meterbridge usage dashboard (vanilla JS, no build step).
 *
 * Sign-in: the API key is exchanged for a short-lived stream token (POST /v1/stream-tokens).
 * The key is kept in this script's memory only (never localStorage or sessionStorage): it is
 * needed to read /v1/usage and to get a fresh stream token when a stream reconnects after the
 * token expired. Reloading the page, or "Sign out", forgets it.
 *
 * The stream is read with fetch() rather than EventSource: the SSE `event:` field is the
 * CloudEvent type (tenant-chosen, so unknown in advance), which EventSource only delivers to
 * listeners registered by name; fetch also tells a 401 from a network error, and lets us send
 * Last-Event-ID when we reconnect with a new token.
 */
(function () {
  "use strict";

  const API_BASE = (document.querySelector('meta[name="meterbridge-api-base"]') || {}).content || "";
  const MAX_EVENTS = 25;
  const CHART_SECONDS = 60;
  const FAILURES_BEFORE_FALLBACK = 3;
  const FALLBACK_POLL_MS = 1000;
  const FALLBACK_STREAM_RETRY_MS = 10000;
  const STALL_MS = 45000; // three missed 15 s heartbeats: the connection is dead
  const USAGE_REFRESH_MS = 250; // debounce of usage re-reads after usage events
  const USAGE_RESYNC_MS = 30000; // a periodic re-read while live (plan changes, other writers)

  const $ = (id) => document.getElementById(id);
  const el = {
    conn: $("connection"), connText: $("connection-text"), signOut: $("sign-out"),
    signin: $("signin"), form: $("signin-form"), key: $("api-key"), error: $("signin-error"),
    button: $("signin-button"), dashboard: $("dashboard"), title: $("dashboard-title"),
    alerts: $("alerts"), planName: $("plan-name"), planDetail: $("plan-detail"),
    period: $("period"), periodDetail: $("period-detail"), charge: $("charge"),
    chargeDetail: $("charge-detail"), rateNow: $("rate-now"), rateMinute: $("rate-minute"),
    meters: $("meters"), usageUpdated: $("usage-updated"), canvas: $("rate-chart"),
    eventsBody: $("events-body"), eventsCount: $("events-count"),
    invoiceLines: $("invoice-lines"), invoiceTotal: $("invoice-total"),
  };

  const fmt = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
  const qtyFmt = new Intl.NumberFormat(undefined, { maximumFractionDigits: 3 }); // GB, credits
  const pctFmt = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });
  const timeFmt = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  const dayFmt = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric", timeZone: "UTC" });

  // Everything about the session lives here, and only here.
  let S = freshState();
  // Stream attempts are numbered across sessions, so a late one never passes for a current one.
  let attempts = 0;

  function freshState() {
    return {
      key: null, token: null, tokenExp: 0, gen: 0, abort: null, retryTimer: null,
      pollTimer: null, usageTimer: null, resyncTimer: null, lastUsageAt: 0,
      state: "signed-out", failures: 0, retryMs: 3000, lastId: null, everLive: false,
      lastByteAt: 0, streamMissing: false, suspended: false,
      buckets: new Map(), seen: new Set(), seenOrder: [], events: [], eventsTotal: 0,
      alertIds: new Set(), usage: null, prevTotal: null, chartKey: "",
    };
  }

  function api(path) { return API_BASE + path; }

  class HttpError extends Error {
    constructor(status, code, message) { super(message); this.status = status; this.code = code; }
  }

  async function errorOf(resp) {
    let code = "http_" + resp.status, message = "HTTP " + resp.status;
    try {
      const body = await resp.json();
      if (body && body.error) { code = body.error.code || code; message = body.error.message || message; }
    } catch (_) { /* not JSON */ }
    return new HttpError(resp.status, code, message);
  }

  // -- connection state -------------------------------------------------------------------
  const STATE_TEXT = {
    "signed-out": "Signed out", connecting: "Connecting…", live: "Live",
    reconnecting: "Reconnecting…", fallback: "Fallback: polling every second",
  };

  function setState(state) {
    S.state = state;
    if (el.conn.dataset.state === state) return;
    el.conn.dataset.state = state;
    el.connText.textContent = STATE_TEXT[state];
  }

  // -- sign in / out ----------------------------------------------------------------------
  function showSigninError(message) {
    el.error.textContent = message;
    el.key.setAttribute("aria-invalid", "true");
    el.key.focus();
  }

  async function signIn(key) {
    el.error.textContent = "";
    el.key.removeAttribute("aria-invalid");
    if (!key) { showSigninError("Enter an API key."); return; }
    el.button.disabled = true;
    el.button.textContent = "Signing in…";
    try {
      let token = null;
      let streamMissing = false;
      try {
        token = await requestToken(key);
      } catch (err) {
        if (!(err instanceof HttpError) || ![404, 405, 501, 503].includes(err.status)) throw err;
        streamMissing = true; // no streaming here: the key is checked by /v1/usage below
      }
      let usage = null, usageError = null;
      try {
        usage = await fetchUsage(key);
      } catch (err) {
        if (streamMissing || (err instanceof HttpError && (err.status === 401 || err.status === 403))) throw err;
        usageError = err;
      }
      start(key, token, streamMissing, usage, usageError);
    } catch (err) {
      showSigninError(signinMessage(err));
    } finally {
      el.button.disabled = false;
      el.button.textContent = "Sign in";
    }
  }

  function signinMessage(err) {
    if (err instanceof HttpError) {
      if (err.status === 401) {
        return "That API key was not recognised. Check that you pasted the whole key " +
          "(it starts with mb_live_ or mb_test_) and that it has not been revoked.";
      }
      if (err.status === 403) return "This account is suspended, so its usage cannot be shown. Contact your operator.";
      if (err.status === 429) return "Too many attempts. Wait a few seconds and try again.";
      return "Sign-in failed: " + err.message;
    }
    return "meterbridge could not be reached. Check your connection and try again.";
  }

  function start(key, token, streamMissing, usage, usageError) {
    S = freshState();
    S.key = key;
    S.streamMissing = streamMissing;
    if (token) { S.token = token.token; S.tokenExp = Date.now() + token.expires_in * 1000; }
    el.key.value = ""; // the key is not left in the DOM
    el.signin.hidden = true;
    el.dashboard.hidden = false;
    el.signOut.hidden = false;
    resetView();
    if (usage) renderUsage(usage); else renderUsageError(usageError);
    el.title.focus();
    resizeCanvas();
    if (streamMissing) enterFallback(); else connectStream();
    S.resyncTimer = setInterval(() => { if (S.state === "live") refreshUsage(); }, USAGE_RESYNC_MS);
  }

  function signOut(message) {
    if (S.abort) S.abort.abort();
    clearTimeout(S.retryTimer); clearTimeout(S.usageTimer);
    clearInterval(S.pollTimer); clearInterval(S.resyncTimer);
    S = freshState();
    setState("signed-out");
    el.dashboard.hidden = true;
    el.signOut.hidden = true;
    el.signin.hidden = false;
    if (message) showSigninError(message); else { el.error.textContent = ""; el.key.focus(); }
  }

  // -- HTTP -------------------------------------------------------------------------------
  async function requestToken(key) {
    const resp = await fetch(api("/v1/stream-tokens"), {
      method: "POST", headers: { Authorization: "Bearer " + key }, cache: "no-store",
    });
    if (!resp.ok) throw await errorOf(resp);
    return resp.json();
  }

  async function fetchUsage(key) {
    const get = async (query) => {
      const resp = await fetch(api("/v1/usage" + query), {
        headers: { Authorization: "Bearer " + key }, cache: "no-store",
      });
      if (!resp.ok) throw await errorOf(resp);
      return resp.json();
    };
    const report = await get("");
    // Grouped meters: one more read per first dimension, for their top groups.
    const dims = new Set();
    for (const m of (report.current || {}).meters || []) if (m.dimensions && m.dimensions.length) dims.add(m.dimensions[0]);
    for (const dim of dims) {
      try {
        const grouped = await get("?group_by=" + encodeURIComponent(dim));
        for (const g of grouped.current.meters) {
          const m = report.current.meters.find((x) => x.meter === g.meter);
          if (m && g.groups) { m.groups = g.groups; m.groupDim = dim; }
        }
      } catch (_) { /* groups are extra: the totals still show */ }
    }
    return report;
  }

  // The period so far by day, per meter, from the history query (OpenMeter); refreshed at
  // most once a minute. 503 (OpenMeter off or down) shows a note instead.
  const HISTORY_MS = 60000;
  async function refreshHistory(session, u) {
    if (!u.periodStart || Date.now() - (session.historyAt || 0) < HISTORY_MS) return;
    session.historyAt = Date.now();
    const to = new Date(Date.now() + 60000).toISOString();
    for (const m of u.meters) {
      if (m.name === "events") continue;
      const q = "?meter=" + encodeURIComponent(m.name) + "&from=" + encodeURIComponent(u.periodStart) +
        "&to=" + encodeURIComponent(to) + "&window_size=DAY";
      let days = null;
      try {
        const resp = await fetch(api("/v1/usage/query" + q), {
          headers: { Authorization: "Bearer " + session.key }, cache: "no-store",
        });
        if (resp.ok) days = (await resp.json()).data;
      } catch (_) { days = null; }
      if (session !== S) return;
      renderHistory(m, days);
    }
  }

  function renderHistory(m, days) {
    const li = el.meters.querySelector('[data-meter="' + CSS.escape(m.name) + '"]');
    if (!li) return;
    const box = li.querySelector(".meter-days");
    box.innerHTML = "";
    if (days === null) { box.dataset.state = "unavailable"; box.textContent = "Daily history unavailable"; return; }
    box.dataset.state = "ok";
    const byDay = new Map();
    for (const row of days) {
      const day = String(row.window_start).slice(0, 10);
      byDay.set(day, (byDay.get(day) || 0) + Number(row.value));
    }
    const max = Math.max(1, ...byDay.values());
    for (const [day, value] of [...byDay.entries()].sort()) {
      const bar = document.createElement("span");
      bar.className = "day";
      bar.dataset.day = day;
      bar.dataset.value = String(value);
      bar.title = day + ": " + fmt.format(value) + (m.unit ? " " + m.unit : "");
      bar.style.height = Math.max(8, (value / max) * 100) + "%";
      box.appendChild(bar);
    }
    box.setAttribute("aria-label", meterLabel(m.name) + " by day: " +
      [...byDay.entries()].map(([d, v]) => d + " " + fmt.format(v)).join(", "));
  }

  async function refreshUsage() {
    if (!S.key) return;
    const session = S; // replaced on sign-out: a late answer must not touch the next session
    S.lastUsageAt = Date.now();
    try {
      const usage = await fetchUsage(session.key);
      if (session === S) { renderUsage(usage); refreshHistory(session, S.usage); }
    } catch (err) {
      if (session !== S) return;
      if (err instanceof HttpError && err.status === 401) { signOut("Your API key is no longer valid. Sign in with another key."); return; }
      if (err instanceof HttpError && err.status === 403) { markSuspended(); return; }
      renderUsageError(err);
    }
  }

  // At most one usage read per USAGE_REFRESH_MS, the last one after the latest event.
  function scheduleUsageRefresh() {
    if (S.usageTimer) return;
    const wait = Math.max(0, USAGE_REFRESH_MS - (Date.now() - S.lastUsageAt));
    S.usageTimer = setTimeout(() => { S.usageTimer = null; refreshUsage(); }, wait);
  }

  // -- the stream -------------------------------------------------------------------------
  async function ensureToken() {
    if (S.token && S.tokenExp - Date.now() > 15000) return S.token;
    const token = await requestToken(S.key);
    S.token = token.token;
    S.tokenExp = Date.now() + token.expires_in * 1000;
    return S.token;
  }

  async function connectStream() {
    if (!S.key) return;
    clearTimeout(S.retryTimer);
    const gen = (S.gen = ++attempts);
    if (S.state !== "fallback") setState(S.everLive ? "reconnecting" : "connecting");
    let retryIn = S.retryMs;
    let token;
    try {
      token = await ensureToken();
    } catch (err) {
      if (gen !== S.gen || !S.key) return;
      if (err instanceof HttpError && err.status === 401) {
        // The key itself is refused now: it was revoked (or the tenant offboarded).
        signOut("Your API key is no longer valid. Sign in with another key.");
        return;
      }
      if (err instanceof HttpError && err.status === 403) markSuspended();
      if (err instanceof HttpError && [404, 405, 501].includes(err.status)) S.streamMissing = true;
      token = null;
    }
    if (token) {
      try {
        const ctrl = new AbortController();
        S.abort = ctrl;
        const headers = { Accept: "text/event-stream" };
        if (S.lastId) headers["Last-Event-ID"] = S.lastId;
        const resp = await fetch(api("/v1/stream?token=" + encodeURIComponent(token)), {
          headers, signal: ctrl.signal, cache: "no-store",
        });
        if (!resp.ok || !resp.body) throw await errorOf(resp);
        if (gen !== S.gen) { ctrl.abort(); return; }
        onLive();
        await readStream(resp.body, gen);
      } catch (err) {
        if (gen !== S.gen || !S.key) return; // signed out, or superseded
        if (err instanceof HttpError && err.status === 401) {
          // An expired token (or one signed by another task): get a new one right away.
          S.token = null;
          retryIn = 200;
        }
        if (err instanceof HttpError && err.status === 403) markSuspended();
        if (err instanceof HttpError && [404, 405, 501].includes(err.status)) S.streamMissing = true;
      }
    }
    if (gen !== S.gen || !S.key) return;
    S.failures++;
    if (S.streamMissing || S.failures >= FAILURES_BEFORE_FALLBACK) {
      enterFallback();
      retryIn = FALLBACK_STREAM_RETRY_MS;
    } else {
      setState("reconnecting");
    }
    S.retryTimer = setTimeout(connectStream, retryIn);
  }

  function onLive() {
    S.failures = 0;
    S.everLive = true;
    S.lastByteAt = Date.now();
    S.streamMissing = false;
    clearInterval(S.pollTimer);
    S.pollTimer = null;
    setState("live");
    refreshUsage(); // catch up on anything counted while we were away
  }

  function enterFallback() {
    setState("fallback");
    const empty = el.eventsBody.querySelector("tr.empty td");
    if (empty) empty.textContent = "Event details need the live stream; totals are read every second meanwhile.";
    if (S.pollTimer) return;
    S.pollTimer = setInterval(refreshUsage, FALLBACK_POLL_MS);
  }

  function markSuspended() {
    if (S.suspended) return;
    S.suspended = true;
    addAlert("suspended", "over", "This account is suspended.", "Usage is not accepted until the operator lifts the suspension.");
  }

  async function readStream(body, gen) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let frame = { id: null, event: "", data: [] };
    for (;;) {
      const { value, done } = await reader.read();
      if (done || gen !== S.gen) break;
      S.lastByteAt = Date.now();
      buffer += decoder.decode(value, { stream: true });
      let nl;
      while ((nl = buffer.indexOf("\n")) >= 0) {
        let line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        if (line.endsWith("\r")) line = line.slice(0, -1);
        if (line === "") { dispatch(frame); frame = { id: null, event: "", data: [] }; continue; }
        if (line.startsWith(":")) continue; // comment: heartbeat or "connected"
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let val = colon < 0 ? "" : line.slice(colon + 1);
        if (val.startsWith(" ")) val = val.slice(1);
        if (field === "data") frame.data.push(val);
        else if (field === "event") frame.event = val;
        else if (field === "id" && !val.includes("\0")) frame.id = val;
        else if (field === "retry" && /^\d+$/.test(val)) S.retryMs = Math.min(60000, Math.max(200, parseInt(val, 10)));
      }
    }
  }

  function dispatch(frame) {
    if (frame.id !== null) S.lastId = frame.id;
    if (!frame.data.length) return;
    let data;
    try { data = JSON.parse(frame.data.join("\n")); } catch (_) { return; }
    if (frame.id === null) { onControl(frame.event, data); return; }
    onCloudEvent(data, frame.event);
  }

  function onControl(name, data) {
    if (name === "reset") refreshUsage(); // totals come from /v1/usage, never from replay
    // "shutdown" and "dropped" end the response: readStream returns and we reconnect.
  }

  function kindOf(ev) {
    const source = String(ev.source || "");
    if (source.startsWith("//meterbridge/tenants/")) return "usage";
    if (source === "//meterbridge/stripe") return "billing";
    if (source === "//meterbridge/alerts") return "alert";
    if (source === "//meterbridge/admin") return "tenant";
    return "usage";
  }

  function onCloudEvent(ev, eventName) {
    if (!ev || typeof ev !== "object") return;
    // A resume may repeat an event (docs/streaming.md): (source, id) identifies it.
    const ident = String(ev.source) + "|" + String(ev.id);
    if (S.seen.has(ident)) return;
    S.seen.add(ident);
    S.seenOrder.push(ident);
    if (S.seenOrder.length > 5000) S.seen.delete(S.seenOrder.shift());

    const kind = kindOf(ev);
    const type = String(ev.type || eventName || "event");
    if (kind === "usage") {
      countEvents(1);
      scheduleUsageRefresh();
    } else {
      onNotableEvent(type, ev);
      scheduleUsageRefresh();
    }
    addEventRow(ev, type, kind);
  }

  function onNotableEvent(type, ev) {
    const data = ev.data || {};
    if (type === "usage.threshold_reached") {
      const pct = Number(data.threshold_percent ?? data.threshold_pct ?? 0);
      const meter = meterLabel(data.meter || "usage");
      const level = pct >= 100 ? "over" : "warn";
      const detail = data.used != null && data.limit != null
        ? fmt.format(data.used) + " of " + fmt.format(data.limit) + " used this period."
        : "";
      const head = pct >= 100
        ? meter + ": you have reached your plan's limit (" + pct + "%)."
        : meter + ": " + pct + "% of your plan's limit used.";
      addAlert(String(ev.id), level, head, detail);
    } else if (type === "payment.failed") {
      addAlert(String(ev.id), "over", "A payment failed.", "Update your payment method to keep your plan.");
    } else if (type === "tenant.suspended") {
      markSuspended();
    } else if (type === "tenant.resumed") {
      if (S.suspended) { S.suspended = false; removeAlert("suspended"); }
    } else if (type === "subscription.started" || type === "subscription.updated" ||
               type === "subscription.ended" || type === "tenant.plan_changed") {
      const plan = data.plan || data.to_plan;
      addAlert(String(ev.id), "info", plan ? "Your plan is now " + planLabel(plan) + "." : "Your subscription changed.", "");
    }
  }

  // -- alerts -----------------------------------------------------------------------------
  function addAlert(id, level, head, detail) {
    if (S.alertIds.has(id)) return;
    S.alertIds.add(id);
    const li = document.createElement("li");
    li.className = "alert";
    li.dataset.level = level;
    li.dataset.alertId = id;
    const text = document.createElement("div");
    text.textContent = head;
    if (detail) { const small = document.createElement("small"); small.textContent = detail; text.appendChild(small); }
    const dismiss = document.createElement("button");
    dismiss.type = "button";
    dismiss.textContent = "Dismiss";
    dismiss.setAttribute("aria-label", "Dismiss alert: " + head);
    dismiss.addEventListener("click", () => { li.remove(); el.title.focus(); });
    li.append(text, dismiss);
    el.alerts.prepend(li);
    while (el.alerts.children.length > 5) el.alerts.lastElementChild.remove();
  }

  function removeAlert(id) {
    const li = el.alerts.querySelector('[data-alert-id="' + CSS.escape(id) + '"]');
    if (li) li.remove();
    S.alertIds.delete(id);
  }

  // -- usage, plan, charge ----------------------------------------------------------------
  const METER_NAMES = { events: "Events", queries: "Queries", api_calls: "API calls", storage_gb: "Storage (GB)" };

  function meterLabel(name) {
    return METER_NAMES[name] || String(name).replace(/[_.-]+/g, " ").replace(/^\w/, (c) => c.toUpperCase());
  }

  function planLabel(id) { return String(id).replace(/^\w/, (c) => c.toUpperCase()); }

  function num(...values) {
    for (const v of values) if (v !== undefined && v !== null && v !== "" && !Number.isNaN(Number(v))) return Number(v);
    return null;
  }

  // GET /v1/usage answers {tenant_id, current: {period, start, end, plan, hard_limit,
  // base_price_cents, meters: [{meter, used, limit, remaining, overage, overage_charge_cents}],
  // estimated_charge_cents}}; a flatter shape is read as well.
  function normalizeUsage(report) {
    const body = report.current ?? report;
    const rawMeters = body.meters ?? body.usage ?? {};
    const list = Array.isArray(rawMeters)
      ? rawMeters.map((m) => [m.meter ?? m.name ?? m.id, m])
      : Object.entries(rawMeters);
    const meters = list.map(([name, m]) => {
      if (typeof m !== "object" || m === null) m = { used: m };
      const used = num(m.used, m.count, m.value, m.total) ?? 0;
      const limit = num(m.limit, m.included, m.quota);
      return {
        name: String(name), used, limit, unit: m.unit || "",
        groups: Array.isArray(m.groups) ? m.groups : null, groupDim: m.groupDim || null,
        remaining: num(m.remaining) ?? (limit === null ? null : Math.max(0, limit - used)),
        overageCents: num(m.overage_charge_cents, m.overage_cents),
      };
    });
    const plan = typeof body.plan === "object" && body.plan !== null ? body.plan : { id: body.plan ?? body.plan_id };
    const charge = typeof body.estimated_charge === "object" && body.estimated_charge !== null ? body.estimated_charge : {};
    const currency = String(charge.currency || body.currency || "usd").toUpperCase();
    const baseCents = num(charge.base_cents, charge.base_price_cents, plan.base_price_cents, body.base_price_cents);
    const overageCents = num(charge.overage_cents, body.overage_cents,
      meters.some((m) => m.overageCents !== null) ? meters.reduce((a, m) => a + (m.overageCents || 0), 0) : null);
    const totalCents = num(charge.total_cents, charge.amount_cents, body.estimated_charge_cents,
      typeof body.estimated_charge === "number" ? body.estimated_charge : null,
      baseCents !== null ? baseCents + (overageCents || 0) : null);
    const period = body.period;
    // current.next_invoice: {base_price_cents, lines: [{meter, description, amount_cents}],
    // total_cents}, what the invoice closing this period carries if it closed now.
    const next = typeof body.next_invoice === "object" && body.next_invoice !== null ? body.next_invoice : null;
    const nextInvoice = next && {
      baseCents: num(next.base_price_cents),
      totalCents: num(next.total_cents),
      lines: (Array.isArray(next.lines) ? next.lines : []).map((l) => ({
        meter: String(l.meter ?? ""), description: String(l.description ?? meterLabel(l.meter)),
        cents: num(l.amount_cents) ?? 0,
      })),
    };
    return {
      meters, currency, baseCents, overageCents, totalCents, nextInvoice,
      planId: plan.id ?? plan.plan ?? null, planName: plan.name ?? (plan.id ? planLabel(plan.id) : null),
      hardLimit: plan.hard_limit ?? body.hard_limit ?? null,
      periodStart: body.start || (period && period.start) || null,
      periodEnd: body.end || (period && period.end) || null,
      periodId: typeof period === "string" ? period : (period && period.id) || null,
    };
  }

  function money(cents, currency) {
    if (cents === null) return "–";
    try {
      return new Intl.NumberFormat(undefined, { style: "currency", currency }).format(cents / 100);
    } catch (_) {
      return (cents / 100).toFixed(2) + " " + currency;
    }
  }

  function renderUsage(body) {
    const u = normalizeUsage(body);
    S.usage = u;
    const total = u.meters.reduce((a, m) => a + m.used, 0);
    if (S.state === "fallback" && S.prevTotal !== null && total > S.prevTotal) countEvents(total - S.prevTotal);
    S.prevTotal = total;

    el.planName.textContent = u.planName || "–";
    el.planDetail.textContent = u.baseCents === null && u.planId
      ? "custom contract"
      : u.baseCents !== null ? money(u.baseCents, u.currency) + " per month" + (u.hardLimit ? " · hard limit" : "") : "";
    if (u.periodStart && u.periodEnd) {
      const endShown = new Date(new Date(u.periodEnd).getTime() - 1); // an exclusive end
      el.period.textContent = dayFmt.format(new Date(u.periodStart)) + " – " + dayFmt.format(endShown);
      const daysLeft = Math.max(0, Math.ceil((new Date(u.periodEnd) - Date.now()) / 86400000));
      el.periodDetail.textContent = daysLeft + (daysLeft === 1 ? " day" : " days") + " left (UTC)";
    } else {
      el.period.textContent = u.periodId || "–";
      el.periodDetail.textContent = "";
    }
    el.charge.textContent = u.totalCents === null ? (u.planId ? "Custom" : "–") : money(u.totalCents, u.currency);
    el.chargeDetail.textContent = u.baseCents === null ? "" :
      "base " + money(u.baseCents, u.currency) + " + overage " + money(u.overageCents || 0, u.currency);
    el.charge.dataset.cents = u.totalCents === null ? "" : String(u.totalCents);

    renderNextInvoice(u);

    const seen = new Set();
    for (const m of u.meters) { seen.add(m.name); renderMeter(m, u.hardLimit); }
    for (const li of [...el.meters.children]) if (!seen.has(li.dataset.meter)) li.remove();
    if (!u.meters.length) el.meters.innerHTML = '<li class="muted">No meters on this plan.</li>';
    el.usageUpdated.textContent = "updated " + timeFmt.format(new Date());
  }

  function invoiceRow(label, cents, currency, meter) {
    const tr = document.createElement("tr");
    const name = document.createElement("td");
    name.textContent = label;
    const amount = document.createElement("td");
    amount.className = "amount";
    amount.textContent = money(cents, currency);
    tr.dataset.cents = cents === null ? "" : String(cents);
    if (meter) tr.dataset.meter = meter; else tr.dataset.line = "base";
    tr.append(name, amount);
    return tr;
  }

  function renderNextInvoice(u) {
    const inv = u.nextInvoice;
    el.invoiceLines.replaceChildren();
    if (!inv) {
      el.invoiceLines.innerHTML = '<tr class="empty"><td colspan="2">–</td></tr>';
      el.invoiceTotal.textContent = "–";
      el.invoiceTotal.dataset.cents = "";
      return;
    }
    if (inv.baseCents !== null) {
      el.invoiceLines.appendChild(invoiceRow((u.planName || "Plan") + " base price", inv.baseCents, u.currency, null));
    }
    for (const line of inv.lines) el.invoiceLines.appendChild(invoiceRow(line.description, line.cents, u.currency, line.meter));
    if (inv.baseCents === null && !inv.lines.length) {
      el.invoiceLines.innerHTML = '<tr class="empty"><td colspan="2">Custom contract: billed by agreement</td></tr>';
    }
    el.invoiceTotal.textContent = inv.totalCents === null ? "Custom" : money(inv.totalCents, u.currency);
    el.invoiceTotal.dataset.cents = inv.totalCents === null ? "" : String(inv.totalCents);
  }

  function unitOf(m) {
    // "token" -> "tokens"; units such as GB stay as they are.
    return m.used === 1 || /^[A-Z]/.test(m.unit) || m.unit.endsWith("s") ? m.unit : m.unit + "s";
  }

  const TOP_GROUPS = 3;
  function renderGroups(li, m) {
    const list = li.querySelector(".meter-groups");
    list.innerHTML = "";
    if (!m.groups || !m.groups.length) return;
    list.setAttribute("aria-label", "Top " + m.groupDim + " by " + meterLabel(m.name));
    for (const g of m.groups.slice(0, TOP_GROUPS)) {
      const item = document.createElement("li");
      const name = g.group_by[m.groupDim];
      item.dataset.group = name == null ? "" : String(name);
      item.textContent = (name == null ? "(none)" : String(name)) + " · " + fmt.format(g.used);
      list.appendChild(item);
    }
  }

  function renderUsageError(err) {
    el.usageUpdated.textContent = "usage totals unavailable" + (err && err.message ? ": " + err.message : "");
  }

  function renderMeter(m, hardLimit) {
    let li = el.meters.querySelector('[data-meter="' + CSS.escape(m.name) + '"]');
    if (!li) {
      li = document.createElement("li");
      li.className = "meter";
      li.dataset.meter = m.name;
      li.innerHTML =
        '<div class="meter-top"><span class="meter-name"></span>' +
        '<span class="meter-figures"><span class="used"></span> <span class="of"></span></span></div>' +
        '<div class="bar" role="progressbar" aria-valuemin="0" aria-valuemax="100"><div class="bar-fill"></div></div>' +
        '<p class="meter-note"></p>' +
        '<div class="meter-days" role="img"></div><ol class="meter-groups"></ol>';
      el.meters.appendChild(li);
    }
    renderGroups(li, m);
    const label = meterLabel(m.name);
    li.querySelector(".meter-name").textContent = label;
    li.querySelector(".used").textContent = qtyFmt.format(m.used) + (m.unit ? " " + unitOf(m) : "");
    li.dataset.used = String(m.used);
    const bar = li.querySelector(".bar");
    const note = li.querySelector(".meter-note");
    if (m.limit === null) {
      li.querySelector(".of").textContent = "· unlimited";
      li.dataset.level = "ok";
      bar.setAttribute("aria-valuenow", "0");
      bar.setAttribute("aria-valuetext", fmt.format(m.used) + " used, no limit");
      bar.setAttribute("aria-label", label + " usage");
      li.querySelector(".bar-fill").style.width = "0";
      note.textContent = "Unlimited on this plan";
      return;
    }
    const pct = m.limit > 0 ? (m.used / m.limit) * 100 : (m.used > 0 ? 100 : 0);
    li.querySelector(".of").textContent = "of " + fmt.format(m.limit);
    li.dataset.level = pct >= 100 ? "over" : pct >= 80 ? "warn" : "ok";
    bar.setAttribute("aria-valuenow", pctFmt.format(Math.min(100, pct)));
    bar.setAttribute("aria-valuetext", fmt.format(m.used) + " of " + fmt.format(m.limit) + " (" + pctFmt.format(pct) + "%)");
    bar.setAttribute("aria-label", label + " usage against the plan limit");
    // Keep a sliver visible once anything is used, so the bar visibly starts moving.
    li.querySelector(".bar-fill").style.width = (m.used > 0 ? Math.max(0.75, Math.min(100, pct)) : 0) + "%";
    if (pct >= 100) {
      const over = m.used - m.limit;
      note.textContent = "Over the limit by " + fmt.format(over) +
        (hardLimit ? " · new events are refused" : m.overageCents ? " · overage " + money(m.overageCents, S.usage.currency) : " · billed as overage");
    } else {
      note.textContent = (pct > 0 && pct < 0.1 ? "<0.1" : pctFmt.format(pct)) + "% used · " + fmt.format(m.remaining ?? m.limit - m.used) + " left";
    }
  }

  // -- latest events ----------------------------------------------------------------------
  function subjectOf(ev, kind) {
    // Usage events carry the tenant as subject (OpenMeter bills it); the tenant's own subject
    // travels in data.meterbridge_subject.
    if (kind === "usage") {
      const own = ev.data && ev.data.meterbridge_subject;
      return own == null ? "–" : String(own);
    }
    return ev.subject == null ? "–" : String(ev.subject);
  }

  function addEventRow(ev, type, kind) {
    S.eventsTotal++;
    const empty = el.eventsBody.querySelector("tr.empty");
    if (empty) empty.remove();
    const tr = document.createElement("tr");
    tr.className = "fresh";
    const when = ev.time ? new Date(ev.time) : new Date();
    const cells = [
      [Number.isNaN(when.getTime()) ? String(ev.time) : timeFmt.format(when), ""],
      [type, "type"], [subjectOf(ev, kind), "subject"], [String(ev.id ?? ""), "mono"],
    ];
    for (const [text, cls] of cells) {
      const td = document.createElement("td");
      if (cls === "type") {
        const tag = document.createElement("span");
        tag.className = "tag";
        tag.dataset.kind = kind;
        tag.textContent = text;
        td.appendChild(tag);
      } else {
        if (cls) td.className = cls;
        if (cls === "subject") td.title = String(ev.subject ?? "");
        td.textContent = text;
        if (cls === "mono") td.title = text;
      }
      tr.appendChild(td);
    }
    el.eventsBody.prepend(tr);
    while (el.eventsBody.children.length > MAX_EVENTS) el.eventsBody.lastElementChild.remove();
    el.eventsCount.textContent = fmt.format(S.eventsTotal) + " received in this session";
  }

  function resetView() {
    el.alerts.replaceChildren();
    el.meters.replaceChildren();
    el.eventsBody.innerHTML = '<tr class="empty"><td colspan="4">Waiting for events…</td></tr>';
    el.eventsCount.textContent = "";
    el.usageUpdated.textContent = "";
    for (const node of [el.planName, el.period, el.charge]) node.textContent = "–";
    for (const node of [el.planDetail, el.periodDetail, el.chargeDetail]) node.textContent = "";
    S.chartKey = "";
  }

  // -- events per second, and the chart ---------------------------------------------------
  function countEvents(n) {
    const sec = Math.floor(Date.now() / 1000);
    S.buckets.set(sec, (S.buckets.get(sec) || 0) + n);
  }

  function series() {
    const now = Math.floor(Date.now() / 1000);
    for (const sec of S.buckets.keys()) if (sec <= now - CHART_SECONDS) S.buckets.delete(sec);
    const values = [];
    for (let sec = now - CHART_SECONDS + 1; sec <= now; sec++) values.push(S.buckets.get(sec) || 0);
    return values;
  }

  function niceMax(value) {
    // Steps whose half is a whole number too (the middle grid line is labelled).
    if (value <= 4) return 4;
    const p = Math.pow(10, Math.floor(Math.log10(value)));
    for (const m of [1, 2, 4, 10]) if (m * p >= value) return m * p;
    return 10 * p;
  }

  function resizeCanvas() {
    const c = el.canvas;
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(c.clientWidth * dpr));
    const h = Math.max(1, Math.round(c.clientHeight * dpr));
    if (c.width !== w || c.height !== h) { c.width = w; c.height = h; S.chartKey = ""; }
  }

  function drawChart() {
    if (el.dashboard.hidden) return;
    const values = series();
    const lastMinute = values.reduce((a, b) => a + b, 0);
    const key = values.join(",") + "|" + el.canvas.width;
    if (key === S.chartKey) return;
    S.chartKey = key;

    const current = values[values.length - 2] ?? 0; // the last complete second
    const peak = Math.max(...values);
    el.rateNow.textContent = fmt.format(current);
    el.rateMinute.textContent = fmt.format(lastMinute);
    el.canvas.dataset.lastMinute = String(lastMinute);
    el.canvas.setAttribute("aria-label", "Events per second over the last 60 seconds: " +
      fmt.format(current) + " in the last second, peak " + fmt.format(peak) + ", " +
      fmt.format(lastMinute) + " in the last minute");

    const c = el.canvas, ctx = c.getContext("2d");
    const dpr = window.devicePixelRatio || 1;
    const W = c.width, H = c.height;
    ctx.clearRect(0, 0, W, H);
    ctx.font = 12 * dpr + "px system-ui, sans-serif";
    const top = 10 * dpr, bottom = H - 22 * dpr, left = 36 * dpr, right = W - 6 * dpr;
    const max = niceMax(peak);

    // grid and y labels
    ctx.strokeStyle = "#e3e8ef"; ctx.fillStyle = "#4d5969"; ctx.lineWidth = 1;
    ctx.textAlign = "right"; ctx.textBaseline = "middle";
    for (const f of [0, 0.5, 1]) {
      const y = Math.round(bottom - f * (bottom - top)) + 0.5;
      ctx.beginPath(); ctx.moveTo(left, y); ctx.lineTo(right, y); ctx.stroke();
      ctx.fillText(fmt.format(max * f), left - 6 * dpr, y);
    }
    // x labels
    ctx.textAlign = "center"; ctx.textBaseline = "top";
    const slot = (right - left) / values.length;
    for (const [i, text] of [[0, "−60 s"], [29, "−30 s"], [values.length - 1, "now"]]) {
      ctx.textAlign = i === 0 ? "left" : i === values.length - 1 ? "right" : "center";
      const x = i === 0 ? left : i === values.length - 1 ? right : left + slot * (i + 0.5);
      ctx.fillText(text, x, bottom + 6 * dpr);
    }
    // bars: the running second is lighter (still filling)
    const gap = Math.max(1, slot * 0.2);
    values.forEach((v, i) => {
      if (!v) return;
      const h = Math.max(2 * dpr, (v / max) * (bottom - top));
      ctx.fillStyle = i === values.length - 1 ? "#7fa9d6" : "#0b5cad";
      ctx.fillRect(left + slot * i + gap / 2, bottom - h, slot - gap, h);
    });
  }

  function tick() {
    if (!S.key) return;
    if (S.state === "live" && Date.now() - S.lastByteAt > STALL_MS && S.abort) S.abort.abort();
    drawChart();
  }

  // -- wiring -----------------------------------------------------------------------------
  el.form.addEventListener("submit", (e) => { e.preventDefault(); signIn(el.key.value.trim()); });
  el.signOut.addEventListener("click", () => signOut());
  window.addEventListener("resize", () => { resizeCanvas(); drawChart(); });
  if (window.ResizeObserver) new ResizeObserver(() => { resizeCanvas(); drawChart(); }).observe(el.canvas);
  setInterval(tick, 250);
  el.key.focus();
})();
