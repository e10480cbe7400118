// The dashboard: reads the public stats API (/api/v1/stats/*) and /openapi.json, nothing else.
//
// What it shows is what this server offers: the metrics and group_by dimensions the API accepts
// (written into the page by the server from the API's own types, else read from /openapi.json),
// so a tile or panel appears once the server supports it, with no change here. Every number carries data-metric (the API's metric name)
// and data-value (the API's number, unformatted), for tests and people's own scripts.
//
// State lives in the URL query (period, from, to, tz, interval, and one parameter per filter,
// named as the API names it), so a view can be shared; a share link's token lives in the URL
// fragment (#share=...), which browsers send to no server; a read key in localStorage.

const API = '/api/v1/stats';
const KEY_STORE = 'analytics_dashboard_key';
const REFRESH_MS = 60_000;

// Tiles, in order: metric -> label and formatter (only those the API offers are shown).
const TILES = [
  ['unique_visitors', 'Visitors', 'count'],
  ['visits', 'Visits', 'count'],
  ['pageviews', 'Pageviews', 'count'],
  ['events', 'Events', 'count'],
  ['bounce_rate', 'Bounce rate', 'rate'],
  ['visit_duration', 'Visit duration', 'seconds'],
  ['median_duration', 'Median time on page', 'seconds'],
];
// Panels, in order: dimension -> title.
const PANELS = [
  ['page', 'Top pages'], ['entry_page', 'Entry pages'], ['exit_page', 'Exit pages'],
  ['referrer', 'Referrers'], ['utm_source', 'UTM sources'], ['country', 'Countries'],
  ['os', 'Operating systems'], ['browser', 'Browsers'], ['device', 'Devices'], ['name', 'Events'],
];
const STATE_KEYS = ['period', 'from', 'to', 'tz', 'interval'];
const PANEL_ROWS = 10;

const $ = (id) => document.getElementById(id);
const el = (tag, attrs = {}, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'text') e.textContent = v; else if (k.startsWith('on')) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v === true ? '' : v);
  }
  e.append(...kids);
  return e;
};

let schema = null;          // what the API offers: {metrics, dimensions, filters: {name: allowsEmpty}}
let credential = null;      // the share token or the read key
let generation = 0;         // a newer load supersedes an older one still running
let chart = null;
let refreshTimer = null;

// -- what the API offers ------------------------------------------------------------------------
// The server writes it into the page (web/dashboard.py: the enums the API validates against);
// without that, the API's own description says it (/openapi.json: the same enums).
async function discover() {
  const meta = document.querySelector('meta[name=analytics-offers]');
  if (meta && meta.content.startsWith('{')) {
    const o = JSON.parse(meta.content);
    return { metrics: new Set(o.metrics), dimensions: new Set(o.dimensions), filters: o.filters,
      visitMetrics: new Set(o.visit_metrics || []), visitDimensions: new Set(o.visit_dimensions || []),
      visitOnly: new Set(o.visit_only || []) };
  }
  const r = await fetch('/openapi.json');
  if (!r.ok) throw new Error(`openapi.json: HTTP ${r.status}`);
  const doc = await r.json();
  const params = doc.paths[`${API}/breakdown`].get.parameters;
  const enumOf = (name) => {  // group_by: the catalog's dimensions, or prop:<key> (anyOf)
    const it = params.find((p) => p.name === name).schema.items;
    return it.enum || it.anyOf.find((a) => a.enum).enum;
  };
  const metrics = new Set(enumOf('metrics'));
  const dimensions = new Set(enumOf('group_by'));
  const filters = {};
  for (const p of params) {
    const items = p.schema.items || {};
    if (dimensions.has(p.name)) filters[p.name] = items.enum ? items.enum.includes('') : !(items.minLength >= 1);
  }
  // Without the server's note, no metric is known to be a visit metric: every request is one kind.
  return { metrics, dimensions, filters, visitMetrics: new Set(), visitDimensions: new Set(), visitOnly: new Set() };
}

