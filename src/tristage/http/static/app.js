// tristage dashboard: confirmation for state-changing forms, the project switcher, a live
// environments table and logs that follow. No inline script (the Content-Security-Policy
// forbids it) and no third-party code. Log lines are added as text, never as HTML.
"use strict";

document.addEventListener("submit", (event) => {
  const form = event.target;
  const question = form.getAttribute("data-confirm");
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});

document.addEventListener("change", (event) => {
  const select = event.target;
  const prefix = select.getAttribute && select.getAttribute("data-navigate");
  if (prefix && /^[a-z0-9][a-z0-9-]*$/.test(select.value)) {
    window.location.assign(prefix + select.value);
  }
});

function refreshLive(box) {
  const every = parseInt(box.getAttribute("data-refresh"), 10) || 5000;
  const tick = async () => {
    if (document.visibilityState === "visible") {
      try {
        const response = await fetch(window.location.href, {
          credentials: "same-origin",
          headers: { Accept: "text/html" },
        });
        if (response.ok && !response.redirected) {
          const page = new DOMParser().parseFromString(await response.text(), "text/html");
          const fresh = page.getElementById(box.id);
          if (fresh) {
            box.replaceChildren(...fresh.childNodes);
          }
        }
      } catch (_) {
        // the control plane may be restarting: try again at the next tick
      }
    }
    window.setTimeout(tick, every);
  };
  window.setTimeout(tick, every);
}

function followLog(pre) {
  const url = pre.getAttribute("data-follow");
  let next = parseInt(pre.getAttribute("data-next"), 10) || 0;
  const tick = async () => {
    let delay = 1000;
    try {
      const response = await fetch(url + "&from=" + next, { credentials: "same-origin" });
      if (response.ok && !response.redirected) {
        const body = await response.json();
        if (body.lines.length) {
          const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
          pre.appendChild(document.createTextNode(body.lines.join("\n") + "\n"));
          const empty = document.getElementById("log-empty");
          if (empty) {
            empty.remove();
          }
          if (atBottom) {
            pre.scrollTop = pre.scrollHeight;
          }
          delay = 250;
        }
        next = body.next;
        pre.setAttribute("data-next", String(next));
      } else {
        delay = 5000;
      }
    } catch (_) {
      delay = 5000;
    }
    window.setTimeout(tick, delay);
  };
  window.setTimeout(tick, 1000);
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-refresh]").forEach(refreshLive);
  document.querySelectorAll("pre[data-follow]").forEach(followLog);
});
