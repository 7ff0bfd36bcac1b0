// skelgraph web page: camera, video file or skeleton file -> WebSocket /v1/stream -> live label,
// probability bars, skeleton and forecast overlay. No build step, no external resources.
"use strict";

const $ = (id) => document.getElementById(id);

const CAPTURE_WIDTH = 640; // JPEG frames are scaled down to this width at most
const JPEG_QUALITY = 0.75;
const MAX_IN_FLIGHT_FRAMES = 1; // camera/video: a new frame only when the last one was answered
const MAX_IN_FLIGHT_REPLAY = 4; // skeleton replay: every frame is sent, a few may be pending

const state = {
  info: null, // GET /v1/models
  ws: null,
  connecting: null,
  source: null, // "camera" | "video" | "skeleton"
  timer: null,
  pending: [], // send times of unanswered messages, in order
  frameSize: null, // {w, h} of the coordinate frame of the keypoints
  replay: null, // {frames, index, fps}
  lastPrediction: null,
  attentionDrawn: 0, // attention edges in the last drawing
};

const ATTENTION_EDGES = 6; // edges of the attention overlay

// the attention overlay: asks the stream for the edges (or stops them) when toggled
function sendAttention() {
  send(JSON.stringify({ attention: $("attention-toggle").checked ? ATTENTION_EDGES : 0 }));
}

const video = $("video");
const overlay = $("overlay");
const capture = document.createElement("canvas");

// ---------------------------------------------------------------------------------------------
// model information and probability bars

async function loadInfo() {
  const response = await fetch("/v1/models");
  if (response.status === 503) {  // the model is still loading: say so, and ask again
    $("model-info").textContent = (await response.json()).error;
    setTimeout(loadInfo, 1000);
    return;
  }
  state.info = await response.json();
  const model = state.info.models[0];
  $("model-info").textContent =
    `${model.name} · ${model.model} · ${model.classes.length} classes · ${model.layout} joints`;
  buildBars(model.classes);
  if (!state.info.pose.available) {
    const note = $("pose-note");
    note.hidden = false;
    note.textContent =
      "Camera and video need pose estimation on the server, which is unavailable: " +
      state.info.pose.reason + " Skeleton files work without it.";
  }
}

function buildBars(classes) {
  const bars = $("bars");
  bars.replaceChildren();
  for (const name of classes) {
    const row = document.createElement("div");
    row.className = "bar";
    row.dataset.cls = name;
    row.innerHTML = '<span class="name"></span><span class="track"><span class="fill"></span>' +
      '</span><span class="value"></span>';
    row.querySelector(".name").textContent = name;
    row.querySelector(".name").title = name;
    bars.append(row);
  }
}

// ---------------------------------------------------------------------------------------------
// WebSocket

function setConnection(text, kind) {
  const badge = $("connection");
  badge.textContent = text;
  badge.dataset.state = kind;
}

function connect() {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) return Promise.resolve(state.ws);
  if (state.connecting) return state.connecting;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${scheme}://${location.host}/v1/stream`);
  ws.binaryType = "arraybuffer";
  state.pending = [];
  state.connecting = new Promise((resolve, reject) => {
    ws.onmessage = (event) => {
      const message = JSON.parse(event.data);
      if (message.type === "hello") {
        state.ws = ws;
        state.connecting = null;
        setConnection(`connected · session ${message.session}`, "open");
        if ($("attention-toggle").checked) sendAttention();
        resolve(ws);
        return;
      }
      onReply(message);
    };
    ws.onclose = (event) => {
      const wasOpen = state.ws === ws;
      state.ws = null;
      state.connecting = null;
      const reason = event.reason || `code ${event.code}`;
      setConnection(`disconnected (${reason})`, event.code === 1000 ? "closed" : "error");
      if (event.code !== 1000 && event.code !== 1005) showError(`stream closed: ${reason}`);
      if (wasOpen) stopSource(false);
      reject(new Error(`stream closed: ${reason}`));
    };
    ws.onerror = () => setConnection("connection error", "error");
  });
  state.connecting.catch(() => {});
  return state.connecting;
}

function send(message) {
  const ws = state.ws;
  if (!ws || ws.readyState !== WebSocket.OPEN) return false;
  ws.send(message);
  state.pending.push(performance.now());
  return true;
}

function onReply(message) {
  const sent = state.pending.shift();
  const latency = sent === undefined ? null : performance.now() - sent;
  if (message.type === "error") {
    showError(message.error);
    return;
  }
  if (message.type === "prediction") {
    hideError();
    state.lastPrediction = message;
    showPrediction(message, latency);
    draw(message);
  }
}

// ---------------------------------------------------------------------------------------------
// sources

async function startCamera() {
  stopSource();
  try {
    const stream = await navigator.mediaDevices.getUserMedia({
      video: { width: { ideal: 640 }, height: { ideal: 480 } },
      audio: false,
    });
    video.srcObject = stream;
    await video.play();
  } catch (error) {
    showError(`camera: ${error.message || error}`);
    return;
  }
  await startFrames("camera");
}