// Which requests the page makes under the current filters: visit metrics only with filters a
// visit row carries (entry/exit page, os, browser, device, referrer). The API also answers them
// under a page or event-name filter (the visits that include a matching event), but from raw
// events: seconds at millions of events, so the page shows those tiles as n/a instead. Every
// other metric takes any filter but the visit-only ones (entry/exit page).
function answerable(metric, filters) {
  if (schema.visitMetrics.has(metric)) return filters.every(([k]) => schema.visitDimensions.has(k));
  return !filters.some(([k]) => schema.visitOnly.has(k));
}

// -- state in the URL ------------------------------------------------------------------------------
function readState() {
  const q = new URLSearchParams(location.search);
  const browserZone = Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';
  const state = {
    period: q.get('period') || '30d', from: q.get('from') || '', to: q.get('to') || '',
    tz: q.get('tz') || browserZone, interval: q.get('interval') || '', filters: [],
  };
  for (const [k, v] of q) if (schema && k in schema.filters) state.filters.push([k, v]);
  return state;
}

function writeState(state) {
  const q = new URLSearchParams();
  for (const k of STATE_KEYS) if (state[k]) q.set(k, state[k]);
  for (const [k, v] of state.filters) q.append(k, v);
  history.replaceState(null, '', `${location.pathname}?${q}${location.hash}`);
}

// -- dates: plain YYYY-MM-DD in the chosen zone (the API reads them as wall time there) ----------
function todayIn(tz) {
  return new Intl.DateTimeFormat('en-CA', { timeZone: tz, year: 'numeric', month: '2-digit', day: '2-digit' }).format(new Date());
}
function addDays(day, n) {
  const [y, m, d] = day.split('-').map(Number);
  return new Date(Date.UTC(y, m - 1, d + n)).toISOString().slice(0, 10);
}
function range(state) {
  const today = todayIn(state.tz);
  switch (state.period) {
    case 'today': return [today, addDays(today, 1)];
    case 'yesterday': return [addDays(today, -1), today];
    case '7d': return [addDays(today, -6), addDays(today, 1)];
    case 'month': return [today.slice(0, 8) + '01', addDays(today, 1)];
    case 'custom':
      if (state.from && state.to && state.from <= state.to) return [state.from, addDays(state.to, 1)];
      return [addDays(today, -29), addDays(today, 1)];
    default: return [addDays(today, -29), addDays(today, 1)];
  }
}
function defaultInterval(state) {
  return state.period === 'today' || state.period === 'yesterday' ? 'hour' : 'day';
}

// -- the API ---------------------------------------------------------------------------------------
class Unauthorized extends Error {}
// A panel the current filters cannot be asked for (a visit-only dimension under an event filter).
class Unanswerable extends Error {}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function stats(kind, params, retries = 2) {
  const q = new URLSearchParams();
  for (const [k, v] of params) q.append(k, v);
  const r = await fetch(`${API}/${kind}?${q}`, { headers: { Authorization: `Bearer ${credential}` } });
  if (r.status === 401 || r.status === 403) throw new Unauthorized((await r.json()).detail);
  if (r.status === 503 && retries > 0) {
    // Too many reads at once, or the database is busy: as the server says, a moment later.
    await sleep(Math.min(2, Number(r.headers.get('Retry-After')) || 1) * 1000);
    return stats(kind, params, retries - 1);
  }
  if (!r.ok) {
    let detail = `HTTP ${r.status}`;
    try { detail = JSON.stringify((await r.json()).detail); } catch (_) { /* not JSON */ }
    throw new Error(`${kind}: ${detail}`);
  }
  return r.json();
}

// -- formatting ------------------------------------------------------------------------------------
const fmtCount = new Intl.NumberFormat();
function format(kind, v) {
  if (v === null || v === undefined) return '–';
  if (kind === 'rate') return `${new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 }).format(v <= 1 ? v * 100 : v)}%`;
  if (kind === 'seconds') {
    const s = Math.round(v);
    return s >= 3600 ? `${Math.floor(s / 3600)}h ${Math.floor(s % 3600 / 60)}m` : s >= 60 ? `${Math.floor(s / 60)}m ${s % 60}s` : `${s}s`;
  }
  return fmtCount.format(v);
}
const raw = (v) => (v === null || v === undefined ? '' : String(v));

