// Suggestions as you type: the search box as a WAI-ARIA combobox with a listbox popup
// (list autocomplete, manual selection). Down/Up move through the suggestions, Enter
// searches for the one chosen (or for what was typed), Escape closes the list (and, when
// it is closed, clears the box). Requests are debounced and stale answers dropped.
(() => {
  const input = document.querySelector("input[data-suggest-url]");
  const list = input && document.getElementById(input.getAttribute("aria-controls"));
  if (!input || !list) return;
  const status = document.getElementById("suggest-status");
  const DEBOUNCE_MS = 150;
  let items = [];
  let active = -1;
  let timer = null;
  let controller = null;

  const expanded = () => input.getAttribute("aria-expanded") === "true";

  function close() {
    input.setAttribute("aria-expanded", "false");
    input.removeAttribute("aria-activedescendant");
    list.hidden = true;
    active = -1;
  }

  function setActive(index) {
    const options = list.querySelectorAll('[role="option"]');
    options.forEach((option, i) => option.setAttribute("aria-selected", String(i === index)));
    active = index;
    if (index < 0) {
      input.removeAttribute("aria-activedescendant");
      return;
    }
    input.setAttribute("aria-activedescendant", options[index].id);
    options[index].scrollIntoView({ block: "nearest" });
  }

  function render(suggestions) {
    items = suggestions;
    list.replaceChildren(
      ...suggestions.map((suggestion, i) => {
        const option = document.createElement("li");
        option.id = `suggestion-${i}`;
        option.setAttribute("role", "option");
        option.setAttribute("aria-selected", "false");
        option.dataset.kind = suggestion.kind;
        const text = document.createElement("span");
        text.className = "text";
        text.textContent = suggestion.text;
        const kind = document.createElement("span");
        kind.className = "kind";
        kind.textContent = `${suggestion.kind} · ${suggestion.count}`;
        option.append(text, kind);
        // mousedown, not click: the box keeps focus, and blur does not close the list first.
        option.addEventListener("mousedown", (event) => {
          event.preventDefault();
          choose(i);
        });
        return option;
      }),
    );
    if (status) {
      status.textContent = suggestions.length
        ? `${suggestions.length} suggestion${suggestions.length === 1 ? "" : "s"}, use the arrow keys`
        : "";
    }
    if (!suggestions.length) return close();
    list.hidden = false;
    input.setAttribute("aria-expanded", "true");
    setActive(-1);
  }

  function choose(index) {
    input.value = items[index].text;
    close();
    input.form.requestSubmit();
  }

  async function fetchSuggestions() {
    const typed = input.value.trim();
    if (!typed) {
      render([]);
      return;
    }
    if (controller) controller.abort();
    controller = new AbortController();
    const url = `${input.dataset.suggestUrl}?q=${encodeURIComponent(typed)}&limit=8`;
    try {
      const response = await fetch(url, {
        signal: controller.signal,
        headers: { Accept: "application/json" },
      });
      if (!response.ok) return render([]);
      const body = await response.json();
      if (input.value.trim() === typed) render(body.suggestions);
    } catch (error) {
      if (error.name !== "AbortError") render([]);
    }
  }

  input.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(fetchSuggestions, DEBOUNCE_MS);
  });

  input.addEventListener("keydown", (event) => {
    const count = items.length;
    switch (event.key) {
      case "ArrowDown":
        event.preventDefault();
        if (!expanded()) {
          if (count) render(items);
          else fetchSuggestions();
        } else setActive((active + 1) % count);
        break;
      case "ArrowUp":
        event.preventDefault();
        if (expanded()) setActive(active <= 0 ? count - 1 : active - 1);
        break;
      case "Enter":
        if (expanded() && active >= 0) {
          event.preventDefault();
          choose(active);
        }
        break;
      case "Escape":
        if (expanded()) {
          event.preventDefault();
          close();
        } else if (input.value) {
          event.preventDefault();
          input.value = "";
          items = [];
        }
        break;
      default:
    }
  });

  input.addEventListener("blur", close);
})();
