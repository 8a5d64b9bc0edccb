// The dashboard's only script: refresh the live part of the page, say when the service is away,
// confirm deletions, and show the API key fields only for a live exchange. Pages work without it.
(function () {
  "use strict";

  function refresh(live) {
    var every = Math.max(1, parseInt(live.getAttribute("data-every"), 10) || 3) * 1000;
    var offline = document.getElementById("offline");
    var signedOut = document.getElementById("signedout");

    function tick() {
      fetch(live.getAttribute("data-src"), { credentials: "same-origin", cache: "no-store" })
        .then(function (response) {
          offline.hidden = true;
          if (response.status === 401) {
            signedOut.hidden = false;
            return null;
          }
          return response.ok ? response.text() : null;
        })
        .then(function (html) {
          if (html === null || html === undefined) return;
          // Keep open what the reader opened (an execution's output) across the refresh.
          var open = Array.prototype.map.call(live.querySelectorAll("details[open]"), function (d) { return d.id; });
          live.innerHTML = html;
          open.forEach(function (id) {
            var again = id && document.getElementById(id);
            if (again) again.open = true;
          });
          bindConfirms(live);
        })
        .catch(function () { offline.hidden = false; })
        .then(function () { setTimeout(tick, every); });
    }
    setTimeout(tick, every);
  }

  function bindConfirms(root) {
    Array.prototype.forEach.call(root.querySelectorAll("form[data-confirm]"), function (form) {
      form.addEventListener("submit", function (event) {
        if (!window.confirm(form.getAttribute("data-confirm"))) event.preventDefault();
      });
    });
  }

  function liveOnly() {
    var exchange = document.getElementById("exchange");
    if (!exchange) return;
    var fields = document.querySelector(".live-only");
    function update() { fields.hidden = exchange.value !== "coindcx"; }
    exchange.addEventListener("change", update);
    update();
  }

  document.addEventListener("DOMContentLoaded", function () {
    var live = document.getElementById("live");
    if (live) refresh(live);
    bindConfirms(document);
    liveOnly();
    var bad = document.getElementById("bad-line");
    if (bad) bad.scrollIntoView({ block: "center" });
  });
})();
