// benchlab pages: draw every figure with plotly.js and make every table sortable and
// filterable. No request leaves the page.
(function () {
  "use strict";
  var FILTERED = /^(model|attack|explainer|eps|ε|kind|status|metric|training)$/i;

  function drawFigures() {
    var nodes = document.querySelectorAll("figure.plot");
    nodes.forEach(function (node) {
      var div = node.querySelector(".plotly-figure");
      var spec = JSON.parse(node.querySelector("script.figure-data").textContent);
      Plotly.newPlot(div, spec.data, spec.layout,
                     {responsive: true, displaylogo: false, scrollZoom: false})
        .then(function () { div.setAttribute("data-rendered", String(spec.data.length)); });
    });
  }

  // The number a cell sorts by: its first number ("97.12 [96.8, 97.4]" -> 97.12),
  // none for a dash or text.
  function key(text) {
    var m = text.replace(/−/g, "-").match(/^[^\d\-+.]*([-+]?\d*\.?\d+(?:e[-+]?\d+)?)/i);
    return m ? parseFloat(m[1]) : null;
  }

  function sortBy(table, column, th) {
    var body = table.tBodies[0];
    var ascending = th.getAttribute("aria-sort") !== "ascending";
    table.querySelectorAll("th").forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    var rows = Array.prototype.slice.call(body.rows);
    var cells = rows.map(function (r) {
      var t = r.cells[column] ? r.cells[column].textContent.trim() : "";
      return {row: r, text: t, num: key(t)};
    });
    var numeric = cells.every(function (c) { return c.num !== null || c.text === "–" || c.text === ""; });
    cells.sort(function (a, b) {
      var d;
      if (numeric) {
        if (a.num === null || b.num === null) { return (a.num === null) - (b.num === null); }
        d = a.num - b.num;
      } else {
        d = a.text.localeCompare(b.text, undefined, {numeric: true});
      }
      return ascending ? d : -d;
    });
    cells.forEach(function (c) { body.appendChild(c.row); });
  }

  function applyFilters(table, box) {
    var text = box.querySelector("input").value.toLowerCase();
    var selects = box.querySelectorAll("select");
    var shown = 0;
    Array.prototype.forEach.call(table.tBodies[0].rows, function (row) {
      var keep = !text || row.textContent.toLowerCase().indexOf(text) >= 0;
      selects.forEach(function (s) {
        var cell = row.cells[Number(s.getAttribute("data-column"))];
        if (s.value && (!cell || cell.textContent.trim() !== s.value)) { keep = false; }
      });
      row.classList.toggle("filtered-out", !keep);
      if (keep) { shown += 1; }
    });
    box.querySelector(".count").textContent = shown + " of " + table.tBodies[0].rows.length + " rows";
  }

  function enhance(table, number) {
    if (!table.tHead || !table.tBodies.length) { return; }
    table.id = table.id || "table-" + number;
    var wrap = document.createElement("div");
    wrap.className = "table-wrap";
    table.parentNode.insertBefore(wrap, table);
    var box = document.createElement("div");
    box.className = "table-tools";
    var input = document.createElement("input");
    input.type = "search";
    input.placeholder = "filter rows";
    input.setAttribute("aria-label", "filter the rows of this table");
    box.appendChild(input);
    var headers = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(headers, function (th, column) {
      th.title = "sort by " + th.textContent;
      th.addEventListener("click", function () { sortBy(table, column, th); });
      if (!FILTERED.test(th.textContent.trim())) { return; }
      var values = {};
      Array.prototype.forEach.call(table.tBodies[0].rows, function (r) {
        if (r.cells[column]) { values[r.cells[column].textContent.trim()] = true; }
      });
      var names = Object.keys(values).sort(function (a, b) { return a.localeCompare(b, undefined, {numeric: true}); });
      if (names.length < 2) { return; }
      var select = document.createElement("select");
      select.setAttribute("data-column", String(column));
      select.setAttribute("aria-label", "show only one " + th.textContent.trim());
      select.appendChild(new Option("every " + th.textContent.trim(), ""));
      names.forEach(function (n) { select.appendChild(new Option(n, n)); });
      select.addEventListener("change", function () { applyFilters(table, box); });
      box.appendChild(select);
    });
    var count = document.createElement("span");
    count.className = "count";
    box.appendChild(count);
    input.addEventListener("input", function () { applyFilters(table, box); });
    wrap.appendChild(box);
    wrap.appendChild(table);
    applyFilters(table, box);
  }

  document.querySelectorAll("main table").forEach(enhance);
  drawFigures();
}());
