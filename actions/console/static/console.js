// Ultrabase Doctor console: follows progress without reloading the page. Every page reads
// without this script; it only refreshes the fleet's cards, follows a running diagnostic
// and an operation's steps. Same-origin requests only (the page's CSP allows nothing else).
(function () {
  "use strict";

  function get(url, accept) {
    return fetch(url, {credentials: "same-origin", headers: {"Accept": accept},
                       cache: "no-store"})
      .then(function (r) { return r.ok ? (accept === "application/json" ? r.json() : r.text()) : null; });
  }

  // Fleet: re-render the cards from the store (nothing is diagnosed by this).
  var cards = document.getElementById("cards");
  if (cards && cards.dataset.refresh) {
    var every = (parseInt(cards.dataset.interval, 10) || 15) * 1000;
    setInterval(function () {
      get(cards.dataset.refresh, "text/html").then(function (html) {
        if (html !== null) { cards.innerHTML = html; }
      }).catch(function () {});
    }, every);
  }

  // Instance: a diagnostic is running; reload once it has ended.
  var diagnosing = document.getElementById("diagnosing");
  if (diagnosing && diagnosing.dataset.statusUrl) {
    var check = function () {
      get(diagnosing.dataset.statusUrl, "application/json").then(function (state) {
        if (state && !state.running) { window.location.reload(); } else { setTimeout(check, 1500); }
      }).catch(function () { setTimeout(check, 3000); });
    };
    setTimeout(check, 1500);
  }

  // Operation: its steps, live, until it ends.
  var operation = document.getElementById("operation");
  if (operation && operation.dataset.poll) {
    var finished = function () {
      var body = operation.querySelector("[data-finished]");
      return body && body.dataset.finished === "true";
    };
    var tick = function () {
      get(operation.dataset.poll, "text/html").then(function (html) {
        if (html !== null) { operation.innerHTML = html; }
        if (!finished()) { setTimeout(tick, 1000); }
      }).catch(function () { setTimeout(tick, 3000); });
    };
    if (!finished()) { setTimeout(tick, 1000); }
  }
})();
