// The page: a form built from GET /metadata (opening with the model's example
// row), the model's answer, and a what-if chart: the answer as one numeric
// predictor sweeps its observed range, the others held at the form's values,
// one line per level of a factor (or per class for a classifier), with R's
// confidence band where the model has one (lm, glm), all from one batch
// request. No build step and no libraries: the chart is hand-written SVG, so
// the page works offline and from any static host.
"use strict";

(() => {
  const SVG_NS = "http://www.w3.org/2000/svg";
  const COLORS = ["#1f6fb2", "#d1495b", "#2e933c", "#8a5cc2", "#e08e0b", "#3a3a3a"];
  const SWEEP_POINTS = 61;
  const MAX_SERIES = 8;
  const LEVEL = 0.95;
  // The API parses numbers the same way; anything else is sent as typed so
  // that the API (the one validator) says what is wrong with it.
  const NUMBER = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;

  const state = { apiBase: "", apiKey: "", meta: null, admission: false, seq: 0 };
  const $ = (id) => document.getElementById(id);

  async function loadConfig() {
    // config.json sits next to the page, so the same files work when the
    // page is served from S3 against a deployed API Gateway URL.
    try {
      const resp = await fetch(new URL("config.json", document.baseURI), { cache: "no-cache" });
      if (resp.ok) {
        const config = await resp.json();
        state.apiBase = String(config.apiBase || "").replace(/\/+$/, "");
        state.apiKey = String(config.apiKey || "");
      }
    } catch (err) {
      // No config: the API is on the page's own origin.
    }
    $("api-base").textContent = state.apiBase || window.location.origin;
    $("openapi-link").href = (state.apiBase || window.location.origin) + "/openapi.json";
  }

  async function api(path, init = {}) {
    const headers = Object.assign({ Accept: "application/json" }, init.headers || {});
    if (state.apiKey) headers["x-api-key"] = state.apiKey;
    const resp = await fetch(state.apiBase + path, Object.assign({}, init, { headers }));
    let body = null;
    try {
      body = await resp.json();
    } catch (err) {
      body = null;
    }
    return { status: resp.status, ok: resp.ok, body };
  }

  function postJson(path, doc) {
    return api(path, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(doc),
    });
  }

  function isAdmission(meta) {
    const byName = Object.fromEntries(meta.predictors.map((p) => [p.name, p.type]));
    return meta.kind === "binary" && meta.predictors.length === 3 &&
      byName.gre === "numeric" && byName.gpa === "numeric" && byName.rank === "factor";
  }

  // -- the form, from /metadata --------------------------------------------

  function buildForm(meta) {
    const fields = $("fields");
    fields.replaceChildren();
    for (const p of meta.predictors) {
      const wrap = document.createElement("div");
      wrap.className = "field";
      const id = "field-" + p.name;
      const label = document.createElement("label");
      label.htmlFor = id;
      label.textContent = p.name;
      let input;
      if (p.type === "factor") {
        input = document.createElement("select");
        for (const level of p.levels || []) {
          const option = document.createElement("option");
          option.value = option.textContent = level;
          input.append(option);
        }
      } else if (p.type === "logical") {
        input = document.createElement("input");
        input.type = "checkbox";
      } else {
        input = document.createElement("input");
        input.type = "text";
        input.inputMode = "decimal";
        input.autocomplete = "off";
      }
      input.id = id;
      input.name = p.name;
      input.dataset.type = p.type;
      input.setAttribute("aria-describedby", "error-" + p.name);
      const example = (meta.example || {})[p.name];
      if (example !== undefined && example !== null) {
        if (p.type === "logical") input.checked = Boolean(example);
        else input.value = String(example);
      }
      const error = document.createElement("p");
      error.id = "error-" + p.name;
      error.className = "error";
      error.hidden = true;
      if (p.type === "logical") wrap.append(input, " ", label, error);
      else wrap.append(label, input, error);
      fields.append(wrap);
    }
  }

  function readRow() {
    const row = {};
    for (const p of state.meta.predictors) {
      const input = $("field-" + p.name);
      if (p.type === "logical") {
        row[p.name] = input.checked;
      } else if (p.type === "factor") {
        row[p.name] = input.value;
      } else {
        const text = input.value.trim();
        row[p.name] = text === "" ? null : NUMBER.test(text) ? Number(text) : text;
      }
    }
    return row;
  }

  // -- answers and errors ----------------------------------------------------

  function clearErrors() {
    for (const el of document.querySelectorAll(".field .error")) {
      el.hidden = true;
      el.textContent = "";
    }
    for (const el of document.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
    $("form-error").hidden = true;
    $("chart-error").hidden = true;
  }

  function showErrors(resp, where) {
    const body = resp.body || {};
    const general = [];
    for (const e of body.errors || []) {
      const input = $("field-" + e.field);
      const slot = $("error-" + e.field);
      if (input && slot) {
        slot.textContent = e.field + " " + e.problem;
        slot.hidden = false;
        input.setAttribute("aria-invalid", "true");
      } else {
        general.push(e.field + " " + e.problem);
      }
    }
    if (general.length || !(body.errors || []).length) {
      const message = body.message || "The API answered " + resp.status + ".";
      where.textContent = general.length ? message + " (" + general.join("; ") + ")" : message;
      where.hidden = false;
    }
  }

  function showResult(answer) {
    const kind = state.meta.kind;
    const binary = kind === "binary";
    $("probability-line").hidden = !binary;
    $("decision").parentElement.hidden = !binary;
    $("prediction-line").hidden = kind !== "regression";
    $("class-block").hidden = kind !== "multiclass" && kind !== "label";
    if (kind === "multiclass" || kind === "label") {
      // label: the model's R predict gives a class and no probabilities
      $("predicted-class").textContent = answer.class;
      const rows = Object.entries(answer.probabilities || {}).map(([label, p]) => {
        const tr = document.createElement("tr");
        const th = document.createElement("th");
        th.scope = "row";
        th.textContent = label;
        const td = document.createElement("td");
        setNumber(td, p, (v) => (v * 100).toFixed(1) + "%");
        tr.dataset.class = label;
        tr.append(th, td);
        return tr;
      });
      $("class-probabilities").tBodies[0].replaceChildren(...rows);
      $("class-bars").replaceChildren(barsSvg(answer.probabilities || {}, answer.class));
    } else if (binary) {
      const decision = $("decision");
      decision.textContent = state.admission ? (answer.result ? "Admit" : "Reject") : String(answer.result);
      decision.className = answer.result ? "admit" : "reject";
      decision.dataset.value = String(answer.result);
      setNumber($("probability"), answer.probability, (v) => (v * 100).toFixed(1) + "%");
    } else {
      setNumber($("prediction"), answer.prediction, (v) => v.toPrecision(6));
    }
    $("result").hidden = false;
  }

  function setNumber(el, value, format) {
    // The exact number is kept in data-value; the text is for people.
    el.dataset.value = value === null ? "" : String(value);
    el.textContent = value === null ? "not a number" : format(value);
  }

  async function onSubmit(event) {
    event.preventDefault();
    const seq = ++state.seq;
    clearErrors();
    const row = readRow();
    $("submit").disabled = true;
    try {
      const resp = await postJson("/predict", row);
      if (seq !== state.seq) return; // a newer submit owns the page
      if (!resp.ok) {
        // Neither the old answer nor the old chart describes these inputs.
        $("result").hidden = true;
        $("chart-panel").hidden = true;
        showErrors(resp, $("form-error"));
        return;
      }
      showResult(resp.body);
      await drawChart(row, resp.body, seq);
    } catch (err) {
      $("form-error").textContent = "Cannot reach the API at " + (state.apiBase || window.location.origin) + ": " + err.message;
      $("form-error").hidden = false;
    } finally {
      if (seq === state.seq) $("submit").disabled = false;
    }
  }

  // -- the what-if chart ------------------------------------------------------

  const numericTypes = new Set(["numeric", "integer"]);

  function sweepChoices(meta) {
    return meta.predictors.filter((p) => numericTypes.has(p.type));
  }

  // The x values: SWEEP_POINTS over the observed range (or around the
  // form's value when the model keeps no data), plus the form's own value.
  function sweepValues(p, current) {
    let lo, hi;
    if (Array.isArray(p.range) && p.range[0] < p.range[1]) [lo, hi] = p.range;
    else if (typeof current === "number" && current !== 0) [lo, hi] = [current - Math.abs(current) / 2, current + Math.abs(current) / 2];
    else [lo, hi] = [-1, 1];
    const xs = [];
    for (let i = 0; i < SWEEP_POINTS; i++) {
      let v = lo + ((hi - lo) * i) / (SWEEP_POINTS - 1);
      if (p.type === "integer") v = Math.round(v);
      else v = Number(v.toPrecision(12));
      if (!xs.includes(v)) xs.push(v);
    }
    if (typeof current === "number" && current >= lo && current <= hi && !xs.includes(current)) xs.push(current);
    return xs.sort((a, b) => a - b);
  }

  // Lines: one per class for a classifier; otherwise one per level of the
  // first factor with few enough levels, or a single line.
  function seriesPlan(meta, row) {
    if (meta.kind === "multiclass") return { by: null, keys: meta.classes };
    const f = meta.predictors.find((p) => p.type === "factor" && (p.levels || []).length <= MAX_SERIES);
    if (!f) return { by: null, keys: [null] };
    return { by: f.name, keys: f.levels };
  }

  function valueOf(answer, kind, key) {
    if (kind === "binary") return answer.probability;
    if (kind === "multiclass") return answer.probabilities ? answer.probabilities[key] : null;
    return answer.prediction;
  }

  async function drawChart(row, answer, seq) {
    const meta = state.meta;
    // A model that gives only a class label has no number to draw.
    if (meta.kind === "label") {
      $("chart-panel").hidden = true;
      return;
    }
    const choices = sweepChoices(meta);
    $("chart-panel").hidden = false;
    if (!choices.length) {
      $("chart").replaceChildren();
      $("chart-caption").textContent = "The model has no numeric predictor to sweep.";
      return;
    }
    const select = $("sweep");
    if (!select.options.length) {
      for (const p of choices) {
        const option = document.createElement("option");
        option.value = option.textContent = p.name;
        select.append(option);
      }
    }
    const p = choices.find((c) => c.name === select.value) || choices[0];
    const xs = sweepValues(p, row[p.name]);
    const plan = seriesPlan(meta, row);
    const levels = plan.by ? plan.keys : [null];
    const instances = [];
    for (const level of levels) {
      for (const x of xs) {
        const r = Object.assign({}, row, { [p.name]: x });
        if (plan.by) r[plan.by] = level;
        instances.push(r);
      }
    }
    const doc = { instances };
    if (meta.interval) doc.interval = LEVEL;
    const started = performance.now();
    const resp = await postJson("/predict", doc);
    if (seq !== state.seq) return;
    if (!resp.ok) {
      $("chart").replaceChildren();
      showErrors(resp, $("chart-error"));
      return;
    }
    const preds = resp.body.predictions;
    const series = [];
    if (meta.kind === "multiclass") {
      for (const cls of meta.classes) {
        series.push({ key: cls, points: xs.map((x, j) => [x, valueOf(preds[j], "multiclass", cls)]) });
      }
    } else {
      levels.forEach((level, i) => {
        const slice = preds.slice(i * xs.length, (i + 1) * xs.length);
        series.push({
          key: level,
          points: xs.map((x, j) => [x, valueOf(slice[j], meta.kind)]),
          band: meta.interval ? slice.map((a) => (a.interval ? [a.interval.lower, a.interval.upper] : [null, null])) : null,
        });
      });
    }
    const current = plan.by ? String(row[plan.by]) : meta.kind === "multiclass" ? answer.class : null;
    const y0 = meta.kind === "multiclass" ? valueOf(answer, "multiclass", answer.class) : valueOf(answer, meta.kind);
    const what = yLabel(meta);
    $("chart-title").textContent = what + " by " + p.name;
    const held = meta.predictors.filter((q) => q.name !== p.name && q.name !== plan.by)
      .map((q) => q.name + " " + row[q.name]).join(", ");
    $("chart-caption").textContent = (held ? "Holding " + held + "; " : "") + "one batch request of " +
      instances.length + " rows" + (meta.interval ? ", with R's " + LEVEL * 100 + "% confidence band" : "") +
      ". The ringed point is the form's row.";
    const svg = chartSvg({ series, xs, xName: p.name, by: plan.by, current, x0: row[p.name], y0, what });
    svg.dataset.ms = String(Math.round(performance.now() - started));
    $("chart").replaceChildren(svg);
  }

  function yLabel(meta) {
    if (state.admission) return "Probability of admission";
    if (meta.kind === "binary") return "Probability of " + (meta.positive_class ?? "the second class");
    if (meta.kind === "multiclass") return "Probability of each class";
    return "Prediction";
  }

  function el(name, attrs, text) {
    const node = document.createElementNS(SVG_NS, name);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function niceTicks(lo, hi, n) {
    const span = hi - lo || 1;
    const step0 = span / n;
    const mag = Math.pow(10, Math.floor(Math.log10(step0)));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => span / s <= n) || 10 * mag;
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
    return out;
  }

  function chartSvg(c) {
    const W = 640, H = 380, L = 64, R = 120, T = 14, B = 46;
    const probability = state.meta.kind !== "regression";
    let ylo = 0, yhi = 1;
    if (!probability) {
      const ys = [];
      for (const s of c.series) {
        for (const [, y] of s.points) if (y !== null) ys.push(y);
        for (const [a, b] of s.band || []) { if (a !== null) ys.push(a); if (b !== null) ys.push(b); }
      }
      ylo = Math.min(...ys); yhi = Math.max(...ys);
      const pad = (yhi - ylo) * 0.05 || 1;
      ylo -= pad; yhi += pad;
    }
    const xlo = c.xs[0], xhi = c.xs[c.xs.length - 1];
    const x = (v) => L + ((v - xlo) / (xhi - xlo || 1)) * (W - L - R);
    const y = (v) => T + (1 - (v - ylo) / (yhi - ylo)) * (H - T - B);
    const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-labelledby": "chart-svg-title" });
    svg.append(el("title", { id: "chart-svg-title" }, c.what + " against " + c.xName));

    const axes = el("g", { class: "axis" });
    for (const v of niceTicks(xlo, xhi, 6)) {
      axes.append(el("line", { class: "grid", x1: x(v), x2: x(v), y1: T, y2: H - B }));
      axes.append(el("text", { x: x(v), y: H - B + 16, "text-anchor": "middle" }, v));
    }
    for (const v of probability ? [0, 0.25, 0.5, 0.75, 1] : niceTicks(ylo, yhi, 5)) {
      axes.append(el("line", { class: "grid", x1: L, x2: W - R, y1: y(v), y2: y(v) }));
      axes.append(el("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end" }, probability ? Math.round(v * 100) + "%" : v));
    }
    axes.append(el("line", { x1: L, x2: W - R, y1: H - B, y2: H - B }));
    axes.append(el("line", { x1: L, x2: L, y1: T, y2: H - B }));
    axes.append(el("text", { x: (L + W - R) / 2, y: H - 8, "text-anchor": "middle" }, c.xName));
    axes.append(el("text", { x: 14, y: (T + H - B) / 2, "text-anchor": "middle",
      transform: `rotate(-90 14 ${(T + H - B) / 2})` }, c.what));
    svg.append(axes);

    const threshold = state.meta.threshold;
    const legendY = (i) => T + 14 + i * 20;
    if (state.meta.kind === "binary" && typeof threshold === "number") {
      svg.append(el("line", { class: "threshold", x1: L, x2: W - R, y1: y(threshold), y2: y(threshold) }));
      const ly = legendY(c.series.length);
      svg.append(el("line", { class: "threshold", x1: W - R + 12, x2: W - R + 34, y1: ly, y2: ly }));
      svg.append(el("text", { class: "legend", x: W - R + 40, y: ly + 4 }, "threshold"));
    }

    c.series.forEach((s, i) => {
      const color = COLORS[i % COLORS.length];
      const key = s.key === null ? "" : String(s.key);
      if (s.band) {
        // The band: upper bounds left to right, then lower bounds back.
        const upper = [], lower = [];
        s.band.forEach(([a, b], j) => {
          if (a === null || b === null) return;
          upper.push(`${x(c.xs[j]).toFixed(1)},${y(b).toFixed(1)}`);
          lower.unshift(`${x(c.xs[j]).toFixed(1)},${y(a).toFixed(1)}`);
        });
        svg.append(el("polygon", { class: "band", "data-series": key, fill: color, points: upper.concat(lower).join(" "),
          "data-x": JSON.stringify(c.xs), "data-lower": JSON.stringify(s.band.map((p) => p[0])),
          "data-upper": JSON.stringify(s.band.map((p) => p[1])) }));
      }
      const points = s.points.filter(([, v]) => v !== null).map(([a, v]) => `${x(a).toFixed(1)},${y(v).toFixed(1)}`);
      svg.append(el("polyline", { class: "series", "data-series": key, stroke: color, points: points.join(" "),
        "data-x": JSON.stringify(s.points.map((p) => p[0])), "data-y": JSON.stringify(s.points.map((p) => p[1])) }));
      if (c.series.length > 1 || s.key !== null) {
        const ly = legendY(i);
        svg.append(el("line", { x1: W - R + 12, x2: W - R + 34, y1: ly, y2: ly, stroke: color, "stroke-width": 3 }));
        svg.append(el("text", { class: "legend", x: W - R + 40, y: ly + 4 }, (c.by ? c.by + " " : "") + key));
      }
    });

    if (typeof c.x0 === "number" && c.x0 >= xlo && c.x0 <= xhi && typeof c.y0 === "number") {
      const i = Math.max(0, c.series.findIndex((s) => String(s.key) === c.current));
      const marker = el("circle", { class: "applicant", cx: x(c.x0), cy: y(c.y0), r: 7,
        fill: COLORS[i % COLORS.length], stroke: "#000", "stroke-width": 2.5,
        "data-x": c.x0, "data-y": c.y0, "data-series": c.current === null ? "" : c.current });
      marker.append(el("title", {}, `${c.xName} ${c.x0}: ${c.y0}`));
      svg.append(marker);
    }
    return svg;
  }

  // A bar per class, for a classifier's answer.
  function barsSvg(probabilities, picked) {
    const entries = Object.entries(probabilities);
    const W = 260, rowH = 22, L = 90, H = entries.length * rowH + 6;
    const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "Probability of each class" });
    entries.forEach(([label, p], i) => {
      const y0 = 3 + i * rowH;
      svg.append(el("text", { x: L - 6, y: y0 + 14, "text-anchor": "end" }, label));
      const w = p === null ? 0 : p * (W - L - 56);
      svg.append(el("rect", { class: "bar" + (label === picked ? " picked" : ""), x: L, y: y0 + 2, width: w.toFixed(1),
        height: rowH - 6, "data-class": label, "data-value": p === null ? "" : p, fill: COLORS[i % COLORS.length] }));
      svg.append(el("text", { x: L + w + 4, y: y0 + 14 }, p === null ? "NA" : (p * 100).toFixed(1) + "%"));
    });
    return svg;
  }

  // -- start -----------------------------------------------------------------

  async function start() {
    await loadConfig();
    $("predict-form").addEventListener("submit", onSubmit);
    let resp;
    try {
      resp = await api("/metadata");
    } catch (err) {
      resp = { ok: false, status: 0, body: { message: "Cannot reach the API: " + err.message } };
    }
    if (!resp.ok || !resp.body || !Array.isArray(resp.body.predictors)) {
      $("model-info").textContent = "The model's description is unavailable.";
      showErrors(resp, $("form-error"));
      return;
    }
    const meta = (state.meta = resp.body);
    state.admission = isAdmission(meta);
    if (!state.admission) {
      $("title").textContent = "Model scoring";
      $("form-title").textContent = "Inputs";
      document.title = "rlambda: " + meta.formula;
    }
    $("model-info").textContent =
      `${meta.class}${meta.family ? " (" + meta.family + ")" : ""}: ${meta.formula} · version ${meta.model.version}`;
    buildForm(meta);
    $("sweep").addEventListener("change", () => {
      if (!$("result").hidden) $("predict-form").requestSubmit();
    });
    $("submit").disabled = false;
  }

  start();
})();
