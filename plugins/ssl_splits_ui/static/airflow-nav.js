// Runs in the Airflow UI's own page, added there by the Splits view (a sandboxed
// iframe, which may not navigate the UI itself). Moves the UI to data-href, one of
// its own pages, the way its router does (history entry + popstate: no reload);
// with data-open="trigger", then presses the DAG page's Trigger button, whose form
// the API server pre-fills from the page's ?conf= (the plugin's PrefillMiddleware).
(() => {
  const me = document.currentScript;
  const href = me.getAttribute("data-href");
  const open = me.getAttribute("data-open");
  me.remove();
  const url = new URL(href, location.href);
  if (url.origin !== location.origin) return;
  const state = history.state && typeof history.state.idx === "number" ? history.state.idx + 1 : 0;
  history.pushState({ usr: null, key: Math.random().toString(36).slice(2, 10), idx: state }, "",
    url.pathname + url.search + url.hash);
  dispatchEvent(new PopStateEvent("popstate", { state: history.state }));
  if (open !== "trigger") return;
  const deadline = Date.now() + 20000;
  const timer = setInterval(() => {
    const button = document.querySelector('[data-testid="trigger-dag-button"]');
    if (button && !button.disabled && location.pathname === url.pathname) {
      clearInterval(timer);
      button.click();
    } else if (Date.now() > deadline) {
      clearInterval(timer);
    }
  }, 100);
})();
