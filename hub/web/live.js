// Live camera video over WebRTC (hub/liveview.py): the browser offers to receive video (H.264,
// the cameras' codec, passed through by the hub), sends the offer with every ICE candidate in it
// (host candidates only: no STUN/TURN), and plays the hub's answer. Used by the console's dialogs
// and by a 112/119 view link's page.

const GATHER_MS = 3000;

function gathered(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { if (pc.iceGatheringState === "complete") { clearTimeout(timer); resolve(); } };
    const timer = setTimeout(resolve, GATHER_MS); // send what was gathered: loopback host candidates come first
    pc.addEventListener("icegatheringstatechange", done);
  });
}

/**
 * Play a live view in ``video``. ``post(body)`` sends the offer ({sdp}) and resolves to the
 * hub's answer ({view, camera, sdp}); ``end(view)`` ends the view at the hub; ``onState`` hears
 * "connecting", the connection's states and "playing". The first frame's time after the offer
 * began is put in ``video.dataset.startupMs``. Resolves to ``{stop, view, camera}``.
 */
export async function startLive(video, post, end, onState = () => {}) {
  const t0 = performance.now();
  const pc = new RTCPeerConnection({ iceServers: [] });
  let view = null;
  let stopped = false;
  const stop = () => {
    if (stopped) return;
    stopped = true;
    pc.close();
    video.srcObject = null;
    if (view) end(view).catch(() => {});
  };
  pc.addTransceiver("video", { direction: "recvonly" });
  pc.ontrack = (e) => { video.srcObject = e.streams[0] || new MediaStream([e.track]); video.play().catch(() => {}); };
  pc.onconnectionstatechange = () => onState(pc.connectionState);
  onState("connecting");
  let answer;
  try {
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc);
    answer = await post({ sdp: pc.localDescription.sdp });
    view = answer.view;
    await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
  } catch (ex) {
    stop();
    throw ex;
  }
  const first = () => {
    video.dataset.startupMs = String(Math.round(performance.now() - t0));
    video.dataset.playing = "true";
    onState("playing");
  };
  if ("requestVideoFrameCallback" in video) video.requestVideoFrameCallback(first);
  else video.addEventListener("playing", first, { once: true });
  return { stop, view, camera: answer.camera };
}
