// The Headshot Studio page: plain JS over the service's API (no build step, nothing from other sites).
// The key lives in sessionStorage (this tab only); pictures are fetched with it and shown as blob: URLs,
// because an <img src> cannot send an Authorization header.
"use strict";

const KEY = "headshot.apiKey";
const WATCH = "headshot.trainingJob";
const NAMES = "headshot.photoNames.";
const FINISHED = ["succeeded", "failed", "cancelled"];
const POLL_MS = 1000;

const $ = (id) => document.getElementById(id);
const sleep = (ms) => new Promise((done) => setTimeout(done, ms));
const state = { userId: null, uploads: null, photos: [], fitNote: "", models: [], trainingWatch: 0,
                generationWatch: 0, generationJob: null, galleryUrls: [] };

class ApiError extends Error {
  constructor(message, code, status) {
    super(message);
    this.code = code;
    this.status = status;
  }
}

// One call to the API; a refusal becomes an ApiError carrying the server's own sentence.
async function api(method, path, body, options = {}) {
  const headers = {};
  const key = sessionStorage.getItem(KEY);
  if (key) headers.Authorization = "Bearer " + key;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (options.idempotencyKey) headers["Idempotency-Key"] = options.idempotencyKey;
  let response;
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (err) {
    throw new ApiError("The server did not answer: check that it is running and reachable, then try again.",
      "network", 0);
  }
  if (!response.ok) {
    let message = `The server answered ${response.status} ${response.statusText}.`;
    let code = "error";
    try {
      const data = await response.json();
      if (data && data.error) ({ message, code } = data.error);
    } catch (err) { /* not JSON: keep the status line */ }
    const retry = response.headers.get("Retry-After");
    if (response.status === 429 && retry) message += ` (try again in ${duration(Number(retry))})`;
    throw new ApiError(message, code, response.status);
  }
  return options.blob ? response.blob() : response.json();
}

function say(id, text) {
  $(id).textContent = text || "";
}

// An event handler that shows any error in the section's alert line instead of losing it.
function guarded(errorId, work) {
  return async (event) => {
    if (event && event.preventDefault) event.preventDefault();
    say(errorId, "");
    try {
      await work(event);
    } catch (err) {
      say(errorId, err.message);
      if (err.status === 401) signedOut();
    }
  };
}

function duration(seconds) {
  if (seconds == null || !isFinite(seconds)) return "";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  return m < 60 ? `${m} min ${s % 60} s` : `${Math.floor(m / 60)} h ${m % 60} min`;
}

function megabytes(bytes) {
  return `${(bytes / 1048576).toFixed(1)} MB`;
}

