/* Keyboard shortcuts of the workbench's pages (no inline script: the CSP allows this file
   only). An element with `data-key="x"` answers the key x: a field is focused, anything else
   clicked (a submit button then sends its form, with its name and value). Keys act outside
   text fields; inside one, Alt+key does the same (Escape leaves the field). On the queue,
   j / k move between rows and o (or Enter) opens the row's case. The legend on each page
   lists its keys. */
(function () {
  "use strict";

  var current = -1;

  function typing(el) {
    return !!el && (el.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(el.tagName));
  }

  // The key as the legend names it: Alt+key by the key's place (Alt changes the character
  // on some keyboards), a plain key by its character.
  function keyOf(ev) {
    if (ev.altKey) {
      var m = /^(?:Key|Digit)(.)$/.exec(ev.code || "");
      if (m) { return m[1].toLowerCase(); }
      return ev.code === "Slash" ? "/" : "";
    }
    return ev.key.length === 1 ? ev.key.toLowerCase() : ev.key;
  }

  function rows() {
    return Array.prototype.slice.call(document.querySelectorAll("tr[data-case]"));
  }

  function mark(list, i) {
    list.forEach(function (r) { r.classList.remove("current"); });
    current = Math.max(0, Math.min(list.length - 1, i));
    var row = list[current];
    row.classList.add("current");
    row.scrollIntoView({block: "nearest"});
  }

  function move(step) {
    var list = rows();
    if (!list.length) { return false; }
    mark(list, current < 0 ? 0 : current + step);
    return true;
  }

  function open() {
    var list = rows();
    var link = current >= 0 && list[current] ? list[current].querySelector("a[data-open]") : null;
    if (link) { link.click(); return true; }
    return false;
  }

  function act(key) {
    var el = document.querySelector('[data-key="' + (window.CSS && CSS.escape ? CSS.escape(key) : key) + '"]');
    if (!el || el.disabled) { return false; }
    if (typing(el)) { el.focus(); } else { el.click(); }
    return true;
  }

  document.addEventListener("keydown", function (ev) {
    if (ev.ctrlKey || ev.metaKey || ev.isComposing || ev.defaultPrevented) { return; }
    var inField = typing(ev.target);
    if (inField && !ev.altKey) {
      if (ev.key === "Escape") { ev.target.blur(); }
      return;
    }
    var key = keyOf(ev);
    var done = false;
    if (key === "j") { done = move(1); }
    else if (key === "k") { done = move(-1); }
    else if (!inField && (key === "o" || (key === "Enter" && ev.target === document.body))) {
      done = open();
    }
    if (!done && key) { done = act(key); }
    if (done) { ev.preventDefault(); }
  });

  // A boosted page swap brings new rows and, maybe, a field to start in.
  document.addEventListener("htmx:afterSettle", function () {
    current = -1;
    var first = document.querySelector("[autofocus]");
    if (first && document.activeElement !== first) { first.focus(); }
  });
})();
