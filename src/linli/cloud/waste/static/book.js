// The booking page: book a renovation waste pickup, then follow it. Every text comes from the
// catalog (/book/messages); nothing here needs a secure context, since the link is plain HTTP.
"use strict";

const ZONE = "Asia/Shanghai"; // the district's; datetime-local values are read as its time
const OFFSET = "+08:00"; // Shanghai keeps no daylight saving
const DONE = ["closed", "cancelled", "expired"];
const CANCELLABLE = ["requested", "offered", "accepted", "en_route"];
const MOBILE = /^1[0-9]{10}$/;
const POLL_MS = 2000;

// The link carries the token (and, once booked, the booking) after '#': never sent in the URL.
const link = new URLSearchParams(location.hash.slice(1));
const token = link.get("token") || "";
const $ = (id) => document.getElementById(id);

const LOCALES = ["zh-CN", "en"];
let locale = LOCALES.includes(saved()) ? saved() : LOCALES[0];
let messages = {};
let compounds = [];
let shown = null; // the booking shown, to show again in the other language
let problem = null; // the error code shown, likewise
let key = newKey(); // one per booking: a retry after a lost answer books once
// The service's clock, not the phone's: windows are checked against it (a demo's runs faster).
let served = { now_ms: Date.now(), rate: 1, at: Date.now() };

function now() {
  return served.now_ms + (Date.now() - served.at) * served.rate;
}

function saved() {
  try { return localStorage.getItem("linli.booking.locale"); } catch { return null; }
}

