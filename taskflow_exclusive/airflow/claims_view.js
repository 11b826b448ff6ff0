// The Claims view's only script: release a claim with a reason, then show the page again.
// Paths are relative (the page is served under the API server's plugin prefix, maybe behind a proxy).
"use strict";

function showStatus(text, isError) {
  const status = document.getElementById("status");
  status.textContent = text;
  status.className = isError ? "error" : "";
}

// Free consumerId's claim on the value at uri; resolves to {ok, status, message}.
async function releaseClaim(uri, consumerId, reason) {
  if (!reason || !reason.trim()) {
    showStatus("A reason is required: it is written to the log for the audit.", true);
    return { ok: false, status: 0, message: "reason required" };
  }
  const response = await fetch(document.body.dataset.releaseUrl, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ uri: uri, consumer_id: consumerId, reason: reason }),
  });
  let answer = {};
  try {
    answer = await response.json();
  } catch (error) {
    answer = {};
  }
  if (response.ok) {
    const released = answer.released;
    showStatus(`Released the claim of ${released.consumer_id} on ${released.uri}.`, false);
    return { ok: true, status: response.status, message: "released" };
  }
  let message = typeof answer.detail === "string" ? answer.detail : response.statusText;
  if (response.status === 401 || response.status === 403) {
    message = `Refused (${response.status}): releasing a claim needs permission to edit this DAG. ${message}`;
  } else {
    message = `Not released (${response.status}): ${message}`;
  }
  showStatus(message, true);
  return { ok: false, status: response.status, message: message };
}

document.addEventListener("submit", async (event) => {
  const form = event.target.closest("form.release");
  if (!form) return;
  event.preventDefault();
  const reason = form.elements.reason.value;
  const result = await releaseClaim(form.dataset.uri, form.dataset.consumer, reason);
  if (result.ok) {
    setTimeout(() => window.location.reload(), 600);
  }
});
