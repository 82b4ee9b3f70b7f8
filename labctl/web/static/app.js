// labctl live view. Frames are long-polled one at a time: the next request leaves
// only after the last frame is drawn, so a slow browser skips frames instead of
// queueing them. State (jobs, devices, artifacts) is polled once a second.
"use strict";

const $ = (id) => document.getElementById(id);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
let state = null;
let lastBitmap = null;
let frameTimes = [];
let mapsSeq = -1;
let calKey = "";
let runKey = "";

function fmtExposure(s) {
  if (s == null) return "–";
  return s >= 1 ? s.toFixed(3) + " s" : s >= 1e-3 ? (s * 1e3).toFixed(3) + " ms" : (s * 1e6).toFixed(1) + " µs";
}

function drawCamera() {
  const c = $("camera");
  const ctx = c.getContext("2d");
  if (lastBitmap) {
    if (c.width !== lastBitmap.width || c.height !== lastBitmap.height) {
      c.width = lastBitmap.width;
      c.height = lastBitmap.height;
    }
    ctx.drawImage(lastBitmap, 0, 0);
  }
  const ov = state && state.overlay;
  if (!ov || !$("show-overlay").checked) return;
  // frame pixel centres are at integers; canvas pixel i spans [i, i+1]
  const line = (pts, close) => {
    if (!pts.length) return;
    ctx.beginPath();
    ctx.moveTo(pts[0][0] + 0.5, pts[0][1] + 0.5);
    for (const p of pts.slice(1)) ctx.lineTo(p[0] + 0.5, p[1] + 0.5);
    if (close) ctx.closePath();
    ctx.stroke();
  };
  ctx.lineWidth = 1;
  ctx.strokeStyle = "rgba(80, 200, 255, 0.45)";
  for (const g of ov.grid) line(g, false);
  ctx.strokeStyle = "rgba(80, 200, 255, 0.9)";
  line(ov.outline, true);
  ctx.strokeStyle = "rgba(255, 220, 0, 0.95)";
  ctx.fillStyle = "rgba(255, 220, 0, 0.95)";
  ctx.font = "11px sans-serif";
  ov.regions.forEach((r, i) => {
    line(r, true);
    ctx.fillText(String(i), r[0][0] + 2, r[0][1] + 11);
  });
}

function drawHistogram(h) {
  const c = $("histogram");
  const ctx = c.getContext("2d");
  ctx.clearRect(0, 0, c.width, c.height);
  if (!h) return;
  const logs = h.counts.map((n) => Math.log10(1 + n));
  const top = Math.max(1, ...logs);
  const w = c.width / h.bins;
  h.counts.forEach((n, i) => {
    const y = (logs[i] / top) * (c.height - 14);
    ctx.fillStyle = i === h.bins - 1 && n > 0 ? "#e0524a" : "#7aa6d6";
    ctx.fillRect(i * w, c.height - 12 - y, Math.max(1, w - 1), y);
  });
  ctx.fillStyle = "#9fb3c8";
  ctx.font = "10px sans-serif";
  ctx.fillText("0", 0, c.height - 1);
  ctx.fillText(h.max_dn.toFixed(0) + " DN", c.width - 48, c.height - 1);
}

async function frameLoop() {
  let seq = 0;
  for (;;) {
    try {
      const r = await fetch(`/api/frame.jpg?after=${seq}&scale=${$("scale").value}`, { cache: "no-store" });
      if (r.status === 200) {
        seq = Number(r.headers.get("X-Frame-Seq"));
        lastBitmap = await createImageBitmap(await r.blob());
        drawCamera();
        $("frame-seq").textContent = String(seq);
        const now = performance.now();
        frameTimes = frameTimes.filter((t) => now - t < 3000).concat([now]);
        $("frame-rate").textContent = (frameTimes.length / 3).toFixed(1) + " frames/s";
      } else if (r.status !== 204) {
        await sleep(1000);
      }
    } catch (e) {
      await sleep(1000);
    }
  }
}

function setInd(id, text, cls) {
  const el = $(id);
  el.textContent = text;
  el.className = "ind " + (cls || "");
}

