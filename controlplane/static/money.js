// How an amount reads to people, the same rule as relay/pricing.py `usd_text`: cents from a cent up
// with thousands separators ("$12,345.67"); below a cent three significant digits ("$0.000105"), so
// no non-zero amount reads as "$0.00". Amounts are integer micro-dollars (µ$). Loaded before every
// other script, so charts, tooltips and the playground share it.
(function () {
  "use strict";
  var CENT = 10000;

  function halfUp(n, unit) { return Math.floor((2 * n + unit) / (2 * unit)); }

  function text(micro) {
    micro = Math.round(Number(micro) || 0);
    var sign = micro < 0 ? "-" : "";
    var size = Math.abs(micro);
    if (size >= CENT) {
      var cents = halfUp(size, CENT);
      var whole = Math.floor(cents / 100);
      return sign + "$" + whole.toLocaleString("en-US") + "." + String(cents % 100).padStart(2, "0");
    }
    if (size === 0) { return "$0.00"; }
    var unit = Math.pow(10, Math.max(String(size).length - 3, 0));
    var shown = halfUp(size, unit) * unit;
    if (shown >= CENT) { return sign + "$0.01"; }
    return sign + "$0." + String(shown).padStart(6, "0").replace(/0+$/, "");
  }

  // The exact amount, for hover: "$0.000105 (105 µ$)".
  function exact(micro) {
    micro = Math.round(Number(micro) || 0);
    var size = Math.abs(micro);
    var dollars = (micro < 0 ? "-" : "") + "$" + Math.floor(size / 1e6) + "." + String(size % 1e6).padStart(6, "0");
    return dollars + " (" + micro.toLocaleString("en-US") + " µ$)";
  }

  var api = { text: text, exact: exact };
  if (typeof module !== "undefined" && module.exports) { module.exports = api; } else { window.Money = api; }
})();
