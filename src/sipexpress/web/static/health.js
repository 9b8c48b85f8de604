// Live server statistics: poll /admin/health.json and update the page.
(function () {
  "use strict";
  var live = document.getElementById("h-live");
  function set(id, v) { var e = document.getElementById(id); if (e) { e.textContent = String(v); } }
  function duration(s) {
    if (s >= 86400) { return Math.floor(s / 86400) + " d " + Math.floor(s % 86400 / 3600) + " h"; }
    if (s >= 3600) { return Math.floor(s / 3600) + " h " + Math.floor(s % 3600 / 60) + " min"; }
    if (s >= 60) { return Math.floor(s / 60) + " min " + (s % 60) + " s"; }
    return s + " s";
  }
  function tick() {
    fetch("/admin/health.json", { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) { return r.json().then(function (j) { return [r.ok, j]; }); })
      .then(function (res) {
        var ok = res[0], h = res[1];
        if (!ok) { live.textContent = h.error || "server not reachable"; return; }
        Object.keys(h.t_stats).forEach(function (k) { set("t-" + k, h.t_stats[k]); });
        Object.keys(h.sl_stats).forEach(function (k) { set("sl-" + k, h.sl_stats[k]); });
        h.ul_stats.forEach(function (d) { set("ul-" + d.domain, d.users); });
        set("h-uptime", duration(h.uptime.uptime));
        var box = document.getElementById("h-chart");
        var doc = new DOMParser().parseFromString(h.chart, "image/svg+xml");
        box.replaceChildren(document.importNode(doc.documentElement, true));
        live.textContent = "live, updated " + new Date().toLocaleTimeString();
      })
      .catch(function () { live.textContent = "connection lost"; });
  }
  setInterval(tick, 2000);
})();
