// Result clicks for the search log (POST /api/events/). Each result link of a logged search
// points at /click/<search_id>/<product_id>/, which records the click and redirects to the
// product: that works without JavaScript. With it, a click sends the event as a beacon
// (which outlives the page) and the link goes straight to the product page instead. A
// click recorded both ways is stored once (the API keeps one event per search, type and
// product). Middle clicks (auxclick) keep the redirect link.
(() => {
  if (!navigator.sendBeacon) return;
  document.addEventListener("click", (event) => {
    const link = event.target.closest("a[data-product-id]");
    const grid = link && link.closest("[data-events-url]");
    if (!grid || event.defaultPrevented || event.button !== 0) return;
    // A form body, not JSON: a beacon of a CORS-safelisted type needs no preflight.
    const body = new URLSearchParams({
      search_id: grid.dataset.searchId,
      type: "click",
      product_id: link.dataset.productId,
      position: link.dataset.position,
    });
    if (navigator.sendBeacon(grid.dataset.eventsUrl, body)) {
      link.href = link.dataset.href;
    }
  });
})();