function newRequestId() {
  return window.crypto && crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random()}`.slice(0, 60);
}

function setBusy(button, busy) {
  button.disabled = busy;
  button.setAttribute("aria-busy", busy ? "true" : "false");
}

// ---- the key ----

async function signIn(key) {
  sessionStorage.setItem(KEY, key);
  try {
    const me = await api("GET", "/v1/me");
    state.userId = me.user_id;
    state.uploads = me.uploads;
  } catch (err) {
    sessionStorage.removeItem(KEY);
    throw err;
  }
  say("key-status", `Signed in as ${state.userId}.`);
  document.body.classList.add("signed-in");
  await Promise.all([loadStyles(), loadModels()]);
  const watching = sessionStorage.getItem(WATCH);
  if (watching) watchTraining(watching);
}

function signedOut() {
  sessionStorage.removeItem(KEY);
  state.userId = null;
  document.body.classList.remove("signed-in");
  say("key-status", "Not signed in.");
}

// ---- photos ----

function addPhotos(files) {
  for (const file of files) state.photos.push({ file, url: URL.createObjectURL(file) });
  state.fitNote = "";
  renderPhotos();
}

function renderPhotos() {
  const list = $("photo-list");
  list.replaceChildren();
  state.photos.forEach((photo, index) => {
    const item = document.createElement("li");
    const img = document.createElement("img");
    img.src = photo.url;
    img.alt = photo.file.name;
    const remove = document.createElement("button");
    remove.type = "button";
    remove.textContent = "Remove";
    remove.setAttribute("aria-label", `Remove ${photo.file.name}`);
    remove.addEventListener("click", () => {
      URL.revokeObjectURL(photo.url);
      state.photos.splice(index, 1);
      state.fitNote = "";
      renderPhotos();
    });
    item.append(img, remove);
    list.append(item);
  });
  const bytes = state.photos.reduce((sum, p) => sum + p.file.size, 0);
  say("photo-count", state.photos.length
    ? `${state.photos.length} photo(s) chosen, ${megabytes(bytes)}.${state.fitNote}` : "No photos chosen.");
}

function dataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(new ApiError(`${file.name} could not be read from your disk.`, "unreadable", 0));
    reader.readAsDataURL(file);
  });
}

function numberField(id) {
  const value = $(id).value.trim();
  return value === "" ? undefined : Number(value);
}

async function submitTraining() {
  const button = $("train-button");
  setBusy(button, true);
  try {
    say("photo-count", `Sending ${state.photos.length} photo(s)…`);
    const limits = state.uploads;
    const chosen = state.photos.map((p) => p.file);
    const fit = limits ? await fitPhotos(chosen, limits) : { files: chosen, resized: 0 };
    state.fitNote = fit.resized ? ` ${fit.resized} sent smaller, as JPEG, to fit the server's limits (` +
      `${megabytes(limits.max_body_bytes)} a request, ${limits.max_photo_pixels / 1e6} megapixels a photo).` : "";
    const images = await Promise.all(fit.files.map((file) => dataUrl(file)));
    const training = { preset: $("preset").value };
    for (const [field, id] of [["steps", "train-steps"], ["resolution", "train-resolution"], ["rank", "train-rank"]]) {
      const value = numberField(id);
      if (value !== undefined) training[field] = value;
    }
    const body = { user_id: state.userId, instance_name: $("instance-name").value.trim(), images,
                   class_type: $("class-type").value, training };
    const accepted = await api("POST", "/v1/models/train", body, { idempotencyKey: newRequestId() });
    // the server names uploads photo-01, photo-02 … in the order sent: remember which file each was
    sessionStorage.setItem(NAMES + accepted.training_job_id, JSON.stringify(state.photos.map((p) => p.file.name)));
    sessionStorage.setItem(WATCH, accepted.training_job_id);
    await loadModels(accepted.model_id);
    watchTraining(accepted.training_job_id, accepted.estimated_time);
  } finally {
    renderPhotos();
    setBusy(button, false);
  }
}

// ---- training ----

async function watchTraining(jobId, estimate) {
  const token = ++state.trainingWatch;
  $("training-section").hidden = false;
  say("training-error", "");
  if (estimate) say("training-eta", `Estimated time: about ${duration(estimate)}.`);
  while (token === state.trainingWatch) {
    let job;
    try {
      job = await api("GET", `/v1/jobs/${encodeURIComponent(jobId)}`);
    } catch (err) {
      say("training-error", err.message);
      if (err.status === 404 || err.status === 401) {
        sessionStorage.removeItem(WATCH);
        return;
      }
      await sleep(3 * POLL_MS);
      continue;
    }
    renderTraining(job);
    if (job.status !== "queued") {
      try {
        drawLoss((await api("GET", `/v1/jobs/${encodeURIComponent(jobId)}/loss`)).points);
      } catch (err) { /* the curve is a nicety: the status above is what matters */ }
    }
    if (FINISHED.includes(job.status)) {
      await loadModels(job.model_id);
      return;
    }
    await sleep(POLL_MS);
  }
}