// -- rendering -------------------------------------------------------------------------------------
function renderTiles(tiles, row, answered) {
  const box = $('tiles');
  box.replaceChildren();
  for (const [metric, label, kind] of tiles) {
    if (!answered.has(metric)) {  // the filters leave it unanswerable: no number, and it says why
      box.append(el('div', { class: 'tile na', 'data-tile': metric, title: 'Not available with these filters' },
        el('span', { class: 'name', text: label }), el('span', { class: 'value', text: 'n/a' }),
        el('span', { class: 'prev', text: 'not with these filters' })));
      continue;
    }
    const cur = row[metric];
    const prev = row.previous ? row.previous[metric] : null;
    const change = typeof cur === 'number' && typeof prev === 'number' && prev !== 0 ? (cur - prev) / prev : null;
    const changeEl = change === null ? el('span', { class: 'change', text: '' })
      : el('span', { class: `change ${change > 0 ? 'up' : change < 0 ? 'down' : ''}`, 'data-metric': metric,
        'data-kind': 'change', 'data-value': raw(change),
        text: ` ${change > 0 ? '+' : ''}${new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 }).format(change * 100)}%` });
    box.append(el('div', { class: 'tile', 'data-tile': metric },
      el('span', { class: 'name', text: label }),
      el('span', { class: 'value', 'data-metric': metric, 'data-value': raw(cur), text: format(kind, cur) }),
      el('span', { class: 'prev' }, 'previous ',
        el('span', { 'data-metric': metric, 'data-kind': 'previous', 'data-value': raw(prev), text: format(kind, prev) }),
        changeEl)));
  }
}

function renderPanel(dimension, title, metric, rows, onPick, error) {
  const head = el('div', { class: 'card-head' }, el('h2', { text: title }),
    el('span', { class: 'num', text: metric === 'visits' ? 'Visits' : 'Events' }));
  if (error instanceof Unanswerable) {
    return el('section', { class: 'card panel', 'data-dimension': dimension, 'data-unanswerable': '' }, head,
      el('p', { class: 'empty', text: 'Not available with these filters' }));
  }
  if (error) {
    return el('section', { class: 'card panel', 'data-dimension': dimension, 'data-error': '' }, head,
      el('p', { class: 'error', text: `Could not load: ${error.message || error}` }));
  }
  const list = el('ol', { class: 'rows' });
  const filterable = dimension in schema.filters;
  for (const row of rows) {
    const key = row[dimension];
    const text = key === '' ? '(none)' : String(key);
    const canFilter = filterable && (key !== '' || schema.filters[dimension]);
    const label = canFilter
      ? el('button', { type: 'button', class: 'label', title: `Filter by ${dimension}: ${text}`, onclick: () => onPick(dimension, key), text })
      : el('span', { class: 'label', text });
    list.append(el('li', { 'data-key': key }, label,
      el('span', { class: 'num', 'data-metric': metric, 'data-value': raw(row[metric]), text: format('count', row[metric]) })));
  }
  if (!rows.length) list.append(el('li', { class: 'empty', text: 'No data' }));
  return el('section', { class: 'card panel', 'data-dimension': dimension }, head, list);
}

function renderChips(state, onRemove) {
  const box = $('chips');
  box.replaceChildren(...state.filters.map(([k, v], i) => el('span', { class: 'chip', 'data-filter': k, 'data-value': v },
    `${k}: ${v === '' ? '(none)' : v}`,
    el('button', { type: 'button', 'aria-label': `Remove filter ${k}`, onclick: () => onRemove(i), text: '×' }))));
}

// uPlot loads `async`: the reads start without waiting for it to be fetched and compiled.
function chartLibrary() {
  if (window.uPlot) return Promise.resolve(window.uPlot);
  return new Promise((resolve, reject) => {
    $('uplot-js').addEventListener('load', () => resolve(window.uPlot), { once: true });
    $('uplot-js').addEventListener('error', () => reject(new Error('the chart library did not load')), { once: true });
  });
}