// An idempotency key without crypto.randomUUID, which plain HTTP does not have.
function newKey() {
  const bytes = new Uint8Array(16);
  if (window.crypto && crypto.getRandomValues) crypto.getRandomValues(bytes);
  else for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function t(name, values = {}) {
  const template = messages[name];
  if (template === undefined) return name === "booking.error.refused" ? "" : t("booking.error.refused");
  return template.replace(/\{(\w+)\}/g, (_, v) => String(values[v] ?? ""));
}

// A time as people write it in Shanghai: 17:30 today, 12月7日 17:30 on another day.
function clock(ms) {
  const hm = new Intl.DateTimeFormat("en-GB", { timeZone: ZONE, hour: "2-digit", minute: "2-digit", hourCycle: "h23" }).format(ms);
  const day = (x) => new Intl.DateTimeFormat("en-CA", { timeZone: ZONE }).format(x);
  if (day(ms) === day(now())) return hm;
  return new Intl.DateTimeFormat(locale, { timeZone: ZONE, month: "short", day: "numeric" }).format(ms) + " " + hm;
}

// A datetime-local value for a moment, in Shanghai time.
function inputValue(ms) {
  return new Intl.DateTimeFormat("sv-SE", { timeZone: ZONE, year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit" })
    .format(ms).replace(" ", "T");
}

class Refusal extends Error {
  constructor(code) { super(code); this.code = code; }
}

async function call(method, path, body) {
  return (await answer(method, path, body)).data;
}

// A whole list, page after page: each page's Link header names the next one (none on the last).
async function every(path) {
  const found = [];
  for (let page = path + "?limit=1000"; page; ) {
    const { data, response } = await answer("GET", page);
    found.push(...data);
    const next = /<([^>]*)>;\s*rel="next"/.exec(response.headers.get("Link") || "");
    page = next ? next[1] : null;
  }
  return found;
}

async function answer(method, path, body) {
  let response;
  try {
    response = await fetch(path, {
      method,
      headers: { "Authorization": "Bearer " + token, "Content-Type": "application/json" },
      body: body ? JSON.stringify(body) : undefined,
    });
  } catch {
    throw new Refusal("network");
  }
  const data = await response.json().catch(() => ({}));
  if (response.status === 401) throw new Refusal("unauthorized");
  if (!response.ok) throw new Refusal(data.code || "refused");
  return { data, response };
}

function fail(code) {
  problem = code;
  $("error").textContent = code ? t("booking.error." + code) : "";
  if (code) $("error").scrollIntoView({ block: "nearest" }); // below the form on a phone
}

// The compounds to choose from, by their names in the page's language.
function named() {
  const chosen = $("compound").value;
  $("compound").replaceChildren(...compounds.map((c) => new Option(c.names[locale], c.id)));
  if (chosen) $("compound").value = chosen;
}

function apply() {
  document.documentElement.lang = locale;
  for (const element of document.querySelectorAll("[data-t]")) element.textContent = t(element.dataset.t);
  document.title = t("booking.title");
  fail(problem);
  named();
  if (shown) show(shown);
}

async function speak(next) {
  messages = await (await fetch("/book/messages?locale=" + encodeURIComponent(next))).json();
  locale = next;
  try { localStorage.setItem("linli.booking.locale", next); } catch { /* private mode: not kept */ }
  apply();
}

function show(b) {
  shown = b;
  $("status").hidden = false;
  $("booking").dataset.id = b.id;
  $("booking").textContent = t("booking.number", { id: b.id });
  $("place").textContent = t("booking.compound", { compound: b.compound_names[locale] });
  $("state").dataset.state = b.state;
  $("state").textContent = t("booking.state." + b.state);
  $("truck").textContent = b.truck_names ? t("booking.truck", { truck: b.truck_names[locale] }) : "";
  $("predicted").textContent = b.predicted_ms ? t("booking.predicted", { time: clock(b.predicted_ms) }) : "";
  $("trail").replaceChildren(...b.trail.map((step) => {
    const li = document.createElement("li");
    li.textContent = clock(step.at_ms) + " " + t("booking.state." + step.state);
    return li;
  }));
  $("cancel").hidden = !CANCELLABLE.includes(b.state);
}

async function follow(id) {
  try {
    const b = await call("GET", "/bookings/" + encodeURIComponent(id));
    show(b);
    if (DONE.includes(b.state)) return;
  } catch (e) {
    fail(e.code);
  }
  setTimeout(() => follow(id), POLL_MS);
}

// What the page can say is wrong before asking the service.
function checked() {
  const phone = $("phone").value.replace(/\s+/g, "");
  const email = $("email").value.trim();
  if (!phone && !email) return "contact_missing";
  if (phone && !MOBILE.test(phone)) return "phone_invalid";
  if (!$("compound").value || !$("name").value.trim() || !(parseFloat($("amount").value) > 0)) return "invalid";
  if (!$("earliest").value || !$("latest").value) return "invalid";
  if ($("latest").value <= $("earliest").value) return "window_empty";
  return null;
}

function request() {
  const contact = { name: $("name").value.trim() };
  const phone = $("phone").value.replace(/\s+/g, "");
  if (phone) contact.phone = phone;
  if ($("email").value.trim()) contact.email = $("email").value.trim();
  const body = {
    compound: $("compound").value,
    earliest: $("earliest").value + ":00" + OFFSET,
    latest: $("latest").value + ":00" + OFFSET,
    contact,
    note: $("note").value,
    key,
  };
  const unit = $("unit").value;
  body[unit] = unit === "bags" ? Math.max(1, Math.round(parseFloat($("amount").value))) : parseFloat($("amount").value);
  return body;
}

async function book(event) {
  event.preventDefault();
  fail(checked());
  if (problem) return;
  $("submit").disabled = true;
  try {
    const b = await call("POST", "/bookings", request());
    key = newKey();
    link.set("booking", b.id);
    history.replaceState(null, "", "#" + link.toString());
    $("book").hidden = true;
    show(b);
    follow(b.id);
  } catch (e) {
    fail(e.code);
  } finally {
    $("submit").disabled = false;
  }
}

async function cancel() {
  try { show(await call("POST", "/bookings/" + encodeURIComponent(shown.id) + "/cancel")); } catch (e) { fail(e.code); }
}

async function start() {
  $("book").addEventListener("submit", book);
  $("cancel").addEventListener("click", cancel);
  $("switch").addEventListener("click", () => speak(locale === "en" ? "zh-CN" : "en"));
  await speak(locale);
  try {
    served = { ...(await call("GET", "/book/clock")), at: Date.now() };
  } catch {
    // the phone's clock, then: the service will say if the window is past
  }
  const soon = Math.ceil(now() / 3600000) * 3600000 + 3600000;
  $("earliest").value = inputValue(soon);
  $("latest").value = inputValue(soon + 3 * 3600000);
  try {
    compounds = await every("/compounds");
    named();
  } catch (e) {
    fail(e.code);
  }
  if (link.get("booking")) {
    $("book").hidden = true;
    follow(link.get("booking"));
  }
}

document.addEventListener("DOMContentLoaded", start);
