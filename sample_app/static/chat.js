// The chat page's client (served by nginx from sample_app/static; the page is the app's /chat).
// It opens a WebSocket to the path in the form's data-socket (/ws/chat), sends what the form
// holds as JSON {"name", "text"}, and shows every event the server relays: messages, people
// joining and leaving, errors (a message that could not be delivered), and outages of the room.
// When the socket closes (a server restart sends 1012, a shutdown 1001) it
// reconnects with a growing delay, so a reload of the server costs a moment, not the page.
"use strict";

(() => {
  const form = document.getElementById("chat-form");
  const nameInput = document.getElementById("chat-name");
  const textInput = document.getElementById("chat-text");
  const list = document.getElementById("messages");
  const status = document.getElementById("chat-status");
  const MAX_DELAY_MS = 10000;
  let socket = null;
  let failures = 0;

  function socketUrl() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${location.host}${form.dataset.socket}`;
  }

  function setStatus(state, text) {
    status.dataset.state = state; // the browser test waits for "open"
    status.textContent = text;
  }

  // textContent only: whatever people type is shown as text, never parsed as HTML.
  function show(kind, name, text) {
    const item = document.createElement("li");
    item.className = kind;
    if (name !== null) {
      const who = document.createElement("span");
      who.className = "name";
      who.textContent = name;
      item.append(who);
    }
    const what = document.createElement("span");
    what.className = "text";
    what.textContent = text;
    item.append(what);
    list.append(item);
    item.scrollIntoView({ block: "nearest" });
  }

  function onEvent(event) {
    let data;
    try {
      data = JSON.parse(event.data);
    } catch {
      return;
    }
    switch (data.type) {
      case "welcome":
        if (!nameInput.value) nameInput.value = data.name;
        // data.room: "redis" (every worker, every replica) or "memory" (this worker only)
        setStatus("open", `Connected to worker ${data.worker}: ${data.clients} on this worker, ` +
                  `room via ${data.room}.`);
        break;
      case "message":
        show("message", data.name, data.text);
        break;
      case "presence":
        show("presence", null, `${data.name} ${data.event === "join" ? "joined" : "left"}`);
        break;
      case "system": // this worker lost (or regained) the room: said, never silent
        show(data.event === "lost" ? "error" : "presence", null, data.text);
        break;
      case "error":
        show("error", null, data.text);
        break;
    }
  }

  function connect() {
    setStatus("connecting", "Connecting…");
    socket = new WebSocket(socketUrl());
    socket.addEventListener("open", () => { failures = 0; });
    socket.addEventListener("message", onEvent);
    socket.addEventListener("close", (event) => {
      failures += 1;
      const delay = Math.min(MAX_DELAY_MS, 500 * 2 ** (failures - 1));
      const why = `${event.code}${event.reason ? " " + event.reason : ""}`;
      setStatus("closed", `Disconnected (${why}); reconnecting in ${Math.ceil(delay / 1000)} s.`);
      // In the conversation too, once per lost connection (not for each failed retry).
      if (failures === 1) show("presence", null, `Disconnected (${why}); reconnecting…`);
      setTimeout(connect, delay);
    });
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = textInput.value.trim();
    if (!text || !socket || socket.readyState !== WebSocket.OPEN) return;
    socket.send(JSON.stringify({ name: nameInput.value.trim(), text }));
    textInput.value = "";
    textInput.focus();
  });

  connect();
})();