async function openVideo(file) {
  stopSource();
  video.srcObject = null;
  video.src = URL.createObjectURL(file);
  video.onended = () => stopSource();
  try {
    await video.play();
  } catch (error) {
    showError(`video ${file.name}: ${error.message || error}`);
    return;
  }
  await startFrames("video");
}

async function startFrames(source) {
  state.source = source;
  $("placeholder").hidden = true;
  video.hidden = false;
  $("stop").disabled = false;
  if (!state.info.pose.available) {
    setStatus(`${source} running · no recognition: pose estimation is unavailable on the server`,
      true);
    showError(state.info.pose.reason);
    return;
  }
  try {
    await connect();
  } catch (error) {
    return;
  }
  send(JSON.stringify({ reset: true }));
  setStatus(`${source}: sending frames`);
  state.timer = setInterval(sendFrame, 1000 / rate());
}

function sendFrame() {
  if (state.pending.length >= MAX_IN_FLIGHT_FRAMES || video.readyState < 2) return;
  const scale = Math.min(1, CAPTURE_WIDTH / video.videoWidth);
  capture.width = Math.round(video.videoWidth * scale);
  capture.height = Math.round(video.videoHeight * scale);
  capture.getContext("2d").drawImage(video, 0, 0, capture.width, capture.height);
  const size = { w: capture.width, h: capture.height };
  state.pending.push(null); // reserve the slot while the JPEG is encoded
  capture.toBlob((blob) => {
    state.pending.pop();
    if (!blob || !state.source) return;
    state.frameSize = size;
    blob.arrayBuffer().then((buffer) => send(buffer));
  }, "image/jpeg", JPEG_QUALITY);
}

async function replaySkeleton(file) {
  stopSource();
  setStatus(`reading ${file.name}…`);
  const form = new FormData();
  form.append("file", file);
  let body;
  try {
    const response = await fetch("/v1/recognize?keypoints=true", { method: "POST", body: form });
    body = await response.json();
    if (!response.ok) throw new Error(body.error || response.statusText);
  } catch (error) {
    showError(`${file.name}: ${error.message || error}`);
    setStatus("waiting for input");
    return;
  }
  try {
    await connect();
  } catch (error) {
    return;
  }
  state.source = "skeleton";
  state.frameSize = skeletonFrame(body.keypoints);
  state.replay = { frames: body.keypoints, index: 0, fps: body.fps || 30, name: file.name };
  $("placeholder").hidden = true;
  video.hidden = true;
  $("stop").disabled = false;
  send(JSON.stringify({ reset: true, layout: body.layout }));
  setStatus(`replaying ${file.name} (${body.num_frames} frames at ${state.replay.fps} fps)`);
  state.timer = setInterval(sendReplayFrame, 1000 / state.replay.fps);
}

function sendReplayFrame() {
  const replay = state.replay;
  if (!replay || state.pending.length >= MAX_IN_FLIGHT_REPLAY) return;
  if (replay.index >= replay.frames.length) {
    clearInterval(state.timer);
    state.timer = null;
    return;
  }
  send(JSON.stringify({ keypoints: replay.frames[replay.index] }));
  replay.index += 1;
}

function skeletonFrame(frames) {
  // a frame around every visible joint of the clip, with a margin
  let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
  for (const frame of frames) {
    for (const joint of frame) {
      if (joint[joint.length - 1] <= 0) continue;
      x0 = Math.min(x0, joint[0]); x1 = Math.max(x1, joint[0]);
      y0 = Math.min(y0, joint[1]); y1 = Math.max(y1, joint[1]);
    }
  }
  if (!isFinite(x0)) return { w: 1, h: 1, x0: 0, y0: 0 };
  const margin = 0.1 * Math.max(x1 - x0, y1 - y0, 1);
  return { x0: x0 - margin, y0: y0 - margin, w: x1 - x0 + 2 * margin, h: y1 - y0 + 2 * margin };
}

function stopSource(clearStatus = true) {
  if (state.timer) clearInterval(state.timer);
  state.timer = null;
  state.replay = null;
  const wasRunning = state.source !== null;
  state.source = null;
  if (video.srcObject) {
    for (const track of video.srcObject.getTracks()) track.stop();
    video.srcObject = null;
  }
  video.pause();
  $("stop").disabled = true;
  if (wasRunning && clearStatus) setStatus("stopped");
}

function rate() {
  const value = Number($("rate").value);
  return Math.min(30, Math.max(1, Number.isFinite(value) ? value : 15));
}

// ---------------------------------------------------------------------------------------------
// results

