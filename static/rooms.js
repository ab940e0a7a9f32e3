// The rooms page, live: one WebSocket (/ws/rooms) brings the list again
// whenever it changes (the router coalesces: at most about one a second).
// Unread counts, previews, names, topics and who is online are redrawn
// as text; a lost socket is retried with back-off, and the page keeps the
// list it has meanwhile.  Direct conversations are listed the same way; the
// total unread goes into the title and the icon (static/attention.js), and
// a direct message arriving makes the sound or buzz the person chose.  The
// attention switches are saved on the routers through this socket.
"use strict";
(function () {
  const list = document.getElementById("rooms");
  const live = document.getElementById("live");
  const directList = document.getElementById("direct");
  const directEmpty = document.getElementById("direct-empty");
  if (!list) return;
  const attention = window.ccAttention || null;
  const TITLE = document.title;
  // The page's strings in its language (templates/base.tpl's #strings block;
  // docs/DESIGN.md, "Languages"): t and tn take the English msgid.
  const STRINGS = JSON.parse(document.getElementById("strings")?.textContent || "{}");
  function t(msgid) { const s = STRINGS[msgid]; return typeof s === "string" ? s : msgid; }
  function tn(one, many, n) {
    const s = STRINGS[one];
    return (Array.isArray(s) ? s : [one, many])[n === 1 ? 0 : 1].replaceAll("{n}", String(n));
  }
  let ws = null;
  let directUnread = null; // unread direct messages in the last list: a rise alerts
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
    const a = el("a", null, r.name || t("Room {num}").replace("{num}", String(r.n)));
    a.href = "/room/" + r.n;
    top.append(a);
    if (r.unread) top.append(badge(r.unread));
    li.append(top);
    if (r.topic) li.append(el("p", "topic", r.topic));
    if (r.last) {
      const p = el("p", "preview");
      p.append(el("span", "who", r.last.author + ":"), " " + r.last.text);
      li.append(p);
    } else {
      li.append(el("p", "preview empty", t("No messages yet.")));
    }
    li.append(el("span", "meta", tn("{n} online", "{n} online", r.online)));
    return li;
  }

  function badge(n) {
    // The count shown; the words around it for screen readers only.
    const words = tn("{n} unread", "{n} unread", n);
    const at = Math.max(0, words.indexOf(String(n)));
    const before = words.slice(0, at), after = words.slice(at + String(n).length);
    const b = el("span", "badge");
    if (before) b.append(el("span", "visually-hidden", before));
    b.append(n >= unreadMax ? (unreadMax - 1) + "+" : String(n));
    if (after) b.append(el("span", "visually-hidden", after));
    return b;
  }

  function directCard(d) {
    const li = el("li", "room" + (d.unread ? " has-unread" : ""));
    li.dataset.peer = d.peer;
    li.dataset.unread = d.unread;
    const top = el("div", "room-top");
    const a = el("a", null, d.peer);
    a.href = "/dm/" + encodeURIComponent(d.peer);
    top.append(a);
    if (d.unread) top.append(badge(d.unread));
    li.append(top);
    const p = el("p", "preview");
    p.append(el("span", "who", d.last.author + ":"), " " + d.last.text);
    li.append(p);
    if (d.blocked) li.append(el("span", "meta", t("Blocked")));
    return li;
  }

  function showDirect(direct) {
    if (!directList || !direct) return;
    directList.replaceChildren(...direct.map(directCard));
    directEmpty.hidden = direct.length > 0;
    const n = direct.reduce((sum, d) => sum + d.unread, 0);
    if (directUnread !== null && n > directUnread && attention) attention.alert();
    directUnread = n;
  }

  function showCount(rooms, direct) {
    // Everything unread, rooms and direct messages: in the title and the icon.
    const n = rooms.reduce((sum, r) => sum + r.unread, 0) + (direct || []).reduce((sum, d) => sum + d.unread, 0);
    document.title = n ? "(" + n + ") " + TITLE : TITLE;
    if (attention) attention.badge(n);
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
    const sock = ws = new WebSocket(scheme + "//" + location.host + "/ws/rooms");
    sock.onmessage = (ev) => {
      let f;
      try { f = JSON.parse(ev.data); } catch (e) { return; }
      if (f.type === "rooms") {
        show(f.rooms);
        showDirect(f.direct);
        showCount(f.rooms, f.direct);
        retryMs = RETRY_MIN_MS;
        live.textContent = t("Live.");
      }
      if (f.type === "attention" && attention) attention.set(f);
      if (f.type === "error" && f.code === "name_taken") location.assign("/"); // to /rename
    };
    sock.onclose = (ev) => {
      if (ws === sock) ws = null;
      live.textContent = "";
      if (ev.code === CLOSE_TRY_LATER) return;
      setTimeout(connect, retryMs * (0.75 + Math.random() / 2));
      retryMs = Math.min(retryMs * 2, RETRY_MAX_MS);
    };
  }

  if (attention) {
    attention.bind((frame) => {
      if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(frame));
    });
  }
  connect();
})();
