// Pictures and files on the room page (app/routes_blobs.py, docs/BLOBS.md).
//
// The attach button takes a photo (camera or gallery on a phone) or any
// file.  A JPEG, PNG or WebP photo (any picture the browser decodes but a
// GIF) is re-encoded here, in the browser, to
// a JPEG of at most MAX_SIDE px a side: a few hundred KB instead of several
// MB, and without its metadata (the camera's location among it).  A small
// thumbnail (at most THUMB_BYTES) is made here too and rides inside the
// message, so every router shows it at once.  The bytes go up with a
// progress bar (POST /room/N/upload, the session's CSRF token in a header);
// then static/chat.js sends the message naming the blob over the room's
// socket, and it shows sending -> sent -> seen by N like any message.
// A direct conversation's page (templates/dm.tpl) does the same through
// POST /dm/<peer>/upload and its own socket: the routers then serve the
// picture to its two people only (app/attachments.py).
//
// In the timeline a picture is its thumbnail (tap: the full picture, from
// /blob/<sha>, which the router fetches from a peer if it lacks it); a file
// is a download link with its name and size.  A picture or file no router
// in reach still holds says so.  Everything shown is text or an <img>:
// never HTML from a message.
"use strict";
(function () {
  const root = document.getElementById("chat");
  if (!root || !root.dataset.maxUpload) return;
  const STRINGS = JSON.parse(document.getElementById("strings")?.textContent || "{}");
  function t(msgid) { const s = STRINGS[msgid]; return typeof s === "string" ? s : msgid; }
  function fill(text, values) {
    return text.replace(/\{(\w+)\}/g, (all, key) => (key in values ? String(values[key]) : all));
  }
  const MAX_SIDE = 1600; // px: a photo's longest side after re-encoding
  const QUALITY = 0.82;
  const THUMB_BYTES = 6 * 1024; // app/images.py THUMB_MAX_BYTES
  const THUMB_SIDES = [160, 128, 96, 64];
  const THUMB_QUALITIES = [0.7, 0.55, 0.4, 0.3];
  const SHOWN_SIDE = 240; // px: a thumbnail's largest side in the timeline
  // A GIF stays as it is (its animation); an SVG is never drawn (it is a
  // file, a download); any other picture the browser can decode (JPEG, PNG,
  // WebP, an iPhone's HEIC in Safari) is re-encoded.
  const KEPT = ["image/gif", "image/svg+xml"];
  const room = root.dataset.room;
  const peer = root.dataset.peer || null; // a direct conversation's page
  const uploadPath = peer ? "/dm/" + encodeURIComponent(peer) + "/upload" : "/room/" + room + "/upload";
  const csrf = root.dataset.csrf;
  const maxUpload = Number(root.dataset.maxUpload);
  const picker = document.getElementById("attach-file");
  const outbox = document.getElementById("outbox");
  let chat = null; // static/chat.js's side: {send(blob, thumb, li, clientId), error(text)}

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function size(n) {
    if (n < 1024) return fill(t("{n} bytes"), { n: n });
    if (n < 1024 * 1024) return fill(t("{n} KB"), { n: Math.round(n / 1024) });
    return fill(t("{n} MB"), { n: (n / 1048576).toFixed(1) });
  }

  function thumbType(b64) {
    if (b64.startsWith("iVBOR")) return "image/png";
    if (b64.startsWith("R0lG")) return "image/gif";
    if (b64.startsWith("UklGR")) return "image/webp";
    return "image/jpeg";
  }

  // -- the timeline -----------------------------------------------------------------

  function gone(box) {
    if (box.querySelector(".blob-gone")) return;
    box.append(el("p", "blob-gone note", t("This file is no longer held here.")));
  }

  function viewer() {
    let dialog = document.getElementById("viewer");
    if (dialog) return dialog;
    dialog = el("dialog", "viewer");
    dialog.id = "viewer";
    dialog.setAttribute("aria-label", t("Picture"));
    const close = el("button", "link viewer-close", t("Close"));
    close.type = "button";
    close.addEventListener("click", () => dialog.close());
    const img = el("img", "viewer-img");
    img.alt = "";
    const save = el("a", "viewer-save", t("Save"));
    const note = el("p", "note", "");
    note.hidden = true;
    dialog.append(close, img, note, save);
    dialog.addEventListener("click", (ev) => { if (ev.target === dialog) dialog.close(); });
    document.body.append(dialog);
    return dialog;
  }

  function open(blob, box) {
    const dialog = viewer();
    const img = dialog.querySelector("img");
    const note = dialog.querySelector(".note");
    const save = dialog.querySelector(".viewer-save");
    note.hidden = true;
    img.hidden = false;
    img.onerror = () => {
      img.hidden = true;
      note.textContent = t("This file is no longer held here.");
      note.hidden = false;
      gone(box);
    };
    img.alt = blob.name;
    img.src = "/blob/" + blob.sha;
    save.href = "/blob/" + blob.sha;
    save.download = blob.name;
    dialog.showModal();
  }

  function view(m) {
    // A message's picture or file, for static/chat.js's render().
    const blob = m.blob;
    const box = el("div", "blob");
    if (blob.kind !== "file" && m.thumb) {
      const button = el("button", "blob-open");
      button.type = "button";
      button.setAttribute("aria-label", fill(t("Open the picture {name}, {size}"), { name: blob.name, size: size(blob.size) }));
      const img = el("img", "blob-thumb");
      const scale = Math.min(1, SHOWN_SIDE / Math.max(blob.w, blob.h, 1));
      img.width = Math.max(1, Math.round(blob.w * scale));
      img.height = Math.max(1, Math.round(blob.h * scale));
      img.alt = blob.name;
      img.src = "data:" + thumbType(m.thumb) + ";base64," + m.thumb;
      button.append(img);
      button.addEventListener("click", () => open(blob, box));
      box.append(button);
      return box;
    }
    const link = el("a", "blob-file");
    link.href = "/blob/" + blob.sha;
    link.download = blob.name;
    link.append(el("span", "blob-name", blob.name), el("span", "blob-size", size(blob.size)));
    link.addEventListener("click", (ev) => {
      // Asked first (the router fetches it from a peer if need be): a file
      // no router in reach holds says so here, instead of a failed download.
      if (link.dataset.checked) return;
      ev.preventDefault();
      fetch(link.href, { method: "HEAD", credentials: "same-origin" }).then((r) => {
        if (!r.ok) { gone(box); return; }
        link.dataset.checked = "1";
        link.click();
      }, () => gone(box));
    });
    box.append(link);
    return box;
  }

  // -- making a photo smaller, and its thumbnail --------------------------------------

  function toBlob(canvas, quality) {
    return new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", quality));
  }

  function drawn(bitmap, side) {
    const scale = Math.min(1, side / Math.max(bitmap.width, bitmap.height));
    const canvas = document.createElement("canvas");
    canvas.width = Math.max(1, Math.round(bitmap.width * scale));
    canvas.height = Math.max(1, Math.round(bitmap.height * scale));
    const ctx = canvas.getContext("2d");
    ctx.fillStyle = "#fff"; // a transparent PNG on white, as JPEG has no alpha
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    ctx.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
    return canvas;
  }

  function base64(blob) {
    return new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(String(reader.result).split(",", 2)[1]);
      reader.onerror = reject;
      reader.readAsDataURL(blob);
    });
  }

  async function thumbnail(bitmap) {
    for (const side of THUMB_SIDES) {
      const canvas = drawn(bitmap, side);
      for (const q of THUMB_QUALITIES) {
        const b = await toBlob(canvas, q);
        if (b && b.size <= THUMB_BYTES) return base64(b);
      }
    }
    return null;
  }

  function baseName(name) {
    const dot = name.lastIndexOf(".");
    return (dot > 0 ? name.slice(0, dot) : name) || "photo";
  }

  async function prepare(file) {
    // {body, name, thumb, photo}: what goes up, and the thumbnail.
    let bitmap = null;
    if (file.type.startsWith("image/") && file.type !== "image/svg+xml") {
      try { bitmap = await createImageBitmap(file, { imageOrientation: "from-image" }); } catch (e) { bitmap = null; }
    }
    if (!bitmap) return { body: file, name: file.name, thumb: null, photo: false };
    const thumb = await thumbnail(bitmap);
    if (KEPT.includes(file.type)) return { body: file, name: file.name, thumb: thumb, photo: false };
    const body = await toBlob(drawn(bitmap, MAX_SIDE), QUALITY);
    bitmap.close();
    if (!body) return { body: file, name: file.name, thumb: null, photo: false }; // could not encode
    return { body: body, name: baseName(file.name) + ".jpg", thumb: thumb, photo: true };
  }

  // -- uploading ---------------------------------------------------------------------

  function pending(name) {
    const li = el("li", "message mine pending blob-pending");
    const head = el("div", "head");
    head.append(el("span", "author", root.dataset.user), el("span", "status", t("Uploading…")));
    const bar = el("progress", "upload-progress");
    bar.max = 100;
    bar.value = 0;
    bar.setAttribute("aria-label", fill(t("Uploading {name}"), { name: name }));
    const note = el("p", "meta upload-note", "");
    li.append(head, el("p", "text blob-name", name), bar, note);
    outbox.append(li);
    li.scrollIntoView({ block: "end" });
    return li;
  }

  function failed(li, why, retry) {
    li.querySelector(".status").textContent = t("Not sent");
    const note = li.querySelector(".upload-note");
    note.textContent = why;
    note.setAttribute("role", "alert");
    li.querySelector(".upload-progress")?.remove();
    const again = el("button", "link", t("Retry"));
    again.type = "button";
    const drop = el("button", "link", t("Remove"));
    drop.type = "button";
    again.addEventListener("click", () => { again.remove(); drop.remove(); retry(); });
    drop.addEventListener("click", () => li.remove());
    li.append(again, drop);
  }

  function upload(prepared, li) {
    const bar = li.querySelector(".upload-progress");
    const status = li.querySelector(".status");
    const xhr = new XMLHttpRequest();
    xhr.open("POST", uploadPath + "?name=" + encodeURIComponent(prepared.name));
    xhr.setRequestHeader("X-CSRF-Token", csrf);
    xhr.upload.onprogress = (ev) => {
      if (ev.lengthComputable) bar.value = Math.round((100 * ev.loaded) / ev.total);
    };
    xhr.onload = () => {
      let answer = {};
      try { answer = JSON.parse(xhr.responseText); } catch (e) { answer = {}; }
      if (xhr.status !== 200 || !answer.sha) {
        const why = answer.error || fill(t("The router said {status}."), { status: xhr.status });
        failed(li, why, () => start(prepared, li));
        return;
      }
      bar.value = 100;
      status.textContent = t("Sending…");
      const clientId = Date.now().toString(36) + Math.random().toString(36).slice(2, 10);
      const blob = { sha: answer.sha, name: answer.name };
      li.dataset.sha = answer.sha;
      const send = () => {
        if (!chat.send(blob, prepared.thumb, li, clientId, send)) {
          failed(li, t("Not connected: try again when the router is back."), send);
        }
      };
      send();
    };
    xhr.onerror = () => failed(li, t("The upload was cut off."), () => start(prepared, li));
    xhr.send(prepared.body);
  }

  function start(prepared, li) {
    li.querySelector(".upload-note").removeAttribute("role");
    if (!li.querySelector(".upload-progress")) {
      const bar = el("progress", "upload-progress");
      bar.max = 100;
      bar.value = 0;
      li.querySelector(".upload-note").before(bar);
    }
    li.querySelector(".status").textContent = t("Uploading…");
    li.querySelector(".upload-note").textContent = prepared.photo
      ? t("Made smaller on this phone before sending, which also removed its location and other camera data.")
      : "";
    upload(prepared, li);
  }

  async function chosen(file) {
    const li = pending(file.name);
    let prepared;
    try {
      prepared = await prepare(file);
    } catch (e) {
      prepared = { body: file, name: file.name, thumb: null, photo: false };
    }
    li.querySelector(".blob-name").textContent = prepared.name + " · " + size(prepared.body.size);
    if (prepared.body.size > maxUpload) {
      failed(li, fill(t("Too large: files are at most {size}."), { size: size(maxUpload) }), () => li.remove());
      return;
    }
    start(prepared, li);
  }

  if (picker) {
    picker.addEventListener("change", () => {
      for (const file of picker.files) chosen(file);
      picker.value = "";
    });
  }

  window.ccAttach = {
    view: view,
    bind(side) { chat = side; },
    failed: failed,
  };
})();