function renderState() {
  const s = state;
  $("bench-name").textContent = s.bench ? `— bench ${s.bench.bench}` : "";
  const err = $("feed-error");
  err.hidden = !s.error;
  err.textContent = s.error || "";
  err.className = "ind on";
  const st = s.status || {};
  const dev = st.devices || {};
  const laser = dev.laser || {};
  const shutter = dev.shutter;
  const laserOn = laser.is_on ?? laser.on ?? laser.emitting;
  setInd("laser", laserOn == null ? "laser ?" : laserOn ? "laser ON" : "laser off", laserOn ? "on" : "off");
  if (shutter == null) setInd("shutter", "no shutter", "");
  else {
    const open = shutter.is_open ?? shutter.open;
    setInd("shutter", open ? "shutter OPEN" : "shutter closed", open ? "on" : "off");
  }
  const lease = st.lease;
  setInd("lease", lease && lease.holder ? `lease: ${lease.holder}` : "lease: free", lease && lease.holder ? "warn" : "");
  // job: the running one, else the newest
  const jobs = st.jobs || [];
  const job = jobs.find((j) => j.state === "running" || j.state === "queued") || jobs[jobs.length - 1];
  if (job) {
    $("job").textContent = `${job.kind} ${job.job} — ${job.state} — ${job.done}/${job.total}` +
      (job.error ? ` — ${job.error.message}` : "");
    $("job").dataset.state = job.state;
    $("job").dataset.job = job.job;
    $("job-progress").max = Math.max(1, job.total);
    $("job-progress").value = job.done;
  } else {
    $("job").textContent = "no job";
    $("job").dataset.state = "";
  }
  const d = st.deployed;
  $("deployed").textContent = d ? `${d.name} (${(d.model_sha256 || "").slice(0, 12)}) on ${d.layers.join(", ")}` : "nothing deployed";
  const f = s.frame || {};
  $("frame-source").textContent = f.source || "–";
  $("frame-exposure").textContent = fmtExposure(f.exposure_s);
  $("frame-saturated").textContent = f.saturated == null ? "–" : String(f.saturated);
  $("frame-saturated").className = f.saturated ? "warn" : "";
  $("frame-peak").textContent = f.max_dn == null ? "–" : `${f.max_dn.toFixed(0)} DN` + (f.histogram ? ` / ${f.histogram.max_dn.toFixed(0)}` : "");
  $("frame-age").textContent = f.age_s == null ? "–" : `${f.age_s.toFixed(2)} s`;
  drawHistogram(f.histogram);
  $("overlay-source").textContent = s.overlay
    ? `registration ${s.overlay.source.registration}` + (s.overlay.source.model ? `, regions of ${s.overlay.source.model}` : "")
    : "no registration yet";
  renderMaps(s.maps || {});
  renderArtifacts(s.artifacts || {});
  drawCamera();
}

function renderMaps(m) {
  if (m.seq === mapsSeq) return;
  mapsSeq = m.seq;
  const box = $("slms");
  box.replaceChildren(...(m.slms || []).map((name) => {
    const fig = document.createElement("figure");
    const img = document.createElement("img");
    img.src = `/api/slm/${encodeURIComponent(name)}.png?seq=${m.seq}`;
    img.alt = `map shown on ${name}`;
    const cap = document.createElement("figcaption");
    cap.textContent = name;
    fig.append(img, cap);
    return fig;
  }));
}

function plotImgs(kind, names, stamp) {
  return names.map((n) => {
    const img = document.createElement("img");
    img.src = `/api/files/${kind}/${encodeURIComponent(n)}?t=${stamp}`;
    img.alt = n;
    img.title = n;
    return img;
  });
}

function renderArtifacts(a) {
  const cal = a.calibration_plots || [];
  const ck = cal.join("|");
  if (ck !== calKey) {
    calKey = ck;
    const box = $("cal-plots");
    if (cal.length) box.replaceChildren(...plotImgs("calibration", cal, Date.now()));
    else box.innerHTML = '<span class="muted">none yet</span>';
  }
  const run = a.run;
  const rk = run ? run.id + "|" + run.plots.join("|") + "|" + run.report.length : "";
  if (rk !== runKey) {
    runKey = rk;
    $("run-id").textContent = run ? run.id : "";
    $("run-report").textContent = run ? run.report : "none yet";
    $("run-report").className = run ? "" : "muted";
    $("run-plots").replaceChildren(...(run ? plotImgs("run", run.plots, Date.now()) : []));
  }
}

async function stateLoop() {
  for (;;) {
    try {
      const r = await fetch("/api/state", { cache: "no-store" });
      if (r.ok) {
        state = await r.json();
        renderState();
      }
    } catch (e) {
      $("feed-error").hidden = false;
      $("feed-error").textContent = "live view unreachable";
    }
    await sleep(1000);
  }
}

async function act(name) {
  const out = $("action-result");
  out.textContent = `${name}…`;
  try {
    const r = await fetch(`/api/action/${name}`, { method: "POST", headers: { "X-Labctl-Action": "1" } });
    const body = await r.json();
    out.textContent = body.ok ? `${name}: done` : `${name} refused: ${body.error}`;
    out.dataset.outcome = body.ok ? "ok" : "refused";
  } catch (e) {
    out.textContent = `${name} failed: ${e}`;
    out.dataset.outcome = "failed";
  }
}

for (const b of document.querySelectorAll("button[data-action]")) {
  b.addEventListener("click", () => act(b.dataset.action));
}
$("show-overlay").addEventListener("change", drawCamera);
frameLoop();
stateLoop();
