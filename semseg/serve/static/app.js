// The semseg page: send images to POST /v1/segment, draw the class overlay from the label PNG.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  model: null,      // GET /v1/model
  items: [],        // {file, thumb, result?, error?}
  current: -1,
  hidden: new Set(),  // class ids toggled off in the legend
};

function apiKeyHeaders() {
  const key = $("api-key").value.trim();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

async function apiError(response) {
  // The API's errors are {"error": {"code", "message"}}; anything else is shown as it came.
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    if (body && body.error) message = `${response.status}: ${body.error.message}`;
  } catch (_) { /* not JSON */ }
  if (response.status === 401) $("key-row").hidden = false;
  return new Error(message);
}

function showError(text) {
  $("error").textContent = text;
  $("error").hidden = !text;
}

async function loadModel() {
  try {
    const response = await fetch("/v1/model", { headers: apiKeyHeaders() });
    if (!response.ok) throw await apiError(response);
    state.model = await response.json();
    const m = state.model;
    $("model").textContent =
      `${m.name || "model"} · ${m.classes.length} classes · ${m.backend} ${m.precision || ""}`;
    $("drivable").disabled = !m.drivable_classes;
    showError("");
  } catch (error) {
    $("model").textContent = "model unknown";
    showError(`Cannot read the model: ${error.message}`);
  }
}

// --- a palette PNG (8-bit, one byte per pixel) to class ids, with the browser's inflate ---
async function decodeIndexPng(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (view.getUint32(0) !== 0x89504e47) throw new Error("labels_png is not a PNG");
  let width = 0, height = 0, pos = 8;
  const chunks = [];
  while (pos + 8 <= bytes.length) {
    const length = view.getUint32(pos);
    const type = String.fromCharCode(...bytes.subarray(pos + 4, pos + 8));
    const data = bytes.subarray(pos + 8, pos + 8 + length);
    if (type === "IHDR") {
      width = view.getUint32(pos + 8);
      height = view.getUint32(pos + 12);
      if (data[8] !== 8 || (data[9] !== 3 && data[9] !== 0) || data[12] !== 0) {
        throw new Error("labels_png is not an 8-bit, non-interlaced index PNG");
      }
    } else if (type === "IDAT") {
      chunks.push(data);
    } else if (type === "IEND") {
      break;
    }
    pos += 12 + length;
  }
  const stream = new Blob(chunks).stream().pipeThrough(new DecompressionStream("deflate"));
  const raw = new Uint8Array(await new Response(stream).arrayBuffer());
  const ids = new Uint8Array(width * height);
  for (let y = 0; y < height; y++) {
    const filter = raw[y * (width + 1)];
    const line = raw.subarray(y * (width + 1) + 1, (y + 1) * (width + 1));
    const row = ids.subarray(y * width, (y + 1) * width);
    const up = y > 0 ? ids.subarray((y - 1) * width, y * width) : new Uint8Array(width);
    for (let x = 0; x < width; x++) {
      const a = x > 0 ? row[x - 1] : 0, b = up[x], c = x > 0 ? up[x - 1] : 0;
      let predictor = 0;
      if (filter === 1) predictor = a;
      else if (filter === 2) predictor = b;
      else if (filter === 3) predictor = (a + b) >> 1;
      else if (filter === 4) {
        const p = a + b - c, pa = Math.abs(p - a), pb = Math.abs(p - b), pc = Math.abs(p - c);
        predictor = pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
      }
      row[x] = (line[x] + predictor) & 255;
    }
  }
  return { width, height, ids };
}

