// A responder's page for the conversation they took: messages both ways (fetch; the page's
// session cookie says who they are). What the texter wrote is shown with textContent only.
(function () {
  "use strict";
  var root = document.getElementById("conversation");
  if (!root || root.dataset.mine !== "1" || !window.fetch) { return; }
  var csrf = root.dataset.csrf;
  var after = "";
  var messages = document.getElementById("messages");
  var status = document.getElementById("status");
  var body = document.getElementById("body");

  function post(url, fields) {
    var p = new URLSearchParams();
    Object.keys(fields).forEach(function (k) { p.set(k, fields[k]); });
    return fetch(url, { method: "POST", body: p, credentials: "same-origin", cache: "no-store",
                        headers: { "X-CSRF-Token": csrf } });
  }
  function who(m) {
    if (m.sender === "texter") { return "Them"; }
    if (m.sender === "line") { return "The line (automatic)"; }
    if (m.sender === "supervisor") { return "Supervisor " + m.author; }
    return "You";
  }
  function show(m) {
    var li = document.createElement("li");
    li.className = m.sender === "texter" ? "them" : m.sender === "line" ? "line" : "texter";
    var name = document.createElement("span");
    name.className = "who";
    name.textContent = who(m);
    var text = document.createElement("p");
    text.className = "body";
    text.dir = "auto";
    text.textContent = m.body;
    li.appendChild(name);
    li.appendChild(text);
    messages.appendChild(li);
  }
  async function poll() {
    for (;;) {
      try {
        var r = await post("/r/c/poll", { after: after });
        if (r.status === 403) { status.textContent = "This page is no longer yours."; return; }
        var data = await r.json();
        (data.messages || []).forEach(show);
        after = data.after || after;
        document.getElementById("call-asked").hidden = !data.call_asked;
        if (data.state === "ended") { status.textContent = "The conversation has ended."; return; }
      } catch (err) {
        await new Promise(function (done) { setTimeout(done, 2000); });
      }
    }
  }
  document.getElementById("send-form").addEventListener("submit", async function (e) {
    e.preventDefault();
    var text = body.value.trim();
    if (!text) { return; }
    var r = await post("/r/c/send", { body: text });
    if (r.ok) { body.value = ""; status.textContent = ""; return; }
    var data = await r.json();
    status.textContent = data.error || "Not sent: the conversation has ended.";
  });
  poll();
})();
