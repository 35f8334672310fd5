(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("qdaif-data").textContent);
  function $(id) { return document.getElementById(id); }
  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    if (cls) { e.className = cls; }
    return e;
  }
  function num(x) {
    if (typeof x !== "number") { return String(x); }
    return Number.isInteger(x) ? String(x) : x.toPrecision(4);
  }
  function clear(node) { while (node.firstChild) { node.removeChild(node.firstChild); } }
  function binName(k, c) { return data.axes[k].bins[c]; }
  var byCell = {};
  data.elites.forEach(function (key) { byCell[data.nodes[key].cell.join(",")] = key; });

  function describe(key) {
    var n = data.nodes[key];
    if (!n) { return "#" + key + " (not in history.jsonl)"; }
    if (n.kind === "seed") { return "seed text " + key.split(":")[1]; }
    if (n.kind === "missing" && n.id === undefined) { return key + " (not in this run's files)"; }
    var parts = ["#" + n.id];
    if (n.iteration !== undefined && n.iteration !== null) { parts.push("iteration " + n.iteration); }
    if (n.operator) { parts.push(n.operator); }
    parts.push("quality " + num(n.quality));
    parts.push("cell [" + n.cell.join(", ") + "]");
    if (n.parents && n.parents.length) { parts.push("parents " + n.parents.join(", ")); }
    return parts.join(" \u00b7 ");
  }
  function nodeBlock(key) {
    var box = el("div", null, "node");
    box.appendChild(el("div", describe(key), "meta"));
    var n = data.nodes[key];
    box.appendChild(el("div", n ? n.text : "", "text"));
    return box;
  }
  function generations(key) {
    var seen = {}, gens = [], current = [key];
    seen[key] = true;
    while (current.length) {
      var next = [];
      current.forEach(function (k) {
        var n = data.nodes[k];
        ((n && n.parents) || []).forEach(function (p) {
          if (!seen[p]) { seen[p] = true; next.push(p); }
        });
      });
      if (next.length) { gens.push(next); }
      current = next;
    }
    return gens;
  }
  function show(cellKey) {
    document.querySelectorAll("rect.cell.selected").forEach(function (r) { r.classList.remove("selected"); });
    var rect = document.querySelector('rect[data-cell="' + cellKey + '"]');
    if (rect) { rect.classList.add("selected"); }
    var cell = cellKey.split(",").map(Number);
    var names = cell.map(function (c, k) { return data.axes[k].name + " " + binName(k, c); });
    $("cell-title").textContent = "Cell [" + cell.join(", ") + "]: " + names.join(", ");
    var key = byCell[cellKey];
    var body = $("detail-body"), lin = $("lineage");
    clear(lin);
    if (key === undefined) {
      body.hidden = true;
      $("detail-empty").hidden = false;
      return;
    }
    body.hidden = false;
    $("detail-empty").hidden = true;
    var n = data.nodes[key];
    $("elite-text").textContent = n.text;
    $("elite-id").textContent = describe(key);
    $("elite-quality").textContent = num(n.quality);
    var mt = $("elite-measures");
    clear(mt);
    data.axes.forEach(function (a, k) {
      var tr = el("tr");
      tr.appendChild(el("th", a.label));
      tr.appendChild(el("td", n.measures && n.measures[k] !== undefined ? num(n.measures[k]) : ""));
      tr.appendChild(el("td", "bin " + binName(k, n.cell[k])));
      mt.appendChild(tr);
    });
    var gens = generations(key);
    if (!gens.length) { lin.appendChild(el("p", "No recorded parents.", "muted")); }
    gens.forEach(function (g, d) {
      var det = el("details");
      det.open = d < 2;
      var title = d === 0 ? "Parents" : (d === 1 ? "Grandparents" : "Ancestors, " + (d + 1) + " generations back");
      det.appendChild(el("summary", title + " (" + g.length + ")"));
      g.forEach(function (k) { det.appendChild(nodeBlock(k)); });
      lin.appendChild(det);
    });
  }
  document.querySelectorAll("rect.cell").forEach(function (r) {
    r.addEventListener("click", function () { show(r.getAttribute("data-cell")); });
    r.addEventListener("keydown", function (ev) {
      if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); show(r.getAttribute("data-cell")); }
    });
  });

  var tbody = $("elites").querySelector("tbody");
  data.elites.forEach(function (key) {
    var n = data.nodes[key], tr = el("tr");
    tr.appendChild(el("td", "[" + n.cell.join(", ") + "]"));
    tr.appendChild(el("td", num(n.quality)));
    tr.appendChild(el("td", (n.measures || []).map(num).join(", ")));
    tr.appendChild(el("td", n.text));
    tr.addEventListener("click", function () { show(n.cell.join(",")); $("detail").scrollIntoView(); });
    tbody.appendChild(tr);
  });
  var metrics = $("metrics");
  Object.keys(data.metrics).forEach(function (k) {
    var tr = el("tr");
    tr.appendChild(el("th", k));
    tr.appendChild(el("td", data.metrics[k] === null ? "" : num(data.metrics[k])));
    metrics.appendChild(tr);
  });
  if (!Object.keys(data.metrics).length) { metrics.appendChild(el("tr", "no metrics.jsonl rows")); }
  $("config").textContent = data.config;
  document.body.setAttribute("data-ready", "1");
})();
