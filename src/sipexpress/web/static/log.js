// The log viewer follows the server: new lines appear on top every 2 s.
(function () {
  "use strict";
  var table = document.getElementById("log");
  var live = document.getElementById("log-live");
  if (!table) { return; }
  var body = table.tBodies[0];
  var last = Number(table.dataset.last) || 0;
  function cell(label, text, cls) {
    var td = document.createElement("td");
    td.dataset.label = label;
    if (cls) { td.className = cls; }
    td.textContent = text;
    return td;
  }
  function tick() {
    var q = new URLSearchParams({ level: table.dataset.level, q: table.dataset.q, lines: table.dataset.lines, after: String(last) });
    fetch("/admin/log.json?" + q.toString(), { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) { return r.json().then(function (j) { return [r.ok, j]; }); })
      .then(function (res) {
        if (!res[0]) { live.textContent = res[1].error || "server not reachable"; return; }
        var lines = res[1].lines;
        if (lines.length) {
          var none = body.querySelector("tr.none");
          if (none) { none.remove(); }
        }
        for (var i = lines.length - 1; i >= 0; i--) {
          var l = lines[i];
          var tr = document.createElement("tr");
          tr.className = "lvl-" + l.level.toLowerCase();
          tr.append(cell("Time", l.clock, "nowrap"), cell("Level", l.level), cell("Source", l.logger), cell("Message", l.message, "mono"));
          body.prepend(tr);
          last = Math.max(last, l.seq);
        }
        var max = Number(table.dataset.lines) || 200;
        while (body.rows.length > max) { body.deleteRow(body.rows.length - 1); }
        live.textContent = "live, updated " + new Date().toLocaleTimeString();
      })
      .catch(function () { live.textContent = "connection lost"; });
  }
  setInterval(tick, 2000);
})();
