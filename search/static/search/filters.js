// The filters start closed, so that a phone shows results first; on a wide screen, where
// they sit beside the results, they open at once. Without JavaScript they stay one click away.
(() => {
  const filters = document.getElementById("filters");
  if (filters && window.matchMedia("(min-width: 48rem)").matches) filters.open = true;
})();
