() => {
  // Options that cannot run on this machine are labelled "— unavailable" by the server; make them unselectable.
  const disableUnavailable = () => {
    document.querySelectorAll("label").forEach((label) => {
      const input = label.querySelector("input[type=radio]");
      if (input && label.textContent.trim().endsWith("— unavailable") && !input.disabled) {
        input.disabled = true;
        label.classList.add("arena-disabled");
        label.title = "Unavailable on this machine: see 'Not offered here' below for why and how to install it.";
      }
    });
  };
  disableUnavailable();
  new MutationObserver(disableUnavailable).observe(document.body, { childList: true, subtree: true });
  // The run's summary table (ui/format.py summary_table): a click (or Enter) on a column's header sorts the rows by
  // it, ascending then descending; a cell's data-sort is its number, a row without one stays last.
  const sortBy = (th) => {
    const row = th.parentElement, body = th.closest("table").tBodies[0], col = [...row.children].indexOf(th);
    const ascending = th.getAttribute("aria-sort") !== "ascending";
    row.querySelectorAll("th").forEach((h) => h.setAttribute("aria-sort", "none"));
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    const numeric = [...body.rows].some((r) => r.children[col]?.dataset.sort !== undefined);
    const key = (r) => {
      const cell = r.children[col];
      if (!numeric) return cell.innerText.trim().toLowerCase();
      return cell.dataset.sort === undefined ? null : parseFloat(cell.dataset.sort);
    };
    const rows = [...body.rows].sort((a, b) => {
      const x = key(a), y = key(b);
      if (x === null || y === null) return (x === null) - (y === null);
      return (x < y ? -1 : x > y ? 1 : 0) * (ascending ? 1 : -1);
    });
    rows.forEach((r) => body.appendChild(r));
  };
  document.addEventListener("click", (event) => {
    const th = event.target.closest?.(".arena-summary thead th");
    if (th) sortBy(th);
  });
  // A result link (?run=<id>) opens with its verdicts: on a phone they sit under the form, so bring them in view.
  if (new URLSearchParams(location.search).has("run")) {
    const started = Date.now(), poll = setInterval(() => {
      const status = [...document.querySelectorAll("#run-status, #image-status")]
        .find((e) => e.innerText.includes("LINKED RESULT"));
      if (status) status.scrollIntoView({ block: "start" });
      if (status || Date.now() - started > 30000) clearInterval(poll);
    }, 250);
  }
  document.addEventListener("keydown", (event) => {
    const th = event.target.closest?.(".arena-summary thead th");
    if (th && (event.key === "Enter" || event.key === " ")) { event.preventDefault(); sortBy(th); }
  });
}
