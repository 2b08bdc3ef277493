// What the console's pages share: the caller's token, and server-sent events
// read over fetch (so the token goes in a header, never in an address).
"use strict";

const KEY = "hanzo-twin-token";

// The token from the address's fragment (#token=...), which is never sent to
// the server, or the one this tab kept; the fragment leaves the address.
export function takeToken() {
  const fromFragment = new URLSearchParams(location.hash.slice(1)).get("token");
  if (fromFragment) {
    sessionStorage.setItem(KEY, fromFragment);
    history.replaceState(null, "", location.pathname);
  }
  return sessionStorage.getItem(KEY);
}

// Keeps a token typed into a page's form, for this tab only.
export function keepToken(token) {
  sessionStorage.setItem(KEY, token);
}

// Calls onEvent(type, data) for each event of a text/event-stream response,
// until the stream ends; an exception from onEvent ends the reading.
export async function readEvents(response, onEvent) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let type = "message", data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) type = line.slice(6).trim();
        else if (line.startsWith("data:")) data += line.slice(5).trim();
      }
      if (data) onEvent(type, data);
    }
  }
}

export function duration(s) {
  if (s < 60) return `${s.toFixed(0)} s`;
  if (s < 3600) return `${(s / 60).toFixed(0)} min`;
  if (s < 86400) return `${(s / 3600).toFixed(1)} h`;
  return `${(s / 86400).toFixed(1)} d`;
}

export function bytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 ** 3) return `${(n / 1024 ** 2).toFixed(1)} MiB`;
  return `${(n / 1024 ** 3).toFixed(2)} GiB`;
}

// One API call with the token; a refusal throws an Error with the status
// and the API's message.
export async function call(token, method, path, body) {
  const headers = { Authorization: `Bearer ${token}` };
  if (body !== undefined) headers["content-type"] = "application/json";
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (!response.ok) {
    const answer = await response.json().catch(() => ({}));
    throw Object.assign(new Error(answer.error ? answer.error.message : response.statusText), { status: response.status });
  }
  return response;
}

// Why the caller may not use `permission` ("" when it may), from
// GET /v1/whoami.
export function refusal(me, permission) {
  const held = me.permissions.find((p) => p.permission === permission);
  if (held && held.grant !== "denied") return "";
  const who = held && held.roles.length ? held.roles.join(" or ") : "no role";
  return `needs ${permission}, which ${who} holds; this token has ${me.roles.join(", ") || "no role"}`;
}
