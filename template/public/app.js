// Calls the API through the same origin: Netlify (or the local edge) proxies /api/* to the container.
"use strict";

async function getJSON(path) {
  const response = await fetch(path, { headers: { Accept: "application/json" } });
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const message = body && body.error ? body.error.message : response.statusText;
    throw new Error(`${response.status}: ${message}`);
  }
  return body;
}

async function greet(name) {
  const out = document.getElementById("greeting");
  try {
    const data = await getJSON(`/api/greeting?name=${encodeURIComponent(name)}`);
    out.textContent = data.message;
    out.className = "ok";
  } catch (error) {
    out.textContent = `The API did not answer (${error.message}).`;
    out.className = "error";
  }
}

async function showVersion() {
  try {
    const data = await getJSON("/api/version");
    document.getElementById("version").textContent = data.version;
    document.getElementById("revision").textContent = data.revision.slice(0, 12);
  } catch (error) {
    document.getElementById("version").textContent = "unavailable";
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("greet");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    greet(document.getElementById("name").value);
  });
  greet(document.getElementById("name").value);
  showVersion();
});
