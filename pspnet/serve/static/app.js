"use strict";
// The page over `pspnet serve`: upload an image to /v1/segment?format=json, draw its label PNG
// as a coloured overlay, list the classes present and name the class under the pointer.

const $ = (id) => document.getElementById(id);
const model = { names: [], palette: [] }; // from /v1/model once the service is ready
let shown = null; // the result on screen: {width, height, ids, names, colours, classes}
let photoUrl = null;

// --- readiness ---------------------------------------------------------------------------

function setStatus(state, text, title = "") {
  $("status").dataset.state = state;
  $("status-text").textContent = text;
  $("status").title = title;
}

async function watchReadiness() {
  for (let delay = 500; ; delay = Math.min(1.5 * delay, 5000)) {
    try {
      const response = await fetch("/readyz", { cache: "no-store" });
      if (response.ok) return describeModel();
      const body = await response.json().catch(() => ({}));
      if (body.error) return setStatus("failed", `The model failed to load: ${body.error}`);
      setStatus("loading", "Model loading…");
    } catch {
      setStatus("failed", "Cannot reach the server; retrying…");
    }
    await new Promise((resolve) => setTimeout(resolve, delay));
  }
}

async function describeModel() {
  try {
    const response = await fetch("/v1/model", { cache: "no-store" });
    const info = await response.json();
    if (!response.ok) throw new Error(info.error);
    Object.assign(model, { names: info.classes, palette: info.palette });
    const backbone = info.architecture.backbone.replace(/^resnet(\d+)/, "ResNet-$1");
    const name = info.published_name || `PSPNet ${backbone}`;
    const text = `Ready · ${name} · ${info.classes.length} classes · ${info.precision}`;
    setStatus("ready", text, `Classes: ${info.classes.join(", ")}`);
  } catch {
    setStatus("ready", "Ready");
  }
}

// --- upload --------------------------------------------------------------------------------

function showError(message, file, status) {
  const box = $("error");
  box.hidden = !message;
  if (!message) return;
  const head = document.createElement("strong");
  head.textContent = `Could not segment ${file.name}: `;
  const code = document.createElement("span");
  code.className = "code";
  code.textContent = status ? ` · HTTP ${status}` : "";
  const prefix = `${file.name}: `; // the server names the upload too; say it once
  const text = message.startsWith(prefix) ? message.slice(prefix.length) : message;
  box.replaceChildren(head, text, code);
}

function setBusy(file) {
  $("stage").classList.toggle("busy", Boolean(file));
  if (file) $("timing").textContent = `Segmenting ${file.name}…`;
}

async function upload(file) {
  if (!file) return;
  showError(null);
  setBusy(file);
  const form = new FormData();
  form.append("image", file);
  const start = performance.now();
  let response, body;
  try {
    response = await fetch("/v1/segment?format=json", { method: "POST", body: form });
    body = await response.json().catch(() => null);
  } catch (err) {
    setBusy(null);
    showTiming();
    return showError(`the server cannot be reached (${err.message}). Is pspnet serve running?`, file);
  }
  const roundTrip = performance.now() - start;
  setBusy(null);
  if (!response.ok || !body) {
    showTiming();
    const reason = body?.error || response.statusText || "no readable answer";
    return showError(reason, file, response.status);
  }
  try {
    await show(file, body, roundTrip);
  } catch (err) {
    showError(`the answer cannot be displayed (${err.message})`, file);
  }
}

// --- the result ------------------------------------------------------------------------------

async function show(file, result, roundTrip) {
  const label = await decodeLabelPng(result.label_png);
  const url = URL.createObjectURL(file);
  const photo = $("photo");
  photo.src = url;
  // A format the server reads but the browser cannot show (TIFF) still gets its overlay.
  const viewable = await photo.decode().then(() => true, () => false);
  photo.style.visibility = viewable ? "" : "hidden";
  if (photoUrl) URL.revokeObjectURL(photoUrl);
  photoUrl = url;

  const colours = model.palette.slice();
  const names = model.names.slice();
  for (const c of result.classes) [colours[c.id], names[c.id]] = [c.color, c.name];
  shown = { ...label, names, colours, classes: result.classes, roundTrip, ms: result.inference_ms };
  drawOverlay(label, colours);
  $("stage").style.setProperty("--aspect", label.width / label.height);
  const note = viewable ? "" : " · this browser cannot show the image itself";
  $("file-name").textContent = `${file.name} · ${result.width} × ${result.height}${note}`;
  $("empty").hidden = true;
  $("result").hidden = false;
  showLegend(result.classes, colours);
  showTiming();
  showHover(null);
}

function drawOverlay({ width, height, ids }, colours) {
  const canvas = $("overlay");
  [canvas.width, canvas.height] = [width, height];
  const context = canvas.getContext("2d");
  const image = context.createImageData(width, height);
  const rgba = new Uint8Array(256 * 4); // class id -> opaque RGBA
  colours.forEach((c, id) => c && rgba.set([...c, 255], 4 * id));
  const lookup = new Uint32Array(rgba.buffer);
  const pixels = new Uint32Array(image.data.buffer);
  for (let i = 0; i < ids.length; i++) pixels[i] = lookup[ids[i]];
  context.putImageData(image, 0, 0);
}

function swatch(colour) {
  const box = document.createElement("span");
  box.className = "swatch";
  box.style.background = `rgb(${colour.join(",")})`;
  return box;
}

function percent(share) {
  return `${(100 * share).toFixed(share < 0.001 ? 2 : 1)} %`;
}