function renderChart(uPlot, series, metrics, interval, tz) {
  const box = $('chart');
  const xs = series.map((r) => Date.parse(r.bucket) / 1000);
  const data = [xs, ...metrics.map(([m]) => series.map((r) => r[m]))];
  const colors = ['#4f46e5', '#0ea5e9', '#f59e0b'];
  const opts = {
    width: Math.max(200, box.clientWidth), height: 240,
    series: [{}, ...metrics.map(([m, label], i) => ({ label, stroke: colors[i % colors.length], width: 2, points: { show: series.length < 60 } }))],
    axes: [{}, { size: 50 }],
    scales: { x: { time: true } },
    tzDate: (ts) => uPlot.tzDate(new Date(ts * 1e3), tz),  // the axis in the chosen zone, not the browser's
    legend: { live: false },
  };
  if (chart) chart.destroy();
  box.replaceChildren();
  chart = new uPlot(opts, data, box);
  box.dataset.interval = interval;
  box.dataset.points = String(xs.length);
}

// -- one load: every panel for the current state ---------------------------------------------------
async function load() {
  const mine = ++generation;
  const state = readState();
  const [start, end] = range(state);
  const interval = state.interval || defaultInterval(state);
  const base = [['start', start], ['end', end], ['timezone', state.tz], ...state.filters];
  const dash = $('dash');
  Object.assign(dash.dataset, { start, end, timezone: state.tz, interval, state: 'loading' });
  syncControls(state, interval);
  renderChips(state, (i) => { state.filters.splice(i, 1); writeState(state); load(); });

  const tiles = TILES.filter(([m]) => schema.metrics.has(m));
  const panels = PANELS.filter(([d]) => schema.dimensions.has(d));
  // Rows count events: every rollup family carries them, so each panel is a rollup read at any
  // size (visitors per OS or referrer are a raw scan: ~0.5 s each at 1M events, refused when
  // several run at once); entry and exit pages count visits. The tiles and the chart show visitors.
  const rowMetric = (d) => (schema.visitOnly.has(d) ? 'visits' : 'events');
  const chartMetrics = tiles.filter(([m]) => ['unique_visitors', 'pageviews', 'visits'].includes(m)).map(([m, l]) => [m, l]);
  if (!chartMetrics.length) chartMetrics.push(['events', 'Events']);
  // Each kind of metric is asked on its own (a visit metric under a page filter is a raw read the
  // page does not make, and it must not take the others with it); what the filters leave
  // unanswerable is shown as such.
  const ok = (ms) => ms.filter(([m]) => answerable(m, state.filters));
  const byKind = (ms) => [ms.filter(([m]) => !schema.visitMetrics.has(m)), ms.filter(([m]) => schema.visitMetrics.has(m))]
    .filter((g) => g.length);
  const merged = async (kind, params, groups) => {
    const answers = await Promise.all(groups.map((g) => stats(kind, [...params, ...g.map(([m]) => ['metrics', m])])));
    const rows = answers.length ? answers[0].results.map((r) => ({ ...r })) : [];
    for (const a of answers.slice(1)) {
      a.results.forEach((r, i) => {
        if (!rows[i]) rows[i] = { ...r };
        const prev = rows[i].previous;
        Object.assign(rows[i], r);
        if (prev && r.previous) rows[i].previous = { ...prev, ...r.previous };
      });
    }
    return { results: rows };
  };

  const pick = (dimension, key) => {
    if (!state.filters.some(([k, v]) => k === dimension && v === key)) state.filters.push([dimension, key]);
    writeState(state);
    load();
  };
  try {
    // A panel that fails shows its error; the rest of the page still works.
    const breakdowns = Promise.allSettled(panels.map(([d]) => (answerable(rowMetric(d), state.filters)
      ? stats('breakdown', [...base, ['group_by', d], ['metrics', rowMetric(d)], ['limit', PANEL_ROWS]])
      : Promise.reject(new Unanswerable()))));
    const shownChart = ok(chartMetrics);
    const [totals, series] = await Promise.all([
      merged('totals', [...base, ['compare', 'previous']], byKind(ok(tiles))),
      merged('timeseries', [...base, ['interval', interval]], byKind(shownChart)),
    ]);
    const settled = await breakdowns;
    const uPlot = await chartLibrary();
    if (mine !== generation) return;
    const denied = settled.find((s) => s.status === 'rejected' && s.reason instanceof Unauthorized);
    if (denied) throw denied.reason;
    $('error').hidden = true;
    renderTiles(tiles, totals.results[0] || {}, new Set(ok(tiles).map(([m]) => m)));
    $('panels').replaceChildren(...panels.map(([d, title], i) => renderPanel(d, title, rowMetric(d),
      settled[i].status === 'fulfilled' ? settled[i].value.results : [], pick, settled[i].reason)));
    renderChart(uPlot, series.results, shownChart.length ? shownChart : [], interval, state.tz);
    dash.dataset.state = 'ready';
    dash.dataset.loads = String(Number(dash.dataset.loads || 0) + 1);
    performance.mark('dashboard-ready');
  } catch (err) {
    if (mine !== generation) return;
    if (err instanceof Unauthorized) { showLogin(err.message); return; }
    $('error').textContent = String(err.message || err);
    $('error').hidden = false;
    dash.dataset.state = 'error';
  }
  scheduleRefresh(state);
}

