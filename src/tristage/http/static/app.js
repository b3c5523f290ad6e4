// tristage dashboard: confirmation for state-changing forms and a live environments table.
// No inline script (the Content-Security-Policy forbids it) and no third-party code.
"use strict";

document.addEventListener("submit", (event) => {
  const form = event.target;
  const question = form.getAttribute("data-confirm");
  if (question && !window.confirm(question)) {
    event.preventDefault();
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

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-refresh]").forEach(refreshLive);
});
