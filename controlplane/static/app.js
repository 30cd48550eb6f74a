// Progressive enhancement for the consoles: everything works without this file.
// It adds copy buttons, rows in the model-mapping editor, the dashboard's charts, and the small
// behaviours pages ask for with data- attributes (the content policy allows no inline script).
(function () {
  "use strict";

  function onReady(fn) {
    if (document.readyState !== "loading") fn(); else document.addEventListener("DOMContentLoaded", fn);
  }

  // <button data-copy="#selector"> copies that input's value.
  function copyButtons(root) {
    root.querySelectorAll("[data-copy]").forEach(function (button) {
      button.addEventListener("click", function () {
        var source = document.querySelector(button.getAttribute("data-copy"));
        if (!source) return;
        navigator.clipboard.writeText(source.value || source.textContent).then(function () {
          var label = button.textContent;
          button.textContent = "Copied";
          setTimeout(function () { button.textContent = label; }, 1500);
        });
      });
    });
  }

  // The mapping editor: "Add mapping row" clones the last row with the next index.
  function mappingRows(root) {
    root.querySelectorAll("fieldset.mapping").forEach(function (set) {
      var body = set.querySelector("[data-rows]");
      var add = set.querySelector("[data-add-row]");
      if (!body || !add) return;
      add.hidden = false;
      add.addEventListener("click", function () {
        var rows = body.querySelectorAll("[data-row]");
        var last = rows[rows.length - 1];
        var copy = last.cloneNode(true);
        var index = rows.length;
        copy.querySelectorAll("input").forEach(function (input) {
          input.name = input.name.replace(/-\d+-/, "-" + index + "-");
          input.id = input.name;
          input.value = "";
          var label = input.getAttribute("aria-label");
          if (label) input.setAttribute("aria-label", label.replace(/\d+$/, String(index + 1)));
        });
        body.appendChild(copy);
        copy.querySelector("input").focus();
      });
    });
  }

  var palette = ["#2b59c3", "#1f9d6b", "#d9822b", "#b84dc4", "#c23b3b", "#4aa3c7", "#7a7f8c"];

  // `money`: the values are µ$, and the axis and tooltips read them by the one money rule (money.js).
  function chart(canvas, labels, datasets, stacked, money) {
    var dark = window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches;
    var grid = dark ? "#2d3340" : "#e6e9ef";
    var text = dark ? "#a0a8b8" : "#5b6475";
    var yTicks = { color: text };
    var plugins = { legend: { labels: { color: text, boxWidth: 10 } } };
    if (money) {
      yTicks.precision = 0;
      yTicks.callback = function (v) { return window.Money.text(v); };
      plugins.tooltip = { callbacks: { label: function (ctx) {
        return ctx.dataset.label + ": " + window.Money.text(ctx.parsed.y) + " — " + window.Money.exact(ctx.parsed.y);
      } } };
    }
    return new window.Chart(canvas, {
      type: stacked ? "bar" : "line",
      data: { labels: labels, datasets: datasets },
      options: {
        animation: false, maintainAspectRatio: false, spanGaps: true,
        interaction: { mode: "index", intersect: false },
        plugins: plugins,
        scales: {
          x: { stacked: stacked, ticks: { color: text, maxTicksLimit: 8 }, grid: { color: grid } },
          y: { stacked: stacked, beginAtZero: true, ticks: yTicks, grid: { color: grid } }
        }
      }
    });
  }

  function label(iso, range) {
    var d = new Date(iso);
    if (range === "30d") return d.toISOString().slice(5, 10);
    if (range === "7d") return d.toISOString().slice(5, 10) + " " + d.toISOString().slice(11, 13) + "h";
    return d.toISOString().slice(11, 16);
  }

  // A value with no neighbour draws no line segment: it gets a dot, or an hour with the only data
  // of the range would leave the chart empty.
  function isolatedRadius(ctx) {
    var data = ctx.dataset.data, i = ctx.dataIndex;
    if (data[i] === null || data[i] === undefined) return 0;
    var before = i > 0 ? data[i - 1] : null, after = i < data.length - 1 ? data[i + 1] : null;
    return (before === null || before === undefined) && (after === null || after === undefined) ? 3 : 0;
  }

  function line(name, values, i, dashed) {
    return { label: name, data: values, borderColor: palette[i % palette.length], backgroundColor: palette[i % palette.length],
             borderDash: dashed ? [4, 3] : [], pointRadius: isolatedRadius, pointHoverRadius: 4, borderWidth: 2,
             cubicInterpolationMode: "monotone" };
  }

  function dashboard(root) {
    var section = root.querySelector("[data-dashboard]");
    if (!section || !window.Chart) return;
    fetch(section.getAttribute("data-dashboard"), { headers: { Accept: "application/json" }, credentials: "same-origin" })
      .then(function (r) { return r.json(); })
      .then(function (data) {
        var labels = data.labels.map(function (x) { return label(x, data.range); });
        var find = function (name) { return section.querySelector('[data-chart="' + name + '"]'); };
        var series = Object.keys(data.by_requests).map(function (k, i) {
          var d = line(k, data.by_requests[k], i); d.borderWidth = 0; return d;
        });
        chart(find("requests"), labels, series, true);
        chart(find("money"), labels, [line("Revenue", data.revenue_micro_usd, 0), line("Upstream cost", data.upstream_cost_micro_usd, 3)],
              false, true);
        chart(find("errors"), labels, [line("Errors", data.errors, 4)]);
        chart(find("latency"), labels, [line("Latency p50", data.latency_p50_ms, 0), line("Latency p95", data.latency_p95_ms, 0, true),
                                         line("TTFT p50", data.ttft_p50_ms, 1), line("TTFT p95", data.ttft_p95_ms, 1, true)]);
      });
  }

  function enhance(root) {
    copyButtons(root);
    mappingRows(root);
  }

  // Delegated, so content htmx swaps in behaves the same:
  // <select data-autosubmit> submits its form when changed; <form data-confirm="question"> asks
  // before it is sent; <button data-print> prints the page.
  function behaviours() {
    document.addEventListener("change", function (event) {
      var field = event.target.closest && event.target.closest("[data-autosubmit]");
      if (field && field.form) field.form.requestSubmit ? field.form.requestSubmit() : field.form.submit();
    });
    document.addEventListener("submit", function (event) {
      var question = event.target.getAttribute && event.target.getAttribute("data-confirm");
      if (question && !window.confirm(question)) event.preventDefault();
    });
    document.addEventListener("click", function (event) {
      if (event.target.closest && event.target.closest("[data-print]")) window.print();
    });
  }

  behaviours();
  onReady(function () {
    enhance(document);
    dashboard(document);
    document.body.addEventListener("htmx:afterSwap", function (event) { enhance(event.target); });
  });
})();
