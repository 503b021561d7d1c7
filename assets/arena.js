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
}