function showPrediction(p, latency) {
  const label = $("label");
  label.textContent = p.label;
  label.classList.toggle("stale", !p.person);
  $("score").textContent = `${(100 * p.score).toFixed(0)} %`;
  const ms = latency === null ? "" : ` · ${latency.toFixed(0)} ms`;
  if (p.person) setStatus(`frame ${p.frame}${ms}`);
  else setStatus(`frame ${p.frame} · no person detected${ms}`, true);
  let top = null;
  let best = -1;
  for (const row of $("bars").children) {
    const value = p.probabilities[row.dataset.cls] ?? 0;
    row.querySelector(".fill").style.width = `${(100 * value).toFixed(1)}%`;
    row.querySelector(".value").textContent = `${(100 * value).toFixed(0)}%`;
    row.classList.remove("top");
    if (value > best) { best = value; top = row; }
  }
  if (top) top.classList.add("top");
}

function setStatus(text, warn = false) {
  const status = $("status");
  status.textContent = text;
  status.classList.toggle("warn", warn);
}

function showError(text) {
  const box = $("error");
  box.textContent = text;
  box.hidden = false;
}

function hideError() {
  $("error").hidden = true;
}

// ---------------------------------------------------------------------------------------------
// overlay: observed skeleton (solid) and forecast skeletons (dashed, fading with the horizon)

function draw(p) {
  const ratio = window.devicePixelRatio || 1;
  const width = overlay.clientWidth * ratio;
  const height = overlay.clientHeight * ratio;
  if (overlay.width !== width || overlay.height !== height) {
    overlay.width = width;
    overlay.height = height;
  }
  const ctx = overlay.getContext("2d");
  ctx.clearRect(0, 0, width, height);
  const frame = state.frameSize;
  const layout = state.info.layouts[p.layout];
  if (!frame || !layout) return;
  // the same letter-boxing as the video's object-fit: contain
  const scale = Math.min(width / frame.w, height / frame.h);
  const ox = (width - scale * frame.w) / 2 - scale * (frame.x0 || 0);
  const oy = (height - scale * frame.h) / 2 - scale * (frame.y0 || 0);
  // null (no forecast for a joint) becomes NaN and is skipped when drawing
  const point = (j) => [ox + scale * (j[0] ?? NaN), oy + scale * (j[1] ?? NaN)];
  const visible = p.keypoints.map((j) => j[j.length - 1] > 0);
  ctx.lineCap = "round";
  if (p.forecast) {
    const steps = p.forecast.length;
    p.forecast.forEach((pose, n) => {
      ctx.globalAlpha = 0.85 - (0.5 * n) / Math.max(steps, 1);
      skeleton(ctx, pose.map(point), layout.bones, visible, "#e0782f", 2 * ratio, [6 * ratio, 4 * ratio]);
    });
    ctx.globalAlpha = 1;
  }
  skeleton(ctx, p.keypoints.map(point), layout.bones, visible, "#3fd68a", 3 * ratio, []);
  if (p.attention && $("attention-toggle").checked) {
    // the model's strongest edges of this frame, width by weight
    const strongest = Math.max(...p.attention.map((e) => Math.abs(e[4])), 1e-9);
    ctx.strokeStyle = "#d64fd0";
    ctx.setLineDash([]);
    state.attentionDrawn = p.attention.length;
    for (const [xj, yj, xi, yi, w] of p.attention) {
      ctx.lineWidth = (1 + 4 * Math.abs(w) / strongest) * ratio;
      ctx.beginPath();
      ctx.moveTo(...point([xj, yj]));
      ctx.lineTo(...point([xi, yi]));
      ctx.stroke();
    }
  }
  ctx.fillStyle = "#ffffff";
  p.keypoints.forEach((j, i) => {
    if (!visible[i]) return;
    const [x, y] = point(j);
    ctx.beginPath();
    ctx.arc(x, y, 3 * ratio, 0, 2 * Math.PI);
    ctx.fill();
  });
}

function skeleton(ctx, points, bones, visible, color, width, dash) {
  ctx.strokeStyle = color;
  ctx.lineWidth = width;
  ctx.setLineDash(dash);
  ctx.beginPath();
  for (const [a, b] of bones) {
    if (!visible[a] || !visible[b]) continue;
    if (!points[a].every(Number.isFinite) || !points[b].every(Number.isFinite)) continue;
    ctx.moveTo(points[a][0], points[a][1]);
    ctx.lineTo(points[b][0], points[b][1]);
  }
  ctx.stroke();
  ctx.setLineDash([]);
}

// ---------------------------------------------------------------------------------------------

$("camera-start").addEventListener("click", startCamera);
$("stop").addEventListener("click", () => stopSource());
$("attention-toggle").addEventListener("change", sendAttention);
$("video-file").addEventListener("change", (event) => {
  const file = event.target.files[0];
  if (file) openVideo(file);
  event.target.value = "";
});
$("skeleton-file").addEventListener("change", (event) => {
  const file = event.target.files[0];
  if (file) replaySkeleton(file);
  event.target.value = "";
});
window.addEventListener("resize", () => {
  if (state.lastPrediction) draw(state.lastPrediction);
});

loadInfo().catch((error) => showError(`cannot read /v1/models: ${error.message || error}`));
