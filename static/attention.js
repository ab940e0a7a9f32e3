// Attention without push: plain HTTP gives no service worker and no
// notifications, so a page that is open (perhaps in a background tab) says
// there is something new by itself:
// - the count in the tab's title (set by the page) and on the icon: a badge
//   drawn onto the site's icon with a canvas, set as the page's favicon (a
//   data: URL, which the Content-Security-Policy's img-src allows);
// - if the person switched it on (remembered on the routers, so every
//   router's page knows): a short tone (Web Audio, no sound file) and/or a
//   buzz (navigator.vibrate) on a mention of their name or a direct message.
// Browsers play sound only after the person touched the page once; until
// then the tone is skipped, silently.
"use strict";
window.ccAttention = (function () {
  const ICON = "/static/icon.svg";
  const SIZE = 64; // px of the drawn icon: sharp on any tab strip
  const TONE_HZ = 880;
  const TONE_S = 0.18;
  const BUZZ = [120, 60, 120]; // ms: buzz, pause, buzz
  const MIN_GAP_MS = 2000; // a burst of messages makes one sound, not ten
  let prefs = { sound: false, vibrate: false };
  let audio = null;
  let lastAlert = 0;
  let base = null; // the icon, loaded once
  let shownCount = -1;
  let send = null; // how the page tells the router (its socket)
  const link = document.querySelector('link[rel="icon"]');
  const plainIcon = link ? link.href : ICON;

  function unlockAudio() {
    // Made (or resumed) inside a touch or key press: browsers allow it then.
    const Ctx = window.AudioContext || window.webkitAudioContext;
    if (!Ctx) return;
    if (!audio) audio = new Ctx();
    if (audio.state === "suspended") audio.resume();
  }
  document.addEventListener("pointerdown", unlockAudio, { passive: true });
  document.addEventListener("keydown", unlockAudio);

  function tone() {
    if (!audio || audio.state !== "running") return;
    const now = audio.currentTime;
    const osc = audio.createOscillator();
    const gain = audio.createGain();
    osc.frequency.value = TONE_HZ;
    gain.gain.setValueAtTime(0.0001, now);
    gain.gain.exponentialRampToValueAtTime(0.2, now + 0.02);
    gain.gain.exponentialRampToValueAtTime(0.0001, now + TONE_S);
    osc.connect(gain).connect(audio.destination);
    osc.start(now);
    osc.stop(now + TONE_S + 0.02);
  }

  function alert() {
    const now = Date.now();
    if (now - lastAlert < MIN_GAP_MS) return;
    lastAlert = now;
    document.documentElement.dataset.alerted = String((Number(document.documentElement.dataset.alerted) || 0) + 1);
    if (prefs.sound) tone();
    if (prefs.vibrate && navigator.vibrate) navigator.vibrate(BUZZ);
  }

  function draw(count) {
    const canvas = document.createElement("canvas");
    canvas.width = canvas.height = SIZE;
    const g = canvas.getContext("2d");
    if (!g) return null;
    if (base && base.complete && base.naturalWidth) g.drawImage(base, 0, 0, SIZE, SIZE);
    const label = count > 99 ? "99+" : String(count);
    const r = SIZE * 0.3;
    g.fillStyle = "#c62828";
    g.beginPath();
    g.arc(SIZE - r, r, r, 0, 2 * Math.PI);
    g.fill();
    g.fillStyle = "#fff";
    g.font = "bold " + Math.round(label.length > 2 ? r * 0.9 : r * 1.3) + "px sans-serif";
    g.textAlign = "center";
    g.textBaseline = "middle";
    g.fillText(label, SIZE - r, r + 1);
    return canvas.toDataURL("image/png");
  }

  function badge(count) {
    // The count on the tab's icon; the plain icon at 0.
    if (!link || count === shownCount) return;
    shownCount = count;
    document.documentElement.dataset.badge = String(count);
    if (!count) { link.href = plainIcon; return; }
    const apply = () => {
      const url = draw(shownCount);
      if (url && shownCount) { link.type = "image/png"; link.href = url; }
    };
    if (!base) {
      base = new Image();
      base.onload = apply;
      base.onerror = apply;
      base.src = ICON;
    } else {
      apply();
    }
  }

  // -- the person's choice, on the routers -----------------------------------

  function boxes() {
    return [document.getElementById("attention-sound"), document.getElementById("attention-vibrate")];
  }

  function set(p) {
    prefs = { sound: Boolean(p.sound), vibrate: Boolean(p.vibrate) };
    const [sound, vibrate] = boxes();
    if (sound) sound.checked = prefs.sound;
    if (vibrate) vibrate.checked = prefs.vibrate;
  }

  function bind(sendFrame) {
    send = sendFrame;
    const [sound, vibrate] = boxes();
    for (const box of [sound, vibrate]) {
      if (!box || box.dataset.bound) continue;
      box.dataset.bound = "1";
      box.addEventListener("change", () => {
        unlockAudio();
        prefs = { sound: Boolean(sound && sound.checked), vibrate: Boolean(vibrate && vibrate.checked) };
        if (send) send({ type: "attention", sound: prefs.sound, vibrate: prefs.vibrate });
        if (box === sound && prefs.sound) tone(); // what it sounds like
      });
    }
  }

  // The page's first choice, from the template (the socket's hello follows).
  const form = document.getElementById("attention");
  if (form) set({ sound: form.dataset.sound === "1", vibrate: form.dataset.vibrate === "1" });

  return { alert: alert, badge: badge, set: set, bind: bind, prefs: () => prefs };
})();