function renderTraining(job) {
  const { step, total, eta_s: eta } = job.progress;
  const bar = $("training-progress");
  const status = {
    queued: "Waiting for a worker (queued).",
    running: total ? `Training: step ${step} of ${total} (${Math.floor((100 * step) / total)}%).`
      : "Checking your photos (faces, sharpness, framing)…",
    succeeded: "Training finished: your model is ready. Pick a style below.",
    failed: "Training failed.",
    cancelled: "Training was cancelled.",
  }[job.status];
  say("training-status", status);
  if (job.status === "running" && !total) {
    bar.removeAttribute("value"); // indeterminate while the photos are screened
  } else {
    bar.max = total || 1;
    bar.value = job.status === "succeeded" ? bar.max : step;
  }
  bar.setAttribute("aria-valuetext", status);
  if (job.status === "running" && eta != null) say("training-eta", `About ${duration(eta)} left.`);
  else if (FINISHED.includes(job.status)) say("training-eta", "");
  if (job.error) say("training-error", job.error.message);
  $("cancel-training").hidden = FINISHED.includes(job.status);
  $("cancel-training").dataset.job = job.job_id;
  renderPhotoReport(job);
}

function renderPhotoReport(job) {
  if (job.kept_photos == null && job.rejected_photos == null) return;
  $("photo-report").hidden = false;
  const names = JSON.parse(sessionStorage.getItem(NAMES + job.job_id) || "[]");
  const rejected = job.rejected_photos || [];
  say("kept-photos", `${job.kept_photos ?? 0} photo(s) kept for training, ${rejected.length} not used.`);
  const list = $("rejected-photos");
  list.replaceChildren();
  for (const photo of rejected) {
    const item = document.createElement("li");
    const number = /photo-(\d+)/.exec(photo.photo || "");
    const original = number ? names[Number(number[1]) - 1] : undefined;
    const name = document.createElement("strong");
    name.textContent = original || photo.photo; // the message names the server's copy (photo-05.png)
    item.append(name, `: ${photo.message}`);
    if (photo.reason) item.append(` [${photo.reason}]`);
    list.append(item);
  }
  if (!rejected.length) list.append(Object.assign(document.createElement("li"), { textContent: "None." }));
}

function drawLoss(points) {
  if (!points || points.length < 2) return;
  const svg = $("loss-curve");
  const [width, height, left, bottom] = [600, 180, 50, 160];
  const steps = points.map((p) => p.step);
  const losses = points.map((p) => p.loss);
  const [lo, hi] = [Math.min(...losses), Math.max(...losses)];
  const first = steps[0];
  const span = Math.max(1, steps[steps.length - 1] - first);
  const x = (s) => left + ((s - first) / span) * (width - left - 10);
  const y = (v) => bottom - ((v - lo) / (hi - lo || 1)) * (bottom - 10);
  const svgNode = (name, attrs, text) => {
    const node = document.createElementNS("http://www.w3.org/2000/svg", name);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text) node.textContent = text;
    return node;
  };
  svg.replaceChildren(
    svgNode("rect", { x: left, y: 10, width: width - left - 10, height: bottom - 10, class: "frame" }),
    svgNode("polyline", { points: points.map((p) => `${x(p.step).toFixed(1)},${y(p.loss).toFixed(1)}`).join(" "),
                          class: "loss" }),
    svgNode("text", { x: 4, y: 18 }, hi.toFixed(3)),
    svgNode("text", { x: 4, y: bottom }, lo.toFixed(3)),
    svgNode("text", { x: left, y: height - 4 }, `step ${first}`),
    svgNode("text", { x: width - 10, y: height - 4, "text-anchor": "end" }, `step ${steps[steps.length - 1]}`),
  );
  const last = points[points.length - 1];
  say("loss-caption", `Training loss: ${points.length} points, last ${last.loss.toFixed(4)} at step ${last.step}.`);
  $("loss-figure").hidden = false;
}

// ---- models and styles ----

async function loadModels(select) {
  const { models } = await api("GET", "/v1/models");
  showModels(models, select);
}

