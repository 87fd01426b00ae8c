// Conveyor console: the little the pages need beyond HTML and htmx. No eval, no inline
// handlers (the Content-Security-Policy allows scripts from this origin only).
(function () {
  "use strict";
  var THEME_COOKIE = "conveyor_theme";

  function currentTheme() {
    var set = document.documentElement.getAttribute("data-theme");
    if (set === "light" || set === "dark") return set;
    return window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
  }

  function toggleTheme() {
    var next = currentTheme() === "dark" ? "light" : "dark";
    document.documentElement.setAttribute("data-theme", next);
    var secure = location.protocol === "https:" ? "; Secure" : "";
    document.cookie = THEME_COOKIE + "=" + next + "; Path=/console; Max-Age=31536000; SameSite=Strict" + secure;
  }

  function copyText(text, button) {
    function done(ok) {
      var label = button.textContent;
      button.textContent = ok ? "Copied" : "Copy failed";
      setTimeout(function () { button.textContent = label; }, 1500);
    }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(function () { done(true); }, function () { fallback(); });
    } else {
      fallback();
    }
    function fallback() {
      var area = document.createElement("textarea");
      area.value = text;
      area.setAttribute("readonly", "");
      area.className = "visually-hidden";
      document.body.appendChild(area);
      area.select();
      var ok = false;
      try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
      document.body.removeChild(area);
      done(ok);
    }
  }

  document.addEventListener("click", function (event) {
    var target = event.target;
    if (!(target instanceof Element)) return;
    var toggle = target.closest("[data-theme-toggle]");
    if (toggle) { toggleTheme(); return; }
    var copy = target.closest("button[data-copy]");
    if (copy) { copyText(copy.getAttribute("data-copy") || "", copy); }
  });

  // Live regions poll (hx-trigger "every Nms"): not while the tab is hidden, and not
  // while focus or an open <details> is inside the region (the swap would lose them).
  document.addEventListener("htmx:beforeRequest", function (event) {
    var elt = event.detail && event.detail.elt;
    if (!elt || !elt.hasAttribute || !elt.hasAttribute("data-poll")) return;
    if (document.hidden || elt.contains(document.activeElement) || elt.querySelector("details[open]")) {
      event.preventDefault();
    }
  });
  // A session that ended while polling: htmx follows HX-Redirect to the sign-in page.
})();
