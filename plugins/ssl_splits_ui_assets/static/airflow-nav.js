// Runs in the Airflow UI's own page (never in the Splits view's frame). Two uses:
//
// * Added by the Splits view, a sandboxed iframe that may not navigate the UI
//   itself, with data-href: moves the UI there, same origin only. A link to the
//   DAG's trigger form (data-open="trigger", /dags/{dag_id}?prefill=...&from_run=...)
//   loads that page afresh, so that the form starts from the values the API server
//   looks up for that run; any other page (a run) is reached the way the UI's
//   router moves (history entry + popstate, no reload).
// * Added to the page /dags/{dag_id}?prefill=... by the API server (the plugin's
//   PrefillMiddleware, at the URL the configuration gives), without data-href:
//   presses the page's Trigger button once the page shows it; the form opens with
//   the values the server found for the link's run (or the DAG's defaults).
(() => {
  const me = document.currentScript;
  const href = me.getAttribute("data-href");
  const open = me.getAttribute("data-open");
  if (href) {
    me.remove();
    const url = new URL(href, location.href);
    if (url.origin !== location.origin) return;
    if (open === "trigger") {
      location.assign(url.href);
      return;
    }
    const idx = history.state && typeof history.state.idx === "number" ? history.state.idx + 1 : 0;
    history.pushState({ usr: null, key: Math.random().toString(36).slice(2, 10), idx }, "",
      url.pathname + url.search + url.hash);
    dispatchEvent(new PopStateEvent("popstate", { state: history.state }));
    return;
  }
  if (open !== "trigger") return;
  // While the page loads, the UI may render its Trigger button more than once (a
  // click on the first one can be lost): press it until the form shows.
  const page = location.pathname;
  const start = Date.now();
  let pressed = 0;
  const timer = setInterval(() => {
    const button = document.querySelector('[data-testid="trigger-dag-button"]');
    if (location.pathname !== page || Date.now() - start > 30000 ||
        document.querySelector('[data-testid="trigger-dag-submit"]')) {
      clearInterval(timer); // the form is open, the user went elsewhere, or no button came
    } else if (button && !button.disabled && Date.now() - pressed > 1500) {
      pressed = Date.now();
      button.click();
    }
  }, 100);
})();
