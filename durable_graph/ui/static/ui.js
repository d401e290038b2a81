// durable-graph web view: confirm actions, and keep pages live by polling JSON.
// Everything from the server is put on the page with textContent: never as HTML.
"use strict";

let acting = false;  // a confirmed action is on its way: no live reload may cancel it

function confirmActions() {
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
      else acting = true;
    });
  }
}

function reload() {
  if (!acting) window.location.reload();
}

function cell(text, cls) {
  const td = document.createElement("td");
  if (cls) td.className = cls;
  td.textContent = text;
  return td;
}

function renderThreads(data) {
  const counts = document.getElementById("counts");
  for (const a of counts.querySelectorAll("a[data-status]")) {
    const n = a.dataset.status ? data.counts[a.dataset.status] : data.total;
    a.querySelector("b").textContent = String(n ?? 0);
  }
  const body = document.querySelector("#threads tbody");
  const rows = data.threads.map((t) => {
    const tr = document.createElement("tr");
    tr.className = t.status;
    const id = document.createElement("td");
    const link = document.createElement("a");
    link.href = t.href;
    link.textContent = t.thread_id;
    id.appendChild(link);
    tr.appendChild(id);
    const st = document.createElement("td");
    const badge = document.createElement("span");
    badge.className = "status " + t.status;
    badge.textContent = t.status;
    st.appendChild(badge);
    tr.appendChild(st);
    tr.appendChild(cell(t.graph || ""));
    const cp = document.createElement("td");
    const code = document.createElement("code");
    code.textContent = (t.last_checkpoint_id || "-").slice(0, 24);
    cp.appendChild(code);
    tr.appendChild(cp);
    tr.appendChild(cell(t.updated_at || "", "age"));
    return tr;
  });
  if (rows.length) body.replaceChildren(...rows);
}

function poll(url, onData, every) {
  const tick = async () => {
    try {
      const response = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
      if (response.ok) onData(await response.json());
    } catch (err) { /* the server restarts: try again next tick */ }
    setTimeout(tick, every);
  };
  setTimeout(tick, every);
}

document.addEventListener("DOMContentLoaded", () => {
  confirmActions();
  const counts = document.getElementById("counts");
  if (counts && counts.dataset.live) poll(counts.dataset.live, renderThreads, 2000);
  const live = document.getElementById("live");
  if (live && live.dataset.live) {
    poll(live.dataset.live, (data) => {
      if (data.version !== live.dataset.version) reload();
    }, 1500);
    // which worker runs what changes without the thread's record changing: look again
    if (live.dataset.status === "running") setTimeout(reload, 4000);
  }
});