function scheduleRefresh(state) {
  clearTimeout(refreshTimer);
  // "Today" is still happening: refresh it while the page is visible.
  if (state.period === 'today') {
    refreshTimer = setTimeout(() => { if (document.visibilityState === 'visible') load(); else scheduleRefresh(state); }, REFRESH_MS);
  }
}

// -- controls ----------------------------------------------------------------------------------------
function syncControls(state, interval) {
  $('period').value = state.period;
  $('custom').hidden = state.period !== 'custom';
  $('from').value = state.from;
  $('to').value = state.to;
  if (document.activeElement !== $('tz')) $('tz').value = state.tz;
  $('interval').value = interval;
}

function bindControls() {
  const update = (patch) => { const s = { ...readState(), ...patch }; writeState(s); load(); };
  $('period').addEventListener('change', (e) => update({ period: e.target.value, interval: '' }));
  $('from').addEventListener('change', (e) => update({ from: e.target.value }));
  $('to').addEventListener('change', (e) => update({ to: e.target.value }));
  $('interval').addEventListener('change', (e) => update({ interval: e.target.value }));
  $('tz').addEventListener('change', (e) => {
    const tz = e.target.value.trim();
    try { new Intl.DateTimeFormat('en', { timeZone: tz }); } catch (_) { e.target.value = readState().tz; return; }
    update({ tz });
  });
  $('controls').addEventListener('submit', (e) => e.preventDefault());
  $('forget').addEventListener('click', () => { localStorage.removeItem(KEY_STORE); credential = null; showLogin(''); });
  $('login').addEventListener('submit', (e) => {
    e.preventDefault();
    credential = $('key').value.trim();
    localStorage.setItem(KEY_STORE, credential);
    $('key').value = '';
    showDashboard();
  });
  const zones = typeof Intl.supportedValuesOf === 'function' ? Intl.supportedValuesOf('timeZone') : [];
  $('zones').replaceChildren(...['UTC', ...zones].map((z) => el('option', { value: z })));
  window.addEventListener('resize', () => { if (chart) chart.setSize({ width: Math.max(200, $('chart').clientWidth), height: 240 }); });
}

function showLogin(message) {
  $('dash').hidden = true;
  $('login').hidden = false;
  $('forget').hidden = true;
  $('login-error').textContent = message || '';
}

function showDashboard() {
  $('login').hidden = true;
  $('dash').hidden = false;
  $('forget').hidden = !localStorage.getItem(KEY_STORE) || shareToken() !== null;
  load();
}

function shareToken() {
  const m = /(?:^#|&)share=([^&]+)/.exec(location.hash);
  return m ? decodeURIComponent(m[1]) : null;
}

async function main() {
  bindControls();
  try {
    schema = await discover();
  } catch (err) {
    $('dash').hidden = false;
    $('error').textContent = `Could not read what this server offers: ${err.message}`;
    $('error').hidden = false;
    return;
  }
  credential = shareToken() || localStorage.getItem(KEY_STORE);
  if (credential) showDashboard(); else showLogin('');
}

main();