function base64Bytes(text) {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

// --- requests ---
async function segment(item) {
  const form = new FormData();
  form.append("image", item.file, item.file.name);
  const started = performance.now();
  let response;
  try {
    response = await fetch("/v1/segment?output=json", {
      method: "POST", body: form, headers: apiKeyHeaders(),
    });
  } catch (error) {
    throw new Error(`Cannot reach the server (${error.message}).`);
  }
  if (!response.ok) throw await apiError(response);
  const json = await response.json();
  const roundTrip = performance.now() - started;
  const pngBytes = base64Bytes(json.labels_png);
  const labels = await decodeIndexPng(pngBytes);
  const bitmap = await createImageBitmap(item.file);
  const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
  const context = canvas.getContext("2d");
  context.drawImage(bitmap, 0, 0);
  const pixels = context.getImageData(0, 0, bitmap.width, bitmap.height);
  if (bitmap.width !== labels.width || bitmap.height !== labels.height) {
    throw new Error(`The browser shows ${bitmap.width}x${bitmap.height} pixels but the server ` +
      `segmented ${labels.width}x${labels.height} (EXIF rotation?).`);
  }
  return { json, labels, pixels, pngBytes, roundTrip };
}

async function select(index) {
  state.current = index;
  document.querySelectorAll("#strip img").forEach((img, i) => {
    img.classList.toggle("selected", i === index);
  });
  const item = state.items[index];
  if (!item.result && !item.error) {
    $("status").textContent = `Segmenting ${item.file.name}…`;
    document.body.dataset.state = "busy";
    try {
      item.result = await segment(item);
    } catch (error) {
      item.error = error.message;
      item.thumb.classList.add("failed");
    }
  }
  if (state.current !== index) return;  // another image was chosen meanwhile
  if (item.error) {
    showError(`${item.file.name}: ${item.error}`);
    $("status").textContent = "";
    $("result").hidden = true;
    $("download").disabled = true;
    document.body.dataset.state = "error";
    return;
  }
  showError("");
  $("status").textContent = item.file.name;
  showResult(item.result);
  document.body.dataset.state = "done";
}

// --- drawing ---
function hexRgb(hex) {
  return [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
}

function drawOverlay() {
  const item = state.items[state.current];
  if (!item || !item.result) return;
  const { labels, pixels, json } = item.result;
  const alpha = Number($("opacity").value) / 100;
  const colours = json.classes.map((c) => hexRgb(c.color));
  const out = new ImageData(labels.width, labels.height);
  const src = pixels.data, dst = out.data;
  for (let p = 0, q = 0; p < labels.ids.length; p++, q += 4) {
    const id = labels.ids[p];
    const colour = colours[id];
    const a = colour && !state.hidden.has(id) ? alpha : 0;
    for (let k = 0; k < 3; k++) {
      dst[q + k] = Math.round(src[q + k] * (1 - a) + (a ? colour[k] * a : 0));
    }
    dst[q + 3] = 255;
  }
  const canvas = $("overlay");
  canvas.width = labels.width;
  canvas.height = labels.height;
  const context = canvas.getContext("2d");
  context.putImageData(out, 0, 0);
  if ($("drivable").checked && json.drivable) drawDrivable(context, json.drivable);
}

function drawDrivable(context, drivable) {
  if (drivable.polygon.length > 2) {
    context.beginPath();
    drivable.polygon.forEach(([x, y], i) => (i ? context.lineTo(x + 0.5, y + 0.5)
      : context.moveTo(x + 0.5, y + 0.5)));
    context.closePath();
    context.fillStyle = "rgba(0, 220, 80, 0.35)";
    context.fill();
  }
  context.beginPath();
  let drawing = false;
  drivable.boundary.forEach((row, x) => {
    if (row < 0) { drawing = false; return; }
    if (drawing) context.lineTo(x + 0.5, row + 0.5); else context.moveTo(x + 0.5, row + 0.5);
    drawing = true;
  });
  context.strokeStyle = "#ff0";
  context.lineWidth = 2;
  context.stroke();
}

function showResult(result) {
  const { json, pixels, roundTrip } = result;
  $("result").hidden = false;
  const original = $("original");
  original.width = pixels.width;
  original.height = pixels.height;
  original.getContext("2d").putImageData(pixels, 0, 0);
  drawOverlay();
  fitViews();
  const t = json.timing_ms;
  $("latency").textContent = `Request ${roundTrip.toFixed(0)} ms; server: queue ` +
    `${t.queue.toFixed(1)}, decode ${t.decode.toFixed(1)}, inference ` +
    `${t.inference.toFixed(1)}, encode ${t.encode.toFixed(1)} ms`;
  const body = $("legend").tBodies[0];
  body.replaceChildren(...json.classes.map((c) => legendRow(c)));
  $("download").disabled = false;
  const drivable = $("drivable");
  drivable.disabled = !json.drivable;
  if (json.drivable) {
    drivable.parentElement.title = `${(100 * json.drivable.fraction).toFixed(1)}% drivable`;
  }
}

function fitViews() {
  // at most 70 % of the window's height tall, as wide as that allows
  const item = state.items[state.current];
  if (!item || !item.result) return;
  const { width, height } = item.result.labels;
  const side = $("view").value === "side";
  $("views").classList.toggle("side", side);
  $("views").style.maxWidth = `calc(${side ? 2 : 1} * 70vh * ${width / height})`;
}

function legendRow(c) {
  const row = document.createElement("tr");
  row.dataset.classId = c.id;
  row.classList.toggle("absent", c.fraction === 0);
  const toggle = document.createElement("input");
  toggle.type = "checkbox";
  toggle.checked = !state.hidden.has(c.id);
  toggle.addEventListener("change", () => {
    if (toggle.checked) state.hidden.delete(c.id); else state.hidden.add(c.id);
    drawOverlay();
  });
  const swatch = document.createElement("span");
  swatch.className = "swatch";
  swatch.style.background = c.color;
  const cells = [toggle, swatch, c.name, `${(100 * c.fraction).toFixed(1)}%`];
  cells.forEach((content, i) => {
    const cell = document.createElement("td");
    if (i === 2) cell.className = "name";
    if (i === 3) cell.className = "share";
    cell.append(content);
    row.append(cell);
  });
  return row;
}

function pointAt(event) {
  const item = state.items[state.current];
  if (!item || !item.result) return;
  const canvas = event.currentTarget, { labels, json } = item.result;
  const box = canvas.getBoundingClientRect();
  const x = Math.floor(((event.clientX - box.left) / box.width) * labels.width);
  const y = Math.floor(((event.clientY - box.top) / box.height) * labels.height);
  if (x < 0 || y < 0 || x >= labels.width || y >= labels.height) return;
  const id = labels.ids[y * labels.width + x];
  const name = json.classes[id] ? json.classes[id].name : `id ${id}`;
  $("pointer").textContent = `${name} (x ${x}, y ${y})`;
}

// --- choosing files ---
function addFiles(files) {
  const images = [...files].filter((f) => /^image\//.test(f.type) || /\.(png|jpe?g|webp)$/i.test(f.name));
  if (!images.length) {
    showError("No PNG, JPEG or WebP image among the chosen files.");
    return;
  }
  state.items.forEach((item) => URL.revokeObjectURL(item.thumb.src));
  state.items = images.map((file) => {
    const thumb = document.createElement("img");
    thumb.src = URL.createObjectURL(file);
    thumb.alt = thumb.title = file.name;
    return { file, thumb };
  });
  state.items.forEach((item, i) => item.thumb.addEventListener("click", () => select(i)));
  $("strip").replaceChildren(...(images.length > 1 ? state.items.map((item) => item.thumb) : []));
  select(0);
}

async function droppedFiles(dataTransfer) {
  const entries = [...dataTransfer.items].map((item) => item.webkitGetAsEntry()).filter(Boolean);
  const files = [];
  async function walk(entry) {
    if (entry.isFile) {
      files.push(await new Promise((resolve, reject) => entry.file(resolve, reject)));
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      for (;;) {
        const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
        if (!batch.length) break;
        for (const child of batch) await walk(child);
      }
    }
  }
  for (const entry of entries) await walk(entry);
  return files.sort((a, b) => a.name.localeCompare(b.name));
}

function download() {
  const item = state.items[state.current];
  if (!item || !item.result) return;
  const link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob([item.result.pngBytes], { type: "image/png" }));
  link.download = item.file.name.replace(/\.[^.]*$/, "") + "_labels.png";
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 1000);
}

window.addEventListener("DOMContentLoaded", () => {
  loadModel();
  for (const id of ["file-input", "folder-input"]) {
    $(id).addEventListener("change", (e) => {
      const files = [...e.target.files];
      e.target.value = "";  // choosing the same files again is a new choice
      addFiles(files);
    });
  }
  $("opacity").addEventListener("input", () => {
    $("opacity-value").textContent = `${$("opacity").value}%`;
    drawOverlay();
  });
  $("view").addEventListener("change", fitViews);
  $("drivable").addEventListener("change", drawOverlay);
  $("download").addEventListener("click", download);
  $("api-key").addEventListener("change", () => {
    state.items.forEach((item) => { if (item.error) { delete item.error; item.thumb.classList.remove("failed"); } });
    loadModel();
  });
  for (const id of ["overlay", "original"]) $(id).addEventListener("mousemove", pointAt);
  document.addEventListener("dragover", (e) => { e.preventDefault(); document.body.classList.add("dragging"); });
  document.addEventListener("dragleave", () => document.body.classList.remove("dragging"));
  document.addEventListener("drop", async (e) => {
    e.preventDefault();
    document.body.classList.remove("dragging");
    addFiles(await droppedFiles(e.dataTransfer));
  });
});
