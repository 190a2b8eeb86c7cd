// Sluice dashboard: polls the gateway's REST API every second and shows
// each function's dispatch state, with charts of the last five minutes kept
// in this page, and looks up jobs. Plain JavaScript with no dependencies;
// the gateway embeds this file as it is. Text from the API only ever goes
// into textContent or attributes (the page's CSP enforces Trusted Types).
'use strict';

(() => {
  const POLL_MS = 1000;
  const HISTORY_MS = 5 * 60 * 1000;
  const KEY_STORAGE = 'sluice.apiKey';
  const TERMINAL = new Set(['SUCCEEDED', 'FAILED', 'EXPIRED', 'CANCELLED']);
  const SVG_NS = 'http://www.w3.org/2000/svg';
  const count = new Intl.NumberFormat('en-US');
  const rate = new Intl.NumberFormat('en-US', { minimumFractionDigits: 1, maximumFractionDigits: 1 });

  const $ = (id) => document.getElementById(id);

  // ---- API access ---------------------------------------------------------

  class AuthError extends Error {}
  class APIError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  // The API key lives in sessionStorage: this tab only, gone when it closes.
  let memoryKey = '';
  function storedKey() {
    try {
      return sessionStorage.getItem(KEY_STORAGE) || '';
    } catch {
      return memoryKey;
    }
  }
  function storeKey(key) {
    memoryKey = key;
    try {
      if (key) sessionStorage.setItem(KEY_STORAGE, key);
      else sessionStorage.removeItem(KEY_STORAGE);
    } catch {
      // Storage is disabled: the key lasts as long as this page.
    }
  }

  // api GETs path and returns its JSON. It throws AuthError on 401 and
  // APIError, with the API's message, on any other failure.
  async function api(path) {
    const headers = { Accept: 'application/json' };
    const key = storedKey();
    if (key) headers.Authorization = 'Bearer ' + key;
    const resp = await fetch(path, { headers, cache: 'no-store', credentials: 'omit' });
    let body = null;
    try {
      body = await resp.json();
    } catch {
      // Not JSON; the status says enough.
    }
    const message = (body && body.message) || `HTTP ${resp.status}`;
    if (resp.status === 401) throw new AuthError(message);
    if (!resp.ok) throw new APIError(resp.status, message);
    return body;
  }

  // ---- formatting -----------------------------------------------------------

  const num = (v) => {
    const n = Number(v ?? 0); // int64 fields arrive as strings
    return Number.isFinite(n) ? n : 0;
  };
  // A rate per second: whole from 10 up, to a tenth below.
  const perSecond = (r) => `${r >= 10 ? count.format(Math.round(r)) : rate.format(r)}/s`;
  const pad = (n, w = 2) => String(n).padStart(w, '0');
  function clock(d) {
    return `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}`;
  }
  function timestamp(iso) {
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return iso;
    return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ` +
      `${clock(d)}.${pad(d.getUTCMilliseconds(), 3)} UTC`;
  }
  // duration formats a protobuf Duration as JSON gives it ("0.300660514s").
  function duration(s) {
    const secs = parseFloat(s);
    if (!Number.isFinite(secs)) return s || '—';
    if (secs < 0.01) return `${(secs * 1000).toFixed(1)} ms`;
    if (secs < 1) return `${Math.round(secs * 1000)} ms`;
    if (secs < 60) return `${secs.toFixed(2)} s`;
    return `${Math.floor(secs / 60)} min ${Math.round(secs % 60)} s`;
  }
  function base64Size(b64) {
    if (!b64) return 0;
    const padding = b64.endsWith('==') ? 2 : b64.endsWith('=') ? 1 : 0;
    return Math.floor(b64.length * 3 / 4) - padding;
  }
  function el(tag, attrs = {}, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? '' : String(v));
    }
    e.append(...children);
    return e;
  }
  // set changes an element's text only when it differs, to spare layout.
  function set(e, text) {
    if (e.textContent !== text) e.textContent = text;
  }

  // ---- status line ----------------------------------------------------------

  // setStatus says how the polling goes. The element is a live region, so
  // it changes only when the state does; the time of the latest poll is
  // beside it, not in it, lest a screen reader announce it every second.
  function setStatus(state, text) {
    const s = $('status');
    s.dataset.state = state;
    set(s, text);
  }

  // ---- functions --------------------------------------------------------------

  // fns holds each function shown: its card, its fields, its charts and the
  // samples of the last five minutes, oldest first.
  const fns = new Map();

  function createCard(name) {
    const card = $('fn-card').content.firstElementChild.cloneNode(true);
    card.dataset.fn = name;
    const fields = {};
    for (const e of card.querySelectorAll('[data-field]')) {
      e.dataset.fn = name;
      fields[e.dataset.field] = e;
    }
    card.setAttribute('aria-label', `Function ${name}`);
    const charts = {};
    for (const fig of card.querySelectorAll('[data-chart]')) {
      fig.dataset.fn = name;
      charts[fig.dataset.chart] = createChart(fig);
    }
    const fn = { name, card, fields, charts, samples: [], last: null };
    fns.set(name, fn);
    return fn;
  }

  async function refreshFunctions() {
    const list = await api('/v1/functions');
    const names = ((list && list.functions) || []).map((f) => f.name);
    const answers = await Promise.all(
      names.map((n) => api('/v1/functions/' + encodeURIComponent(n)).catch((e) => e)));
    const now = Date.now();
    for (const a of answers) if (a instanceof AuthError) throw a;
    const container = $('functions');
    const shown = new Set();
    let position = 0;
    names.forEach((name, i) => {
      const a = answers[i];
      if (a instanceof APIError && a.status === 404) return; // gone since the list
      if (a instanceof Error) throw a;
      const fn = fns.get(name) || createCard(name);
      renderFunction(fn, a, now);
      if (container.children[position] !== fn.card) container.insertBefore(fn.card, container.children[position] || null);
      position++;
      shown.add(name);
    });
    for (const [name, fn] of fns) {
      if (!shown.has(name)) {
        fn.card.remove();
        fns.delete(name);
      }
    }
    $('functions-empty').hidden = fns.size > 0;
  }

  function renderFunction(fn, f, now) {
    const s = f.status || {};
    const limit = num(f.concurrency);
    const win = num(s.window);
    const inFlight = num(s.inFlight);
    const backlog = num(s.backlog);
    const succeeded = num(s.succeeded);

    // Throughput: jobs succeeded per second since the previous poll, from
    // the running total, which every gateway process shares.
    let throughput = null;
    if (fn.last && now > fn.last.t && succeeded >= fn.last.succeeded) {
      throughput = (succeeded - fn.last.succeeded) * 1000 / (now - fn.last.t);
    }
    fn.last = { t: now, succeeded };
    fn.samples.push({ t: now, backlog, inFlight, window: win, limit, throughput });
    while (fn.samples.length && fn.samples[0].t < now - HISTORY_MS) fn.samples.shift();

    const x = fn.fields;
    fn.card.classList.remove('stale');
    set(x.name, f.name);
    const circuit = (s.circuit && s.circuit.state) || 'UNKNOWN';
    set(x.circuit, circuit.replace('_', '-'));
    x.circuitBadge.dataset.state = circuit;
    x.circuitBadge.title = (s.circuit && s.circuit.reason) || '';
    set(x.reason, s.reason || '—');
    set(x.paused, pauseNote(s, now));

    set(x.inFlight, count.format(inFlight));
    set(x.window, count.format(win));
    set(x.limit, count.format(limit));
    const share = (v) => `${limit > 0 ? Math.min(100, 100 * v / limit) : 0}%`;
    x.bar.querySelector('.bar-window').style.width = share(win);
    x.bar.querySelector('.bar-inflight').style.width = share(inFlight);
    x.bar.setAttribute('aria-label', `${inFlight} in flight, window ${win}, limit ${limit}`);

    const pool = s.pool;
    x.pool.hidden = !pool;
    if (pool) {
      set(x.poolName, pool.name);
      set(x.poolInFlight, count.format(num(pool.poolInFlight)));
      set(x.poolLimit, count.format(num(pool.limit)));
      set(x.poolGranted, count.format(num(pool.granted)));
      set(x.poolReserved, count.format(num(pool.reserved)));
      set(x.poolBorrowed, count.format(num(pool.borrowed)));
      set(x.poolLent, count.format(num(pool.lent)));
      x.pool.title = (pool.members || []).map((m) =>
        `${m.function}: ${num(m.inFlight)} in flight, share ${num(m.granted)}, reserved ${num(m.reserved)}`).join('\n');
    }

    set(x.backlog, count.format(backlog));
    set(x.throughput, throughput === null ? '—' : rate.format(throughput));
    set(x.succeeded, count.format(succeeded));
    set(x.deadLetters, count.format(num(s.deadLetters)));
    set(x.throttles, count.format(num(s.throttles)));
    set(x.retries, count.format(num(s.retries)));
    set(x.coldStarts, count.format(num(s.coldStarts)));
    x.coldStarts.title = `${count.format(num(s.coldStarts))} cold, ${count.format(num(s.warmStarts))} warm`;
    set(x.learnedLimit, num(s.learnedLimit) > 0 ? count.format(num(s.learnedLimit)) : '—');
    set(x.learnedRate, num(s.learnedRatePerSecond) > 0 ? perSecond(num(s.learnedRatePerSecond)) : '—');
    x.learnedRate.title = num(s.ratePerSecond) > 0 ? `Starts paced at ${perSecond(num(s.ratePerSecond))} now` : '';

    drawFunctionCharts(fn, now);
  }

  function pauseNote(s, now) {
    const until = (iso) => {
      const t = iso ? Date.parse(iso) : NaN;
      return t > now ? clock(new Date(t)) + ' UTC' : '';
    };
    const paused = until(s.pausedUntil);
    if (paused) return `Paused until ${paused}.`;
    const probe = s.circuit && s.circuit.state === 'OPEN' ? until(s.circuit.openUntil) : '';
    if (probe) return `Probe at ${probe}.`;
    return '';
  }

  // ---- charts -------------------------------------------------------------------

  // A chart is an SVG of 300 × 100 units stretched to its box: x is time
  // over the last five minutes, y runs from 0 at the bottom to its maximum
  // a little below the top. Lines keep their width whatever the stretch.
  const W = 300;
  const H = 100;
  const TOP = 4;

  function svg(tag, attrs) {
    const e = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
    return e;
  }

  function createChart(fig) {
    fig.append($('chart-frame').content.cloneNode(true));
    const root = fig.querySelector('svg');
    for (const y of [0.25, 0.5, 0.75]) root.append(svg('line', { class: 'grid', x1: 0, x2: W, y1: H - (H - TOP) * y, y2: H - (H - TOP) * y }));
    for (let m = 1; m < 5; m++) root.append(svg('line', { class: 'grid', x1: W * m / 5, x2: W * m / 5, y1: 0, y2: H }));
    return { fig, root, yMax: fig.querySelector('.y-max'), paths: new Map() };
  }

  function path(chart, cls) {
    let p = chart.paths.get(cls);
    if (!p) {
      p = svg('path', { class: cls, d: '' });
      chart.root.append(p);
      chart.paths.set(cls, p);
    }
    return p;
  }

  // niceCeil rounds v up to 1, 2, 2.5 or 5 times a power of ten.
  function niceCeil(v) {
    if (!(v > 0)) return 1;
    const p = 10 ** Math.floor(Math.log10(v));
    for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p + 1e-9) return m * p;
    return 10 * p;
  }

  // plot draws series over the samples: each {key, cls, area, step}; a
  // sample whose value is null breaks the line.
  function plot(chart, samples, now, series, yMax) {
    const x0 = now - HISTORY_MS;
    const X = (t) => ((t - x0) / HISTORY_MS * W).toFixed(2);
    const Y = (v) => (H - (H - TOP) * Math.min(v, yMax) / yMax).toFixed(2);
    for (const { key, cls, area, step } of series) {
      let line = '';
      let fill = '';
      let run = [];
      const flush = () => {
        if (run.length) {
          let d = `M${X(run[0].t)},${Y(run[0][key])}`;
          for (let i = 1; i < run.length; i++) {
            d += step ? `H${X(run[i].t)}V${Y(run[i][key])}` : `L${X(run[i].t)},${Y(run[i][key])}`;
          }
          line += d;
          if (area) fill += `M${X(run[0].t)},${H}` + d.replace(/^M/, 'L') + `L${X(run[run.length - 1].t)},${H}Z`;
        }
        run = [];
      };
      for (const s of samples) {
        if (s[key] === null || s[key] === undefined) flush();
        else run.push(s);
      }
      flush();
      if (area) path(chart, `area ${cls}`).setAttribute('d', fill);
      path(chart, `line ${cls}`).setAttribute('d', line);
    }
    set(chart.yMax, count.format(yMax));
    chart.fig.dataset.samples = String(samples.length);
  }

  function drawFunctionCharts(fn, now) {
    const s = fn.samples;
    const last = s[s.length - 1];
    const peak = (key) => s.reduce((m, x) => Math.max(m, x[key] ?? 0), 0);

    const backlog = fn.charts.backlog;
    plot(backlog, s, now, [{ key: 'backlog', cls: 's-backlog', area: true }], niceCeil(peak('backlog')));
    backlog.root.setAttribute('aria-label',
      `Queue depth over the last 5 minutes: now ${count.format(last.backlog)}, highest ${count.format(peak('backlog'))}`);

    const capacity = fn.charts.capacity;
    plot(capacity, s, now, [
      { key: 'inFlight', cls: 's-inflight', area: true },
      { key: 'window', cls: 's-window', step: true },
      { key: 'limit', cls: 's-limit', step: true },
    ], niceCeil(Math.max(peak('limit'), peak('window'), peak('inFlight'))));
    capacity.root.setAttribute('aria-label',
      `In flight over the last 5 minutes: now ${last.inFlight} of a window of ${last.window}, limit ${last.limit}; ` +
      `highest ${peak('inFlight')}`);

    const tp = fn.charts.throughput;
    plot(tp, s, now, [{ key: 'throughput', cls: 's-throughput', area: true }], niceCeil(peak('throughput')));
    tp.root.setAttribute('aria-label',
      `Jobs succeeded per second over the last 5 minutes: now ${last.throughput === null ? 'not yet known' : rate.format(last.throughput)}, ` +
      `highest ${rate.format(peak('throughput'))}`);
  }

  // ---- job lookup ---------------------------------------------------------------

  const job = { id: '', final: true, shown: '' };

  function jobFromHash() {
    const m = /(?:^#|&)job=([^&]*)/.exec(location.hash);
    if (!m) return '';
    try {
      return decodeURIComponent(m[1]).trim().toUpperCase();
    } catch {
      return '';
    }
  }

  function lookup(id) {
    job.id = id;
    job.final = false;
    job.shown = '';
    $('job-id').value = id;
    $('job').replaceChildren(el('p', { class: 'hint' }, `Looking up ${id}…`));
    refreshJob().catch(onAuthError);
  }

  async function refreshJob() {
    const id = job.id;
    let j;
    try {
      j = await api('/v1/jobs/' + encodeURIComponent(id));
    } catch (e) {
      if (e instanceof AuthError) throw e;
      if (id !== job.id) return;
      // Ask again later only if it may pass: the gateway unreachable or failing.
      job.final = e instanceof APIError && e.status < 500;
      let text = e.message;
      if (e instanceof APIError && e.status === 404) {
        text = `No job ${id}: it does not exist, its record has expired, or it belongs to another tenant.`;
      } else if (!(e instanceof APIError)) {
        text = `Cannot reach the API: ${e.message}`;
      }
      job.shown = '';
      $('job').replaceChildren(el('p', { class: 'job-error', 'data-job': id, 'data-field': 'error', role: 'alert' }, text));
      return;
    }
    if (id !== job.id) return;
    job.final = TERMINAL.has(j.state);
    const json = JSON.stringify(j);
    if (json === job.shown) return;
    job.shown = json;
    $('job').replaceChildren(renderJob(j));
  }

  function time(field, iso) {
    if (!iso) return el('span', { 'data-field': field }, '—');
    return el('time', { 'data-field': field, datetime: iso }, timestamp(iso));
  }

  function renderJob(j) {
    const facts = el('dl', { class: 'facts' });
    const fact = (label, value, wide) => facts.append(el('div', { class: wide ? 'wide' : null }, el('dt', {}, label), el('dd', {}, value)));
    const text = (field, value) => el('span', { 'data-field': field }, value);

    fact('Function', text('function', j.function || '—'));
    fact('Attempts', text('attempts', count.format(num(j.attempts))));
    fact('Throttles', text('throttles', count.format(num(j.throttles))));
    fact('Created', time('createTime', j.createTime));
    if (j.estimatedStartTime && !j.startTime) fact('Expected to start', time('estimatedStartTime', j.estimatedStartTime));
    fact('Latest attempt started', time('startTime', j.startTime));
    fact('Finished', time('finishTime', j.finishTime));
    fact('Payload', text('payload', `${count.format(num(j.payloadSize))} bytes${j.contentType ? ', ' + j.contentType : ''}`));
    if (j.result) {
      const r = j.result;
      fact('Result', text('result',
        `HTTP ${r.httpStatus}, ${count.format(base64Size(r.body))} bytes${r.contentType ? ', ' + r.contentType : ''}`));
    }
    if (j.deadLetterTime) fact('In dead letters since', time('deadLetterTime', j.deadLetterTime));
    if (num(j.redrives) > 0) {
      fact('Redrives', text('redrives', count.format(num(j.redrives))));
      fact('Last redriven', time('redriveTime', j.redriveTime));
    }
    if (j.tenant) fact('Tenant', text('tenant', j.tenant));
    if (j.callbackUrl) fact('Callback URL', text('callbackUrl', j.callbackUrl));
    if (j.error) fact('Error', text('error', j.error), true);

    const rows = (j.history || []).map((a) => el('tr', { 'data-attempt': num(a.number) },
      el('td', { class: 'num', 'data-field': 'number' }, String(num(a.number))),
      el('td', {}, time('startTime', a.startTime)),
      el('td', { class: 'num', 'data-field': 'duration' }, a.outcome === 'REDRIVEN' ? '—' : duration(a.duration)),
      el('td', { class: `outcome-${a.outcome}`, 'data-field': 'outcome' }, a.outcome || '—'),
      el('td', { class: 'num', 'data-field': 'httpStatus' }, num(a.httpStatus) ? String(a.httpStatus) : '—'),
      el('td', { 'data-field': 'coldStart' }, a.outcome === 'REDRIVEN' || !num(a.httpStatus) ? '—' : a.coldStart ? 'cold' : 'warm'),
      el('td', { 'data-field': 'error' }, a.error || '')));
    const head = el('tr', {}, ...['#', 'Started', 'Duration', 'Outcome', 'HTTP', 'Start', 'Error'].map((h, i) =>
      el('th', { scope: 'col', class: [0, 2, 4].includes(i) ? 'num' : null }, h)));
    const table = rows.length
      ? el('table', { 'data-field': 'history' },
        el('caption', {}, 'Invocations (the latest 20, oldest first)'), el('thead', {}, head), el('tbody', {}, ...rows))
      : el('p', { class: 'hint', 'data-field': 'history' }, 'No invocations yet.');

    return el('article', { 'data-job': j.id, 'aria-label': `Job ${j.id}` },
      el('div', { class: 'job-head' },
        el('h3', {}, 'Job ', el('code', { 'data-field': 'id' }, j.id)),
        el('span', { class: 'state', 'data-state': j.state, 'data-field': 'state' }, j.state)),
      facts, table);
  }

  // ---- API key ------------------------------------------------------------------

  const AUTH_TEXT = $('auth-message').textContent;
  let pollTimer = 0;
  let waitingForKey = false;

  function onAuthError(e) {
    if (!(e instanceof AuthError)) throw e;
    clearTimeout(pollTimer);
    waitingForKey = true;
    const auth = $('auth');
    const first = auth.hidden;
    auth.hidden = false;
    set($('auth-message'), storedKey() ? `The gateway did not accept that API key (${e.message}). Enter another.` : AUTH_TEXT);
    setStatus('auth', 'API key needed');
    if (first) $('api-key').focus();
  }

  function useKey(key) {
    storeKey(key);
    $('forget-key').hidden = !key;
    // Another key may be another tenant: start afresh.
    for (const fn of fns.values()) fn.card.remove();
    fns.clear();
    if (job.id) job.final = false;
    poll();
  }

  // ---- polling ------------------------------------------------------------------

  async function poll() {
    clearTimeout(pollTimer);
    waitingForKey = false;
    const started = Date.now();
    try {
      await refreshFunctions();
      if (job.id && !job.final) await refreshJob();
      $('auth').hidden = true;
      setStatus('live', 'Live');
      set($('updated'), `updated ${clock(new Date())} UTC`);
    } catch (e) {
      if (e instanceof AuthError) {
        onAuthError(e);
        return; // until a key is given
      }
      for (const fn of fns.values()) fn.card.classList.add('stale');
      setStatus('error', `API unreachable (${e.message}); retrying`);
    }
    if (!waitingForKey) pollTimer = setTimeout(poll, Math.max(0, POLL_MS - (Date.now() - started)));
  }

  $('auth-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const input = $('api-key');
    const key = input.value.trim();
    input.value = '';
    if (key) useKey(key);
  });
  $('forget-key').addEventListener('click', () => useKey(''));
  $('job-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const id = $('job-id').value.trim().toUpperCase();
    if (!id) return;
    if (jobFromHash() === id) lookup(id);
    else location.hash = 'job=' + encodeURIComponent(id); // hashchange looks it up
  });
  window.addEventListener('hashchange', () => {
    const id = jobFromHash();
    if (id) lookup(id);
  });

  $('forget-key').hidden = !storedKey();
  const first = jobFromHash();
  if (first) lookup(first);
  poll();
})();
