// cbos's page: the control room in a browser. It speaks cbos's WebSocket protocol
// (shared/protocol.md, v2) to the server that served it, and nothing else.
// Everything shown is built with textContent: session data and screens are never HTML.
"use strict";

(() => {
  // cbos.state.ATTENTION_ORDER and ICONS (tests/test_page.py checks that they agree).
  const ORDER = ["permission", "waiting", "working", "thinking", "idle", "exited"];
  const ICONS = { waiting: "●", permission: "⚠", thinking: "◐", working: "◑", idle: "○", exited: "✗" };
  const BUSY = new Set(["working", "thinking"]);
  const TOKEN_KEY = "cbos-token";
  const NOTIFY_KEY = "cbos-notify";
  // At most one screen capture per this many ms per page: a session streaming without
  // pause costs the server ~20 captures a second, not one per output chunk.
  const SCREEN_GAP = 50;
  const $ = (id) => document.getElementById(id);

  const sessions = new Map(); // slug -> SESSION (protocol.md)
  const pending = new Map(); // request id -> {type, session}
  let token = "";
  let ws = null;
  let opened = false; // the socket opened at least once with this token
  let retries = 0;
  let retryTimer = 0;
  let nextId = 1;
  let selected = null;
  let screenBusy = false; // a get_screen is in flight
  let screenDirty = false; // output came meanwhile: ask again when it answers
  let screenAt = 0; // when the last get_screen went out (performance.now())
  let screenTimer = 0; // a get_screen waiting for SCREEN_GAP to pass
  let answering = ""; // the question whose answer is on its way
  let answeringUntil = 0; // ... for this long at most (the same question may come again)
  let armedUntil = 0; // Ctrl+C of a session that is not busy needs a second press

  // -- the token: from the URL's fragment, then kept for this tab only -------------------

  function storage(op, key, value) {
    try {
      const store = key === TOKEN_KEY ? window.sessionStorage : window.localStorage;
      if (op === "get") return store.getItem(key) || "";
      if (op === "set") store.setItem(key, value);
      else store.removeItem(key);
    } catch (e) { /* storage off: the token lives as long as the page */ }
    return "";
  }

  function tokenFrom(text) {
    const match = /(?:^|[#&?])token=([^&#\s]+)/.exec(text);
    const found = match ? decodeURIComponent(match[1]) : text.trim();
    return /^[A-Za-z0-9_-]{20,}$/.test(found) ? found : "";
  }

  function takeToken() {
    if (location.hash.length > 1) {
      const found = tokenFrom(location.hash);
      if (found) storage("set", TOKEN_KEY, found);
      // Off the URL bar (and out of history), whatever the fragment held.
      history.replaceState(null, "", location.pathname + location.search);
      if (found) return found;
    }
    return storage("get", TOKEN_KEY);
  }

  // -- the connection --------------------------------------------------------------------

  function connect() {
    clearTimeout(retryTimer);
    if (!token) return;
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(`${scheme}//${location.host}/ws/stream?token=${encodeURIComponent(token)}`);
    ws = socket;
    setConn("connecting…", "");
    socket.onopen = () => {
      opened = true;
      retries = 0;
      setConn("live", "live");
      if (selected) follow(selected);
    };
    socket.onmessage = (event) => {
      let message;
      try { message = JSON.parse(event.data); } catch (e) { return; }
      handle(message);
    };
    socket.onclose = () => {
      if (ws !== socket) return;
      ws = null;
      screenBusy = false;
      pending.clear();
      const wait = Math.min(10, 2 ** retries);
      retries += 1;
      setConn(opened ? `offline; retrying in ${wait}s`
        : `refused (wrong token?) or cbos stopped; retrying in ${wait}s`, "down");
      document.body.classList.add("stale");
      retryTimer = setTimeout(connect, wait * 1000);
    };
  }

  function request(message, expect) {
    if (!ws || ws.readyState !== WebSocket.OPEN) {
      toast("not connected to cbos; wait for it to come back");
      return false;
    }
    const id = nextId++;
    message.id = id;
    pending.set(id, { type: message.type, session: message.session, expect });
    ws.send(JSON.stringify(message));
    return true;
  }

  function settle(message) {
    const entry = pending.get(message.id);
    pending.delete(message.id);
    return entry || { type: "", session: null };
  }

  function handle(message) {
    switch (message.type) {
      case "sessions":
        document.body.classList.remove("stale");
        sessions.clear();
        for (const s of message.sessions) sessions.set(s.slug, s);
        settle(message);
        renderList();
        renderSession();
        break;
      case "session_created":
      case "session_update":
        sessions.set(message.session.slug, message.session);
        renderList();
        if (message.session.slug === selected) renderSession();
        break;
      case "session_deleted":
        sessions.delete(message.slug);
        renderList();
        if (message.slug === selected) renderSession();
        break;
      case "session_waiting":
        notify(message.slug, message.context || "");
        break;
      case "stream":
        if (message.session === selected) wantScreen();
        break;
      case "screen":
        settle(message);
        screenBusy = false;
        if (message.session === selected) {
          renderScreen(message);
          if (screenDirty) wantScreen();
        }
        break;
      case "send_result": {
        settle(message);
        $("send").disabled = false;
        if (message.success) {
          if ($("text").dataset.sent === $("text").value) $("text").value = "";
        } else toast(`not sent: ${message.error}`);
        break;
      }
      case "interrupt_result":
        settle(message);
        if (!message.success) toast(`Ctrl+C not pressed: ${message.error}`);
        break;
      case "answer_result":
        settle(message);
        if (!message.success) {
          answering = "";
          toast(`not answered: ${message.error}`);
          renderDialog();
        }
        break;
      case "error": {
        const entry = settle(message);
        if (entry.type === "get_screen") {
          screenBusy = false;
          if (entry.session === selected) screenNote(`no screen: ${message.message}`);
        } else if (entry.type === "send") {
          $("send").disabled = false;
          toast(`not sent: ${message.message}`);
        } else if (entry.type === "answer") {
          answering = "";
          toast(`not answered: ${message.message}`);
          renderDialog();
        } else if (entry.type !== "subscribe" && entry.type !== "unsubscribe") {
          toast(message.message);
        }
        break;
      }
      default:
        settle(message);
    }
  }

  // -- the list --------------------------------------------------------------------------

  function attention(a, b) {
    return ORDER.indexOf(a.state) - ORDER.indexOf(b.state) || a.since - b.since
      || (a.slug < b.slug ? -1 : a.slug > b.slug ? 1 : 0);
  }

  function age(since) {
    let seconds = Math.max(0, Math.floor(Date.now() / 1000 - since));
    for (const [unit, size] of [["d", 86400], ["h", 3600], ["m", 60]]) {
      if (seconds >= size) return `${Math.floor(seconds / size)}${unit}`;
    }
    return `${seconds}s`;
  }

  // A remote session's slug is HOST:SLUG; its host is shown on its own.
  function shortName(s) {
    return s.host && s.slug.startsWith(`${s.host}:`) ? s.slug.slice(s.host.length + 1) : s.slug;
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function renderList() {
    const list = $("sessions");
    const ordered = [...sessions.values()].sort(attention);
    const items = ordered.map((s) => {
      const row = el("button", `row st-${s.state}`);
      row.type = "button";
      row.dataset.slug = s.slug;
      if (s.slug === selected) row.setAttribute("aria-current", "true");
      const top = el("div", "top");
      top.append(el("span", "icon", ICONS[s.state] || "?"), el("span", "name", shortName(s)));
      if (s.host) top.append(el("span", "host", s.host));
      top.append(el("span", "state", s.state));
      const when = el("span", "age", age(s.since));
      when.dataset.since = s.since;
      top.append(when);
      row.append(top, el("div", "reason", s.reason || ""));
      row.addEventListener("click", () => select(s.slug, true));
      const item = el("li");
      item.append(row);
      return item;
    });
    list.replaceChildren(...items);
    $("empty").hidden = ordered.length > 0;
    const counts = { permission: 0, waiting: 0 };
    for (const s of ordered) if (s.state in counts) counts[s.state] += 1;
    const parts = [];
    if (counts.permission) parts.push(el("span", "n-permission", `${counts.permission} asking`));
    if (counts.waiting) parts.push(el("span", "n-waiting", `${counts.waiting} waiting`));
    const all = el("span", "", `${ordered.length} session${ordered.length === 1 ? "" : "s"}`);
    const line = [];
    for (const part of [...parts, all]) {
      if (line.length) line.push(document.createTextNode(" · "));
      line.push(part);
    }
    $("counts").replaceChildren(...line);
    const need = counts.permission + counts.waiting;
    document.title = need ? `(${need}) cbos` : "cbos";
  }

  function tick() {
    for (const node of document.querySelectorAll(".age[data-since]")) {
      node.textContent = age(Number(node.dataset.since));
    }
  }

  // -- one session -----------------------------------------------------------------------

  function select(slug, push) {
    if (selected === slug) return;
    if (selected && ws && ws.readyState === WebSocket.OPEN) {
      request({ type: "unsubscribe", sessions: [selected] });
    }
    selected = slug;
    clearTimeout(screenTimer);
    screenTimer = 0;
    answering = "";
    armedUntil = 0;
    screenDirty = false;
    document.body.classList.toggle("selected", Boolean(slug));
    $("back").hidden = !slug;
    $("session-pane").hidden = !slug;
    $("pick").hidden = Boolean(slug);
    if (push && slug) history.pushState({ slug }, "", location.pathname + location.search);
    $("screen").replaceChildren();
    renderList();
    renderSession();
    if (slug) {
      screenNote("loading the screen…");
      follow(slug);
    }
  }

  function follow(slug) {
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    request({ type: "subscribe", sessions: [slug] });
    screenBusy = false;
    wantScreen();
  }

  // One screen request at a time, SCREEN_GAP apart; output that arrives meanwhile asks
  // for one more.
  function wantScreen() {
    if (!selected || screenTimer || !ws || ws.readyState !== WebSocket.OPEN) return;
    if (screenBusy) {
      screenDirty = true;
      return;
    }
    const wait = screenAt + SCREEN_GAP - performance.now();
    if (wait > 0) {
      screenTimer = setTimeout(() => { screenTimer = 0; wantScreen(); }, wait);
      return;
    }
    screenDirty = false;
    screenAt = performance.now();
    screenBusy = request({ type: "get_screen", session: selected });
  }

  function renderSession() {
    if (!selected) return;
    const s = sessions.get(selected);
    const head = $("head");
    head.className = s ? `st-${s.state}` : "st-exited";
    $("head-icon").textContent = s ? ICONS[s.state] || "?" : ICONS.exited;
    $("head-name").textContent = s ? shortName(s) : selected;
    $("head-host").hidden = !(s && s.host);
    $("head-host").textContent = (s && s.host) || "";
    $("head-state").textContent = s ? s.state : "gone";
    $("head-age").textContent = s ? age(s.since) : "";
    if (s) $("head-age").dataset.since = s.since;
    else delete $("head-age").dataset.since;
    $("head-reason").textContent = s ? s.reason || "" : "this session has ended";
    const live = Boolean(s) && s.state !== "exited";
    $("text").disabled = !live;
    $("send").disabled = !live;
    $("interrupt").disabled = !live;
    disarm();
    renderDialog();
  }

  function renderDialog() {
    const s = selected && sessions.get(selected);
    const dialog = s && s.state === "permission" ? s.dialog : null;
    const box = $("dialog");
    if (!s || s.state !== "permission") {
      box.hidden = true;
      answering = "";
      return;
    }
    box.hidden = false;
    if (!dialog) {
      $("question").textContent = "Claude is asking (see the screen below); its options show "
        + "here once cbos has read them.";
      $("options").replaceChildren(escButton(false));
      return;
    }
    if (answering && (answering !== dialog.question || Date.now() > answeringUntil)) answering = "";
    const busy = Boolean(answering);
    $("question").textContent = dialog.question || "Claude asks:";
    const buttons = dialog.options.map((option) => {
      const button = el("button", "option", `${option.number}. ${option.label}`);
      button.type = "button";
      button.disabled = busy;
      button.dataset.choice = String(option.number);
      button.addEventListener("click", () => answer(String(option.number), dialog.question));
      return button;
    });
    $("options").replaceChildren(...buttons, escButton(busy, dialog.question));
  }

  function escButton(busy, question) {
    const button = el("button", "option cancel", "Esc: cancel");
    button.type = "button";
    button.disabled = busy;
    button.dataset.choice = "esc";
    button.addEventListener("click", () => answer("esc", question || ""));
    return button;
  }

  function answer(choice, question) {
    if (!selected) return;
    // The question goes along: if another dialog has replaced it meanwhile, cbos refuses.
    const message = { type: "answer", session: selected, choice };
    if (question) message.question = question;
    if (request(message)) {
      answering = question || "?";
      answeringUntil = Date.now() + 5000;
      setTimeout(renderDialog, 5100);
      renderDialog();
    }
  }

  // -- the screen: tmux's rendering, SGR colours included --------------------------------

  const RULE = /^[\s─━═╌┄▔▁\-]+$/;

  function colour256(n) {
    if (n < 16) return `var(--c${n})`;
    if (n >= 232) {
      const v = 8 + (n - 232) * 10;
      return `rgb(${v},${v},${v})`;
    }
    const i = n - 16;
    const level = (x) => (x ? 55 + x * 40 : 0);
    return `rgb(${level(Math.floor(i / 36))},${level(Math.floor(i / 6) % 6)},${level(i % 6)})`;
  }

  // One SGR sequence's parameters applied to a style; returns the new style.
  function applySgr(style, text) {
    const s = { ...style };
    const params = text === "" ? [[0]] : text.split(";").map((p) => p.split(":").map((x) => (x === "" ? 0 : Number(x))));
    for (let k = 0; k < params.length; k++) {
      const [code, ...sub] = params[k];
      if (code === 0) Object.assign(s, { fg: null, bg: null, b: false, d: false, i: false, u: false, v: false, h: false, s: false });
      else if (code === 1) s.b = true;
      else if (code === 2) s.d = true;
      else if (code === 3) s.i = true;
      else if (code === 4) s.u = sub.length ? sub[0] !== 0 : true;
      else if (code === 7) s.v = true;
      else if (code === 8) s.h = true;
      else if (code === 9) s.s = true;
      else if (code === 21) s.u = true;
      else if (code === 22) { s.b = false; s.d = false; }
      else if (code === 23) s.i = false;
      else if (code === 24) s.u = false;
      else if (code === 27) s.v = false;
      else if (code === 28) s.h = false;
      else if (code === 29) s.s = false;
      else if (code >= 30 && code <= 37) s.fg = `var(--c${code - 30})`;
      else if (code >= 90 && code <= 97) s.fg = `var(--c${code - 82})`;
      else if (code >= 40 && code <= 47) s.bg = `var(--c${code - 40})`;
      else if (code >= 100 && code <= 107) s.bg = `var(--c${code - 92})`;
      else if (code === 39) s.fg = null;
      else if (code === 49) s.bg = null;
      else if (code === 38 || code === 48 || code === 58) {
        // 38;5;N  38;2;R;G;B  or the colon forms 38:5:N  38:2:[space]:R:G:B
        let rest = sub;
        if (!rest.length) { rest = params.slice(k + 1).map((p) => p[0]); }
        let colour = null;
        let used = 0;
        if (rest[0] === 5 && rest.length >= 2) { colour = colour256(rest[1] & 255); used = 2; }
        else if (rest[0] === 2) {
          const rgb = sub.length >= 5 ? rest.slice(-3) : rest.slice(1, 4);
          if (rgb.length === 3) colour = `rgb(${rgb.map((x) => x & 255).join(",")})`;
          used = sub.length ? 0 : 4;
        }
        if (!sub.length) k += used;
        if (code === 38) s.fg = colour;
        else if (code === 48) s.bg = colour;
      }
    }
    return s;
  }

  function styled(text, s) {
    const classes = ["b", "d", "i", "u", "s", "h"].filter((c) => s[c]);
    let fg = s.fg;
    let bg = s.bg;
    if (s.v) { [fg, bg] = [bg || "var(--term-fg)", fg || "var(--term-bg)"]; }
    if (!classes.length && !fg && !bg) return document.createTextNode(text);
    const span = el("span", classes.join(" "), text);
    if (fg) span.style.color = fg;
    if (bg) span.style.backgroundColor = bg;
    return span;
  }

  const ESCAPE = /\x1b(?:\[([0-9;:?]*)([ -/]*[@-~])|\][^\x07\x1b]*(?:\x07|\x1b\\)|[()][0-9A-Za-z]|[=>78])/g;

  function renderLine(line, style) {
    const div = el("div", "l");
    let plain = "";
    let last = 0;
    let s = style;
    ESCAPE.lastIndex = 0;
    for (let m = ESCAPE.exec(line); m; m = ESCAPE.exec(line)) {
      if (m.index > last) {
        const text = line.slice(last, m.index);
        div.append(styled(text, s));
        plain += text;
      }
      if (m[2] === "m" && !(m[1] || "").startsWith("?")) s = applySgr(s, m[1] || "");
      last = ESCAPE.lastIndex;
    }
    if (last < line.length) {
      const text = line.slice(last);
      div.append(styled(text, s));
      plain += text;
    }
    if (plain.trim() && RULE.test(plain)) div.classList.add("rule");
    return [div, s];
  }

  function renderScreen(message) {
    const screen = $("screen");
    const atBottom = screen.scrollHeight - screen.scrollTop - screen.clientHeight < 24;
    let style = { fg: null, bg: null };
    const lines = message.data.replace(/\r/g, "").split("\n").map((line) => {
      const [div, next] = renderLine(line, style);
      style = next;
      return div;
    });
    screen.replaceChildren(...lines);
    screen.dataset.cols = message.cols || "";
    if (atBottom || screen.dataset.fresh !== selected) screen.scrollTop = screen.scrollHeight;
    screen.dataset.fresh = selected;
  }

  function screenNote(text) {
    $("screen").replaceChildren(el("div", "l note", text));
    $("screen").dataset.fresh = "";
  }

  // -- typing, Ctrl+C --------------------------------------------------------------------

  function send(event) {
    event.preventDefault();
    const input = $("text");
    const text = input.value;
    if (!selected || !text) return;
    input.dataset.sent = text;
    if (request({ type: "send", session: selected, text })) $("send").disabled = true;
  }

  function disarm() {
    armedUntil = 0;
    $("interrupt").classList.remove("armed");
    $("interrupt").textContent = "Ctrl+C";
  }

  // Ctrl+C while Claude works interrupts it; at rest a second Ctrl+C would quit Claude,
  // so there it takes two presses.
  function interrupt() {
    const s = selected && sessions.get(selected);
    if (!s) return;
    if (!BUSY.has(s.state) && Date.now() > armedUntil) {
      armedUntil = Date.now() + 4000;
      $("interrupt").classList.add("armed");
      $("interrupt").textContent = "Again?";
      setTimeout(() => { if (Date.now() >= armedUntil) disarm(); }, 4100);
      return;
    }
    disarm();
    request({ type: "interrupt", session: selected });
  }

  // -- notifications (off until the person turns them on) --------------------------------

  function notifyState() {
    const button = $("notify");
    if (!("Notification" in window) || !window.isSecureContext) {
      button.title = "Notifications need this page on localhost or https (an SSH tunnel does it)";
      button.disabled = true;
      return;
    }
    const on = storage("get", NOTIFY_KEY) === "on" && Notification.permission === "granted";
    button.setAttribute("aria-pressed", String(on));
    button.title = on ? "Notifications on: tap to turn off"
      : Notification.permission === "denied" ? "Notifications are blocked in the browser's settings"
        : "Notify me when a session waits or asks";
  }

  async function toggleNotify() {
    if (storage("get", NOTIFY_KEY) === "on") {
      storage("del", NOTIFY_KEY);
    } else {
      let permission = Notification.permission;
      if (permission === "default") permission = await Notification.requestPermission();
      if (permission === "granted") storage("set", NOTIFY_KEY, "on");
      else toast("Notifications are blocked for this page in the browser's settings");
    }
    notifyState();
  }

  function notify(slug, context) {
    if (storage("get", NOTIFY_KEY) !== "on" || !("Notification" in window)
        || Notification.permission !== "granted") return;
    if (!document.hidden && slug === selected) return;
    const s = sessions.get(slug);
    const what = s && s.state === "permission" ? "asks" : "is waiting";
    const note = new Notification(`${s ? shortName(s) : slug} ${what}`, { body: context.slice(0, 240), tag: `cbos-${slug}` });
    note.onclick = () => { window.focus(); select(slug, true); note.close(); };
  }

  // -- the rest ----------------------------------------------------------------------------

  let toastTimer = 0;
  function toast(text, info) {
    const box = $("toast");
    box.textContent = text;
    box.className = info ? "info" : "";
    box.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { box.hidden = true; }, 6000);
  }

  function setConn(text, kind) {
    const node = $("conn");
    node.textContent = text;
    node.className = `conn ${kind}`;
  }

  function unlock(found) {
    token = found;
    $("locked").hidden = true;
    $("room").hidden = false;
    opened = false;
    retries = 0;
    connect();
  }

  function start() {
    token = takeToken();
    $("toast").addEventListener("click", () => { $("toast").hidden = true; });
    $("token-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const found = tokenFrom($("token-input").value);
      $("token-input").value = "";
      if (!found) { toast("that is not a cbos address or token"); return; }
      storage("set", TOKEN_KEY, found);
      unlock(found);
    });
    $("input").addEventListener("submit", send);
    $("interrupt").addEventListener("click", interrupt);
    $("back").addEventListener("click", () => history.back());
    $("notify").addEventListener("click", toggleNotify);
    window.addEventListener("popstate", (event) => {
      const slug = event.state && event.state.slug;
      select(slug && sessions.has(slug) ? slug : null, false);
    });
    // An address with another token pasted into this tab changes only the fragment.
    window.addEventListener("hashchange", () => {
      const found = takeToken();
      if (found && found !== token) {
        if (ws) { const old = ws; ws = null; old.close(); }
        sessions.clear();
        select(null, false);
        renderList();
        unlock(found);
      }
    });
    history.replaceState(null, "", location.pathname + location.search);
    notifyState();
    setInterval(tick, 1000);
    if (!token) {
      $("locked").hidden = false;
      $("room").hidden = true;
      setConn("no token", "down");
      return;
    }
    unlock(token);
  }

  start();
})();
