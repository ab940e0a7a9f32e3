// The rooms page, live: one WebSocket (/ws/rooms) brings the list again
// whenever it changes (the router coalesces: at most about one a second).
// Unread counts, previews, names, topics and who is online are redrawn
// as text; a lost socket is retried with back-off, and the page keeps the
// list it has meanwhile.
"use strict";
(function () {
  const list = document.getElementById("rooms");
  const live = document.getElementById("live");
  if (!list) return;
  const unreadMax = Number(list.dataset.unreadMax);
  const RETRY_MIN_MS = 1000;
  const RETRY_MAX_MS = 30000;
  const CLOSE_TRY_LATER = 1013; // the router has enough watchers: keep this list
  let retryMs = RETRY_MIN_MS;

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text; // always text, never HTML
    return e;
  }

  function card(r) {
    const li = el("li", "room" + (r.unread ? " has-unread" : ""));
    li.dataset.room = r.n;
    li.dataset.unread = r.unread;
    const top = el("div", "room-top");
    const a = el("a", null, r.name || "Room " + r.n);
    a.href = "/room/" + r.n;
    top.append(a);
    if (r.unread) {
      const badge = el("span", "badge", r.unread >= unreadMax ? (unreadMax - 1) + "+" : String(r.unread));
      badge.append(el("span", "visually-hidden", " unread"));
      top.append(badge);
    }
    li.append(top);
    if (r.topic) li.append(el("p", "topic", r.topic));
    if (r.last) {
      const p = el("p", "preview");
      p.append(el("span", "who", r.last.author + ":"), " " + r.last.text);
      li.append(p);
    } else {
      li.append(el("p", "preview empty", "No messages yet."));
    }
    li.append(el("span", "meta", r.online + " online"));
    return li;
  }

  function show(rooms) {
    const focused = document.activeElement && document.activeElement.closest("li[data-room]");
    const again = focused && focused.dataset.room;
    list.replaceChildren(...rooms.map(card));
    if (again) {
      const a = list.querySelector('li[data-room="' + again + '"] a');
      if (a) a.focus();
    }
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(scheme + "//" + location.host + "/ws/rooms");
    ws.onmessage = (ev) => {
      let f;
      try { f = JSON.parse(ev.data); } catch (e) { return; }
      if (f.type === "rooms") { show(f.rooms); retryMs = RETRY_MIN_MS; live.textContent = "Live."; }
    };
    ws.onclose = (ev) => {
      live.textContent = "";
      if (ev.code === CLOSE_TRY_LATER) return;
      setTimeout(connect, retryMs * (0.75 + Math.random() / 2));
      retryMs = Math.min(retryMs * 2, RETRY_MAX_MS);
    };
  }

  connect();
})();
