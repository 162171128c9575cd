// Live queue: applies server-sent events (/queue/events) to the rows they concern and
// ticks the wait times. No inline script anywhere (CSP script-src 'self'); text is set
// with textContent only, never parsed as HTML.
(function () {
  "use strict";
  var root = document.getElementById("live");
  if (!root || !window.EventSource) { return; }
  var offset = parseFloat(root.dataset.now) - Date.now() / 1000;  // server clock - ours
  var languages = JSON.parse(root.dataset.languages || "{}");
  var sources = JSON.parse(root.dataset.sources || "{}");
  var waitingBody = document.getElementById("waiting-body");
  var activeBody = document.getElementById("active-body");
  var conn = document.getElementById("conn");
  var announce = document.getElementById("announce");
  var WAITING = { waiting: true, dispatching: true };
  var newCallbacks = 0;
  var CALLBACK_CHANGES = {
    callback_requested: true, callback_pending: true, callback_calling: true,
    callback_answered: true, callback_attempt_failed: true, callback_failed: true,
    callback_cancelled: true, callback_closed: true, callback_rejoined: true
  };

  function names(id) {
    var row = document.getElementById("r-" + id);
    return row ? row.dataset.name : id;
  }
  function duration(seconds) {
    seconds = Math.max(0, Math.floor(seconds));
    var h = Math.floor(seconds / 3600), m = Math.floor(seconds / 60) % 60, s = seconds % 60;
    var mm = h ? String(m).padStart(2, "0") : String(m);
    return (h ? h + ":" : "") + mm + ":" + String(s).padStart(2, "0");
  }
  function tick() {
    var now = Date.now() / 1000 + offset;
    var cells = document.querySelectorAll("[data-since]");
    for (var i = 0; i < cells.length; i++) {
      cells[i].textContent = duration(now - parseFloat(cells[i].dataset.since));
    }
  }
  function cell(tag, text, cls) {
    var el = document.createElement(tag);
    if (text !== undefined) { el.textContent = text; }
    if (cls) { el.className = cls; }
    return el;
  }
  function link(label, hidden, id) {
    var th = cell("th"); th.scope = "row";
    var a = cell("a", label); a.href = root.dataset.callUrl.replace("CALLID", encodeURIComponent(id));
    a.appendChild(cell("span", hidden + id, "vh"));
    th.appendChild(a);
    return th;
  }
  function since(value) {
    var td = cell("td", "", "num"); td.dataset.since = String(value); return td;
  }
  function ringing(call) {
    if (call.ringing.length) { return "Wave " + call.wave + ": " + call.ringing.map(names).join(", "); }
    return call.state === "dispatching" ? "Wave " + call.wave + ": between rings" : "Not ringing yet";
  }
  function where(call) { return call.neighborhood || "Unknown"; }
  function lang(call) { return languages[call.language] || call.language; }

  function waitingRow(call) {
    var tr = document.createElement("tr");
    tr.id = "w-" + call.id;
    tr.dataset.priority = String(call.priority);
    tr.dataset.created = String(call.created_at);
    tr.append(link("Step in", " for call ", call.id), since(call.queued_at || call.created_at),
      cell("td", lang(call)), cell("td", where(call)),
      cell("td", sources[call.source] || call.source), cell("td", ringing(call), "ringing"));
    return tr;
  }
  function activeRow(call) {
    var tr = document.createElement("tr");
    tr.id = "a-" + call.id;
    tr.append(link("Join", " call ", call.id), cell("td", names(call.accepted_by)),
      since(call.accepted_at), cell("td", lang(call)), cell("td", where(call)),
      cell("td", sources[call.source] || call.source));
    return tr;
  }
  // Keep the queue's own order: priority, then arrival.
  function insertSorted(tr, call) {
    var rows = waitingBody.rows;
    for (var i = 0; i < rows.length; i++) {
      var p = parseFloat(rows[i].dataset.priority), c = parseFloat(rows[i].dataset.created);
      if (p > call.priority || (p === call.priority && c > call.created_at)) {
        waitingBody.insertBefore(tr, rows[i]); return;
      }
    }
    waitingBody.appendChild(tr);
  }
  function remove(id) {
    var el = document.getElementById(id);
    if (el) { el.remove(); }
  }
  function counts() {
    document.getElementById("waiting-count").textContent = String(waitingBody.rows.length);
    document.getElementById("active-count").textContent = String(activeBody.rows.length);
    document.getElementById("waiting-empty").hidden = waitingBody.rows.length > 0;
  }
  function responderState(rid, live) {
    var row = document.getElementById("r-" + rid);
    if (!row) { return; }
    var state = live.on_call_with ? "on a call" : live.ringing_for ? "ringing"
      : row.dataset.onShift === "1" ? "free" : "off";
    var td = row.cells[row.cells.length - 1];
    td.textContent = state;
    td.className = "state state-" + state.replace(/ /g, "-");
  }
  function say(event, call) {
    var what = call ? lang(call) + ", " + where(call) : "";
    var text = {
      queued: "New call waiting: " + what + ".",
      accepted: call ? names(call.accepted_by) + " took the call (" + what + ")." : "",
      caller_hung_up: "A caller hung up" + (what ? " (" + what + ")" : "") + ".",
      fallback: "A call went to the fallback line" + (what ? " (" + what + ")" : "") + ".",
      callback_failed: "A callback request failed: nobody answered its last attempt."
    }[event.type];
    if (text) { announce.textContent = text; }
  }
  function apply(payload) {
    var event = payload.event || {}, call = payload.call;
    if (call) {
      var existing = document.getElementById("w-" + call.id);
      if (WAITING[call.state]) {
        var row = waitingRow(call);
        if (existing) { waitingBody.replaceChild(row, existing); } else { insertSorted(row, call); }
        remove("a-" + call.id);
      } else if (call.state === "bridged") {
        remove("w-" + call.id);
        var old = document.getElementById("a-" + call.id);
        if (old) { activeBody.replaceChild(activeRow(call), old); } else { activeBody.appendChild(activeRow(call)); }
      } else {
        remove("w-" + call.id); remove("a-" + call.id);
      }
    } else if (event.call_id) {
      remove("w-" + event.call_id); remove("a-" + event.call_id);
    }
    var responders = payload.responders || {};
    Object.keys(responders).forEach(function (rid) { responderState(rid, responders[rid]); });
    if (CALLBACK_CHANGES[event.type]) {
      // The callback list (places, attempts, next tries) is drawn by the server: say it moved.
      newCallbacks += 1;
      var note = document.getElementById("callbacks-new");
      note.querySelector("span").textContent = newCallbacks + " change(s) to callback requests since this page loaded.";
      note.hidden = false;
    }
    counts();
    say(event, call);
    tick();
  }

  var source = new EventSource(root.dataset.events + "?after=" + encodeURIComponent(root.dataset.last));
  source.addEventListener("call", function (e) { apply(JSON.parse(e.data)); });
  source.addEventListener("status", function (e) {
    var s = JSON.parse(e.data);
    conn.textContent = s.connected ? "Live: updates as they happen." : "Live data unavailable; retrying…";
    conn.className = s.connected ? "conn ok" : "conn down";
  });
  // Fell too far behind (long disconnection): the whole picture, once.
  source.addEventListener("resync", function () { source.close(); window.location.reload(); });
  source.onerror = function () {
    if (source.readyState === EventSource.CLOSED) {
      conn.textContent = "Live updates stopped (logged out?). Reload the page.";
    } else {
      conn.textContent = "Reconnecting to live updates…";
    }
    conn.className = "conn down";
  };
  setInterval(tick, 1000);
  tick();
})();
