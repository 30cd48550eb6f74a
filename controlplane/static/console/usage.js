// Usage chart: reads the same rollup series the page's table shows (usage/series.json) and draws
// it stacked by the chosen breakdown. Money arrives in micro-dollars and reads by the one money rule
// (money.js): the axis never says $0.00 for sub-cent spend, tooltips add the exact amount.
(function () {
  "use strict";
  var COLOURS = ["#2b59c3", "#1f7a4d", "#a35d00", "#b42318", "#6941c6", "#0e7490"];

  function label(iso, granularity) {
    var d = new Date(iso);
    var months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    if (granularity === "hour") { return String(d.getUTCHours()).padStart(2, "0") + ":00"; }
    if (granularity === "month") { return months[d.getUTCMonth()] + " " + d.getUTCFullYear(); }
    return d.getUTCDate() + " " + months[d.getUTCMonth()];
  }

  function compact(n) {
    if (n >= 1e6) { return (n / 1e6).toFixed(1) + "M"; }
    if (n >= 1e3) { return (n / 1e3).toFixed(1) + "k"; }
    return String(n);
  }

  function draw(canvas, data, metric, chart) {
    var money = metric === "cost";
    var datasets = data.series.map(function (s, i) {
      return {
        label: s.name,
        data: s[metric],
        backgroundColor: COLOURS[i % COLOURS.length],
        stack: "usage"
      };
    });
    var config = {
      type: "bar",
      data: { labels: data.labels.map(function (l) { return label(l, data.granularity); }), datasets: datasets },
      options: {
        responsive: true, maintainAspectRatio: false, animation: false,
        scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true,
          ticks: { precision: 0, callback: function (v) { return money ? window.Money.text(v) : compact(v); } } } },
        plugins: { tooltip: { callbacks: { label: function (ctx) {
          var v = ctx.parsed.y;
          return ctx.dataset.label + ": " + (money ? window.Money.text(v) + " — " + window.Money.exact(v) : v.toLocaleString());
        } } } }
      }
    };
    if (chart) { chart.destroy(); }
    return new window.Chart(canvas, config);
  }

  document.addEventListener("DOMContentLoaded", function () {
    var canvas = document.getElementById("usage-chart");
    if (!canvas || !window.Chart) { return; }
    var select = document.getElementById("chart-metric");
    var chart = null;
    fetch(canvas.getAttribute("data-series-url"), { headers: { Accept: "application/json" } })
      .then(function (r) { return r.json(); })
      .then(function (data) {
        chart = draw(canvas, data, select.value, chart);
        canvas.setAttribute("data-ready", "1");
        select.addEventListener("change", function () { chart = draw(canvas, data, select.value, chart); });
      });
  });
})();
