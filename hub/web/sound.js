// The escalation tone: two short WebAudio beeps every few seconds while an escalation waits for
// an operator's acknowledgement.
//
// Rules:
// - Browsers start audio only after a user gesture on the page. Until there has been one, the
//   state is "blocked" and the console says so, with a button that is itself the gesture; it
//   never pretends to sound.
// - Mute silences what is sounding now (ISA-18.2 "silence"); a new escalation sounds again.
//   Mute is never remembered across a reload: a console that starts silent is a hazard.
const PERIOD_MS = 2500;

let ctx = null;
let due = new Set();
let muted = null; // null: not muted; else the escalations that were due when mute was pressed
let timer = null;
let tones = 0;
const listeners = new Set();

function changed() {
  const st = soundState();
  if (st === "playing" && !timer) { beep(); timer = setInterval(() => { if (soundState() === "playing") beep(); }, PERIOD_MS); }
  if (st !== "playing" && timer) { clearInterval(timer); timer = null; }
  listeners.forEach((fn) => fn(st));
}

/** Make (or resume) the audio context; works only inside a user gesture or after one. */
function unlock() {
  const Ctx = window.AudioContext || window.webkitAudioContext;
  if (!Ctx) return;
  if (!ctx) {
    ctx = new Ctx();
    ctx.onstatechange = changed;
  }
  if (ctx.state === "suspended") ctx.resume().then(changed, changed);
  changed();
}

for (const ev of ["pointerdown", "keydown"]) window.addEventListener(ev, unlock, { capture: true });

function beep() {
  const t0 = ctx.currentTime + 0.02;
  [880, 660].forEach((freq, i) => {
    const osc = ctx.createOscillator();
    const gain = ctx.createGain();
    const at = t0 + i * 0.25;
    osc.type = "square";
    osc.frequency.value = freq;
    gain.gain.setValueAtTime(0.0001, at);
    gain.gain.exponentialRampToValueAtTime(0.25, at + 0.02);
    gain.gain.exponentialRampToValueAtTime(0.0001, at + 0.22);
    osc.connect(gain).connect(ctx.destination);
    osc.start(at);
    osc.stop(at + 0.24);
  });
  tones += 1;
}

/** "idle" (nothing due), "muted", "blocked" (no user gesture yet) or "playing". */
export function soundState() {
  if (!due.size) return "idle";
  if (muted !== null) return "muted";
  if (!ctx || ctx.state !== "running") return "blocked";
  return "playing";
}

/** The keys (escalation ids) that need an operator now; a key not muted before sounds again. */
export function setDue(keys) {
  due = new Set(keys);
  if (muted !== null && [...due].some((k) => !muted.has(k))) muted = null;
  if (due.size && !ctx && navigator.userActivation && navigator.userActivation.hasBeenActive) unlock();
  changed();
}

export function toggleMute() {
  muted = muted === null ? new Set(due) : null;
  changed();
}

export function isMuted() { return muted !== null; }
export function tonesPlayed() { return tones; }
export function onSound(fn) { listeners.add(fn); }
