// The page: a form built from GET /metadata, the model's answer, and for the
// admission model a chart of probability against GRE for each rank, drawn
// from one batch request. No build step and no libraries: the chart is
// hand-written SVG, so the page works offline and from any static host.
"use strict";

(() => {
  const SVG_NS = "http://www.w3.org/2000/svg";
  const COLORS = ["#1f6fb2", "#d1495b", "#2e933c", "#8a5cc2", "#e08e0b", "#3a3a3a"];
  const ADMISSION_DEFAULTS = { gre: "700", gpa: "3.6", rank: "2" };
  const GRE_MIN = 200, GRE_MAX = 800, GRE_STEP = 10;
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
      if (state.admission && p.name in ADMISSION_DEFAULTS) input.value = ADMISSION_DEFAULTS[p.name];
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
      if (state.admission) await drawChart(row, resp.body.probability, seq);
    } catch (err) {
      $("form-error").textContent = "Cannot reach the API at " + (state.apiBase || window.location.origin) + ": " + err.message;
      $("form-error").hidden = false;
    } finally {
      if (seq === state.seq) $("submit").disabled = false;
    }
  }

  // -- the chart -------------------------------------------------------------

  async function drawChart(row, probability, seq) {
    const ranks = state.meta.predictors.find((p) => p.name === "rank").levels;
    const gres = [];
    for (let g = GRE_MIN; g <= GRE_MAX; g += GRE_STEP) gres.push(g);
    const instances = [];
    for (const rank of ranks) for (const gre of gres) instances.push({ gre, gpa: row.gpa, rank });
    const resp = await postJson("/predict", { instances });
    if (seq !== state.seq) return;
    $("chart-panel").hidden = false;
    if (!resp.ok) {
      $("chart").replaceChildren();
      showErrors(resp, $("chart-error"));
      return;
    }
    const series = ranks.map((rank, i) => ({
      rank,
      points: gres.map((gre, j) => [gre, resp.body.predictions[i * gres.length + j].probability]),
    }));
    $("chart-caption").textContent =
      "GPA " + row.gpa + "; one batch request of " + instances.length + " rows. The ringed point is the applicant.";
    $("chart").replaceChildren(chartSvg(series, row, probability));
  }

  function el(name, attrs, text) {
    const node = document.createElementNS(SVG_NS, name);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function chartSvg(series, row, probability) {
    const W = 640, H = 380, L = 56, R = 96, T = 14, B = 46;
    const x = (gre) => L + ((gre - GRE_MIN) / (GRE_MAX - GRE_MIN)) * (W - L - R);
    const y = (p) => T + (1 - p) * (H - T - B);
    const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-labelledby": "chart-svg-title" });
    svg.append(el("title", { id: "chart-svg-title" },
      "Probability of admission against GRE score for ranks " + series.map((s) => s.rank).join(", ")));

    const axes = el("g", { class: "axis" });
    for (let gre = GRE_MIN; gre <= GRE_MAX; gre += 100) {
      axes.append(el("line", { class: "grid", x1: x(gre), x2: x(gre), y1: T, y2: H - B }));
      axes.append(el("text", { x: x(gre), y: H - B + 16, "text-anchor": "middle" }, gre));
    }
    for (const p of [0, 0.25, 0.5, 0.75, 1]) {
      axes.append(el("line", { class: "grid", x1: L, x2: W - R, y1: y(p), y2: y(p) }));
      axes.append(el("text", { x: L - 6, y: y(p) + 4, "text-anchor": "end" }, Math.round(p * 100) + "%"));
    }
    axes.append(el("line", { x1: L, x2: W - R, y1: H - B, y2: H - B }));
    axes.append(el("line", { x1: L, x2: L, y1: T, y2: H - B }));
    axes.append(el("text", { x: (L + W - R) / 2, y: H - 8, "text-anchor": "middle" }, "GRE score"));
    axes.append(el("text", { x: 14, y: (T + H - B) / 2, "text-anchor": "middle",
      transform: `rotate(-90 14 ${(T + H - B) / 2})` }, "Probability of admission"));
    svg.append(axes);

    const threshold = state.meta.threshold;
    if (typeof threshold === "number") {
      svg.append(el("line", { class: "threshold", x1: L, x2: W - R, y1: y(threshold), y2: y(threshold) }));
      const ly = T + 14 + series.length * 20;
      svg.append(el("line", { class: "threshold", x1: W - R + 12, x2: W - R + 34, y1: ly, y2: ly }));
      svg.append(el("text", { class: "legend", x: W - R + 40, y: ly + 4 }, "threshold"));
    }

    series.forEach((s, i) => {
      const color = COLORS[i % COLORS.length];
      const points = s.points.filter(([, p]) => p !== null).map(([g, p]) => `${x(g).toFixed(1)},${y(p).toFixed(1)}`);
      svg.append(el("polyline", { class: "series", "data-rank": s.rank, stroke: color, points: points.join(" ") }));
      const ly = T + 14 + i * 20;
      svg.append(el("line", { x1: W - R + 12, x2: W - R + 34, y1: ly, y2: ly, stroke: color, "stroke-width": 3 }));
      svg.append(el("text", { class: "legend", x: W - R + 40, y: ly + 4 }, "rank " + s.rank));
    });

    const gre = row.gre;
    if (typeof gre === "number" && gre >= GRE_MIN && gre <= GRE_MAX && probability !== null) {
      const i = series.findIndex((s) => s.rank === String(row.rank));
      const marker = el("circle", { class: "applicant", cx: x(gre), cy: y(probability), r: 7,
        fill: COLORS[Math.max(i, 0) % COLORS.length], stroke: "#000", "stroke-width": 2.5,
        "data-gre": gre, "data-probability": probability });
      marker.append(el("title", {}, `Applicant: GRE ${gre}, rank ${row.rank}, ${(probability * 100).toFixed(1)}%`));
      svg.append(marker);
    }
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
    $("submit").disabled = false;
  }

  start();
})();
