// The analytics tracker: the readable source of tracker.min.js (rebuild with `make tracker`;
// tests/test_tracker_build.py fails when the shipped file is stale or over 1,024 bytes gzipped).
//
//   <script defer src="https://HOST/js/tracker.js"></script>
//
// Sends a pageview on load and on every SPA navigation (never twice in a row for one path), the
// visible time on a page as an `engagement` event's `duration` (seconds) when the page is hidden,
// left, or navigated away from, and custom events: window.trackEvent(name, props). No cookies,
// no storage. Options are data-* attributes of the script tag (README "The tracker").
((w, d, n) => {
  const s = d.currentScript, loc = w.location, on = (t, e, f) => t.addEventListener(e, f, true);
  const has = k => s.hasAttribute("data-" + k);
  // The endpoint: data-api, else /api/events/ of the server the script itself came from.
  const api = s.getAttribute("data-api") || new URL("/api/events/", s.src).href;
  let ignored;
  try { ignored = localStorage.analytics_ignore; } catch (e) { /* storage blocked: not ignored */ }
  const off = ignored || n.webdriver
    || (!has("local") && /^(localhost|127\.|\[::1\]$)/.test(loc.hostname))
    || (has("respect-dnt") && (n.doNotTrack == "1" || w.doNotTrack == "1"));

  // The one place that shapes an event: its name and props, the path (`page`, with the hash
  // under data-hash) and the full URL it was shown at (`url`: the server takes the host name and
  // the utm_* parameters from it, and stores the path without the query string).
  const body = (name, props, extra) => Object.assign(
    { name, page: path, url: href, referrer: d.referrer || null, props: props || void 0 }, extra);

  // sendBeacon (survives the page being left), else fetch keepalive. A string body is sent as
  // text/plain: a "simple" cross-origin request, no CORS preflight.
  const send = (name, props, extra) => {
    if (off) return;
    const b = JSON.stringify(body(name, props, extra));
    n.sendBeacon ? n.sendBeacon(api, b) : fetch(api, { method: "POST", body: b, keepalive: true });
  };

  let path, href, visibleMs = 0, shownAt = d.visibilityState == "visible" ? Date.now() : 0;
  // Visible time of the current page, sent once it is at least a second, then restarted.
  const engage = () => {
    if (shownAt) visibleMs += Date.now() - shownAt;
    shownAt = d.visibilityState == "visible" ? Date.now() : 0;
    const sec = Math.round(visibleMs / 1000);
    if (path && sec > 0) send("engagement", 0, { duration: sec });
    visibleMs = 0;
  };
  const view = () => {
    const p = loc.pathname + (has("hash") ? loc.hash : "");
    if (p == path) return;
    engage();
    path = p;
    href = loc.href;
    send("pageview");
  };

  // SPA navigations: history.pushState/replaceState (wrapped), back/forward, and the hash when
  // data-hash is set. The wrapped call runs first, so the location is the new one.
  for (const k of ["pushState", "replaceState"]) {
    const orig = history[k];
    history[k] = function () { const r = orig.apply(this, arguments); view(); return r; };
  }
  on(w, "popstate", view);
  if (has("hash")) on(w, "hashchange", view);
  on(d, "visibilitychange", engage);
  on(w, "pagehide", engage);

  // Outbound links and file downloads (data-outbound, data-downloads), sent before the browser
  // follows the link (sendBeacon outlives the page).
  on(d, "click", e => {
    const a = e.target.closest && e.target.closest("a[href]");
    if (!a || !/^https?:/.test(a.protocol)) return;
    if (has("downloads") && /\.(pdf|zip|gz|tgz|rar|7z|dmg|exe|msi|apk|iso|docx?|xlsx?|pptx?|csv|txt|mp3|mp4|mov|avi)$/i.test(a.pathname))
      send("File Download", { url: a.href });
    else if (has("outbound") && a.host != loc.host) send("Outbound Link: Click", { url: a.href });
  });

  // Custom events, including those queued by the README's stub before this script ran.
  const queued = (w.trackEvent && w.trackEvent.q) || [];
  w.trackEvent = (name, props) => send(String(name), props);
  view();
  for (const args of queued) w.trackEvent.apply(0, args);
})(window, document, navigator);