function showLegend(classes, colours) {
  const rows = [...classes].sort((a, b) => b.share - a.share || a.id - b.id).map((c) => {
    const row = document.createElement("li");
    row.dataset.id = c.id;
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = c.name;
    const share = document.createElement("span");
    share.className = "share";
    share.textContent = percent(c.share);
    row.append(swatch(colours[c.id]), name, share);
    return row;
  });
  $("legend").replaceChildren(...rows);
}

function showTiming() {
  const box = $("timing");
  box.classList.toggle("muted", !shown);
  if (!shown) return void (box.textContent = "–");
  const rows = [
    ["Model", `${shown.ms.toFixed(1)} ms`, "the network's forward pass on the server"],
    ["Round trip", `${Math.round(shown.roundTrip)} ms`, "upload, queue, model and answer"],
  ].flatMap(([term, value, title]) => {
    const [dt, dd] = [document.createElement("dt"), document.createElement("dd")];
    [dt.textContent, dd.textContent, dt.title] = [term, value, title];
    return [dt, dd];
  });
  const list = document.createElement("dl");
  list.replaceChildren(...rows);
  box.replaceChildren(list);
}

function showHover(id) {
  const box = $("hover");
  box.classList.toggle("muted", id === null);
  if (id === null) box.textContent = "Move the pointer over the image.";
  else {
    const share = shown.classes.find((c) => c.id === id)?.share ?? 0;
    const name = document.createElement("strong");
    name.textContent = shown.names[id] ?? `class ${id}`;
    box.replaceChildren(swatch(shown.colours[id] ?? [0, 0, 0]), name, ` ${percent(share)}`);
  }
  for (const row of $("legend").children) row.classList.toggle("active", row.dataset.id === String(id));
}

function pointAt(event) {
  if (!shown) return;
  const rect = $("stage").getBoundingClientRect();
  const x = Math.floor(((event.clientX - rect.left) / rect.width) * shown.width);
  const y = Math.floor(((event.clientY - rect.top) / rect.height) * shown.height);
  if (x < 0 || y < 0 || x >= shown.width || y >= shown.height) return showHover(null);
  showHover(shown.ids[y * shown.width + x]);
}

// --- the label PNG ---------------------------------------------------------------------------
// A browser decodes a palette PNG to colours; the class ids are the palette indices, so read
// them from the file: chunks, zlib (DecompressionStream), then the per-row filters (PNG 1.2, 6).

async function decodeLabelPng(base64) {
  const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  const view = new DataView(bytes.buffer);
  const header = {};
  const data = [];
  for (let at = 8; at + 8 <= bytes.length; ) {
    const length = view.getUint32(at);
    const type = String.fromCharCode(...bytes.subarray(at + 4, at + 8));
    const body = bytes.subarray(at + 8, at + 8 + length);
    if (type === "IHDR") {
      Object.assign(header, { width: view.getUint32(at + 8), height: view.getUint32(at + 12) });
      Object.assign(header, { depth: body[8], colour: body[9], interlaced: body[12] });
    } else if (type === "IDAT") data.push(body);
    else if (type === "IEND") break;
    at += 12 + length;
  }
  const { width, height, depth, colour, interlaced } = header;
  if (![0, 3].includes(colour) || depth > 8 || interlaced) {
    throw new Error(`label PNG of colour type ${colour}, depth ${depth} is not a class-id image`);
  }
  const stream = new Blob(data).stream().pipeThrough(new DecompressionStream("deflate"));
  const raw = new Uint8Array(await new Response(stream).arrayBuffer());
  const stride = Math.ceil((width * depth) / 8);
  const perByte = 8 / depth;
  const mask = (1 << depth) - 1;
  const ids = new Uint8Array(width * height);
  let previous = new Uint8Array(stride);
  let row = new Uint8Array(stride);
  for (let y = 0; y < height; y++) {
    const filter = raw[y * (stride + 1)];
    const line = raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1));
    for (let i = 0; i < stride; i++) {
      const a = i ? row[i - 1] : 0;
      const b = previous[i];
      const c = i ? previous[i - 1] : 0;
      const predictor = [0, a, b, (a + b) >> 1, paeth(a, b, c)][filter];
      row[i] = line[i] + predictor; // Uint8Array wraps modulo 256, as the filters need
    }
    for (let x = 0; x < width; x++) {
      const shift = 8 - depth * ((x % perByte) + 1);
      ids[y * width + x] = (row[Math.floor(x / perByte)] >> shift) & mask;
    }
    [previous, row] = [row, previous];
  }
  return { width, height, ids };
}

function paeth(a, b, c) {
  const p = a + b - c;
  const [pa, pb, pc] = [Math.abs(p - a), Math.abs(p - b), Math.abs(p - c)];
  return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
}

// --- wiring ----------------------------------------------------------------------------------

function wire() {
  for (const id of ["file", "file-again"]) {
    $(id).addEventListener("change", (event) => {
      upload(event.target.files[0]);
      event.target.value = ""; // choosing the same file again uploads it again
    });
  }
  $("opacity").addEventListener("input", (event) => {
    $("overlay").style.opacity = event.target.value / 100;
    $("opacity-value").textContent = `${event.target.value} %`;
  });
  $("stage").addEventListener("pointermove", pointAt);
  $("stage").addEventListener("pointerleave", () => showHover(null));

  const hasFiles = (event) => event.dataTransfer?.types.includes("Files");
  window.addEventListener("dragover", (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    document.body.classList.add("dragging");
  });
  window.addEventListener("dragleave", (event) => {
    if (!event.relatedTarget) document.body.classList.remove("dragging");
  });
  window.addEventListener("drop", (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    document.body.classList.remove("dragging");
    upload(event.dataTransfer.files[0]);
  });
  window.addEventListener("paste", (event) => upload(event.clipboardData?.files[0]));
}

wire();
watchReadiness();