function showModels(models, select) {
  state.models = models;
  const menu = $("model");
  const chosen = select || menu.value;
  menu.replaceChildren(...models.map((m) => new Option(`${m.instance_name} (${m.status})`, m.model_id)));
  if (!models.length) menu.append(new Option("no models yet: train one above", ""));
  if (chosen && models.some((m) => m.model_id === chosen)) menu.value = chosen;
  else if (models.length) menu.value = models[models.length - 1].model_id;
}

async function loadStyles() {
  const { styles } = await api("GET", "/v1/styles");
  const menu = $("style");
  const groups = new Map();
  for (const style of styles) {
    if (!groups.has(style.category)) groups.set(style.category, Object.assign(document.createElement("optgroup"),
      { label: style.category }));
    groups.get(style.category).append(new Option(style.title, style.name));
  }
  menu.replaceChildren(...groups.values());
}

// ---- pictures ----

async function submitGeneration() {
  const button = $("generate-button");
  setBusy(button, true);
  try {
    const body = { model_id: $("model").value, style_template: $("style").value, num_images: numberField("num-images") };
    for (const [field, id] of [["width", "gen-width"], ["height", "gen-height"], ["steps", "gen-steps"],
                               ["seed", "gen-seed"]]) {
      const value = numberField(id);
      if (value !== undefined) body[field] = value;
    }
    const accepted = await api("POST", "/v1/images/generate_avatar", body, { idempotencyKey: newRequestId() });
    watchGeneration(accepted.generation_job_id, body.model_id);
  } finally {
    setBusy(button, false);
  }
}

async function watchGeneration(jobId, modelId) {
  const token = ++state.generationWatch;
  clearGallery();
  const bar = $("generate-progress");
  bar.hidden = false;
  while (token === state.generationWatch) {
    let job;
    try {
      job = await api("GET", `/v1/jobs/${encodeURIComponent(jobId)}`);
    } catch (err) {
      say("generate-error", err.message);
      if (err.status === 404 || err.status === 401) return;
      await sleep(3 * POLL_MS);
      continue;
    }
    const { step, total } = job.progress;
    bar.max = total || 1;
    bar.value = job.status === "succeeded" ? bar.max : step;
    const status = {
      queued: "Waiting for a worker (queued).",
      running: `Drawing and finishing pictures: ${step} of ${total} done.`,
      succeeded: `${(job.images || []).length} picture(s) ready.`,
      failed: "Drawing failed.",
      cancelled: "Drawing was cancelled.",
    }[job.status];
    say("generate-status", status);
    bar.setAttribute("aria-valuetext", status);
    if (job.error) say("generate-error", job.error.message);
    if (job.status === "succeeded") {
      state.generationJob = { jobId, modelId };
      await renderGallery(job.images || []);
    }
    if (FINISHED.includes(job.status)) {
      bar.hidden = true;
      return;
    }
    await sleep(POLL_MS);
  }
}

function clearGallery() {
  state.galleryUrls.forEach((url) => URL.revokeObjectURL(url));
  state.galleryUrls = [];
  state.generationJob = null;
  $("gallery").replaceChildren();
  $("gallery-note").hidden = true;
  $("download-zip").hidden = true;
}

// The API lists pictures best first, faceless ones last: the gallery keeps that order.
async function renderGallery(images) {
  const gallery = $("gallery");
  gallery.replaceChildren();
  let rank = 0;
  for (const image of images) {
    rank += 1;
    const item = document.createElement("li");
    const figure = document.createElement("figure");
    const img = document.createElement("img");
    const caption = document.createElement("figcaption");
    const likeness = image.faceless ? "no face found, set aside"
      : image.identity_score == null ? "likeness not measured" : `likeness ${image.identity_score.toFixed(2)}`;
    caption.textContent = `#${rank} · ${likeness} · seed ${image.seed}`;
    img.alt = `Picture ${rank}: ${likeness}`;
    if (image.faceless) item.classList.add("faceless");
    figure.append(img, caption);
    item.append(figure);
    gallery.append(item);
    try {
      const url = URL.createObjectURL(await api("GET", image.url, undefined, { blob: true }));
      state.galleryUrls.push(url);
      img.src = url;
    } catch (err) {
      caption.textContent += ` (could not be loaded: ${err.message})`;
    }
  }
  $("gallery-note").hidden = images.length === 0;
  $("download-zip").hidden = images.length === 0;
}

