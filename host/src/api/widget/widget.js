/* LeanSync Voice screen-pop widget.
 *
 * Embed in a business app page:
 *   <script src="https://HOST/widget.js" data-key="LEANSYNC_KEY"></script>
 * or open/iframe https://HOST/widget#key=LEANSYNC_KEY (the fragment never
 * reaches a server or its logs; ?key= still works).
 *
 * The key travels only in Authorization headers: the live stream is opened
 * with a one-minute ticket (POST /api/v1/events/ticket), renewed on every
 * reconnect.
 *
 * Shows incoming calls of the key's number live (caller, resolved name, deep
 * link) and turns phone numbers on the page into click-to-call links.
 */
(function () {
  "use strict";
  var script = document.currentScript;
  var base = script ? new URL(script.src, location.href).origin : location.origin;
  var key = (script && script.dataset.key) ||
    new URLSearchParams(location.hash.slice(1)).get("key") ||
    new URLSearchParams(location.search).get("key");
  if (!key) {
    console.error("LeanSync widget: no key; add data-key=\"...\" to the script tag or ?key=... to the URL");
    return;
  }

  var panel = document.createElement("section");
  panel.id = "leansync-widget";
  panel.setAttribute("aria-live", "polite");
  panel.setAttribute("aria-label", "Incoming calls");
  panel.innerHTML =
    '<style>#leansync-widget{position:fixed;right:12px;bottom:12px;width:min(320px,calc(100vw - 24px));' +
    'font:14px/1.4 system-ui,sans-serif;background:#fff;border:1px solid #ccd;border-radius:8px;' +
    'box-shadow:0 4px 16px rgba(0,0,0,.15);z-index:2147483000;color:#112}' +
    '#leansync-widget header{padding:8px 12px;font-weight:600;border-bottom:1px solid #eef;display:flex;justify-content:space-between}' +
    '#leansync-widget ol{list-style:none;margin:0;padding:0;max-height:50vh;overflow:auto}' +
    '#leansync-widget li{padding:8px 12px;border-bottom:1px solid #f2f2f6}' +
    '#leansync-widget .state{font-size:12px;color:#556;text-transform:uppercase}' +
    '#leansync-widget .empty{padding:8px 12px;color:#667}' +
    '#leansync-widget .status{font-size:12px;font-weight:400}' +
    'a.leansync-call{cursor:pointer}</style>' +
    '<header><span>Calls</span><span class="status" data-status>connecting…</span></header>' +
    '<ol data-calls></ol><div class="empty" data-empty>No calls yet.</div>';
  document.body.appendChild(panel);
  var list = panel.querySelector("[data-calls]");
  var empty = panel.querySelector("[data-empty]");
  var status = panel.querySelector("[data-status]");
  var rows = {};

  function text(s) { return document.createTextNode(s == null ? "" : String(s)); }

  // A contact's link opens the record; one the browser would run instead
  // (javascript:, data:, ...) is shown as plain text (the host drops those
  // too, this guards events from older hosts).
  function safeLink(link) {
    if (typeof link !== "string" || link === "") { return false; }
    try {
      var p = new URL(link).protocol.toLowerCase();
      return ["javascript:", "vbscript:", "data:", "blob:", "file:", "about:", "filesystem:"].indexOf(p) < 0;
    } catch (e) { return false; }
  }

  function show(ev) {
    var li = rows[ev.call_id];
    if (!li) {
      li = document.createElement("li");
      li.dataset.callId = ev.call_id;
      rows[ev.call_id] = li;
      list.insertBefore(li, list.firstChild);
    }
    empty.hidden = true;
    li.textContent = "";
    var who = document.createElement("div");
    var name = ev.contact && ev.contact.name;
    var caller = ev.caller || "Anonymous";
    if (ev.contact && safeLink(ev.contact.deep_link)) {
      var a = document.createElement("a");
      a.href = ev.contact.deep_link;
      a.target = "_blank";
      a.rel = "noopener";
      a.appendChild(text(name || caller));
      who.appendChild(a);
    } else {
      who.appendChild(text(name || caller));
    }
    if (name) { who.appendChild(text(" · " + caller)); }
    if (ev.contact && ev.contact.organisation) { who.appendChild(text(" (" + ev.contact.organisation + ")")); }
    var st = document.createElement("div");
    st.className = "state";
    st.appendChild(text(ev.state + (ev.duration_secs != null ? " · " + ev.duration_secs + " s" : "")));
    li.appendChild(who);
    li.appendChild(st);
    li.dataset.state = ev.state;
  }

  // The stream, opened with a short-lived ticket so the key stays out of
  // URLs. The browser reconnects by itself while the ticket is fresh; once
  // it is refused (expired), a new ticket resumes after the last event seen.
  var lastId = null;
  function connect() {
    fetch(base + "/api/v1/events/ticket", {
      method: "POST",
      headers: { "Authorization": "Bearer " + key }
    }).then(function (r) {
      return r.json().then(function (body) {
        if (!r.ok) { throw new Error((body.error && body.error.message) || r.statusText); }
        return body;
      });
    }).then(function (t) {
      var url = base + t.url + (lastId ? "&last_event_id=" + encodeURIComponent(lastId) : "");
      var source = new EventSource(url);
      source.addEventListener("open", function () { status.textContent = "live"; });
      source.addEventListener("error", function () {
        status.textContent = "reconnecting…";
        if (source.readyState === EventSource.CLOSED) { setTimeout(connect, 1000); }
      });
      source.addEventListener("call", function (m) {
        if (m.lastEventId) { lastId = m.lastEventId; }
        try { show(JSON.parse(m.data)); } catch (e) { console.error("LeanSync widget: bad event", e); }
      });
    }).catch(function (e) {
      status.textContent = "reconnecting…";
      console.error("LeanSync widget: " + e.message);
      setTimeout(connect, 5000);
    });
  }
  connect();

  function call(number, link) {
    link.dataset.state = "dialling";
    fetch(base + "/api/v1/calls", {
      method: "POST",
      headers: { "Authorization": "Bearer " + key, "Content-Type": "application/json" },
      body: JSON.stringify({ to: number })
    }).then(function (r) {
      return r.json().then(function (body) {
        if (!r.ok) { throw new Error((body.error && body.error.message) || r.statusText); }
        link.dataset.state = "placed";
        link.dataset.callId = body.call_id;
        link.title = "Calling " + number + " from your phone";
      });
    }).catch(function (e) {
      link.dataset.state = "failed";
      link.title = "Call failed: " + e.message;
      alert("LeanSync: " + e.message);
    });
  }

  // Phone numbers in text: +41 44 123 45 67, 044 123 45 67, 0041 44 123 45 67.
  var NUMBER = /(?:\+|00)\d{2,3}[\s.\/-]?\(?\d{1,3}\)?(?:[\s.\/-]?\d{2,4}){2,4}|\b0\d{2}[\s.\/-]?\d{3}[\s.\/-]?\d{2}[\s.\/-]?\d{2}\b/g;

  function linkify(root) {
    root.querySelectorAll('a[href^="tel:"]').forEach(function (a) {
      if (a.classList.contains("leansync-call")) { return; }
      a.classList.add("leansync-call");
      a.addEventListener("click", function (e) {
        e.preventDefault();
        call(decodeURIComponent(a.getAttribute("href").slice(4)), a);
      });
    });
    var walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT, {
      acceptNode: function (n) {
        var p = n.parentNode;
        if (!p || p.closest("a,script,style,textarea,input,#leansync-widget")) { return NodeFilter.FILTER_REJECT; }
        NUMBER.lastIndex = 0;
        return NUMBER.test(n.nodeValue) ? NodeFilter.FILTER_ACCEPT : NodeFilter.FILTER_REJECT;
      }
    });
    var nodes = [];
    while (walker.nextNode()) { nodes.push(walker.currentNode); }
    nodes.forEach(function (n) {
      var frag = document.createDocumentFragment();
      var s = n.nodeValue, last = 0, m;
      NUMBER.lastIndex = 0;
      while ((m = NUMBER.exec(s))) {
        frag.appendChild(text(s.slice(last, m.index)));
        var a = document.createElement("a");
        a.href = "tel:" + m[0].replace(/[^\d+]/g, "");
        a.className = "leansync-call";
        a.appendChild(text(m[0]));
        (function (num, link) {
          link.addEventListener("click", function (e) { e.preventDefault(); call(num, link); });
        })(m[0], a);
        frag.appendChild(a);
        last = m.index + m[0].length;
      }
      frag.appendChild(text(s.slice(last)));
      n.parentNode.replaceChild(frag, n);
    });
  }

  linkify(document.body);
  new MutationObserver(function (muts) {
    muts.forEach(function (m) {
      m.addedNodes.forEach(function (n) { if (n.nodeType === 1 && n.id !== "leansync-widget") { linkify(n); } });
    });
  }).observe(document.body, { childList: true, subtree: true });
})();
