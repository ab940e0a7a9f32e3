// The room page: one WebSocket to this router, messages rendered as text.
// Own messages show how far they got (sending, sent, seen by N routers); a
// lost connection shows a banner, reconnects with back-off and fetches
// exactly what it missed; scrolling up loads older messages.  A message
// given back after a lost ack is resent with its own client_id, which the
// router answers with the first ack (never stored twice).  Search finds
// messages in the room's history and jumps to one: the page then shows the
// messages around it ("detached" from the live end) until it loads newer
// ones or goes back to the latest.  Day labels roll over at midnight.
// The same page serves a direct conversation (templates/dm.tpl: its socket
// in data-ws, a Block button); a name in a room or the people list opens
// one.  Attention (static/attention.js): the count of unseen messages in
// the title and the icon, a sound or buzz on a mention or a direct message.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const root = $("chat");
  if (!root) return;
  const room = root.dataset.room;
  const me = root.dataset.user;
  const wsPath = root.dataset.ws || "/ws/" + room; // a conversation's page names its own
  const peer = root.dataset.peer || null; // the other person, on a conversation's page
  const attention = window.ccAttention || null;
  // The page's strings in its language (templates/base.tpl's #strings block;
  // docs/DESIGN.md, "Languages"): t and tn take the English msgid, a plain
  // literal; fill puts values into its {name} placeholders (as text).
  const STRINGS = JSON.parse($("strings")?.textContent || "{}");
  function t(msgid) { const s = STRINGS[msgid]; return typeof s === "string" ? s : msgid; }
  function tn(one, many, n) {
    const s = STRINGS[one];
    return (Array.isArray(s) ? s : [one, many])[n === 1 ? 0 : 1].replaceAll("{n}", String(n));
  }
  function fill(text, values) {
    return text.replace(/\{(\w+)\}/g, (all, key) => (key in values ? String(values[key]) : all));
  }
  const S = {
    block: t("Block"), unblock: t("Unblock"),
    blockAsk: (who) => fill(t("Block {name}? They will not be able to send you direct messages, on any router."), { name: who }),
    blockedNote: (who) => fill(t("You blocked {name}. Unblock to write to them."), { name: who }),
    blocksMe: (who) => fill(t("{name} does not take direct messages from you."), { name: who }),
    directFrom: (who) => fill(t("New direct message from {name}."), { name: who }),
    writeTo: (who) => fill(t("Write to {name}"), { name: who }),
  };
  const list = $("messages");
  const outbox = $("outbox");
  const state = $("state");
  const banner = $("banner");
  const bannerText = $("banner-text");
  const form = $("send");
  const input = $("text");
  const errorBox = $("error");
  const unsent = $("unsent");
  const unsentText = $("unsent-text");
  const olderButton = $("older");
  const startNote = $("start");
  const online = $("online");
  const onlineCount = $("online-count");
  const roomName = $("room-name");
  const topicLine = $("topic");
  const nameForm = $("name-form");
  const searchForm = $("search");
  const searchInput = $("search-input");
  const searchBox = $("search-results");
  const searchNote = $("search-note");
  const results = $("results");
  const newerButton = $("newer");
  const latestLink = $("latest");

  const OLDER_PAGE = 50;
  const RETRY_MIN_MS = 500;
  const RETRY_MAX_MS = 15000;
  const READ_EVERY_MS = 5000; // "read" frames: at most one per this long (and on leaving)
  const NEWER_PAGE = 50;
  const DAY_MS = 86400000;
  const SUFFIX = " · " + t("Community Chat");
  let TITLE = document.title;

  const shown = new Map(); // message id -> <li>
  const unacked = new Map(); // client_id -> {text, li}: sent, not yet stored
  const seenBy = new Map(); // id of my message -> other routers that have it
  let lastArrived = null; // id of the newest record this router sent us
  let ws = null;
  let retryMs = RETRY_MIN_MS;
  let retryTimer = null;
  let errorTimer = null;
  let admin = false; // the router says so in "hello"; it checks every action itself
  let readUpto = null; // the router's read marker for this room, from "hello"
  // Also from "hello": my name's key (the router compares names by it), the
  // rule for a name (and so for a mention), and how many messages a fresh
  // history holds at most (fewer: the room's history begins there).
  let myKey = null;
  let nameRule = null;
  let mention = null;
  let historyPage = null;
  let firstHistory = true;
  let loadingOlder = false;
  let newest = 0n; // hlc of the newest message shown
  let seen = 0n; // ...of the newest one shown while the page was visible
  let readSent = 0n;
  let readAt = 0;
  let readTimer = null;
  let hiddenNew = 0; // messages from others that came while the tab was hidden
  let givenBack = null; // {text, items: [{clientId, text}]}: what a lost ack put back
  let detached = false; // showing a search result's place, not the live end
  let target = null; // id of the message jumped to
  let toLatest = false; // a "latest" history is on its way: scroll to the end
  let today = new Date().toDateString();

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

  function dayLabel(when) {
    const day = new Date(when).setHours(0, 0, 0, 0);
    const days = Math.round((new Date().setHours(0, 0, 0, 0) - day) / 86400000);
    if (days === 0) return t("Today");
    if (days === 1) return t("Yesterday");
    return when.toLocaleDateString([], { weekday: "long", day: "numeric", month: "long" });
  }

  function statusText(id) {
    const n = seenBy.get(id) || 0;
    return n ? tn("Seen by {n} router", "Seen by {n} routers", n) : t("Sent");
  }

  function head(author, node, when, status, plain) {
    const h = el("div", "head");
    h.append(plain ? el("span", "author", author) : personLink(author, "author"), el("span", "node", node));
    if (when) {
      const time = el("time", "time", when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }));
      time.dateTime = when.toISOString();
      time.title = when.toLocaleString();
      h.append(time);
    }
    if (status !== undefined) h.append(el("span", "status", status));
    return h;
  }

  function keyOf(name) {
    // The router's key of a name: its casefold.  A name by the router's rule
    // is ASCII, where that is A-Z lowered (toLowerCase does more: "\u0130").
    if (!nameRule || !nameRule.test(name)) return null;
    return name.replace(/[A-Z]/g, (c) => c.toLowerCase());
  }

  function isMe(name) {
    return myKey !== null && keyOf(name) === myKey;
  }

  function personLink(name, cls) {
    // A name opens a direct conversation with that person (not with oneself,
    // nor on the page of that very conversation).
    if (!name || isMe(name) || name === me || (peer && keyOf(name) === keyOf(peer))) return el("span", cls, name);
    const a = el("a", cls, name);
    a.href = "/dm/" + encodeURIComponent(name);
    a.title = S.writeTo(name);
    return a;
  }

  function textOf(text, li) {
    // The text as text nodes; mentions of me are wrapped in <mark>.
    const p = el("p", "text");
    let at = 0;
    for (const match of mention ? text.matchAll(mention) : []) {
      const name = match[1].replace(/\.+$/, ""); // "@ann." ends a sentence
      if (!isMe(name)) continue;
      p.append(text.slice(at, match.index), el("mark", "mention", "@" + name));
      at = match.index + 1 + name.length;
      li.classList.add("mentions-me");
    }
    p.append(text.slice(at));
    return p;
  }

  function render(m) {
    const li = el("li", "message");
    li.dataset.id = m.id;
    li.msg = m;
    const when = new Date(m.time);
    li.dataset.day = dayLabel(when);
    const mine = isMe(m.author);
    if (mine) li.classList.add("mine");
    li.append(head(m.author, m.node, when, mine ? statusText(m.id) : undefined));
    if (m.text || !m.blob) li.append(textOf(m.text, li));
    if (m.blob && window.ccAttach) li.append(window.ccAttach.view(m)); // static/attach.js
    if (admin) li.append(adminTools(m));
    return li;
  }

  function adminTools(m) {
    const tools = el("div", "admin-tools");
    const del = el("button", "link", t("Delete"));
    del.type = "button";
    del.dataset.action = "delete";
    del.setAttribute("aria-label", fill(t("Delete this message by {name}"), { name: m.author }));
    del.addEventListener("click", () => act({ type: "delete", id: m.id }));
    const ban = el("button", "link", fill(t("Ban {name}"), { name: m.author }));
    ban.type = "button";
    ban.dataset.action = "ban";
    ban.addEventListener("click", () => {
      if (confirm(fill(t("Ban {name} on every router?"), { name: m.author }))) act({ type: "ban", user: m.author });
    });
    tools.append(del, ban);
    return tools;
  }

  function act(frame) {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(frame));
    else showError(t("Not connected."));
  }

  function takeOut(li, note) {
    // The message disappears, with a note saying why.
    li.classList.add("removed");
    li.replaceChildren(el("p", "note", note));
  }

  function dropBefore(horizon) {
    for (const [id, li] of shown) {
      if (BigInt(li.msg.hlc) < horizon) { li.remove(); shown.delete(id); }
    }
    relayout();
  }

  function nearBottom() {
    return window.innerHeight + window.scrollY >= document.body.scrollHeight - 80;
  }

  function toBottom() {
    // To the page's very end: the sticky composer would cover a message
    // scrolled only to the viewport's bottom edge.
    window.scrollTo(0, document.documentElement.scrollHeight);
  }

  function insert(m) {
    if (shown.has(m.id)) return null;
    const li = render(m);
    shown.set(m.id, li);
    if (BigInt(m.hlc) > newest) newest = BigInt(m.hlc);
    let after = list.lastElementChild;
    while (after && compare(after.msg, m) > 0) after = after.previousElementSibling;
    if (after) after.after(li); else list.prepend(li);
    return li;
  }

  function relayout() {
    // Day separators and runs of one author: classes the stylesheet draws.
    let prev = null;
    for (const li of list.children) {
      const newDay = !prev || prev.dataset.day !== li.dataset.day;
      li.classList.toggle("day-start", newDay);
      li.classList.toggle("cont", !newDay && prev.msg.author === li.msg.author
        && !prev.classList.contains("removed") && !li.classList.contains("first-new"));
      prev = li;
    }
  }

  function markNew(li) {
    // The "new messages" marker: above the first message I have not seen.
    for (const old of list.querySelectorAll(".first-new")) old.classList.remove("first-new");
    li.classList.add("first-new");
  }

  function showLive(messages) {
    const stick = nearBottom();
    const added = messages.map(insert).filter(Boolean);
    if (!added.length) return;
    for (const li of added) {
      if (!document.hidden || isMe(li.msg.author)) continue;
      if (hiddenNew === 0) markNew(li);
      hiddenNew++;
    }
    relayout();
    showCount();
    if (stick) toBottom();
    noteSeen();
    // A sound or a buzz (if the person asked for it) for a message to me:
    // any from the other person here, a mention of me in a room.
    if (attention && added.some((li) => !isMe(li.msg.author) && (peer || li.classList.contains("mentions-me")))) {
      attention.alert();
    }
  }

  function showCount() {
    document.title = hiddenNew ? "(" + hiddenNew + ") " + TITLE : TITLE;
    if (attention) attention.badge(hiddenNew);
  }

  // Read markers: the router keeps how far this user has read the room (the
  // room list's unread counts, on every router).
  function noteSeen() {
    if (!document.hidden && newest > seen) seen = newest;
    if (seen > readSent && !readTimer) {
      readTimer = setTimeout(sendRead, Math.max(0, readAt + READ_EVERY_MS - Date.now()));
    }
  }

  function sendRead() {
    clearTimeout(readTimer);
    readTimer = null;
    if (seen <= readSent || !ws || ws.readyState !== WebSocket.OPEN) return;
    readSent = seen;
    readAt = Date.now();
    ws.send(JSON.stringify({ type: "read", upto: seen.toString() }));
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
    online.replaceChildren(...users.map((u) => {
      const li = el("li");
      li.append(personLink(u.user, "who"), " · " + u.node);
      return li;
    }));
    onlineCount.textContent = String(users.length);
  }

  // Sending: a pending bubble until the router stores the message; if it
  // cannot, the text goes back into the input with a Retry button.
  function offerRetry(why) {
    unsentText.textContent = why;
    unsent.hidden = false;
  }

  function giveBack(clientIds, why) {
    // Back into the box; Retry with the text unchanged resends each message
    // with its own client_id, so one the router did store is not stored twice.
    const items = [];
    for (const id of clientIds) {
      const item = unacked.get(id);
      if (!item) continue;
      unacked.delete(id);
      if (item.resend) { window.ccAttach.failed(item.li, why, item.resend); continue; } // a picture or file
      item.li.remove();
      items.push({ clientId: id, text: item.text });
    }
    if (!items.length) return;
    const again = givenBack && input.value === givenBack.text;
    const all = again ? [...givenBack.items, ...items] : items;
    const extra = again ? givenBack.extra : input.value.trim() ? input.value : "";
    input.value = [...all.map((i) => i.text), ...(extra ? [extra] : [])].join("\n");
    givenBack = { text: input.value, items: all, extra: extra };
    offerRetry(why);
  }

  const handlers = {
    hello(f) {
      admin = Boolean(f.admin);
      if ($("clear")) $("clear").hidden = !admin;
      if ($("name-open")) $("name-open").hidden = !admin;
      if (attention && f.attention) attention.set(f.attention);
      if (peer) showBlocked(Boolean(f.blocked), Boolean(f.blocks_me));
      if (readUpto === null && f.read !== undefined) readUpto = BigInt(f.read);
      myKey = f.key;
      nameRule = new RegExp("^(?:" + f.name_rule + ")$");
      mention = new RegExp("@(" + f.name_rule + ")", "g");
      historyPage = f.history_page;
      retryMs = RETRY_MIN_MS;
      setState(t("connected"), "ok");
      banner.hidden = true;
    },
    history(f) {
      if (f.reset) {
        list.replaceChildren();
        shown.clear();
        olderButton.hidden = f.messages.length < historyPage;
        startNote.hidden = !olderButton.hidden || f.messages.length === 0;
        attach();
      }
      if (f.last) lastArrived = f.last;
      if (toLatest) { toLatest = false; f.messages.forEach(insert); relayout(); toBottom(); noteSeen(); return; }
      if (!firstHistory) { showLive(f.messages); return; }
      firstHistory = false;
      if (jumpFromHash()) return;
      f.messages.forEach(insert);
      const fresh = [...list.children].find((li) =>
        !isMe(li.msg.author) && readUpto !== null && BigInt(li.msg.hlc) > readUpto);
      if (fresh) markNew(fresh);
      relayout();
      if (fresh) fresh.scrollIntoView({ block: "center" }); else toBottom();
      noteSeen();
    },
    message(f) {
      if (!detached) showLive([f]); // detached: "newer" brings it in order
      lastArrived = f.id;
    },
    ack(f) {
      const item = unacked.get(f.client_id);
      if (item) item.li.remove();
      unacked.delete(f.client_id);
    },
    seen(f) {
      seenBy.set(f.id, f.routers);
      const status = shown.has(f.id) && shown.get(f.id).querySelector(".status");
      if (status) status.textContent = statusText(f.id);
    },
    older(f) {
      const fromBottom = document.documentElement.scrollHeight - window.scrollY;
      f.messages.forEach(insert);
      relayout();
      window.scrollTo(0, document.documentElement.scrollHeight - fromBottom);
      loadingOlder = false;
      olderButton.disabled = false;
      olderButton.textContent = t("Load older messages");
      if (f.messages.length < OLDER_PAGE) {
        olderButton.hidden = true;
        startNote.hidden = false;
      } else if (olderButton.getBoundingClientRect().bottom > 0) {
        loadOlder(); // the page is still at the top: keep going
      }
    },
    presence(f) { showPresence(f.users); },
    attention(f) { if (attention) attention.set(f); },
    blocked(f) { showBlocked(f.on, false); },
    direct(f) {
      // A direct message to me arrived while I am on another page.
      showError(S.directFrom(f.from));
      if (document.hidden) { hiddenNew++; showCount(); }
      if (attention) attention.alert();
    },
    room_name(f) { showName(f.name, f.topic); },
    results(f) { showResults(f); },
    around(f) {
      list.replaceChildren();
      shown.clear();
      f.messages.forEach(insert);
      olderButton.hidden = false;
      startNote.hidden = true;
      detach(f.more);
      relayout();
      const li = shown.get(f.id);
      for (const old of list.querySelectorAll(".target")) old.classList.remove("target");
      if (li) {
        li.classList.add("target");
        li.scrollIntoView({ block: "center" });
      }
    },
    newer(f) {
      f.messages.forEach(insert);
      relayout();
      newerButton.disabled = false;
      if (!f.more) attach();
      noteSeen();
    },
    deleted(f) {
      const li = shown.get(f.id);
      if (li) { takeOut(li, fill(t("Message deleted by {name}."), { name: f.by })); relayout(); }
    },
    cleared(f) {
      dropBefore(BigInt(f.before_hlc));
      showError(fill(t("Room cleared by {name}."), { name: f.by }));
    },
    banned(f) {
      showError(fill(t("{user} was banned by {name}."), { user: f.user, name: f.by }));
    },
    expired(f) {
      dropBefore(BigInt(f.before_hlc)); // retention moved on
    },
    error(f) {
      // Another router's earlier registration took this name: "/" sends the
      // session to choose a new one (app/site.py).
      if (f.code === "name_taken") { location.assign("/"); return; }
      if (f.client_id && unacked.has(f.client_id)) giveBack([f.client_id], fill(t("Not sent: {why}"), { why: f.message }));
      else showError(f.message);
      newerButton.disabled = false;
    },
  };

  // -- direct conversations: blocking ------------------------------------------

  function showBlocked(blocked, blocksMe) {
    const button = $("block");
    if (!button) return;
    button.textContent = blocked ? S.unblock : S.block;
    button.setAttribute("aria-pressed", String(blocked));
    const note = $("blocked-note");
    note.textContent = blocked ? S.blockedNote(peer) : blocksMe ? S.blocksMe(peer) : "";
    note.hidden = !blocked && !blocksMe;
  }

  // -- named rooms -------------------------------------------------------------

  function showName(name, topic) {
    const title = name || fill(t("Room {num}"), { num: room });
    roomName.textContent = title;
    topicLine.textContent = topic;
    topicLine.hidden = !topic;
    TITLE = title + SUFFIX;
    document.title = hiddenNew ? "(" + hiddenNew + ") " + TITLE : TITLE;
    input.placeholder = fill(t("Message {name}"), { name: title });
    $("name-input").value = name;
    $("topic-input").value = topic;
  }

  // -- search and the jump to a message ------------------------------------------

  function showResults(f) {
    results.replaceChildren();
    searchBox.hidden = false;
    const n = f.results.length;
    searchNote.textContent = n ? tn("{n} message found, newest first.", "{n} messages found, newest first.", n)
      : fill(t("Nothing found for “{q}”."), { q: f.q });
    const needle = String(f.q).trim().toLowerCase();
    for (const m of f.results) {
      const li = el("li", "result");
      const a = el("a");
      a.href = "#m=" + m.id;
      a.addEventListener("click", () => { if (location.hash === a.hash) jumpTo(m.id); });
      const when = new Date(m.time);
      a.append(head(m.author, m.node, when, undefined, true)); // no link inside a link
      const p = el("p", "text");
      const at = m.text.toLowerCase().indexOf(needle, Math.max(0, m.match - 2));
      const start = at >= 0 ? at : m.match;
      p.append(m.text.slice(0, start), el("mark", null, m.text.slice(start, start + needle.length)),
        m.text.slice(start + needle.length));
      a.append(p);
      li.append(a);
      results.append(li);
    }
  }

  function jumpTo(id) {
    if (!ws || ws.readyState !== WebSocket.OPEN) { showError(t("Not connected.")); return; }
    ws.send(JSON.stringify({ type: "around", id: id }));
  }

  function jumpFromHash() {
    const m = /^#m=([0-9a-f]{16}:[0-9]{1,10})$/.exec(location.hash);
    if (!m) return false;
    jumpTo(m[1]);
    return true;
  }

  function detach(more) {
    detached = more;
    newerButton.hidden = !more;
    latestLink.hidden = !more;
  }

  function attach() {
    detach(false);
  }

  function loadNewer() {
    const last = list.lastElementChild;
    if (!last || !ws || ws.readyState !== WebSocket.OPEN) return;
    newerButton.disabled = true;
    ws.send(JSON.stringify({ type: "newer", after: last.dataset.id, limit: NEWER_PAGE }));
  }

  function backToLatest() {
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    toLatest = true;
    window.history.replaceState(null, "", location.pathname);
    ws.send(JSON.stringify({ type: "latest" }));
    return true;
  }

  // -- day labels: "Today" becomes "Yesterday" at midnight, without a reload -----

  function refreshDays() {
    today = new Date().toDateString();
    for (const li of list.children) li.dataset.day = dayLabel(new Date(li.msg.time));
    relayout();
  }

  function scheduleMidnight() {
    const now = new Date();
    const next = new Date(now.getFullYear(), now.getMonth(), now.getDate() + 1);
    // A second past midnight; never longer than a day (clock changes, DST).
    const wait = Math.min(next - now + 1000, DAY_MS);
    setTimeout(() => { refreshDays(); scheduleMidnight(); }, wait);
  }

  function connect() {
    clearTimeout(retryTimer);
    setState(t("connecting…"), "wait");
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    let url = scheme + "//" + location.host + wsPath;
    // Detached (at a search result): start again from the latest.
    if (lastArrived && !detached) url += "?after=" + encodeURIComponent(lastArrived);
    const sock = ws = new WebSocket(url);
    sock.onmessage = (ev) => {
      let f;
      try { f = JSON.parse(ev.data); } catch (e) { return; }
      const h = handlers[f.type];
      if (h) h(f);
    };
    sock.onclose = () => {
      if (ws !== sock) return;
      ws = null;
      loadingOlder = false;
      olderButton.disabled = false;
      giveBack([...unacked.keys()], t("Not sent: the connection dropped. Your message is back in the box."));
      const wait = Math.min(retryMs, RETRY_MAX_MS) * (0.75 + Math.random() / 2);
      const secs = Math.ceil(wait / 1000);
      setState(fill(t("offline: retrying in {secs} s"), { secs: secs }), "bad");
      bannerText.textContent = fill(
        t("No connection to the router. Trying again in {secs} s; messages you missed will appear when it is back."),
        { secs: secs });
      banner.hidden = false;
      retryMs = Math.min(retryMs * 2, RETRY_MAX_MS);
      retryTimer = setTimeout(connect, wait);
    };
  }

  function sendOne(text, clientId) {
    const li = el("li", "message mine pending");
    li.append(head(me, "", null, t("Sending…")), textOf(text, li));
    outbox.append(li);
    unacked.set(clientId, { text: text, li: li });
    ws.send(JSON.stringify({ type: "send", text: text, client_id: clientId }));
  }

  // A picture or file, uploaded by static/attach.js: the message names its
  // blob and carries its thumbnail; acked, seen and given back as text is
  // (given back, its bubble stays with a Retry that resends the same id).
  function sendBlob(blob, thumb, li, clientId, resend) {
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    unacked.set(clientId, { text: "", li: li, resend: resend });
    const frame = { type: "send", text: "", client_id: clientId, blob: blob };
    if (thumb) frame.thumb = thumb;
    ws.send(JSON.stringify(frame));
    return true;
  }

  function newClientId() {
    return Date.now().toString(36) + Math.random().toString(36).slice(2, 10);
  }

  function send() {
    const text = input.value;
    if (!text.trim()) return;
    if (!ws || ws.readyState !== WebSocket.OPEN) {
      offerRetry(t("Not connected: your message stays here until the router is back."));
      return;
    }
    if (detached) backToLatest();
    if (givenBack && text === givenBack.text) {
      // A retry: the same client_ids, so what the router stored is acked, not stored again.
      for (const item of givenBack.items) sendOne(item.text, item.clientId);
      if (givenBack.extra) sendOne(givenBack.extra, newClientId());
    } else {
      sendOne(text, newClientId());
    }
    givenBack = null;
    input.value = "";
    unsent.hidden = true;
    for (const old of list.querySelectorAll(".first-new")) old.classList.remove("first-new");
    relayout();
    toBottom();
  }

  function loadOlder() {
    const first = list.firstElementChild;
    if (loadingOlder || olderButton.hidden || !first || !ws || ws.readyState !== WebSocket.OPEN) return;
    loadingOlder = true;
    olderButton.disabled = true;
    olderButton.textContent = t("Loading older messages…");
    ws.send(JSON.stringify({ type: "older", before: first.dataset.id, limit: OLDER_PAGE }));
  }

  document.addEventListener("visibilitychange", () => {
    if (document.hidden) { sendRead(); return; }
    if (new Date().toDateString() !== today) refreshDays(); // timers sleep in hidden tabs
    hiddenNew = 0;
    showCount();
    noteSeen();
  });
  window.addEventListener("pagehide", sendRead);
  form.addEventListener("submit", (ev) => { ev.preventDefault(); send(); });
  input.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      send();
    }
  });
  input.addEventListener("input", () => { if (!input.value.trim()) unsent.hidden = true; });
  $("retry").addEventListener("click", send);
  $("reconnect").addEventListener("click", () => {
    if (!ws) { retryMs = RETRY_MIN_MS; connect(); }
  });
  if ($("clear")) $("clear").addEventListener("click", () => {
    if (confirm(t("Remove every message of this room on every router?"))) act({ type: "clear" });
  });
  if ($("block")) $("block").addEventListener("click", () => {
    const on = $("block").getAttribute("aria-pressed") !== "true";
    if (!on || confirm(S.blockAsk(peer))) act({ type: "block", on: on });
  });
  if (attention) attention.bind(act);
  if (window.ccAttach) window.ccAttach.bind({ send: sendBlob });
  olderButton.addEventListener("click", loadOlder);
  newerButton.addEventListener("click", loadNewer);
  latestLink.addEventListener("click", (ev) => { if (backToLatest()) ev.preventDefault(); });
  window.addEventListener("hashchange", jumpFromHash);
  $("search-open").addEventListener("click", () => {
    searchForm.hidden = !searchForm.hidden;
    $("search-open").setAttribute("aria-expanded", String(!searchForm.hidden));
    if (!searchForm.hidden) searchInput.focus(); else searchBox.hidden = true;
  });
  searchForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const q = searchInput.value.trim();
    if (q) act({ type: "search", q: q });
  });
  if (nameForm) {
    $("name-open").addEventListener("click", () => { nameForm.hidden = !nameForm.hidden; });
    nameForm.addEventListener("submit", (ev) => {
      ev.preventDefault();
      act({ type: "name_room", name: $("name-input").value, topic: $("topic-input").value });
      nameForm.hidden = true;
    });
  }
  if ("IntersectionObserver" in window) {
    // Scrolling near the top loads the page of messages before the first.
    new IntersectionObserver((entries) => {
      // Checked again now: an entry can describe the layout before the history drew.
      if (entries.some((e) => e.isIntersecting) && olderButton.getBoundingClientRect().bottom > -300) loadOlder();
    }, { rootMargin: "300px 0px 0px 0px" }).observe(olderButton);
  }

  scheduleMidnight();
  connect();
})();
