// The live dashboard: poll /admin/health.json every 2 s, update the tables
// and tiles, and draw the server's last hour with uPlot (vendored).
(function () {
  "use strict";
  var live = document.getElementById("h-live");
  var CHARTS = {
    traffic: { el: "c-traffic", series: [["calls", "calls/s", "#c0392b"], ["registrations", "REGISTERs/s", "#2471a3"]] },
    load: { el: "c-load", series: [["in_flight", "in flight", "#8e44ad"], ["contacts", "contacts", "#16a085", "n"]] },
    replies: {
      el: "c-replies",
      series: [["2xx", "2xx", "#1e7b34"], ["3xx", "3xx", "#2471a3"], ["4xx", "4xx", "#d68910"],
               ["5xx", "5xx", "#b3261e"], ["6xx", "6xx", "#6c3483"]]
    },
    host: { el: "c-host", series: [["cpu", "CPU %", "#d35400"], ["memory", "MB", "#2c3e50", "mb"]] }
  };
  var plots = {};
  function set(id, v) { var e = document.getElementById(id); if (e) { e.textContent = String(v); } }
  function duration(s) {
    if (s >= 86400) { return Math.floor(s / 86400) + " d " + Math.floor(s % 86400 / 3600) + " h"; }
    if (s >= 3600) { return Math.floor(s / 3600) + " h " + Math.floor(s % 3600 / 60) + " min"; }
    if (s >= 60) { return Math.floor(s / 60) + " min " + (s % 60) + " s"; }
    return s + " s";
  }
  function width(el) { return Math.max(200, el.clientWidth); }
  function columns(def, cols) {
    return [cols.t].concat(def.series.map(function (s) { return cols[s[0]]; }));
  }
  function build(def, cols) {
    var el = document.getElementById(def.el);
    var axes = [{}, { scale: "y" }];
    var scales = { x: { time: true }, y: { range: function (u, lo, hi) { return [0, Math.max(1, hi * 1.1)]; } } };
    def.series.forEach(function (s) {
      if (s[3]) {  // a second y scale on the right (contacts, memory)
        axes.push({ scale: s[3], side: 1, grid: { show: false } });
        scales[s[3]] = { range: function (u, lo, hi) { return [0, Math.max(1, hi * 1.1)]; } };
      }
    });
    var opts = {
      width: width(el),
      height: 180,
      scales: scales,
      axes: axes,
      legend: { live: false },
      series: [{}].concat(def.series.map(function (s) {
        return { label: s[1], stroke: s[2], width: 2, scale: s[3] || "y" };
      }))
    };
    return new uPlot(opts, columns(def, cols), el);
  }
  function draw(cols) {
    Object.keys(CHARTS).forEach(function (name) {
      var def = CHARTS[name];
      if (plots[name]) { plots[name].setData(columns(def, cols)); } else { plots[name] = build(def, cols); }
      document.getElementById(def.el).dataset.points = String(cols.t.length);
    });
    var n = cols.t.length - 1;
    if (n >= 0) {
      ["calls", "contacts", "in_flight", "cpu", "memory"].forEach(function (k) { set("m-" + k, cols[k][n]); });
    }
  }
  window.addEventListener("resize", function () {
    Object.keys(plots).forEach(function (name) {
      var el = document.getElementById(CHARTS[name].el);
      plots[name].setSize({ width: width(el), height: 180 });
    });
  });
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
        draw(h.series);
        live.textContent = "live, updated " + new Date().toLocaleTimeString();
      })
      .catch(function () { live.textContent = "connection lost"; });
  }
  tick();
  setInterval(tick, 2000);
})();
