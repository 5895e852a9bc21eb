// Costroute playground: the registry, a dry run drawn as a chart, the real call, and (once the
// service has the endpoint) usage. Plain DOM and SVG, no framework and no build step: the service
// serves this file as it is. Everything the API sends goes into the page as text (textContent,
// never markup), so neither a model's answer nor an error message can inject anything.
"use strict";

(() => {
  const SVG_NS = "http://www.w3.org/2000/svg";
  const KEY_STORAGE = "costroute.apiKey";
  const $ = (id) => document.getElementById(id);
  const form = $("route-form");
  const keyInput = $("api-key");

  // ---- small DOM helpers ----------------------------------------------------------------------

  function build(node, attrs, children) {
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value !== undefined && value !== null) node.setAttribute(name, String(value));
    }
    // Strings become text nodes: the one way API data reaches the page.
    node.append(...children.filter((child) => child !== undefined && child !== null));
    return node;
  }
  const el = (tag, attrs, ...children) => build(document.createElement(tag), attrs, children);
  const svg = (tag, attrs, ...children) => build(document.createElementNS(SVG_NS, tag), attrs, children);

  const usdFormat = new Intl.NumberFormat("en-US", { maximumSignificantDigits: 6 });
  const usd = (value) => (typeof value === "number" ? "$" + usdFormat.format(value) : "none");
  const count = new Intl.NumberFormat("en-US");
  // A missing or non-finite amount counts as nothing when drawn, so a partial answer never draws NaN.
  const amount = (value) => (Number.isFinite(value) ? value : 0);

  // ---- the API ----------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(message, status, detail) {
      super(message);
      this.status = status;
      this.detail = detail || null; // the service's error object, when it sent one
    }
  }

  // Every call is relative to the page, without a leading slash: under API Gateway's stage prefix
  // (https://id.execute-api.../prod/) "route" is /prod/route, and locally it is /route.
  const apiUrl = (path) => new URL(path, location.href);

  async function callApi(path, body) {
    const headers = { Accept: "application/json" };
    const key = keyInput.value.trim();
    if (key) {
      // API Gateway checks x-api-key; locally the service knows a caller by its bearer token, so the
      // same key also goes as Authorization (API Gateway ignores it for identity). Empty: no header.
      headers["x-api-key"] = key;
      headers["Authorization"] = "Bearer " + key;
    }
    const init = { method: "GET", headers, cache: "no-store" };
    if (body !== undefined) {
      init.method = "POST";
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(apiUrl(path), init);
    } catch (err) {
      throw new ApiError(`Could not reach the service (${err.message}).`, 0);
    }
    const text = await response.text();
    let data = null;
    try {
      data = JSON.parse(text);
    } catch {
      // not JSON: said below
    }
    if (!response.ok) throw new ApiError(errorText(response, data), response.status, data && data.error);
    if (data === null) throw new ApiError(`The service answered HTTP ${response.status} with a body that is not JSON.`, response.status);
    return data;
  }

  function errorText(response, data) {
    // The service's one error shape: its message, as sent.
    if (data && data.error && typeof data.error.message === "string") return data.error.message;
    // API Gateway's own refusals ({"message": "Forbidden"}) never reach the service.
    if (data && typeof data.message === "string") {
      const hint = response.status === 403 ? " Type the API key above." : "";
      return `${data.message} (HTTP ${response.status}).${hint}`;
    }
    return `HTTP ${response.status} ${response.statusText}`.trim();
  }

  // ---- the API key: this tab only, never in the URL ----------------------------------------------

  function storeKey() {
    try {
      if (keyInput.value) sessionStorage.setItem(KEY_STORAGE, keyInput.value);
      else sessionStorage.removeItem(KEY_STORAGE);
    } catch {
      // storage disabled: the key still works for this page load
    }
  }
  try {
    keyInput.value = sessionStorage.getItem(KEY_STORAGE) || "";
  } catch {
    keyInput.value = "";
  }
  keyInput.addEventListener("input", storeKey);

  // A new key may open what the old one could not (on API Gateway everything but the page needs
  // one): the registry and usage are loaded again with it once it changed (on Enter or on leaving the
  // field; browsers fire "change" for both, so the form's own submit only has to stay on the page).
  let loadedWithKey = null;
  function loadAll() {
    const key = keyInput.value.trim();
    if (key === loadedWithKey) return;
    loadedWithKey = key;
    loadModels();
    probeUsage();
  }
  keyInput.addEventListener("change", loadAll);
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    loadAll();
  });

  // ---- status, errors, loading ------------------------------------------------------------------

  let busy = false;
  let errorSource = null;

  function setStatus(text) {
    $("status").textContent = text;
  }

  function setBusy(on, text) {
    busy = on;
    // aria-disabled, not disabled: a disabled button would drop the keyboard focus.
    for (const button of [$("decide"), $("send")]) button.setAttribute("aria-disabled", String(on));
    form.classList.toggle("busy", on);
    $("results").setAttribute("aria-busy", String(on));
    if (on) setStatus(text);
  }

  function showError(err, source) {
    const box = $("error");
    box.replaceChildren();
    errorSource = err ? source : null;
    if (!err) return;
    box.append(el("p", { class: "error-message" }, err.message));
    const detail = err.detail || {};
    if (Array.isArray(detail.decision_trace) && detail.decision_trace.length) {
      box.append(el("details", {}, el("summary", {}, "Decision trace"), listOf("ol", detail.decision_trace)));
    }
    // The field the service named (param "constraints.min_quality") is marked invalid.
    const control = detail.param && form.querySelector(`[data-field="${CSS.escape(detail.param)}"]`);
    if (control) control.setAttribute("aria-invalid", "true");
  }

  const listOf = (tag, items) => el(tag, {}, ...items.map((item) => el("li", {}, item)));

  // ---- the request form ------------------------------------------------------------------------

  class FormError extends Error {
    constructor(control, message) {
      super(message);
      this.control = control;
    }
  }

  // Each control names its place in the /route body (data-field="constraints.min_quality") and how
  // to read it (data-kind). Empty fields are left out, so the service applies its own defaults; the
  // service alone validates (the form is novalidate) so that its messages are the ones shown.
  function readForm() {
    const body = {};
    for (const control of form.querySelectorAll("[data-field]")) {
      control.removeAttribute("aria-invalid");
      const value = controlValue(control);
      if (value === undefined) continue;
      const path = control.dataset.field.split(".");
      let target = body;
      for (const part of path.slice(0, -1)) target = target[part] ??= {};
      target[path[path.length - 1]] = value;
    }
    return body;
  }

  function controlValue(control) {
    if (control.dataset.kind === "bool") return control.checked ? true : undefined;
    if (control.dataset.kind === "number") {
      // A number field holding text reads as "": say so rather than silently not send it.
      if (control.validity.badInput) throw new FormError(control, `${labelOf(control)} is not a number.`);
      return control.value === "" ? undefined : Number(control.value);
    }
    return control.value === "" ? undefined : control.value;
  }

  const labelOf = (control) => form.querySelector(`label[for="${control.id}"]`).textContent;

  async function callRoute(dryRun) {
    if (busy) return;
    let body;
    try {
      body = readForm();
    } catch (err) {
      if (!(err instanceof FormError)) throw err;
      showError(err, "form");
      err.control.setAttribute("aria-invalid", "true");
      err.control.focus();
      return;
    }
    if (dryRun) body.dry_run = true;
    setBusy(true, dryRun ? "Deciding…" : "Sending…");
    showError(null);
    try {
      const result = await callApi("route", body);
      renderDecision(result, body.constraints ? body.constraints.max_cost_usd : undefined);
      if (dryRun) $("answer").hidden = true;
      else renderAnswer(result);
      setStatus(dryRun ? `Decided: ${result.model}.` : `Answered by ${result.model}.`);
    } catch (err) {
      // Whatever was shown belongs to an earlier request: hide it beside this request's error.
      $("decision").hidden = true;
      $("answer").hidden = true;
      setStatus("");
      if (!(err instanceof ApiError)) {
        showError(new Error(`The page failed to show the answer: ${err.message}`), "route");
        throw err; // a bug of the page: let it reach the console too
      }
      showError(err, "route");
    } finally {
      setBusy(false);
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault(); // Decide is the form's one submit button, so Enter in a field decides
    callRoute(true);
  });
  $("send").addEventListener("click", () => callRoute(false));
  $("input").addEventListener("keydown", (event) => {
    // Enter in the prompt is a new line; Ctrl+Enter decides.
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      form.requestSubmit();
    }
  });

  // ---- the registry ----------------------------------------------------------------------------

  async function loadModels() {
    try {
      renderRegistry(await callApi("models"));
      if (errorSource === "models") showError(null);
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      showError(err, "models");
    }
  }

  function renderRegistry(data) {
    const models = data.models || [];
    $("registry-source").textContent = `${count.format(models.length)} model(s); source: ${data.source ?? "unknown"}.`;
    $("registry-rows").replaceChildren(...models.map((model) => el("tr", { "data-model": model.id },
      el("th", { scope: "row" }, model.id),
      el("td", {}, model.provider, model.kind && model.kind !== model.provider ? ` (${model.kind})` : undefined),
      el("td", { class: "num" }, String(model.quality)),
      el("td", { class: "num" }, usd(model.input_cost_per_1k)),
      el("td", { class: "num" }, usd(model.output_cost_per_1k)),
      el("td", { class: "num" }, `${count.format(model.latency_ms)} ms`),
      el("td", { class: "num" }, count.format(model.max_output_tokens)),
      model.available
        ? el("td", { class: "ok" }, "yes")
        : el("td", { class: "unavailable" }, model.unavailable_reason || "no"),
    )));
    // The provider choices are the registry's own, in its order; a chosen one survives a reload.
    const select = $("prefer_provider");
    const chosen = select.value;
    const providers = [...new Set(models.map((model) => model.provider))];
    select.replaceChildren(el("option", { value: "" }, "none"), ...providers.map((p) => el("option", { value: p }, p)));
    select.value = providers.includes(chosen) ? chosen : "";
  }

  // ---- the decision ----------------------------------------------------------------------------

  // The ladder's own verdicts on a model it ranked: under the quality floor and/or over the budget
  // ("quality 1 < required 3", "estimated $0.00398 > budget $0.002"), or "no rung could use it".
  const LADDER_PART = /^(quality \d+ < required \d+|estimated \$\S+ > budget \$\S+)$/;

  // Removed before ranking: every other exclusion. These are the latency limit ("estimated latency
  // 1500 ms > limit 1000 ms") and availability ("not available", "no API key ...", "circuit open ...",
  // "not routed to: ...", "already tried", "not in the pool", "no adapter ..."). Matching the ladder's
  // two phrasings, rather than listing availability's, keeps a new availability reason hollow too.
  function isRemoved(candidate) {
    if (candidate.verdict !== "excluded") return false;
    const reason = candidate.reason || "";
    if (reason === "no rung could use it") return false;
    return !reason.split("; ").every((part) => LADDER_PART.test(part));
  }

  function renderDecision(result, budget) {
    const candidates = result.candidates || [];
    const estimate = result.estimate || {};
    const quality = result.required_quality || {};
    $("chosen-summary").textContent =
      `${result.model}: estimated ${usd(estimate.cost_usd)} (${estimate.input_tokens} input and ` +
      `${estimate.output_tokens} output tokens), ${estimate.latency_ms} ms. Required quality ${quality.value}, ` +
      `from ${quality.source}.` +
      (result.latency_relaxed ? " The latency limit was relaxed: no model met it." : "") +
      (result.candidates_total > candidates.length ? ` Showing ${candidates.length} of ${result.candidates_total} candidates.` : "");
    $("rung").textContent = result.rung ? result.rung.description : "";
    $("decision").hidden = false; // shown first: the chart is drawn at its laid-out width
    drawCandidates($("chart"), candidates, budget);

    const removed = candidates.filter(isRemoved);
    $("removed-list").replaceChildren(...(removed.length
      ? removed.map((c) => el("li", { "data-model": c.model }, el("strong", {}, c.model), `: ${c.reason}`))
      : [el("li", { class: "muted" }, "None.")]));
    $("candidate-list").replaceChildren(...candidates.map((c) => el("li", { "data-model": c.model, class: c.verdict },
      el("strong", {}, c.model),
      `: ${usd(c.estimated_cost_usd)}, quality ${c.quality}, ${c.estimated_latency_ms} ms; ${c.verdict} (${c.reason})`)));
    $("trace").replaceChildren(...(result.decision_trace || []).map((line) => el("li", {}, line)));
  }

  // Charts are drawn in CSS pixels at their laid-out width, so that their text stays legible from
  // 360 px up, and drawn again when that width changes (a resize, or a hidden view shown).
  const drawings = new Map(); // svg element -> { width it was drawn at, how to draw it }
  const resizes = new ResizeObserver((entries) => {
    for (const entry of entries) {
      const drawing = drawings.get(entry.target);
      // Next frame, not inside the callback: a redraw there would be a resize loop.
      if (drawing && Math.round(entry.contentRect.width) !== drawing.width) requestAnimationFrame(drawing.draw);
    }
  });

  function drawAtWidth(chart, height, plot) {
    const draw = () => {
      const measured = Math.round(chart.getBoundingClientRect().width);
      drawings.set(chart, { width: measured, draw });
      const width = measured || 640; // hidden: any width does, it is drawn again once shown
      const h = height(width);
      chart.setAttribute("viewBox", `0 0 ${width} ${h}`);
      plot(width, h);
    };
    if (!drawings.has(chart)) resizes.observe(chart);
    draw();
  }

  // The candidates chart's margins, in pixels.
  const CHART = { left: 48, right: 24, top: 30, bottom: 46, zeroColumn: 44 };

  // Estimated cost on a log scale (x) against quality 1-5 (y), one mark per candidate, the budget as
  // a vertical line. Zero has no place on a log scale: when a model is free, the left edge gets a
  // column of its own labelled $0, cut from the log axis by a break mark, and free models sit there.
  function drawCandidates(chart, candidates, budget) {
    drawAtWidth(chart, (width) => Math.round(Math.min(420, Math.max(260, width * 0.6))),
      (width, height) => plotCandidates(chart, width, height, candidates, budget));
  }

  function plotCandidates(chart, width, height, candidates, budget) {
    const c = CHART;
    const bottom = height - c.bottom;
    const right = width - c.right;
    const hasZero = candidates.some((m) => m.estimated_cost_usd === 0);
    const logLeft = c.left + (hasZero ? c.zeroColumn : 12);
    const positive = candidates.map((m) => m.estimated_cost_usd).filter((v) => v > 0);
    if (budget > 0) positive.push(budget);
    const [lo, hi] = logDomain(positive);
    const x = (cost) => (cost > 0 ? logLeft + ((Math.log10(cost) - lo) / (hi - lo)) * (right - logLeft) : c.left + c.zeroColumn / 2 - 4);
    // Quality runs from 0.5 to 5.5 so that no mark sits on the frame.
    const y = (quality) => c.top + ((5.5 - quality) / 5) * (bottom - c.top);

    const grid = svg("g", { class: "grid" });
    const axes = svg("g", { class: "axes" });
    for (let q = 1; q <= 5; q++) {
      grid.append(svg("line", { x1: c.left, x2: right, y1: y(q), y2: y(q) }));
      axes.append(svg("text", { x: c.left - 8, y: y(q) + 4, "text-anchor": "end" }, String(q)));
    }
    for (const tick of logTicks(lo, hi, Math.max(2, Math.floor((right - logLeft) / 75)))) {
      grid.append(svg("line", { x1: x(tick), x2: x(tick), y1: c.top, y2: bottom }));
      axes.append(svg("text", { x: x(tick), y: bottom + 16, "text-anchor": "middle" }, usd(tick)));
    }
    axes.append(svg("line", { class: "axis", x1: c.left, x2: right, y1: bottom, y2: bottom }));
    axes.append(svg("line", { class: "axis", x1: c.left, x2: c.left, y1: c.top, y2: bottom }));
    if (hasZero) {
      axes.append(svg("text", { x: x(0), y: bottom + 16, "text-anchor": "middle" }, "$0"));
      const cut = logLeft - 8; // two slashes across the axis: the scale is broken here
      for (const dx of [-3, 3]) axes.append(svg("line", { class: "axis", x1: cut + dx - 3, x2: cut + dx + 3, y1: bottom + 5, y2: bottom - 5 }));
    }
    axes.append(svg("text", { x: (c.left + right) / 2, y: height - 8, "text-anchor": "middle" }, "estimated cost (log scale)"));
    axes.append(svg("text", { x: 14, y: (c.top + bottom) / 2, "text-anchor": "middle", transform: `rotate(-90 14 ${(c.top + bottom) / 2})` }, "quality"));

    const layers = [grid, axes];
    if (budget > 0) {
      const bx = x(budget);
      const anchor = bx > right - 60 ? "end" : bx < c.left + 60 ? "start" : "middle";
      layers.push(svg("g", { class: "budget-group" },
        svg("line", { class: "budget", "data-usd": budget, x1: bx, x2: bx, y1: c.top - 6, y2: bottom }, svg("title", {}, `budget ${usd(budget)}`)),
        svg("text", { class: "budget-label", x: bx, y: c.top - 12, "text-anchor": anchor }, `budget ${usd(budget)}`)));
    }

    // Marks at the same spot (same quality, within a few units of cost) are spread vertically, never
    // horizontally, so that x always tells the cost. The chosen mark is drawn last, on top.
    const spots = new Map();
    const ordered = [...candidates].sort((a, b) => (a.verdict === "chosen") - (b.verdict === "chosen"));
    const labelled = candidates.length <= 12 && width >= 300; // beyond that, the titles and the list tell
    const marks = svg("g", { class: "marks" });
    for (const m of ordered) {
      const mx = x(m.estimated_cost_usd);
      const spot = `${Math.round(mx / 6)}:${m.quality}`;
      const seen = spots.get(spot) || 0;
      spots.set(spot, seen + 1);
      const my = y(m.quality) + (seen % 2 ? 1 : -1) * Math.ceil(seen / 2) * 9;
      const classes = ["mark", m.verdict];
      if (isRemoved(m)) classes.push("hollow");
      marks.append(svg("circle", {
        class: classes.join(" "), "data-model": m.model, "data-cost": m.estimated_cost_usd, "data-quality": m.quality,
        cx: mx, cy: my, r: m.verdict === "chosen" ? 8 : 6,
      }, svg("title", {}, `${m.model}: ${usd(m.estimated_cost_usd)}, quality ${m.quality}, ${m.estimated_latency_ms} ms; ${m.verdict}: ${m.reason}`)));
      if (labelled) {
        const toLeft = mx > right - 7 * m.model.length - 14;
        marks.append(svg("text", { class: "mark-label", x: mx + (toLeft ? -11 : 11), y: my + 4, "text-anchor": toLeft ? "end" : "start" }, m.model));
      }
    }
    layers.push(marks);
    chart.replaceChildren(...layers);
  }

  // Log10 bounds around the positive values: a quarter decade of room each side, one decade at least.
  function logDomain(values) {
    if (!values.length) return [-4, -2];
    let lo = Math.log10(Math.min(...values)) - 0.25;
    let hi = Math.log10(Math.max(...values)) + 0.25;
    if (hi - lo < 1) {
      const middle = (lo + hi) / 2;
      [lo, hi] = [middle - 0.5, middle + 0.5];
    }
    return [lo, hi];
  }

  // Decades ($0.0001, $0.001, ...) when at least two fit, else 1, 2 and 5 of each; at most `most`.
  function logTicks(lo, hi, most) {
    const all = [];
    for (let k = Math.floor(lo); k <= Math.ceil(hi); k++) {
      for (const m of [1, 2, 5]) {
        const value = Number((m * 10 ** k).toPrecision(1));
        if (Math.log10(value) >= lo && Math.log10(value) <= hi) all.push({ value, decade: m === 1 });
      }
    }
    const decades = all.filter((t) => t.decade);
    const ticks = (decades.length >= 2 ? decades : all).map((t) => t.value);
    const step = Math.ceil(ticks.length / most);
    return ticks.filter((_, i) => i % step === 0);
  }

  // ---- the answer ------------------------------------------------------------------------------

  function setUsd(node, value, text) {
    node.textContent = text ?? usd(value);
    if (typeof value === "number") node.dataset.usd = String(value);
    else delete node.dataset.usd;
  }

  function renderAnswer(result) {
    const estimate = result.estimate || {};
    $("answer-model").textContent =
      `${result.model}, finish reason ${result.finish_reason}, provider latency ${result.provider_latency_ms} ms ` +
      `(${result.provider_latency_kind}).`;
    $("response").textContent = result.response ?? "";
    setUsd($("actual-cost"), result.actual_cost_usd,
      usd(result.actual_cost_usd) + (result.over_budget ? `, ${usd(result.over_budget_usd)} over the budget` : ""));
    setUsd($("estimated-cost"), estimate.cost_usd);
    $("cost-ratio").textContent = estimate.cost_usd > 0 && typeof result.actual_cost_usd === "number"
      ? `${Math.round((result.actual_cost_usd / estimate.cost_usd) * 100)}% of the estimate`
      : "none";
    const usage = result.usage;
    $("usage").textContent = usage
      ? `${usage.prompt_tokens} prompt + ${usage.completion_tokens} completion = ${usage.total_tokens} tokens` +
        (usage.cached_tokens ? `, ${usage.cached_tokens} cached` : "") +
        (usage.reported === false ? "; the provider reported no usage, so the worst case was charged" : "")
      : "none";
    const attempts = result.attempts || [];
    const failovers = attempts.filter((a) => a.outcome !== "ok");
    $("failovers").textContent = failovers.length
      ? `${failovers.length}: ` + failovers.map((a) => `${a.model} (${a.outcome})`).join(", ")
      : "none";
    $("attempts").replaceChildren(...attempts.map((a) => el("tr", { class: a.outcome === "ok" ? "ok" : "failed" },
      el("th", { scope: "row" }, a.model),
      el("td", {}, a.outcome),
      el("td", { class: "num" }, a.status ?? ""),
      el("td", { class: "num" }, typeof a.duration_ms === "number" ? `${a.duration_ms} ms` : ""),
      el("td", {}, a.message ?? ""))));
    $("answer").hidden = false;
  }

  // ---- usage (GET usage?group_by=day; the view exists only while the service answers it) --------

  async function probeUsage() {
    try {
      renderUsage(await callApi("usage?group_by=day"));
      showUsageTab(true);
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      showUsageTab(false); // 404: no budgets in this service yet; 403: no key yet
    }
  }

  // Distinct hues that read on light and dark backgrounds; models take them in id order.
  const PALETTE = ["#3b73d9", "#e07b00", "#17a072", "#c8417e", "#8060d8", "#9a8500", "#0094ad", "#c2502f"];

  function renderUsage(data) {
    const totals = data.totals || {};
    const groups = data.groups || [];
    $("usage-range").textContent =
      `${data.scope === "all" ? "All callers" : `Caller ${data.caller}`}, ${data.from} to ${data.to}, per ${data.group_by}.`;
    const facts = [["Requests", count.format(totals.requests ?? 0)], ["Cost", usd(totals.cost_usd)],
      ["Baseline cost", usd(totals.baseline_cost_usd)], ["Saved", usd(totals.saved_usd)]];
    $("usage-totals").replaceChildren(...facts.flatMap(([name, value]) => [el("dt", {}, name), el("dd", {}, value)]));

    const models = [...new Set(groups.flatMap((g) => Object.keys(g.by_model || {})))].sort();
    const color = (id) => PALETTE[models.indexOf(id) % PALETTE.length];
    drawSpend($("usage-chart"), groups, models, color);
    $("usage-legend").replaceChildren(...models.map((id) => el("li", {},
      svg("svg", { viewBox: "0 0 20 20" }, svg("rect", { x: 3, y: 3, width: 14, height: 14, fill: color(id) })), id)));
    $("usage-days").replaceChildren(...(groups.length
      ? groups.map((g) => el("tr", { "data-day": g.key },
        el("th", { scope: "row" }, g.key),
        el("td", { class: "num" }, count.format(g.requests ?? 0)),
        el("td", { class: "num" }, usd(g.cost_usd)),
        el("td", {}, Object.entries(g.by_model || {}).map(([id, m]) => `${id} ${usd(m.cost_usd)}`).join(", "))))
      : [el("tr", {}, el("td", { colspan: 4, class: "muted" }, "No requests in this period."))]));
    renderWindows((data.budget && data.budget.windows) || []);
  }

  // The spend chart's margins, in pixels.
  const SPEND = { left: 72, right: 12, top: 16, bottom: 40 };

  // One stacked bar per day: a <rect data-model data-day> per model that spent that day, in id order
  // from the bottom, on a linear dollar axis from $0 to a round number above the dearest day.
  function drawSpend(chart, groups, models, color) {
    drawAtWidth(chart, (width) => Math.round(Math.min(340, Math.max(220, width * 0.45))),
      (width, height) => plotSpend(chart, width, height, groups, models, color));
  }

  function plotSpend(chart, width, height, groups, models, color) {
    const s = SPEND;
    const bottom = height - s.bottom;
    const sums = groups.map((g) => Object.values(g.by_model || {}).reduce((sum, m) => sum + amount(m.cost_usd), 0));
    const dearest = Math.max(0, ...sums, ...groups.map((g) => amount(g.cost_usd)));
    // Gridlines at a round step ($0.0005, $0.001, ...), the axis ending at the first one above the dearest day.
    const step = niceStep(dearest / 5);
    const lines = Math.max(1, Math.ceil(dearest / step - 1e-9));
    const top = step * lines;
    const y = (value) => bottom - (value / top) * (bottom - s.top);
    const band = (width - s.left - s.right) / Math.max(groups.length, 1);
    const barWidth = Math.min(48, band * 0.7);
    const axes = svg("g", { class: "axes" });
    const grid = svg("g", { class: "grid" });
    for (let i = 0; i <= lines; i++) {
      const value = step * i;
      grid.append(svg("line", { x1: s.left, x2: width - s.right, y1: y(value), y2: y(value) }));
      axes.append(svg("text", { x: s.left - 6, y: y(value) + 4, "text-anchor": "end" }, usd(Number(value.toPrecision(6)))));
    }
    axes.append(svg("line", { class: "axis", x1: s.left, x2: width - s.right, y1: bottom, y2: bottom }));
    const bars = svg("g", { class: "bars" });
    const labelEvery = Math.ceil(groups.length / Math.max(2, Math.floor((width - s.left) / 56))); // labels never overlap
    groups.forEach((g, i) => {
      const bx = s.left + band * i + (band - barWidth) / 2;
      let base = 0;
      for (const id of models) {
        const part = (g.by_model || {})[id];
        if (!part) continue;
        const cost = amount(part.cost_usd);
        bars.append(svg("rect", {
          "data-model": id, "data-day": g.key, "data-usd": cost, fill: color(id),
          x: bx, width: barWidth, y: y(base + cost), height: Math.max(0, y(base) - y(base + cost)),
        }, svg("title", {}, `${g.key}, ${id}: ${usd(cost)} (${count.format(part.requests ?? 0)} requests)`)));
        base += cost;
      }
      if (i % labelEvery === 0) {
        // "2026-12-01" is labelled "12-01": the year is in the range above the chart.
        const label = /^\d{4}-\d{2}-\d{2}$/.test(g.key) ? g.key.slice(5) : g.key;
        axes.append(svg("text", { x: bx + barWidth / 2, y: bottom + 16, "text-anchor": "middle" }, label));
      }
    });
    chart.replaceChildren(grid, axes, bars);
  }

  // The smallest of 1, 2, 2.5, 5 or 10 times a power of ten at or above the value ($0.001 for nothing spent).
  function niceStep(value) {
    if (!(value > 0)) return 0.001;
    const power = 10 ** Math.floor(Math.log10(value));
    const multiple = [1, 2, 2.5, 5, 10].find((m) => m * power >= value * (1 - 1e-12));
    return Number((multiple * power).toPrecision(6));
  }

  function renderWindows(windows) {
    $("budget-windows").replaceChildren(...(windows.length ? windows.map((w) => {
      const limit = amount(w.limit_usd);
      const share = (value) => (limit > 0 ? Math.min(100, Math.max(0, (amount(value) / limit) * 100)) : 0);
      const spent = share(w.spent_usd);
      const reserved = Math.min(share(w.reserved_usd), 100 - spent);
      const resets = new Date(w.resets_at);
      const held = typeof w.reserved_usd === "number" ? `, ${usd(w.reserved_usd)} reserved` : "";
      return el("li", { "data-window": w.window },
        el("strong", {}, `${w.window === "day" ? "Day" : w.window === "month" ? "Month" : w.window} ${w.period}`),
        `: ${usd(w.remaining_usd)} remaining of ${usd(w.limit_usd)} (${usd(w.spent_usd)} spent${held}); resets `,
        el("time", { datetime: w.resets_at }, Number.isNaN(resets.getTime()) ? String(w.resets_at) : resets.toLocaleString()),
        // The bar repeats the sentence for the eye: spent, then reserved, of the limit.
        svg("svg", { class: "meter", viewBox: "0 0 100 6", preserveAspectRatio: "none", "aria-hidden": "true" },
          svg("rect", { class: "meter-track", x: 0, y: 0, width: 100, height: 6 }),
          svg("rect", { class: "meter-spent", x: 0, y: 0, width: spent, height: 6 }),
          svg("rect", { class: "meter-reserved", x: spent, y: 0, width: reserved, height: 6 })));
    }) : [el("li", { class: "muted" }, "No budget is set.")]));
  }

  // ---- tabs (the usage view appears once the service answers GET usage) --------------------------

  const tabs = [$("tab-route"), $("tab-usage")];

  function selectTab(tab) {
    for (const t of tabs) {
      const on = t === tab;
      t.setAttribute("aria-selected", String(on));
      t.tabIndex = on ? 0 : -1; // one tab stop for the tab list; arrows move within it
      $(t.getAttribute("aria-controls")).hidden = !on;
    }
  }

  function showUsageTab(on) {
    // With the route view alone there is nothing to choose between: no tab list at all.
    $("tab-usage").hidden = !on;
    $("tab-usage").parentElement.hidden = !on;
    if (!on && $("tab-usage").getAttribute("aria-selected") === "true") selectTab($("tab-route"));
  }

  for (const tab of tabs) tab.addEventListener("click", () => selectTab(tab));
  $("tab-route").parentElement.addEventListener("keydown", (event) => {
    if (event.key !== "ArrowLeft" && event.key !== "ArrowRight") return;
    const visible = tabs.filter((t) => !t.hidden);
    const next = visible[(visible.indexOf(document.activeElement) + (event.key === "ArrowRight" ? 1 : visible.length - 1)) % visible.length];
    selectTab(next);
    next.focus();
  });

  // For tests and the console: the drawing code can be fed directly.
  window.costroutePlayground = { renderDecision, renderAnswer, renderUsage, drawCandidates, isRemoved };

  loadAll();
})();
