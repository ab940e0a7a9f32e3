// The room page: one WebSocket to this router, messages rendered as text.
"use strict";
(function () {
  const root = document.getElementById("chat");
  if (!root) return;
  const room = root.dataset.room;
  const list = document.getElementById("messages");
  const state = document.getElementById("state");
  const form = document.getElementById("send");
  const input = document.getElementById("text");
  const errorBox = document.getElementById("error");
  const olderButton = document.getElementById("older");
  const online = document.getElementById("online");
  const onlineCount = document.getElementById("online-count");

  const OLDER_PAGE = 50;
  const RETRY_MIN_MS = 500;
  const RETRY_MAX_MS = 15000;

  const shown = new Map(); // message id -> <li>
  const unacked = new Map(); // client_id -> text, until the router stores it
  let lastArrived = null; // id of the newest record this router sent us
  let ws = null;
  let retryMs = RETRY_MIN_MS;
  let errorTimer = null;
  let admin = false; // the router says so in "hello"; it checks every action itself

  function orderKey(m) {
    const [origin, seq] = m.id.split(":");
    return [BigInt(m.hlc), origin, Number(seq)]; // hlc: a 64-bit decimal string
  }

  function compare(a, b) {
    const ka = orderKey(a), kb = orderKey(b);
    for (let i = 0; i < 3; i++) {
      if (ka[i] < kb[i]) return -1;
      if (ka[i] > kb[i]) return 1;
    }
    return 0;
  }

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text; // always text, never HTML
    return e;
  }

  function render(m) {
    const li = el("li", "message");
    li.dataset.id = m.id;
    li.msg = m;
    if (m.author === root.dataset.user) li.classList.add("mine");
    const head = el("div", "head");
    head.append(el("span", "author", m.author), el("span", "node", m.node));
    const when = new Date(m.time);
    const time = el("time", "time", when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }));
    time.dateTime = m.time;
    time.title = when.toLocaleString();
    head.append(time);
    li.append(head, el("p", "text", m.text));
    if (admin) li.append(adminTools(m));
    return li;
  }

  function adminTools(m) {
    const tools = el("div", "admin-tools");
    const del = el("button", "link", "Delete");
    del.type = "button";
    del.dataset.action = "delete";
    del.setAttribute("aria-label", "Delete this message by " + m.author);
    del.addEventListener("click", () => act({ type: "delete", id: m.id }));
    const ban = el("button", "link", "Ban " + m.author);
    ban.type = "button";
    ban.dataset.action = "ban";
    ban.addEventListener("click", () => {
      if (confirm("Ban " + m.author + " on every router?")) act({ type: "ban", user: m.author });
    });
    tools.append(del, ban);
    return tools;
  }

  function act(frame) {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(frame));
    else showError("Not connected.");
  }

  function takeOut(li, note) {
    // The message disappears, with a note saying why.
    li.classList.add("removed");
    li.replaceChildren(el("p", "note", note));
  }

  function nearBottom() {
    return window.innerHeight + window.scrollY >= document.body.scrollHeight - 80;
  }

  function insert(m) {
    if (shown.has(m.id)) return false;
    const li = render(m);
    shown.set(m.id, li);
    let after = list.lastElementChild;
    while (after && compare(after.msg, m) > 0) after = after.previousElementSibling;
    if (after) after.after(li); else list.prepend(li);
    return true;
  }

  function showLive(messages) {
    const stick = nearBottom();
    let added = false;
    for (const m of messages) added = insert(m) || added;
    // To the page's very end: the sticky composer would cover a message
    // scrolled only to the viewport's bottom edge.
    if (added && stick) window.scrollTo(0, document.documentElement.scrollHeight);
  }

  function showError(text) {
    errorBox.textContent = text;
    errorBox.hidden = false;
    clearTimeout(errorTimer);
    errorTimer = setTimeout(() => { errorBox.hidden = true; }, 6000);
  }

  function setState(text, cls) {
    state.textContent = text;
    state.className = "state " + cls;
  }

  function showPresence(users) {
    online.replaceChildren(...users.map((u) => el("li", null, u.user + " · " + u.node)));
    onlineCount.textContent = String(users.length);
  }

  function restoreUnsent() {
    // Texts the router never acknowledged go back into the input, never lost.
    if (unacked.size === 0) return;
    const texts = [...unacked.values()];
    unacked.clear();
    if (!input.value) input.value = texts.join("\n");
    showError("Not sent: the connection dropped. Press Send to try again.");
  }

  const handlers = {
    hello(f) {
      admin = Boolean(f.admin);
      document.getElementById("clear").hidden = !admin;
      retryMs = RETRY_MIN_MS;
      setState("connected", "ok");
    },
    history(f) {
      if (f.reset) { list.replaceChildren(); shown.clear(); }
      showLive(f.messages);
      if (f.last) lastArrived = f.last;
      olderButton.hidden = list.children.length === 0;
    },
    message(f) {
      showLive([f]);
      lastArrived = f.id;
    },
    ack(f) { unacked.delete(f.client_id); },
    older(f) {
      const firstBefore = list.firstElementChild;
      for (const m of f.messages) insert(m);
      if (firstBefore) firstBefore.scrollIntoView({ block: "start" });
      olderButton.disabled = false;
      if (f.messages.length < OLDER_PAGE) olderButton.hidden = true;
    },
    presence(f) { showPresence(f.users); },
    deleted(f) {
      const li = shown.get(f.id);
      if (li) takeOut(li, "Message deleted by " + f.by + ".");
    },
    cleared(f) {
      const horizon = BigInt(f.before_hlc);
      for (const [id, li] of shown) {
        if (BigInt(li.msg.hlc) < horizon) { li.remove(); shown.delete(id); }
      }
      showError("Room cleared by " + f.by + ".");
    },
    banned(f) {
      showError(f.user + " was banned by " + f.by + ".");
    },
    expired(f) {
      // Retention moved on: messages stamped before the horizon are gone.
      const horizon = BigInt(f.before_hlc);
      for (const [id, li] of shown) {
        if (BigInt(li.msg.hlc) < horizon) { li.remove(); shown.delete(id); }
      }
    },
    error(f) {
      if (f.client_id && unacked.has(f.client_id)) {
        if (!input.value) input.value = unacked.get(f.client_id);
        unacked.delete(f.client_id);
      }
      showError(f.message);
    },
  };

  function connect() {
    setState("connecting…", "wait");
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    let url = scheme + "//" + location.host + "/ws/" + room;
    if (lastArrived) url += "?after=" + encodeURIComponent(lastArrived);
    ws = new WebSocket(url);
    ws.onmessage = (ev) => {
      let f;
      try { f = JSON.parse(ev.data); } catch (e) { return; }
      const h = handlers[f.type];
      if (h) h(f);
    };
    ws.onclose = () => {
      ws = null;
      restoreUnsent();
      const wait = Math.min(retryMs, RETRY_MAX_MS) * (0.75 + Math.random() / 2);
      setState("offline: retrying in " + Math.ceil(wait / 1000) + " s", "bad");
      retryMs = Math.min(retryMs * 2, RETRY_MAX_MS);
      setTimeout(connect, wait);
    };
  }

  function send() {
    const text = input.value;
    if (!text.trim()) return;
    if (!ws || ws.readyState !== WebSocket.OPEN) {
      showError("Not connected: your message stays here until the router is back.");
      return;
    }
    const clientId = Date.now().toString(36) + Math.random().toString(36).slice(2, 10);
    unacked.set(clientId, text);
    ws.send(JSON.stringify({ type: "send", text: text, client_id: clientId }));
    input.value = "";
  }

  form.addEventListener("submit", (ev) => { ev.preventDefault(); send(); });
  input.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      send();
    }
  });
  document.getElementById("clear").addEventListener("click", () => {
    if (confirm("Remove every message of this room on every router?")) act({ type: "clear" });
  });
  olderButton.addEventListener("click", () => {
    const first = list.firstElementChild;
    if (!first || !ws || ws.readyState !== WebSocket.OPEN) return;
    olderButton.disabled = true;
    ws.send(JSON.stringify({ type: "older", before: first.dataset.id, limit: OLDER_PAGE }));
  });

  connect();
})();
