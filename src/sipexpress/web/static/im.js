// Follow a message in flight: poll /im/jobs/<id> until ser has the final reply.
(function () {
  "use strict";
  var box = document.getElementById("im-progress");
  if (!box || box.dataset.state !== "pending") { return; }
  var url = "/im/jobs/" + encodeURIComponent(box.dataset.job);
  function show(j) {
    box.textContent = j.message;
    box.dataset.state = j.state;
    if (j.state === "pending") { return; }
    box.classList.remove("pending");
    box.classList.add(j.state === "delivered" ? "ok" : "error");
    box.setAttribute("role", j.state === "delivered" ? "status" : "alert");
  }
  function tick() {
    fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) { return r.json(); })
      .then(function (j) { show(j); if (j.state === "pending") { setTimeout(tick, 500); } })
      .catch(function () { box.textContent = "Connection to the web server lost; reload the page to see the result."; });
  }
  setTimeout(tick, 300);
})();
