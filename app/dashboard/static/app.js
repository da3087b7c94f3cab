// The coding-loops dashboard. Every string shown comes from events that agents can
// influence, so the DOM is built with createElement/textContent only: never innerHTML.
"use strict";

(() => {
  const state = {
    token: sessionStorage.getItem("loops-token") || "",
    view: null,
    open: new Set(), // evidence <details> the person opened: kept open across redraws
    feedIds: new Set(),
    refreshTimer: null,
    resetTarget: null,
  };
  const FEED_MAX = 200;
  const DECISIONS = ["retry", "skip", "approve", "reject", "abort"];

  // ------------------------------------------------------------------ helpers

  function h(tag, props, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") el.className = value;
      else if (key === "dataset") Object.assign(el.dataset, value);
      else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
      else el.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  const $ = (id) => document.getElementById(id);
  const badge = (text, kind) => h("span", { class: `badge ${kind || ""} b-${text}` }, text);
  const time = (ts) => new Date(ts).toLocaleTimeString([], { hour12: false });
  const hhmm = (ts) => new Date(ts).toLocaleTimeString([], { hour12: false, hour: "2-digit", minute: "2-digit" });
  const money = (usd) => `$${(usd || 0).toFixed(2)}`;
  const short = (sha) => (sha ? sha.slice(0, 8) : "");

  function tokens(n) {
    if (n >= 1e6) return `${(n / 1e6).toFixed(1)}M`;
    if (n >= 1e3) return `${(n / 1e3).toFixed(1)}k`;
    return String(n || 0);
  }

  function ago(ts) {
    if (!ts) return "";
    const s = Math.max(0, Math.round((Date.now() - new Date(ts).getTime()) / 1000));
    if (s < 60) return `${s}s ago`;
    if (s < 3600) return `${Math.floor(s / 60)}m ago`;
    if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
    return `${Math.floor(s / 86400)}d ago`;
  }

  function flash(message, kind) {
    const box = $("flash");
    box.replaceChildren(h("div", { class: `flash ${kind || "ok"}` }, message));
    clearTimeout(flash.timer);
    flash.timer = setTimeout(() => box.replaceChildren(), 8000);
  }

  function setToken(token) {
    state.token = token;
    if (token) sessionStorage.setItem("loops-token", token);
    else sessionStorage.removeItem("loops-token");
    $("token-state").textContent = token ? "token set" : "no token: read only";
  }

  async function post(path, body) {
    if (!state.token) {
      flash("Enter the dashboard token first: `loops dashboard` prints it, and it is in .loops/dashboard.token.", "error");
      return null;
    }
    let response;
    try {
      response = await fetch(path, {
        method: "POST",
        headers: { "Content-Type": "application/json", "X-Loops-Token": state.token },
        body: JSON.stringify(body),
      });
    } catch (err) {
      flash(`The dashboard is unreachable: ${err}`, "error");
      return null;
    }
    const data = await response.json().catch(() => ({}));
    if (!response.ok) {
      flash(data.error || `HTTP ${response.status}`, "error");
      return null;
    }
    return data;
  }

  // ------------------------------------------------------------------ rendering

  function renderTotals(view) {
    const t = view.totals;
    const item = (label, value, cls) => h("div", { class: `total ${cls || ""}` }, h("b", {}, value), " ", label);
    $("totals").replaceChildren(
      item("loops", t.loops),
      item("merged", `${t.passed}/${t.total}`),
      item("tokens", tokens(t.tokens)),
      item("cost", money(t.cost_usd)),
      item("open escalations", t.open_escalations, t.open_escalations ? "alert" : ""),
      item("in merge queue", t.merge_queue),
    );
  }

  function evidence(loop, task) {
    const v = task.verification;
    if (!v) return h("span", { class: "muted" }, "-");
    const key = `${loop}/${task.task_id}`;
    const held = v.criteria.filter((c) => c.passed).length;
    const label = v.passed === null ? "verifying…" : `${v.passed ? "✓" : "✗"} ${held}/${v.criteria.length} checks at ${short(v.commit)}`;
    const details = h(
      "details",
      { class: `evidence ${v.passed ? "pass" : v.passed === false ? "fail" : ""}`, ontoggle: (e) => {
        if (e.target.open) state.open.add(key);
        else state.open.delete(key);
      } },
      h("summary", {}, label),
      v.reason ? h("p", { class: "reason" }, `${v.verdict}: ${v.reason}`) : null,
      v.flagged_files.length ? h("p", { class: "reason" }, `flagged: ${v.flagged_files.join(", ")}`) : null,
      h(
        "ul",
        { class: "criteria" },
        v.criteria.map((c) =>
          h(
            "li",
            { class: c.passed ? "pass" : c.passed === false ? "fail" : "unjudged" },
            h("span", { class: "mark" }, c.passed ? "✓" : c.passed === false ? "✗" : "?"),
            " ",
            h("span", { class: "criterion" }, c.criterion),
            h(
              "div",
              { class: "meta" },
              c.command ? h("code", {}, c.command) : `${c.kind} check`,
              c.exit_code !== null ? ` exit ${c.exit_code}` : "",
              ` · ${c.duration_s.toFixed(1)}s`,
              c.timed_out ? " · timed out" : "",
              c.judged_by ? ` · judged by ${c.judged_by}` : "",
            ),
            c.output_tail ? h("pre", {}, c.output_tail) : null,
          ),
        ),
      ),
    );
    details.open = state.open.has(key);
    return details;
  }

  // Problem loops first: the groups in the order of the view's `Attention`.
  const ATTENTION = ["blocked", "waiting on a person", "silent", "failing", "working", "waiting", "stopped", "done"];
  const MARKS = ["iteration", "failed", "verified", "rejected", "merged", "conflicted"];
  const SVG = "http://www.w3.org/2000/svg";

  function svg(tag, attrs, ...children) {
    const el = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, String(value));
    for (const child of children) el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    return el;
  }

  // Iterations, verdicts and merges of one loop over time: one row per kind of mark.
  function timeline(loop, now) {
    const marks = loop.timeline || [];
    const width = 600, row = 7, height = row * 3 + 2;
    const box = svg("svg", { class: "timeline", viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none", role: "img" });
    if (!marks.length) return h("div", { class: "timeline-wrap muted" }, "no iterations yet");
    const start = Date.parse(marks[0].ts);
    const span = Math.max(now - start, 60000);
    const rows = { iteration: 0, failed: 0, verified: 1, rejected: 1, merged: 2, conflicted: 2 };
    box.append(svg("title", {}, `${marks.length} events since ${time(marks[0].ts)}: iterations, verdicts, merges`));
    for (const mark of marks) {
      const x = ((Date.parse(mark.ts) - start) / span) * (width - 4) + 2;
      const y = 1 + (rows[mark.kind] ?? 0) * row;
      box.append(svg("rect", { class: `tl-mark tl-${MARKS.includes(mark.kind) ? mark.kind : "iteration"}`, x: x.toFixed(1), y, width: 3, height: row - 1 }));
    }
    return h("div", { class: "timeline-wrap", dataset: { marks: marks.length } }, box, h("span", { class: "muted legend" }, `since ${time(marks[0].ts)}`));
  }

  function renderLoops(view) {
    const now = Date.parse(view.as_of || new Date().toISOString());
    const rank = (loop) => {
      const i = ATTENTION.indexOf(loop.attention);
      return i < 0 ? ATTENTION.length : i;
    };
    const loops = Object.values(view.loops).sort((a, b) => rank(a) - rank(b) || a.name.localeCompare(b.name));
    if (!loops.length) {
      $("loops").replaceChildren(h("p", { class: "muted" }, "No loop has reported yet."));
      return;
    }
    const counts = {};
    for (const loop of loops) counts[loop.attention] = (counts[loop.attention] || 0) + 1;
    const summary = h(
      "div",
      { class: "attention-summary" },
      ATTENTION.filter((a) => counts[a]).map((a) => h("span", { class: `badge attention attention-${a.replace(/ /g, "-")}` }, `${a}: ${counts[a]}`)),
    );
    let group = null;
    $("loops").replaceChildren(
      summary,
      ...loops.flatMap((loop) => {
        const heading = loop.attention !== group ? h("h3", { class: "attention-group", dataset: { group: loop.attention } }, `${loop.attention} (${counts[loop.attention]})`) : null;
        group = loop.attention;
        return [heading, article(loop, now)].filter(Boolean);
      }),
    );
  }

  function article(loop, now) {
    const tasks = Object.values(loop.tasks).sort((a, b) => a.task_id.localeCompare(b.task_id));
    const control = (action, label) =>
      h("button", { class: `small ${action === "stop" ? "danger" : ""}`, dataset: { action, loop: loop.name }, onclick: () => control_(action, loop.name) }, label);
    return h(
      "article",
      { class: `loop health-${loop.health}`, dataset: { loop: loop.name } },
      h(
        "header",
        {},
        h("h3", {}, loop.name),
        badge(loop.status, "status"),
        badge(loop.health, "health"),
        h("span", { class: "muted" }, loop.agent || ""),
        h(
          "span",
          { class: "current" },
          loop.task_id ? `on ${loop.task_id}` : "idle",
          loop.iteration ? ` · iteration ${loop.iteration}` : "",
          loop.waiting_until
            ? loop.waiting_until === loop.outage_until
              ? ` · API outage, retry at ${hhmm(loop.waiting_until)}`
              : ` · waiting for usage reset at ${hhmm(loop.waiting_until)}`
            : "",
        ),
        h("span", { class: "spacer" }),
        control("pause", "Pause"),
        control("resume", "Resume"),
        control("stop", "Stop"),
      ),
      h(
        "div",
        { class: "loop-stats" },
        h("progress", { max: Math.max(loop.total, 1), value: loop.passed }),
        h("span", {}, `${loop.passed}/${loop.total} merged`),
        h("span", {}, `${tokens(loop.tokens.input + loop.tokens.output + loop.tokens.cache_read + loop.tokens.cache_write)} tokens`),
        h("span", {}, money(loop.cost_usd)),
        loop.eta_s ? h("span", {}, `ETA ${Math.round(loop.eta_s / 60)} min`) : null,
        h("span", { class: "muted" }, loop.last_seen ? `heartbeat ${ago(loop.last_seen)}` : "no heartbeat yet"),
        loop.stopped_reason ? h("span", { class: "reason" }, `stopped: ${loop.stopped_reason}`) : null,
        loop.budget ? h("span", { class: "reason budget" }, loop.budget) : null,
      ),
      timeline(loop, now),
      tasks.length
        ? h(
            "table",
            { class: "tasks" },
            h("thead", {}, h("tr", {}, ["task", "status", "attempts", "iter", "cost", "verification evidence", ""].map((c) => h("th", {}, c)))),
            h(
              "tbody",
              {},
              tasks.map((task) =>
                h(
                  "tr",
                  { dataset: { task: task.task_id } },
                  h("td", { class: "task-id" }, task.task_id),
                  h("td", {}, badge(task.status, "task"), task.reason ? h("div", { class: "reason" }, task.reason) : null),
                  h("td", { class: "num" }, task.attempts),
                  h("td", { class: "num" }, task.iterations),
                  h("td", { class: "num" }, money(task.cost_usd)),
                  h("td", {}, evidence(loop.name, task)),
                  h("td", {}, h("button", { class: "small", onclick: () => openReset(loop.name, task.task_id) }, "Reset…")),
                ),
              ),
            ),
          )
        : h("p", { class: "muted" }, "No task started yet."),
    );
  }

  function escalationCard(esc) {
    const text = h("textarea", { name: "answer", rows: 2, placeholder: "Your answer: it goes into the loop's next prompt" });
    const decision = h("select", { name: "decision", "aria-label": "decision" }, h("option", { value: "" }, "no decision"), DECISIONS.map((d) => h("option", { value: d }, d)));
    const result = h("div", { class: "esc-result" });
    const button = h("button", { type: "submit", class: "primary" }, "Answer");
    const form = h(
      "form",
      {
        class: "answer-form",
        onsubmit: async (e) => {
          e.preventDefault();
          button.disabled = true;
          const data = await post("/api/answer", { escalation_id: esc.id, answer: text.value, decision: decision.value || null });
          button.disabled = false;
          if (data) {
            result.textContent = "Answer sent; waiting for the system to take it.";
            form.classList.add("sent");
            flash(`Answered ${esc.id}.`);
            scheduleRefresh();
          }
        },
      },
      text,
      h("div", { class: "row" }, decision, button),
    );
    return h(
      "div",
      { class: `esc sev-${esc.severity}`, dataset: { id: esc.id } },
      h(
        "div",
        { class: "esc-head" },
        h("b", { class: "esc-id" }, esc.id),
        badge(esc.severity || "?", "sev"),
        badge(esc.kind || "?", "kind"),
        h("span", { class: "esc-status" }, esc.status),
        h("span", { class: "muted" }, [esc.loop, esc.task_id].filter(Boolean).join(" / ")),
        h("span", { class: "muted age", dataset: { ts: esc.raised || "" } }, ago(esc.raised)),
      ),
      h("p", { class: "question" }, esc.question),
      esc.options.length
        ? h("div", { class: "options" }, "Options: ", esc.options.map((o) => h("button", { type: "button", class: "small option", onclick: () => { text.value = o; text.focus(); } }, o)))
        : null,
      form,
      result,
    );
  }

  function renderEscalations(view) {
    const all = Object.values(view.escalations);
    const open = all.filter((e) => e.status === "open" || e.status === "acknowledged");
    $("esc-count").textContent = open.length ? String(open.length) : "";
    const box = $("escalations");
    // Keyed update: a half-written answer must survive a redraw.
    const existing = new Map([...box.querySelectorAll(".esc")].map((el) => [el.dataset.id, el]));
    const keep = [];
    for (const esc of open) {
      let card = existing.get(esc.id);
      if (!card) card = escalationCard(esc);
      else {
        card.querySelector(".esc-status").textContent = esc.status;
        card.querySelector(".question").textContent = esc.question;
      }
      keep.push(card);
    }
    if (!keep.length) box.replaceChildren(h("p", { class: "muted" }, "No open escalations."));
    else box.replaceChildren(...keep);
    const closed = all.filter((e) => !open.includes(e)).slice(-5).reverse();
    $("escalations-closed").replaceChildren(
      ...closed.map((e) =>
        h(
          "div",
          { class: "esc closed", dataset: { id: e.id } },
          h("b", {}, e.id), " ", badge(e.status, "esc-state"), " ",
          h("span", { class: "muted" }, e.question),
          e.answer !== null ? h("div", {}, "Answer", e.decision ? ` [${e.decision}]` : "", ` by ${e.answered_by}: `, h("q", {}, e.answer)) : null,
          e.closed_reason ? h("div", { class: "muted" }, e.closed_reason) : null,
        ),
      ),
    );
  }

  function simpleTable(headers, rows, empty) {
    if (!rows.length) return h("p", { class: "muted" }, empty);
    return h("table", { class: "small-table" }, h("thead", {}, h("tr", {}, headers.map((c) => h("th", {}, c)))), h("tbody", {}, rows.map((r) => h("tr", {}, r.map((c) => h("td", {}, c))))));
  }

  function renderMerges(view) {
    const live = view.merges.filter((m) => m.status === "queued" || m.status === "merging");
    const done = view.merges.filter((m) => m.status === "merged" || m.status === "conflicted").slice(-5).reverse();
    $("merges").replaceChildren(
      simpleTable(
        ["", "loop", "task", "commit", "when", "note"],
        [...live, ...done].map((m) => [badge(m.status, "merge"), m.loop, m.task_id, h("code", {}, short(m.commit)), ago(m.ts), m.merged_commit ? `→ ${short(m.merged_commit)}` : m.reason === "conflict" && m.files.length ? m.files.join(", ") : m.reason]),
        "The merge queue is empty.",
      ),
    );
  }

  const COLORS = 8; // .c0 ... .c7 in style.css (the page's CSP allows no inline style)

  // Each loop's spend so far over time, on shared axes: a step line per loop (flat
  // between agent calls, up at each call of known cost), run on to now.
  function spendChart(series, now) {
    const loops = Object.keys(series).sort();
    const all = loops.flatMap((loop) => series[loop]);
    if (!all.length) return h("p", { class: "muted" }, "No agent call of known cost yet.");
    const width = 320, height = 140, left = 46, right = 6, top = 8, bottom = 18;
    const t0 = Math.min(...all.map((p) => Date.parse(p.ts)));
    const t1 = Math.max(now, ...all.map((p) => Date.parse(p.ts)));
    const span = Math.max(t1 - t0, 60000);
    const max = Math.max(...all.map((p) => p.cost_usd), 0.01);
    const x = (ms) => left + ((ms - t0) / span) * (width - left - right);
    const y = (usd) => top + (1 - usd / max) * (height - top - bottom);
    const chart = svg("svg", { class: "spend-chart", viewBox: `0 0 ${width} ${height}`, role: "img" });
    chart.append(
      svg("title", {}, `spend per loop since ${time(t0)}`),
      svg("line", { class: "axis", x1: left, y1: top, x2: left, y2: height - bottom }),
      svg("line", { class: "axis", x1: left, y1: height - bottom, x2: width - right, y2: height - bottom }),
      svg("text", { class: "tick", x: left - 4, y: top + 4, "text-anchor": "end" }, money(max)),
      svg("text", { class: "tick", x: left - 4, y: height - bottom, "text-anchor": "end" }, "$0"),
      svg("text", { class: "tick", x: left, y: height - 4 }, hhmm(t0)),
      svg("text", { class: "tick", x: width - right, y: height - 4, "text-anchor": "end" }, hhmm(t1)),
    );
    loops.forEach((loop, i) => {
      const points = series[loop];
      const coords = [[x(Date.parse(points[0].ts)), y(0)]];
      for (const p of points) {
        const px = x(Date.parse(p.ts));
        coords.push([px, coords[coords.length - 1][1]], [px, y(p.cost_usd)]);
      }
      coords.push([x(t1), coords[coords.length - 1][1]]);
      chart.append(
        svg("polyline", {
          class: `spend-line c${i % COLORS}`,
          "data-loop": loop,
          "data-calls": points.length,
          "data-usd": points[points.length - 1].cost_usd,
          points: coords.map(([cx, cy]) => `${cx.toFixed(1)},${cy.toFixed(1)}`).join(" "),
        }),
      );
    });
    const legend = h(
      "div",
      { class: "spend-legend" },
      loops.map((loop, i) =>
        h("span", { dataset: { loop } }, h("i", { class: `c${i % COLORS}` }), ` ${loop} ${money(series[loop][series[loop].length - 1].cost_usd)}`),
      ),
    );
    return h("div", { class: "spend-wrap" }, chart, legend);
  }

  function renderSpend(view) {
    const s = view.spend;
    const now = Date.parse(view.as_of || new Date().toISOString());
    const summary = h(
      "p",
      { class: "spend-summary" },
      `${money(s.merged_cost_usd)} on ${s.merged_tasks} merged task(s)`,
      s.cost_per_merged_task !== null ? ` (${money(s.cost_per_merged_task)} per merged task)` : "",
      ` · ${money(s.unmerged_cost_usd)} on ${s.unmerged_tasks} task(s) never merged`,
      s.uncosted_calls ? ` · ${s.uncosted_calls} call(s) of unknown cost` : "",
    );
    const receipts = s.receipts.slice(-20).reverse();
    $("spend").replaceChildren(
      spendChart(s.series, now),
      summary,
      simpleTable(
        ["loop", "task", "cost", "calls", "failed", "tokens in/out", "agent time", "verif."],
        receipts.map(({ loop, receipt: r }) => [
          loop,
          r.task_id,
          money(r.cost_usd) + (r.uncosted_calls ? ` + ${r.uncosted_calls} unknown` : ""),
          r.agent_calls,
          `${r.failed_calls} (${money(r.failed_cost_usd)})`,
          `${tokens(r.tokens_in)} / ${tokens(r.tokens_out)}`,
          `${Math.round(r.wall_time_s)}s`,
          r.verification_runs,
        ]),
        "No receipt yet: a task gets one when it merges.",
      ),
    );
    $("spend").querySelector("table")?.classList.add("receipts");
  }

  function renderFlaky(view) {
    const flaky = Object.values(view.flaky || {}).sort((a, b) => b.count - a.count);
    $("flaky-count").textContent = flaky.length ? String(flaky.length) : "";
    $("flaky").replaceChildren(
      simpleTable(
        ["count", "check", "last", "when"],
        flaky.map((f) => [String(f.count), h("code", {}, f.command), f.escalation_id ? badge(`asked ${f.escalation_id}`, "alert") : badge(f.blocked ? "blocked" : "landed", "flaky"), ago(f.ts)]),
        "No flaky merge check.",
      ),
    );
  }

  function renderMonitor(view) {
    const actions = view.monitor_actions.slice(-8).reverse();
    $("monitor").replaceChildren(
      actions.length
        ? h("ul", { class: "plain" }, actions.map((a) => h("li", {}, badge(a.action, "action"), " ", h("b", {}, a.loop || "-"), a.task_id ? ` / ${a.task_id}` : "", ` (${a.rule}): ${a.reason}`, a.hint ? h("div", { class: "muted" }, `hint: ${a.hint}`) : null, h("div", { class: "muted" }, ago(a.ts)))))
        : h("p", { class: "muted" }, "No monitor action yet."),
    );
  }

  function renderCommands(view) {
    const commands = view.commands.slice(-8).reverse();
    $("commands").replaceChildren(
      simpleTable(
        ["command", "loop", "by", "when", ""],
        commands.map((c) => [c.type + (c.task_id ? ` ${c.task_id}` : ""), c.loop || "-", c.by, ago(c.ts), c.acknowledged ? badge("acknowledged", "ack") : badge("waiting", "wait")]),
        "No command sent yet.",
      ),
    );
  }

  function feedLine(line) {
    return h(
      "li",
      { dataset: { type: line.type, id: line.id } },
      h("time", {}, time(line.ts)),
      h("span", { class: "f-loop" }, line.loop || "-"),
      h("span", { class: `f-type t-${line.type.split(".")[0]}` }, line.type),
      h("span", { class: "f-text" }, line.text),
    );
  }

  function addFeed(line, atTop = true) {
    if (state.feedIds.has(line.id)) return;
    state.feedIds.add(line.id);
    const feed = $("feed");
    const li = feedLine(line);
    if (atTop) {
      li.classList.add("new");
      feed.prepend(li);
    } else feed.append(li);
    while (feed.children.length > FEED_MAX) {
      state.feedIds.delete(feed.lastElementChild.dataset.id);
      feed.lastElementChild.remove();
    }
  }

  function render(view) {
    state.view = view;
    renderTotals(view);
    renderLoops(view);
    renderEscalations(view);
    renderMerges(view);
    renderSpend(view);
    renderFlaky(view);
    renderMonitor(view);
    renderCommands(view);
    if (!state.feedIds.size) for (const line of view.recent.slice(-FEED_MAX).reverse()) addFeed(line, false);
  }

  // ------------------------------------------------------------------ data

  async function refresh() {
    try {
      const response = await fetch("/api/view", { cache: "no-store" });
      if (response.ok) render(await response.json());
    } catch (err) {
      setLive(false);
    }
  }

  function scheduleRefresh() {
    if (state.refreshTimer) return;
    state.refreshTimer = setTimeout(() => {
      state.refreshTimer = null;
      refresh();
    }, 250);
  }

  function setLive(on) {
    $("live").className = `dot ${on ? "on" : "off"}`;
    $("live-text").textContent = on ? "live" : "reconnecting…";
  }

  function connect() {
    const source = new EventSource("/api/events");
    source.addEventListener("hello", () => {
      setLive(true);
      refresh();
    });
    source.addEventListener("event", (message) => {
      addFeed(JSON.parse(message.data));
      scheduleRefresh();
    });
    source.onerror = () => setLive(false); // EventSource reconnects by itself
  }

  // ------------------------------------------------------------------ actions

  async function control_(action, loop, taskId, hint) {
    const data = await post("/api/control", { action, loop, task_id: taskId || null, hint: hint || null });
    if (data) {
      flash(`Sent ${data.type} to ${loop}; the worker acknowledges it when it obeys.`);
      scheduleRefresh();
    }
  }

  function openReset(loop, taskId) {
    state.resetTarget = { loop, taskId };
    $("reset-what").textContent = `${loop} / ${taskId}`;
    $("reset-hint").value = "";
    $("reset-dialog").showModal();
  }

  function init() {
    const match = location.hash.match(/token=([^&]+)/);
    if (match) {
      setToken(decodeURIComponent(match[1]));
      history.replaceState(null, "", location.pathname + location.search);
    } else setToken(state.token);
    $("token-form").addEventListener("submit", async (e) => {
      e.preventDefault();
      const given = $("token").value.trim();
      if (!given) return setToken("");
      setToken(given);
      if (await post("/api/token", {})) flash("Token accepted.");
      else setToken("");
      $("token").value = "";
    });
    $("reset-cancel").addEventListener("click", () => $("reset-dialog").close());
    $("reset-form").addEventListener("submit", () => {
      const target = state.resetTarget;
      if (target) control_("reset", target.loop, target.taskId, $("reset-hint").value.trim());
    });
    connect();
    refresh();
    setInterval(refresh, 5000); // health and ages move even when nothing is published
  }

  document.addEventListener("DOMContentLoaded", init);
})();
