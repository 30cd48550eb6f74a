// User console enhancements: every page works without this file; it adds copy buttons, the
// account switcher's auto-submit, confirmations and relative times.
(function () {
  "use strict";
  document.documentElement.classList.add("js");

  function copy(button) {
    var text = button.getAttribute("data-copy");
    var target = button.getAttribute("data-copy-from");
    if (target) { text = document.getElementById(target).textContent; }
    var done = function () {
      var label = button.textContent;
      button.textContent = "Copied";
      setTimeout(function () { button.textContent = label; }, 1500);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done);
    } else {  // plain http (a local gateway): the old way
      var area = document.createElement("textarea");
      area.value = text; document.body.appendChild(area); area.select();
      document.execCommand("copy"); area.remove(); done();
    }
  }

  function relative(el) {
    var then = new Date(el.getAttribute("datetime"));
    var seconds = Math.round((Date.now() - then.getTime()) / 1000);
    var units = [["day", 86400], ["hour", 3600], ["minute", 60]];
    var text = "just now";
    for (var i = 0; i < units.length; i++) {
      var n = Math.floor(Math.abs(seconds) / units[i][1]);
      if (n >= 1) { text = n + " " + units[i][0] + (n > 1 ? "s" : "") + (seconds >= 0 ? " ago" : " from now"); break; }
    }
    el.textContent = text;
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy], [data-copy-from]");
    if (button) { copy(button); }
  });
  document.addEventListener("submit", function (event) {
    var message = event.target.getAttribute("data-confirm");
    if (message && !window.confirm(message)) { event.preventDefault(); }
  });
  document.addEventListener("change", function (event) {
    var form = event.target.closest("form[data-autosubmit]");
    if (form) { form.submit(); }
  });
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("time[data-relative]").forEach(relative);
  });
  window.switchboardCsrf = function () {
    var meta = document.querySelector("meta[name=csrf-token]");
    return meta ? meta.content : "";
  };
})();
