// Fitting people's photos to what the server takes, before they are sent. A request carries at most
// max_body_bytes (the photos base64-encoded: a third larger), each photo at most max_photo_bytes and
// max_photo_pixels (GET /v1/me says how much). Fifteen ordinary phone photos are already over the default
// 50 MB, and a 108 or 200 MP photo over the pixels. A photo that fits is sent exactly as it is; one that does
// not is drawn smaller and sent as a JPEG (turned by its EXIF tag as it is drawn; transparency onto white,
// as the server flattens it).
"use strict";

const BODY_OVERHEAD = 64 * 1024; // the request's JSON besides the photos
const JPEG_QUALITY = 0.92;
const FIT_TRIES = 6;
const CANVAS_PIXELS = 16000000; // iOS Safari draws nothing on a larger canvas
// never smaller than this on the long side to save bytes: a face could become too small to train on, and the
// server's refusal (naming its limit) tells the person more than a photo shrunk to nothing
const MIN_LONG_SIDE = 1024;

// {files, resized}: the photos to send, in the order given, and how many were made smaller.
async function fitPhotos(files, uploads) {
  // smallest first, so what a small photo leaves unused goes to the larger ones
  const order = files.map((file, index) => ({ file, index })).sort((a, b) => a.file.size - b.file.size);
  let room = Math.floor(((uploads.max_body_bytes - BODY_OVERHEAD) * 3) / 4);
  const fitted = new Array(files.length);
  let resized = 0;
  for (let left = order.length; left > 0; left--) {
    const { file, index } = order[order.length - left];
    const share = Math.max(1, Math.min(uploads.max_photo_bytes, Math.floor(room / left)));
    fitted[index] = await fitPhoto(file, share, uploads.max_photo_pixels);
    if (fitted[index] !== file) resized++;
    room -= fitted[index].size;
  }
  return { files: fitted, resized };
}

async function decodePhoto(file) {
  try {
    return await createImageBitmap(file, { imageOrientation: "from-image" });
  } catch (err) {
    return createImageBitmap(file); // a browser that knows only the older option names
  }
}

async function fitPhoto(file, bytes, pixels) {
  let bitmap;
  try {
    bitmap = await decodePhoto(file);
  } catch (err) {
    return file; // a format this browser cannot draw (HEIC outside Safari): the server says what it takes
  }
  try {
    const area = bitmap.width * bitmap.height;
    if (file.size <= bytes && area <= pixels) return file;
    let scale = Math.min(1, Math.sqrt(Math.min(pixels, CANVAS_PIXELS) / area));
    const smallest = Math.min(scale, MIN_LONG_SIDE / Math.max(bitmap.width, bitmap.height));
    let blob = null;
    for (let i = 0; i < FIT_TRIES; i++) {
      blob = await drawJpeg(bitmap, scale);
      if (blob === null || blob.size <= bytes || scale <= smallest) break;
      scale = Math.max(smallest, scale * Math.sqrt(bytes / blob.size) * 0.95);
    }
    // the browser could not draw it, or its JPEG is no smaller: the server's answer names the limit it is over
    if (blob === null || (blob.size >= file.size && area <= pixels)) return file;
    return new File([blob], file.name.replace(/\.[^.]*$/, "") + ".jpg", { type: "image/jpeg" });
  } finally {
    bitmap.close();
  }
}

function drawJpeg(bitmap, scale) {
  const canvas = document.createElement("canvas");
  canvas.width = Math.max(1, Math.round(bitmap.width * scale));
  canvas.height = Math.max(1, Math.round(bitmap.height * scale));
  const context = canvas.getContext("2d");
  context.fillStyle = "#fff";
  context.fillRect(0, 0, canvas.width, canvas.height);
  context.imageSmoothingQuality = "high";
  context.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  return new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", JPEG_QUALITY));
}
