/* wulian explorer: refresh the overview every few seconds (server-rendered fragment). */
(function () {
  "use strict";
  var box = document.getElementById("live");
  var badge = document.getElementById("live-badge");
  if (!box) return;
  var src = box.getAttribute("data-src");
  var interval = parseInt(box.getAttribute("data-interval"), 10) || 3000;
  var timer = null;
  var stopped = false;

  function setBadge(state) {
    if (!badge) return;
    badge.textContent = badge.getAttribute("data-" + state) || state;
    badge.className = "livebadge " + state;
  }

  function schedule() {
    if (!stopped) timer = setTimeout(refresh, interval);
  }

  function refresh() {
    timer = null;
    if (document.hidden) { setBadge("off"); schedule(); return; }
    fetch(src, { credentials: "same-origin", cache: "no-store" })
      .then(function (resp) {
        if (resp.status === 401) { stopped = true; setBadge("expired"); return null; }
        if (!resp.ok) throw new Error("HTTP " + resp.status);
        return resp.text();
      })
      .then(function (html) {
        if (html !== null && html !== undefined) {
          box.innerHTML = html; // rendered and escaped by the server's templates
          setBadge("on");
        }
      })
      .catch(function () { setBadge("off"); })
      .then(schedule);
  }

  document.addEventListener("visibilitychange", function () {
    if (!document.hidden && timer === null && !stopped) refresh();
  });
  schedule();
})();