async function downloadZip() {
  const job = state.generationJob;
  if (!job) return;
  const blob = await api("GET", `/v1/jobs/${encodeURIComponent(job.jobId)}/images.zip`, undefined, { blob: true });
  const link = Object.assign(document.createElement("a"), { href: URL.createObjectURL(blob),
                                                             download: `headshots-${job.jobId}.zip` });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 60000);
}

// ---- deleting ----

async function deleteModel() {
  const modelId = $("model").value;
  const model = state.models.find((m) => m.model_id === modelId);
  if (!model) {
    say("delete-error", "Choose a model in section 4 first (there is none to delete).");
    return;
  }
  const question = `Delete the model "${model.instance_name}", the photos you uploaded for it and every picture ` +
    "drawn with it? This cannot be undone.";
  if (!window.confirm(question)) {
    say("delete-status", "Nothing was deleted.");
    return;
  }
  const erased = await api("DELETE", `/v1/models/${encodeURIComponent(modelId)}`);
  // gone from the menu as the sentence saying so appears, not a round trip later
  showModels(state.models.filter((m) => m.model_id !== modelId));
  say("delete-status", `Deleted "${model.instance_name}": ${erased.files_removed} file(s) removed` +
    (erased.jobs_cancelled ? `, ${erased.jobs_cancelled} job(s) stopped.` : "."));
  if (state.generationJob && state.generationJob.modelId === modelId) {
    state.generationWatch += 1;
    clearGallery();
    say("generate-status", "");
  }
  const watched = sessionStorage.getItem(WATCH);
  if (watched && $("cancel-training").dataset.job === watched) {
    state.trainingWatch += 1;
    sessionStorage.removeItem(WATCH);
    $("training-section").hidden = true;
  }
  await loadModels();
}

// ---- wiring ----

function wire() {
  $("key-form").addEventListener("submit", guarded("key-error", () => signIn($("api-key").value.trim())));
  $("forget-key").addEventListener("click", () => {
    signedOut();
    $("api-key").value = "";
  });
  $("photos").addEventListener("change", (event) => {
    addPhotos(event.target.files);
    event.target.value = ""; // the same file can be chosen again after removing it
  });
  const zone = $("drop-zone");
  for (const name of ["dragenter", "dragover"]) {
    zone.addEventListener(name, (event) => {
      event.preventDefault();
      zone.classList.add("dragging");
    });
  }
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    const files = [...event.dataTransfer.files];
    const others = files.filter((f) => f.type && !f.type.startsWith("image/"));
    say("train-error", others.length ? `Not pictures, left out: ${others.map((f) => f.name).join(", ")}. ` +
      "Drop JPEG, PNG or WebP photos." : "");
    addPhotos(files.filter((f) => !others.includes(f)));
  });
  $("train-form").addEventListener("submit", guarded("train-error", submitTraining));
  $("cancel-training").addEventListener("click", guarded("training-error", async () => {
    await api("POST", `/v1/jobs/${encodeURIComponent($("cancel-training").dataset.job)}/cancel`);
    say("training-status", "Cancelling: the worker saves a checkpoint and stops.");
  }));
  $("generate-form").addEventListener("submit", guarded("generate-error", submitGeneration));
  $("download-zip").addEventListener("click", guarded("generate-error", downloadZip));
  $("delete-model").addEventListener("click", guarded("delete-error", deleteModel));
  const key = sessionStorage.getItem(KEY);
  if (key) guarded("key-error", () => signIn(key))();
  else say("key-status", "Not signed in.");
}

document.addEventListener("DOMContentLoaded", wire);
