// Keeps the live part of a page (the element with data-refresh) current:
// every few seconds it fetches the page again and swaps that element in.
// It stops while the page is hidden, and while keyboard focus or an open
// <details> is inside the element, so it never moves what a reader is on.
(function () {
  const live = document.querySelector("[data-refresh]");
  if (!live) return;
  const every = Number(live.dataset.refresh) || 3000;
  async function refresh() {
    if (document.hidden || live.contains(document.activeElement) || live.querySelector("details[open]")) return;
    try {
      const res = await fetch(location.href, { headers: { "Accept": "text/html" } });
      if (!res.ok) return;
      const doc = new DOMParser().parseFromString(await res.text(), "text/html");
      const next = doc.getElementById(live.id);
      if (next) live.replaceChildren(...next.childNodes);
    } catch (e) {
      // The console stopped; the page keeps what it shows.
    }
  }
  setInterval(refresh, every);
})();
