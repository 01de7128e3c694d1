// A virtual meter in the MicroPython VM: the firmware's Runner stepped from Node's event loop,
// its MQTT client bridged to the host (hil/virtual/meter.py), which holds the real connection.
//
// stdin, first line: JSON {"files": {"/flash/...": "text"}, "setup": "python source",
//                          "flash": "/host/dir"}; later lines: bridge events for BridgeClient.
// stdout: one JSON line per bridge operation ({"op": ...}); {"op": "crash", "error": ...} if
// the firmware raised. VM prints go to stderr. State files under /flash are copied to the
// host's "flash" directory after every step that changed them (they survive a restart).
import fs from "node:fs";
import path from "node:path";
import readline from "node:readline";
import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";

const require = createRequire(import.meta.url);
const modulePath = process.env.NGRID_MICROPYTHON_MJS ||
  require.resolve("@micropython/micropython-webassembly-pyscript/micropython.mjs",
                  { paths: [process.cwd()] });
const { loadMicroPython } = await import(pathToFileURL(modulePath).href);

const rl = readline.createInterface({ input: process.stdin });
const lines = rl[Symbol.asyncIterator]();
const first = JSON.parse((await lines.next()).value);
const inbox = [];
let stopping = false;

const mp = await loadMicroPython({
  stdout: (s) => process.stderr.write(s + "\n"),
  stderr: (s) => process.stderr.write(s + "\n"),
});
mp.registerJsModule("ngbridge", {
  send: (line) => { process.stdout.write(line + "\n"); return 1; },
  poll: () => (inbox.length ? inbox.shift() : null),
});
const mkdirs = (p) => {
  let cur = "";
  for (const part of p.split("/").filter(Boolean)) {
    cur += "/" + part;
    try { mp.FS.mkdir(cur); } catch (e) { }
  }
};
for (const [p, text] of Object.entries(first.files)) {
  mkdirs(p.slice(0, p.lastIndexOf("/")));
  mp.FS.writeFile(p, text);
}

const STATE = ["state.json", "config.json"];
const stamps = new Map();
function persist() {
  for (const name of STATE) {
    const p = "/flash/" + name;
    let st;
    try { st = mp.FS.stat(p); } catch (e) { continue; }
    const stamp = st.mtime.getTime() + ":" + st.size;
    if (stamps.get(name) === stamp) continue;
    stamps.set(name, stamp);
    const tmp = path.join(first.flash, name + ".host-tmp");
    fs.writeFileSync(tmp, mp.FS.readFile(p));
    fs.renameSync(tmp, path.join(first.flash, name));
  }
}

function crash(e) {
  process.stdout.write(JSON.stringify({ op: "crash", error: String(e && e.message ? e.message : e) }) + "\n");
  process.exit(1);
}

try {
  mp.runPython(first.setup);
} catch (e) { crash(e); }

(async () => {
  for await (const line of lines) {
    if (line === '{"ev": "stop"}') { stopping = true; break; }
    inbox.push(line);
  }
  stopping = true;
})();

function step() {
  if (stopping) { persist(); process.exit(0); }
  let ms = 50;
  try {
    mp.runPython("_ms = _runner.step()");
    ms = mp.globals.get("_ms");
    persist();
  } catch (e) { crash(e); }
  // Wake early when the host has something for us.
  setTimeout(step, inbox.length ? 0 : Math.min(ms, 50));
}
step();
