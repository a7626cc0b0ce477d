// Warns two minutes before an idle session ends, and offers to keep it.
// The server ends a session SESSION_IDLE_SECONDS after its last request; every
// request (page or htmx) restarts that clock, so this script restarts its own too.
(function () {
  "use strict";
  const box = document.getElementById("session-warning");
  if (!box) return;
  const idleMs = Number(box.dataset.idleSeconds) * 1000;
  const warnBeforeMs = Math.min(120000, idleMs / 2);
  let warnTimer, endTimer;

  function restart() {
    clearTimeout(warnTimer);
    clearTimeout(endTimer);
    box.hidden = true;
    warnTimer = setTimeout(function () { box.hidden = false; document.getElementById("session-stay").focus(); },
                           idleMs - warnBeforeMs);
    endTimer = setTimeout(function () { window.location.assign(box.dataset.loginUrl); }, idleMs);
  }

  document.getElementById("session-stay").addEventListener("click", function () {
    const token = document.body.getAttribute("hx-headers");
    const headers = token ? JSON.parse(token) : {};
    fetch(box.dataset.keepaliveUrl, { method: "POST", headers: headers, credentials: "same-origin" })
      .then(function (response) {
        if (response.ok) { restart(); } else { window.location.assign(box.dataset.loginUrl); }
      });
  });
  document.body.addEventListener("htmx:afterRequest", restart);
  restart();
})();
