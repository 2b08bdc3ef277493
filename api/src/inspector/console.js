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
