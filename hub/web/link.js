// A 112/119 view link's page (/live/{token}): no login; the token in the address opens one
// camera's live view while the link lasts (hub/liveview.py rule 6). Every use is audited at the hub.
import { startLive } from "./live.js";
import { t } from "./i18n.js";

const token = location.pathname.split("/")[2] || "";
const base = `/live/${encodeURIComponent(token)}`;
const video = document.getElementById("link-video");
const state = document.getElementById("link-state");

async function call(method, path, body) {
  const resp = await fetch(path, {
    method, cache: "no-store", credentials: "omit", keepalive: method === "DELETE",
    headers: body ? { "Content-Type": "application/json" } : {}, body: body ? JSON.stringify(body) : undefined,
  });
  const data = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new Error(data.error || resp.statusText);
  return data;
}

document.title = t("link_title");
document.getElementById("link-title").textContent = t("link_title");
startLive(video, (body) => call("POST", `${base}/offer`, body),
  (view) => call("DELETE", `${base}/views/${encodeURIComponent(view)}`),
  (s) => { state.textContent = t(`live_${s}`); state.dataset.state = s; })
  .then((live) => {
    document.getElementById("link-title").textContent = `${t("link_title")} · ${live.camera}`;
    window.addEventListener("pagehide", live.stop);
  }, (ex) => {
    state.textContent = `${t("live_refused")}: ${ex.message}`;
    state.dataset.state = "refused";
    video.hidden = true;
  });
