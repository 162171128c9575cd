// The chat page. Everything happens in this one page (fetch, no navigation), so the
// browser's history has one entry; the conversation's key lives only in this script's
// memory (no cookie, no storage). What anyone wrote is shown with textContent: never HTML.
(function () {
  "use strict";
  var app = document.getElementById("app");
  if (!app || !window.fetch) { return; }
  var languages = JSON.parse(app.dataset.languages || "{}");
  var token = app.dataset.token;
  var leaveUrl = app.dataset.leave || "/today";
  var key = null, after = "", texts = null, lang = null, polling = false, stopped = false;
  var messages = document.getElementById("messages");
  var status = document.getElementById("status");
  var body = document.getElementById("body");
  var zip = document.getElementById("zip");

  function params(fields) {
    var p = new URLSearchParams();
    p.set("csrf_token", token);
    Object.keys(fields).forEach(function (k) { p.set(k, fields[k]); });
    return p;
  }
  function post(url, fields, keepalive) {
    return fetch(url, { method: "POST", body: params(fields), credentials: "omit", cache: "no-store",
                        keepalive: !!keepalive, headers: { "X-Requested-With": "fetch" } });
  }
  function labels() {
    var els = document.querySelectorAll("[data-label]");
    for (var i = 0; i < els.length; i++) {
      var name = els[i].dataset.label;
      if (texts && texts[name] !== undefined) { els[i].textContent = texts[name]; }
    }
  }
  function say(text) { status.textContent = text || ""; }
  function who(sender) {
    return sender === "texter" ? texts.chat_you : sender === "line" ? texts.chat_line : texts.chat_responder;
  }
  function show(m) {
    var li = document.createElement("li");
    li.className = m.sender === "texter" ? "texter" : m.sender === "line" ? "line" : "them";
    var name = document.createElement("span");
    name.className = "who";
    name.textContent = who(m.sender);
    var text = document.createElement("p");
    text.className = "body";
    text.dir = "auto";
    text.textContent = m.body;
    li.appendChild(name);
    li.appendChild(text);
    messages.appendChild(li);
  }
  function clear() {
    while (messages.firstChild) { messages.removeChild(messages.firstChild); }
    body.value = ""; zip.value = ""; document.getElementById("phone").value = "";
  }

  function choose(code) {
    var l = languages[code];
    if (!l) { return; }
    lang = code; texts = l.texts;
    document.documentElement.lang = l.written;
    document.documentElement.dir = l.dir;
    labels();
    document.getElementById("choose").hidden = true;
    document.getElementById("talk").hidden = false;
    document.getElementById("h-talk").focus();
  }
  document.getElementById("choose-form").addEventListener("submit", function (e) {
    e.preventDefault();
    if (e.submitter) { choose(e.submitter.value); }
  });

  async function poll() {
    if (polling) { return; }
    polling = true;
    while (key && !stopped) {
      var current = key;
      try {
        var r = await post("/chat/poll", { key: current, after: after });
        if (current !== key) { continue; }
        var data = await r.json();
        (data.messages || []).forEach(show);
        after = data.after || after;
        if (data.state === "ended") { say(texts.text_ended); key = null; break; }
      } catch (err) {
        await new Promise(function (done) { setTimeout(done, 2000); });
      }
    }
    polling = false;
  }

  document.getElementById("send-form").addEventListener("submit", async function (e) {
    e.preventDefault();
    var text = body.value.trim();
    if (!text) { return; }
    var r;
    try {
      if (!key) {
        r = await post("/chat/start", { language: lang, zip: zip.value.trim(), body: text });
      } else {
        r = await post("/chat/send", { key: key, body: text });
      }
    } catch (err) { say(texts.text_unattended); return; }  // the line can't be reached: the phone
    var data = {};
    try { data = await r.json(); } catch (err) { data = {}; }
    if (!r.ok) { say(data.error || (r.status >= 500 ? texts.text_unattended : texts.text_ended)); return; }
    say("");
    body.value = "";
    if (data.key) {
      key = data.key; after = "";
      document.getElementById("zip-row").hidden = true;
      document.getElementById("after-start").hidden = false;
      poll();
    }
  });

  document.getElementById("call-form").addEventListener("submit", async function (e) {
    e.preventDefault();
    if (!key) { return; }
    var r, data = {};
    try {
      r = await post("/chat/call", { key: key, phone: document.getElementById("phone").value.trim() });
      data = await r.json();
    } catch (err) { say(texts.text_unattended); return; }
    say(r.ok ? texts.chat_call_asked : (data.error || ""));
  });

  var confirm = document.getElementById("delete-confirm");
  document.getElementById("delete").addEventListener("click", function () { confirm.hidden = false; confirm.focus(); });
  document.getElementById("delete-form").addEventListener("submit", async function (e) {
    e.preventDefault();
    var current = key;
    key = null; after = "";
    confirm.hidden = true;
    if (current) { await post("/chat/delete", { key: current }); }
    clear();
    document.getElementById("zip-row").hidden = false;
    document.getElementById("after-start").hidden = true;
    say(texts.text_deleted);
  });

  // Leave quickly: end the conversation on our side (a request that outlives the page),
  // then replace this page, so Back does not come back to it.
  document.getElementById("leave-form").addEventListener("submit", function (e) {
    e.preventDefault();
    stopped = true;
    if (key) { post("/chat/leave", { key: key }, true).catch(function () {}); }
    key = null;
    clear();
    window.location.replace(leaveUrl);
  });
})();
