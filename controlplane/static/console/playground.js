// Playground: streams chat completions straight from the gateway (/v1) with a short-lived token
// for the chosen key. Chat mode shows the whole conversation, both sides, and sends it every turn
// (with the system prompt as it reads now); compare mode runs one turn, one column per model.
// Tokens and latency come from the stream, the billed cost from the request log once written.
(function () {
  "use strict";
  var history = [];  // chat mode keeps the conversation; compare mode runs single turns
  var lastRun = null;

  function $(id) { return document.getElementById(id); }
  function el(tag, cls, text) { var e = document.createElement(tag); if (cls) { e.className = cls; } if (text) { e.textContent = text; } return e; }
  function mode() { return document.querySelector("input[name=mode]:checked").value; }
  function money(micro) { return window.Money.text(micro); }

  function keysData(form) { return JSON.parse(form.getAttribute("data-keys")); }

  function fillModels(form) {
    var key = keysData(form).filter(function (k) { return String(k.id) === $("pg-key").value; })[0];
    document.querySelectorAll(".pg-model select").forEach(function (select, i) {
      var keep = select.value;
      select.innerHTML = "";
      key.models.forEach(function (m, j) {
        var o = el("option", null, m);
        o.selected = keep ? m === keep : j === i;
        select.appendChild(o);
      });
    });
  }

  function showModelFields() {
    var compare = mode() === "compare";
    document.querySelectorAll(".pg-model").forEach(function (field, i) { field.hidden = i > 0 && !compare; });
    $("pg-reset").hidden = compare;
  }

  function params() {
    return { temperature: parseFloat($("pg-temperature").value || "1"), max_tokens: parseInt($("pg-max-tokens").value || "512", 10) };
  }

  function chosenModels() {
    var selects = Array.prototype.slice.call(document.querySelectorAll(".pg-model select"));
    if (mode() === "chat") { return [selects[0].value]; }
    var seen = [];
    selects.forEach(function (s) { if (s.value && seen.indexOf(s.value) < 0) { seen.push(s.value); } });
    return seen;
  }

  function column(model, into) {
    var box = el("article", "pg-answer");
    box.appendChild(el("h3", null, model));
    var text = el("div", "text"); box.appendChild(text);
    var stats = el("div", "stats", "waiting…"); box.appendChild(stats);
    (into || $("pg-results")).appendChild(box);
    return { box: box, text: text, stats: stats };
  }

  // Chat mode: the caller's turn as a bubble in the conversation, then the answer's bubble below it.
  function userTurn(text) {
    var turn = el("article", "pg-turn pg-user");
    turn.appendChild(el("h3", null, "You"));
    turn.appendChild(el("div", "text", text));
    $("pg-conversation").appendChild(turn);
  }

  function clearConversation(status) {
    history = [];
    lastRun = null;
    $("pg-conversation").innerHTML = "";
    $("pg-results").innerHTML = "";
    $("pg-code").hidden = true;
    $("pg-status").textContent = status || "";
  }

  function token(form, keyId) {
    return fetch(form.getAttribute("data-token-url"), {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": window.switchboardCsrf() },
      body: JSON.stringify({ key_id: keyId })
    }).then(function (r) { if (!r.ok) { throw new Error("could not get a token for this key"); } return r.json(); });
  }

  function readCost(form, requestId, col, attempt) {
    var url = form.getAttribute("data-outcome-url").replace("RID", encodeURIComponent(requestId));
    fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" }).then(function (r) {
      if (r.status === 404 && attempt < 30) { setTimeout(function () { readCost(form, requestId, col, attempt + 1); }, 700); return null; }
      return r.ok ? r.json() : null;
    }).then(function (data) {
      if (!data) { return; }
      col.cost.textContent = "cost " + money(data.cost_micro_usd);
      col.cost.title = window.Money.exact(data.cost_micro_usd);
      col.box.setAttribute("data-cost", String(data.cost_micro_usd));
    });
  }

  function stats(col, usage, started, ttft) {
    var u = usage || {};
    var cached = (u.prompt_tokens_details || {}).cached_tokens || 0;
    var reasoning = (u.completion_tokens_details || {}).reasoning_tokens || 0;
    col.stats.textContent = "";
    col.stats.appendChild(el("span", null, (u.prompt_tokens || 0) + " in" + (cached ? " (" + cached + " cached)" : "") + " · " +
      (u.completion_tokens || 0) + " out" + (reasoning ? " (" + reasoning + " reasoning)" : "") + " · " +
      Math.round(performance.now() - started) + " ms" + (ttft !== null ? " (first token " + ttft + " ms)" : "") + " · "));
    col.cost = el("span", "cost", "cost pending…");
    col.stats.appendChild(col.cost);
  }

  function fail(col, message) {
    col.box.classList.add("error");
    col.text.textContent = message;
    col.stats.textContent = "";
  }

  function stream(form, auth, model, messages, col) {
    var started = performance.now(), ttft = null, usage = null, answer = "";
    var body = Object.assign({ model: model, messages: messages, stream: true, stream_options: { include_usage: true } }, params());
    return fetch(form.getAttribute("data-base-url").replace(/^https?:\/\/[^/]+/, "") + "/chat/completions", {
      method: "POST", headers: { "Content-Type": "application/json", Authorization: "Bearer " + auth }, body: JSON.stringify(body)
    }).then(function (response) {
      var requestId = response.headers.get("x-request-id");
      var answered = response.headers.get("x-switchboard-model");  // an alias names the model that served it
      if (answered && answered !== model) { col.box.querySelector("h3").textContent = model + " → " + answered; }
      if (!response.ok) {
        return response.json().then(function (e) { fail(col, (e.error && e.error.message) || ("HTTP " + response.status)); });
      }
      var reader = response.body.getReader(), decoder = new TextDecoder(), buffer = "";
      function pump() {
        return reader.read().then(function (part) {
          if (part.done) {
            stats(col, usage, started, ttft);
            if (requestId) { readCost(form, requestId, col, 0); }
            return answer;
          }
          buffer += decoder.decode(part.value, { stream: true });
          var events = buffer.split("\n\n");
          buffer = events.pop();
          events.forEach(function (event) {
            var line = event.split("\n").filter(function (l) { return l.indexOf("data: ") === 0; })[0];
            if (!line || line === "data: [DONE]") { return; }
            var data = JSON.parse(line.slice(6));
            if (data.error) { fail(col, data.error.message); return; }
            if (data.usage) { usage = data.usage; }
            var delta = data.choices && data.choices[0] && data.choices[0].delta;
            if (delta && delta.content) {
              if (ttft === null) { ttft = Math.round(performance.now() - started); }
              answer += delta.content;
              col.text.textContent = answer;
            }
          });
          return pump();
        });
      }
      return pump();
    }).catch(function (error) { fail(col, "The request failed: " + error.message); });
  }

  function run(form) {
    var image = imageModel(form);
    if (image) { runImage(form, image); return; }
    var message = $("pg-message").value.trim();
    if (!message) { $("pg-status").textContent = "Write a message first."; return; }
    var system = $("pg-system").value.trim();
    var models = chosenModels();
    var compare = mode() === "compare";
    if (compare && models.length < 2) { $("pg-status").textContent = "Pick at least two different models to compare."; return; }
    var turn = (compare ? [] : history).concat([{ role: "user", content: message }]);
    var messages = (system ? [{ role: "system", content: system }] : []).concat(turn);
    $("pg-results").innerHTML = "";
    if (compare) { $("pg-conversation").innerHTML = ""; } else { userTurn(message); }
    $("pg-status").textContent = "Running…";
    var keyId = parseInt($("pg-key").value, 10);
    lastRun = { models: models, messages: messages, params: params() };
    renderCode(form);
    token(form, keyId).then(function (t) {
      return Promise.all(models.map(function (m) {
        return stream(form, t.token, m, messages, column(m, compare ? null : $("pg-conversation")));
      }));
    }).then(function (answers) {
      if (!compare && typeof answers[0] === "string") {
        history = turn.concat([{ role: "assistant", content: answers[0] }]);
        $("pg-message").value = "";
        // the snippet carries the whole conversation: every turn, the answers included
        lastRun.messages = (system ? [{ role: "system", content: system }] : []).concat(history);
        renderCode(form);
      }
      $("pg-status").textContent = "Done.";
    }).catch(function (error) { $("pg-status").textContent = error.message; });
  }

  // --- image models: size, quality and n, priced before sending ------------------------------------
  function imageModels(form) { return JSON.parse(form.getAttribute("data-image-models") || "{}"); }

  function imageModel(form) {
    if (mode() !== "chat") { return null; }
    var model = document.querySelector(".pg-model select").value;
    var info = imageModels(form)[model];
    return info ? { model: model, info: info } : null;
  }

  function fillSelect(select, values) {
    var keep = select.value;
    select.innerHTML = "";
    values.forEach(function (v, i) { var o = el("option", null, v); o.selected = keep ? v === keep : i === 0; select.appendChild(o); });
  }

  // The rule of relay/pricing.py: the tier's rate (exact, SIZE/*, */QUALITY, */*, else per image) × n,
  // plus the per-request price, × the group's multiplier, rounded half up to a whole µ$.
  function imagePrice(form, info) {
    var size = $("pg-size").value, quality = $("pg-quality").value, n = Math.max(1, parseInt($("pg-n").value || "1", 10));
    var tiers = info.tiers, rate = info.per_image;
    var candidates = [size + "/" + quality, size + "/*", "*/" + quality, "*/*"];
    for (var i = 0; i < candidates.length; i++) { if (tiers[candidates[i]] !== undefined) { rate = tiers[candidates[i]]; break; } }
    var bp = parseInt(form.getAttribute("data-multiplier-bp") || "10000", 10);
    var whole = info.per_request + n * rate;
    return { n: n, size: size, quality: quality, micro: Math.floor((2 * whole * bp + 10000) / 20000) };
  }

  function showImageFields(form) {
    var image = imageModel(form);
    $("pg-image").hidden = !image;
    document.querySelectorAll(".pg-text-only").forEach(function (f) { f.hidden = !!image; });
    document.querySelectorAll(".pg-image-only").forEach(function (f) { f.hidden = !image; });
    if (!image) { return; }
    fillSelect($("pg-size"), image.info.sizes);
    fillSelect($("pg-quality"), image.info.qualities);
    showImagePrice(form);
  }

  function showImagePrice(form) {
    var image = imageModel(form);
    if (!image) { return; }
    var p = imagePrice(form, image.info);
    var out = $("pg-image-price");
    out.textContent = money(p.micro) + " for " + p.n + " image" + (p.n === 1 ? "" : "s") +
      (image.info.tokens ? ", plus the tokens the upstream reports" : "");
    out.title = window.Money.exact(p.micro);
  }

  function runImage(form, image) {
    var prompt = $("pg-message").value.trim();
    if (!prompt) { $("pg-status").textContent = "Describe the image first."; return; }
    var p = imagePrice(form, image.info);
    userTurn(prompt);
    var col = column(image.model, $("pg-conversation"));
    $("pg-status").textContent = "Running…";
    var started = performance.now();
    var body = { model: image.model, prompt: prompt, size: p.size, quality: p.quality, n: p.n, response_format: "b64_json" };
    lastRun = null;
    $("pg-code").hidden = true;
    token(form, parseInt($("pg-key").value, 10)).then(function (t) {
      return fetch(form.getAttribute("data-base-url").replace(/^https?:\/\/[^/]+/, "") + "/images/generations", {
        method: "POST", headers: { "Content-Type": "application/json", Authorization: "Bearer " + t.token }, body: JSON.stringify(body)
      });
    }).then(function (response) {
      var requestId = response.headers.get("x-request-id");
      return response.json().then(function (data) {
        if (!response.ok) { fail(col, (data.error && data.error.message) || ("HTTP " + response.status)); return; }
        col.text.textContent = "";
        (data.data || []).forEach(function (item, i) {
          var img = el("img", "pg-image");
          img.alt = "Image " + (i + 1) + " of " + (data.data.length) + " for: " + prompt;
          img.src = item.b64_json ? "data:image/png;base64," + item.b64_json : item.url;
          col.text.appendChild(img);
        });
        col.stats.textContent = "";
        col.stats.appendChild(el("span", null, (data.data || []).length + " image(s) · " + p.size + " · " + p.quality + " · " +
          Math.round(performance.now() - started) + " ms · quoted " + money(p.micro) + " · "));
        col.cost = el("span", "cost", "cost pending…");
        col.stats.appendChild(col.cost);
        if (requestId) { readCost(form, requestId, col, 0); }
        $("pg-message").value = "";
        $("pg-status").textContent = "Done.";
      });
    }).catch(function (error) { fail(col, "The request failed: " + error.message); $("pg-status").textContent = ""; });
  }

  // --- copy code -------------------------------------------------------------------------------
  var lang = "python";
  function snippet(base, model, messages, p) {
    var payload = { model: model, messages: messages, temperature: p.temperature, max_tokens: p.max_tokens };
    if (lang === "curl") {
      return "curl " + base + "/chat/completions \\\n  -H \"Authorization: Bearer $SWITCHBOARD_API_KEY\" \\\n" +
        "  -H \"Content-Type: application/json\" \\\n  -d '" + JSON.stringify(payload, null, 2).replace(/'/g, "'\\''") + "'";
    }
    if (lang === "javascript") {
      return "import OpenAI from \"openai\";\n\nconst client = new OpenAI({ baseURL: \"" + base + "\", apiKey: process.env.SWITCHBOARD_API_KEY });\n\n" +
        "const stream = await client.chat.completions.create(" + JSON.stringify(Object.assign(payload, { stream: true }), null, 2) + ");\n" +
        "for await (const chunk of stream) process.stdout.write(chunk.choices[0]?.delta?.content ?? \"\");\n";
    }
    return "import os\n\nfrom openai import OpenAI\n\nclient = OpenAI(base_url=\"" + base + "\", api_key=os.environ[\"SWITCHBOARD_API_KEY\"])\n\n" +
      "stream = client.chat.completions.create(\n    model=" + JSON.stringify(model) + ",\n    messages=" +
      JSON.stringify(messages, null, 4).replace(/\n/g, "\n    ") + ",\n    temperature=" + p.temperature + ",\n    max_tokens=" + p.max_tokens +
      ",\n    stream=True,\n)\nfor chunk in stream:\n    if chunk.choices and chunk.choices[0].delta.content:\n        print(chunk.choices[0].delta.content, end=\"\")\n";
  }

  function renderCode(form) {
    if (!lastRun) { return; }
    var select = $("pg-code-model");
    var keep = select.value;
    select.innerHTML = "";
    lastRun.models.forEach(function (m) { var o = el("option", null, m); o.selected = m === keep; select.appendChild(o); });
    $("pg-snippet").textContent = snippet(form.getAttribute("data-base-url"), select.value || lastRun.models[0], lastRun.messages, lastRun.params);
    $("pg-code").hidden = false;
  }

  document.addEventListener("DOMContentLoaded", function () {
    var form = $("playground");
    if (!form) { return; }
    fillModels(form);
    showModelFields();
    showImageFields(form);
    $("pg-key").addEventListener("change", function () { fillModels(form); showImageFields(form); });
    document.querySelector(".pg-model select").addEventListener("change", function () { showImageFields(form); });
    ["pg-size", "pg-quality", "pg-n"].forEach(function (id) {
      $(id).addEventListener("change", function () { showImagePrice(form); });
      $(id).addEventListener("input", function () { showImagePrice(form); });
    });
    document.querySelectorAll("input[name=mode]").forEach(function (r) {
      r.addEventListener("change", function () { clearConversation(); showModelFields(); showImageFields(form); });
    });
    $("pg-reset").addEventListener("click", function () { clearConversation("Conversation cleared."); });
    form.addEventListener("submit", function (event) { event.preventDefault(); run(form); });
    document.querySelectorAll(".code-tabs [role=tab]").forEach(function (tab) {
      tab.addEventListener("click", function () {
        lang = tab.getAttribute("data-lang");
        document.querySelectorAll(".code-tabs [role=tab]").forEach(function (t) { t.setAttribute("aria-selected", String(t === tab)); });
        renderCode(form);
      });
    });
    $("pg-code-model").addEventListener("change", function () { renderCode(form); });
  });
})();
